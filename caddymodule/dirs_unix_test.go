//go:build unix

package caddymodule

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCheckOwnDir(t *testing.T) {
	dir := t.TempDir()
	mk := func(name string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.Mkdir(p, mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil { // past the umask
			t.Fatal(err)
		}
		return p
	}
	for _, tc := range []struct {
		name    string
		path    string
		wantErr string
	}{
		{"missing is created later", filepath.Join(dir, "nope"), ""},
		{"private", mk("private", 0o700), ""},
		{"traversable", mk("traversable", 0o711), ""},
		{"world-writable", mk("world", 0o777), "writable by its group or everyone"},
		{"group-writable", mk("group", 0o770), "writable by its group or everyone"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := checkOwnDir("run_dir", tc.path)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !strings.HasPrefix(err.Error(), "run_dir: ") {
				t.Fatalf("error %v, want one naming run_dir and saying %q", err, tc.wantErr)
			}
		})
	}
	if os.Geteuid() == 0 {
		other := mk("other", 0o700)
		if err := os.Chown(other, 65534, 65534); err != nil {
			t.Fatal(err)
		}
		if err := checkOwnDir("run_dir", other); err == nil || !strings.Contains(err.Error(), "owned by uid 65534") {
			t.Fatalf("directory of another user: %v", err)
		}
	}
}
