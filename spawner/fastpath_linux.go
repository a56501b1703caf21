package spawner

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/moby/sys/mountinfo"
	"go.uber.org/zap"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/sandbox"
	"github.com/containerd/errdefs"

	"github.com/caddy-spawn/caddy-spawn/spawner/taskserver"
)

// FastPathConfig configures the fast path of one containerd: our own task
// server, started as a child process of this one.
type FastPathConfig struct {
	// StateDir holds the server's socket, crun's state and its log.
	// Best on tmpfs; it must be stable across restarts, so that a new
	// server finds what a killed one left.
	StateDir string
	// Crun is the crun binary; empty looks it up in PATH.
	Crun string
	// Containerd is containerd's gRPC socket; task events go to its ttrpc
	// socket next to it.
	Containerd string
	// BinDir is where the runtime's delete program is written (see
	// noopbin_linux.go): a directory containerd can exec from (run
	// directories are often noexec). Empty: StateDir.
	BinDir string
}

// FastPath is a supervised task server: one long-lived process that serves
// containerd's task API for every container of this Caddy, so that no shim
// process is started per container (see package taskserver). Containers
// reach it through sandbox attach: they name SandboxID, and their tasks are
// created with Endpoint as their task API address.
type FastPath struct {
	cfg     FastPathConfig
	socket  string
	runtime string
	logger  *zap.Logger
	proc    child
}

// SandboxID is the sandbox record, in each namespace we use, that our
// containers name so that containerd attaches them to the task server.
const SandboxID = "caddy-spawn-task-server"

// StartFastPath checks that this host can run the fast path, starts the task
// server and waits until it serves. On error (errors.Is ErrFastPathUnavailable
// when the host can't run it) nothing is left running.
func StartFastPath(ctx context.Context, cfg FastPathConfig, logger *zap.Logger) (*FastPath, error) {
	if cfg.Crun == "" {
		p, err := exec.LookPath("crun")
		if err != nil {
			return nil, fmt.Errorf("%w: crun not found in PATH", ErrFastPathUnavailable)
		}
		cfg.Crun = p
	}
	if err := taskserver.CheckHost(cfg.Crun); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrFastPathUnavailable, err)
	}
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return nil, fmt.Errorf("creating task server state directory: %w", err)
	}
	// containerd execs the runtime binary once per task when the task's
	// connection closes ("cleaning up dead shim"); ours did that cleanup
	// already, so the cheapest program that exits 0 will do (noopbin_linux.go).
	rt, err := runtimeBinary(cfg, logger)
	if err != nil {
		return nil, err
	}
	f := &FastPath{
		cfg: cfg, socket: filepath.Join(cfg.StateDir, "task.sock"), runtime: rt, logger: logger,
	}
	if len(f.socket) > 100 {
		return nil, fmt.Errorf("task server socket path %q is too long for a unix socket", f.socket)
	}
	conf, err := json.Marshal(taskserver.ProcessConfig{
		Socket: f.socket, StateDir: cfg.StateDir, Crun: cfg.Crun, Events: cfg.Containerd + ".ttrpc",
	})
	if err != nil {
		return nil, err
	}
	self, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("finding our own binary: %w", err)
	}
	f.proc = child{
		name: "task server",
		command: func() *exec.Cmd {
			cmd := exec.Command(self)
			cmd.Env = append(os.Environ(), taskserver.EnvConfig+"="+string(conf))
			return cmd
		},
		ready: func(context.Context) error {
			c, err := net.DialTimeout("unix", f.socket, time.Second)
			if err == nil {
				c.Close()
			}
			return err
		},
		poll:    20 * time.Millisecond,
		where:   f.socket,
		logPath: filepath.Join(cfg.StateDir, "task-server.log"),
		logger:  logger,
	}
	if err := f.proc.start(ctx); err != nil {
		return nil, err
	}
	if !favorDynMods() {
		logger.Info("cgroup favordynmods is off: every container start waits for an RCU grace period when it joins its cgroup (~20 ms measured); `mount -o remount,favordynmods <cgroup2 mount>` (Linux >= 6.1) removes the wait")
	}
	logger.Info("fast path: task server started",
		zap.String("socket", f.socket), zap.String("crun", cfg.Crun), zap.Int("pid", f.Pid()))
	return f, nil
}

