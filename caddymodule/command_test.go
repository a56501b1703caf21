package caddymodule

import (
	"testing"

	"github.com/spf13/cobra"

	caddycmd "github.com/caddyserver/caddy/v2/cmd"
)

func TestSpawnCommand(t *testing.T) {
	c, ok := caddycmd.Commands()["spawn"]
	if !ok {
		t.Fatal("command spawn not registered")
	}
	root := &cobra.Command{Use: "spawn"}
	c.CobraFunc(root)
	for _, tc := range []struct {
		name string
		args []string
	}{
		{name: "images", args: []string{"images"}},
		{name: "ps", args: []string{"ps"}},
		{name: "import", args: []string{"import", "a.tar", "localhost/a:1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sub, rest, err := root.Find(tc.args)
			if err != nil || sub.Name() != tc.name {
				t.Fatalf("Find(%v) = %v, %v", tc.args, sub, err)
			}
			if err := sub.Args(sub, rest); err != nil {
				t.Errorf("args %v: %v", rest, err)
			}
		})
	}
	if f := root.PersistentFlags().Lookup("namespace"); f == nil || f.DefValue != defaultNamespace {
		t.Errorf("--namespace default = %v, want %s", f, defaultNamespace)
	}
}
