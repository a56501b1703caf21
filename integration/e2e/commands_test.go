//go:build integration

package e2e

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// spawnCmd runs `caddy spawn <args>` against the managed containerd of the
// running test Caddy and returns its output.
func spawnCmd(t *testing.T, args ...string) string {
	t.Helper()
	full := append([]string{"spawn"}, args...)
	full = append(full, "--address", filepath.Join(stateDir, "containerd.sock"), "--namespace", namespace)
	out, err := exec.Command(caddyBin, full...).CombinedOutput()
	if err != nil {
		t.Fatalf("caddy %s: %v\n%s", strings.Join(full, " "), err, out)
	}
	t.Logf("caddy %s:\n%s", strings.Join(args, " "), out)
	return string(out)
}

// TestOperatorCommands: `caddy spawn images`, `ps` and `import` against a
// running Caddy's managed containerd.
func TestOperatorCommands(t *testing.T) {
	port := freePort(t)
	p := startCaddy(t, port, site(port, testfnRoute("/env", "cmdroute", "env", "pool 2")))
	p.waitPoolFull(t, "cmdroute", 2)

	ps := spawnCmd(t, "ps")
	if n := strings.Count(ps, " cmdroute  pooled "); n != 2 {
		t.Errorf("spawn ps: %d pooled containers of route cmdroute, want 2", n)
	}
	if !strings.HasPrefix(ps, "CONTAINER") {
		t.Errorf("spawn ps: no header")
	}

	images := spawnCmd(t, "images")
	var routeLine bool
	for l := range strings.SplitSeq(images, "\n") {
		if strings.HasPrefix(l, testfnRef+" ") && strings.HasSuffix(strings.TrimSpace(l), "cmdroute") {
			routeLine = true
		}
	}
	if !routeLine {
		t.Errorf("spawn images: no line for %s used by route cmdroute", testfnRef)
	}
	if !strings.Contains(images, "localhost/caddy-spawn/testfn@sha256:") {
		t.Errorf("spawn images: no pin record of testfn")
	}

	out := spawnCmd(t, "import", archive("hello"), helloRef)
	if !strings.HasPrefix(out, helloRef+"\tsha256:") {
		t.Errorf("spawn import: output %q, want the reference and its digest", out)
	}
	if images := spawnCmd(t, "images"); !strings.Contains(images, helloRef+" ") {
		t.Errorf("spawn images after import: no %s", helloRef)
	}
}
