package caddymodule

import (
	"fmt"
	"path/filepath"
	"strings"

	"go.uber.org/zap"

	"github.com/caddyserver/caddy/v2"

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

// stateMounts shares the state tmpfs mounts across config reloads, keyed
// by directory, as backends shares containerd: the old config's Stop must
// not unmount what the new one's containerd is using.
var stateMounts = caddy.NewUsagePool()

// stateMount is one directory made a tmpfs by MountStateTmpfs.
type stateMount struct {
	dir    string
	ours   bool // a tmpfs of ours is mounted there
	logger *zap.Logger
}

// Destruct unmounts our tmpfs once the last config using it has stopped
// (and with it containerd and the task server).
func (m *stateMount) Destruct() error {
	if !m.ours {
		return nil
	}
	if err := spawner.UnmountStateTmpfs(m.dir); err != nil {
		m.logger.Warn("state tmpfs left mounted", zap.String("dir", m.dir), zap.Error(err))
		return nil
	}
	m.logger.Info("state tmpfs unmounted", zap.String("dir", m.dir))
	return nil
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

// acquireStateTmpfs puts the state directories on a tmpfs (state_tmpfs).
func (a *App) acquireStateTmpfs() error {
	if a.StateTmpfs == stateTmpfsOff {
		return nil
	}
	for _, dir := range a.stateDirs() {
		abs, err := filepath.Abs(dir)
		if err != nil {
			return err
		}
		key := "tmpfs:" + abs
		_, _, err = stateMounts.LoadOrNew(key, func() (caddy.Destructor, error) {
			ours, err := spawner.MountStateTmpfs(abs)
			if err != nil {
				return nil, fmt.Errorf("state_tmpfs: %w (set state_tmpfs off to keep the state on disk)", err)
			}
			if ours {
				a.logger.Info("state on a tmpfs of ours", zap.String("dir", abs))
			}
			return &stateMount{dir: abs, ours: ours, logger: a.logger}, nil
		})
		if err != nil {
			return err
		}
		a.tmpfs = append(a.tmpfs, key)
	}
	return nil
}

// releaseStateTmpfs gives back the state mounts this app holds.
func (a *App) releaseStateTmpfs() {
	for _, key := range a.tmpfs {
		_, _ = stateMounts.Delete(key)
	}
	a.tmpfs = nil
}