// runtimeBinary installs the exit program and checks that it runs (the
// directory may be noexec, or the architecture one we have no program
// for); failing that, it falls back to true(1).
func runtimeBinary(cfg FastPathConfig, logger *zap.Logger) (string, error) {
	dir := cfg.BinDir
	if dir == "" {
		dir = cfg.StateDir
	}
	path, err := installNoop(dir, runtime.GOARCH)
	if err == nil {
		err = exec.Command(path, "delete").Run()
	}
	if err == nil {
		return path, nil
	}
	rt, lerr := exec.LookPath("true")
	if lerr != nil {
		return "", fmt.Errorf("%w: no runtime delete program (%w) and no true(1) in PATH", ErrFastPathUnavailable, err)
	}
	logger.Info("fast path: using true(1) for containerd's per-task delete exec", zap.String("dir", dir), zap.Error(err))
	return rt, nil
}

// Endpoint is the task API address given to every task.
func (f *FastPath) Endpoint() string { return "ttrpc+unix://" + f.socket }

// Runtime is the runtime name put on our containers.
func (f *FastPath) Runtime() string { return f.runtime }

// Pid is the task server's current process ID.
func (f *FastPath) Pid() int { return f.proc.pid() }

// Stop ends the task server (after the spawn app removed its containers)
// and its supervision.
func (f *FastPath) Stop(ctx context.Context) {
	f.proc.stop(ctx, 5*time.Second)
	_ = os.Remove(f.socket)
	// crun's state outlives a server only when containers are left in it,
	// for the next server to remove. The log stays, as containerd's does.
	crunRoot := filepath.Join(f.cfg.StateDir, "crun")
	if entries, err := os.ReadDir(crunRoot); err == nil && len(entries) > 0 {
		f.logger.Warn("fast path: containers left in the task server's state", zap.String("state", f.cfg.StateDir))
	} else {
		_ = os.RemoveAll(crunRoot)
		_ = os.Remove(filepath.Join(f.cfg.StateDir, "layers")) // only if empty
		_ = os.Remove(filepath.Join(f.cfg.StateDir, "idmap"))  // the same
		if filepath.Base(f.runtime) == noopName {
			_ = os.Remove(f.runtime)
		}
	}
	f.logger.Info("fast path: task server stopped")
}

// EnsureSandbox creates, in the namespace of ctx, the sandbox record our
// containers name. It carries no controller: it only tells containerd to
// reach their tasks at the endpoint given per task.
func (f *FastPath) EnsureSandbox(ctx context.Context, c *client.Client) error {
	_, err := c.SandboxStore().Create(ctx, sandbox.Sandbox{
		ID:      SandboxID,
		Labels:  map[string]string{LabelManaged: "true"},
		Runtime: sandbox.RuntimeOpts{Name: f.runtime},
	})
	if err != nil && !errdefs.IsAlreadyExists(err) {
		return fmt.Errorf("creating sandbox record %s: %w", SandboxID, err)
	}
	return nil
}

// RemoveSandbox removes our sandbox record from the namespace of ctx.
func RemoveSandbox(ctx context.Context, c *client.Client) error {
	err := c.SandboxStore().Delete(ctx, SandboxID)
	if err != nil && !errdefs.IsNotFound(err) {
		return err
	}
	return nil
}

// favorDynMods reports whether a cgroup hierarchy is mounted with
// favordynmods, which makes moving a process into a cgroup cheap for the
// whole system (the kernel then stops waiting for an RCU grace period on
// each move).
func favorDynMods() bool {
	mounts, err := mountinfo.GetMounts(mountinfo.FSTypeFilter("cgroup", "cgroup2"))
	if err != nil {
		return false
	}
	for _, m := range mounts {
		if slices.Contains(strings.Split(m.VFSOptions, ","), "favordynmods") {
			return true
		}
	}
	return false
}
