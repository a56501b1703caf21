package caddyproc

import (
	"path/filepath"
	"strings"
	"testing"
)

func TestLogFind(t *testing.T) {
	l, err := NewLog(filepath.Join(t.TempDir(), "caddy.log"))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range []string{
		"plain text start-up error\n",
		`{"level":"info","msg":"managed containerd started","pid":42}` + "\n",
		`{"level":"error","msg":"route memhog: function exited without output","exit":137}` + "\n",
		`{"level":"info","msg":"managed containerd started","pid":43}` + "\n",
		`{"level":"info","msg":"half a line`,
	} {
		if _, err := l.Write([]byte(line)); err != nil {
			t.Fatal(err)
		}
	}
	l.Close()

	tests := []struct {
		name   string
		msg    string
		fields map[string]string
		want   int
	}{
		{name: "msg only", msg: "managed containerd started", want: 2},
		{name: "number field", msg: "managed containerd started", fields: map[string]string{"pid": "43"}, want: 1},
		{name: "missing field", msg: "managed containerd started", fields: map[string]string{"route": "x"}, want: 0},
		{name: "unknown msg", msg: "nope", want: 0},
		{name: "incomplete line", msg: "half a line", want: 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := len(l.FindAll(tc.msg, tc.fields)); got != tc.want {
				t.Errorf("FindAll(%q, %v): %d entries, want %d", tc.msg, tc.fields, got, tc.want)
			}
		})
	}
	if e, ok := l.ErrorMentioning("memhog", "without output"); !ok || e["exit"] != float64(137) {
		t.Errorf("ErrorMentioning: %v, %v", e, ok)
	}
	if _, ok := l.ErrorMentioning("memhog", "out of memory"); ok {
		t.Error("ErrorMentioning matched an entry that lacks one of the parts")
	}
	if !l.Contains("start-up error") {
		t.Error("Contains: plain text not found")
	}
	if got := l.Tail(5); got != `… line` {
		t.Errorf("Tail(5) = %q", got)
	}
	if !strings.HasSuffix(l.Path(), "caddy.log") {
		t.Errorf("Path() = %q", l.Path())
	}
}

func TestFreePorts(t *testing.T) {
	ports, err := FreePorts(5)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[int]bool{}
	for _, p := range ports {
		if p <= 0 || p > 65535 || seen[p] {
			t.Fatalf("FreePorts(5) = %v: want 5 distinct valid ports", ports)
		}
		seen[p] = true
	}
}
