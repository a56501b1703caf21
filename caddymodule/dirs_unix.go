//go:build unix

package caddymodule

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"syscall"
)

// checkOwnDir refuses a directory we keep state in (containerd's root and
// state, FIFOs, the task server's socket) that someone else could change:
// one not owned by our user, or writable by its group or everyone. A
// directory that does not exist yet is fine: we create it, private.
func checkOwnDir(field, path string) error {
	fi, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("%s: %w", field, err)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if ok && int(st.Uid) != os.Geteuid() {
		return fmt.Errorf("%s: %s is owned by uid %d, not by us (uid %d): refusing to keep containers' state where someone else can change it",
			field, path, st.Uid, os.Geteuid())
	}
	if fi.Mode().Perm()&0o022 != 0 {
		return fmt.Errorf("%s: %s is writable by its group or everyone (mode %v): refusing to keep containers' state there; chmod go-w it",
			field, path, fi.Mode().Perm())
	}
	return nil
}
