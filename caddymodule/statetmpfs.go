package caddymodule

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"go.uber.org/zap"

	"github.com/caddy-spawn/caddy-spawn/spawner"
)

// state_tmpfs modes.
const (
	stateTmpfsAuto = "auto"
	stateTmpfsOff  = "off"
)

func checkStateTmpfs(mode string) error {
	switch mode {
	case "", stateTmpfsAuto, stateTmpfsOff:
		return nil
	}
	return fmt.Errorf("state_tmpfs: %q must be auto or off", mode)
}

// stateMount is one directory made a tmpfs by MountStateTmpfs.
type stateMount struct {
	dir  string
	ours bool // a tmpfs of ours is mounted there
}

// stateDirs are the directories every container writes into: run_dir
// (FIFOs, the task server's state) and, in managed mode, containerd's
// state (bundles) when it is not inside run_dir.
func (a *App) stateDirs() []string {
	dirs := []string{filepath.Clean(a.RunDir)}
	if a.Managed != nil {
		st := filepath.Clean(a.Managed.State)
		if !strings.HasPrefix(st+"/", dirs[0]+"/") {
			dirs = append(dirs, st)
		}
	}
	return dirs
}

// mountStateTmpfs puts the state directories on a tmpfs (state_tmpfs),
// for a new backend: the backend holds them, and unmounts them when it
// goes, after its containerd and task server stopped. On error nothing is
// left mounted.
func (a *App) mountStateTmpfs() ([]*stateMount, error) {
	if a.StateTmpfs == stateTmpfsOff {
		return nil, nil
	}
	var mounts []*stateMount
	for _, dir := range a.stateDirs() {
		abs, err := filepath.Abs(dir)
		if err == nil {
			err = os.MkdirAll(abs, 0o711)
		}
		if err == nil {
			// mountinfo names the resolved path (/var/run is a link).
			abs, err = filepath.EvalSymlinks(abs)
		}
		var ours bool
		if err == nil {
			ours, err = spawner.MountStateTmpfs(abs)
		}
		if err != nil {
			unmountStateTmpfs(mounts, a.logger)
			return nil, fmt.Errorf("state_tmpfs: %w (set state_tmpfs off to keep the state on disk)", err)
		}
		if ours {
			a.logger.Info("state on a tmpfs of ours", zap.String("dir", abs))
		}
		mounts = append(mounts, &stateMount{dir: abs, ours: ours})
	}
	return mounts, nil
}

// unmountState unmounts the backend's state tmpfs mounts.
func (b *backend) unmountState() {
	unmountStateTmpfs(b.tmpfs, b.logger)
	b.tmpfs = nil
}

// unmountStateTmpfs unmounts our tmpfs mounts of mounts, last first.
func unmountStateTmpfs(mounts []*stateMount, logger *zap.Logger) {
	for _, m := range slices.Backward(mounts) {
		if !m.ours {
			continue
		}
		if err := spawner.UnmountStateTmpfs(m.dir); err != nil {
			logger.Warn("state tmpfs left mounted", zap.String("dir", m.dir), zap.Error(err))
			continue
		}
		logger.Info("state tmpfs unmounted", zap.String("dir", m.dir))
	}
}
