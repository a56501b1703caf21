package spawner

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/containerd/containerd/v2/client"
)

// DaemonConfig configures a managed containerd: one we start as our child,
// with its own root, state and socket, so it never touches a system daemon.
type DaemonConfig struct {
	// Binary is the containerd executable; "" looks up "containerd" in PATH.
	Binary string
	// Root holds persistent data (content, snapshots, metadata).
	Root string
	// State holds runtime state and the socket; it should be on tmpfs.
	State string
	// LogLevel is containerd's log level; "" means "warn".
	LogLevel string
	// SyncMetadata keeps containerd's default of syncing its metadata
	// database (bbolt) to disk at every write. Off by default: every
	// request writes and removes a container record, and the two
	// fdatasyncs per write cost ~4 ms of CPU per container on an ext4
	// root (measured: 62 vs 73 containers/s on 2 cores). A power loss
	// can then damage the metadata database (see the README).
	SyncMetadata bool
}

// Address is the socket the managed daemon listens on.
func (c DaemonConfig) Address() string {
	return filepath.Join(c.State, "containerd.sock")
}

// Daemon is a running managed containerd. It is supervised: if it dies, it
// is restarted (with back-off) until Stop; meanwhile calls fail with
// "unavailable" and the client reconnects on its own once it is back.
type Daemon struct {
	cfg  DaemonConfig
	proc child
}

// StartDaemon starts containerd as a child process and waits until its API
// answers. The child gets SIGKILL if we die, so no daemon outlives us.
func StartDaemon(ctx context.Context, cfg DaemonConfig, logger *zap.Logger) (*Daemon, error) {
	if err := requireLinux(); err != nil {
		return nil, fmt.Errorf("starting managed containerd: %w", err)
	}
	if os.Geteuid() != 0 {
		return nil, errors.New("starting managed containerd: caddy-spawn needs root to run containers (or configure the socket of a containerd you run)")
	}
	bin := cfg.Binary
	if bin == "" {
		bin = "containerd"
	}
	path, err := exec.LookPath(bin)
	if err != nil {
		return nil, fmt.Errorf("finding containerd binary %q (install it, e.g. `make tools`, or set managed.binary): %w", bin, err)
	}
	for _, dir := range []string{cfg.Root, cfg.State} {
		if err := os.MkdirAll(dir, 0o711); err != nil {
			return nil, fmt.Errorf("creating managed containerd directory: %w", err)
		}
	}
	if len(cfg.Address()) > 100 {
		return nil, fmt.Errorf("managed containerd socket path %q is too long for a unix socket; choose a shorter state directory", cfg.Address())
	}
	confPath := filepath.Join(cfg.State, "config.toml")
	if err := os.WriteFile(confPath, []byte(daemonConfigTOML(cfg)), 0o600); err != nil {
		return nil, fmt.Errorf("writing managed containerd config: %w", err)
	}
	d := &Daemon{cfg: cfg, proc: child{
		name:    "managed containerd",
		command: func() *exec.Cmd { return exec.Command(path, "--config", confPath) },
		ready:   func(ctx context.Context) error { return ping(ctx, cfg.Address()) },
		poll:    50 * time.Millisecond,
		where:   cfg.Address(),
		logPath: filepath.Join(cfg.State, "containerd.log"),
		logger:  logger,
		fields:  []zap.Field{zap.String("address", cfg.Address())},
	}}
	start := time.Now()
	if err := d.proc.start(ctx); err != nil {
		return nil, err
	}
	logger.Info("managed containerd started",
		zap.String("address", cfg.Address()),
		zap.String("root", cfg.Root),
		zap.Int("pid", d.proc.pid()),
		zap.Duration("took", time.Since(start)))
	return d, nil
}

// Address returns the daemon's socket.
func (d *Daemon) Address() string { return d.cfg.Address() }

// Pid returns the process ID of the current containerd process.
func (d *Daemon) Pid() int { return d.proc.pid() }

// Stop asks containerd to exit, kills it if it doesn't within 10s, and ends
// supervision.
func (d *Daemon) Stop(ctx context.Context) error {
	d.proc.stop(ctx, 10*time.Second)
	d.proc.logger.Info("managed containerd stopped", zap.String("address", d.cfg.Address()))
	return nil
}

func ping(ctx context.Context, address string) error {
	if _, err := os.Stat(address); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	c, err := client.New(address, client.WithTimeout(time.Second))
	if err != nil {
		return err
	}
	defer c.Close()
	_, err = c.Version(ctx)
	return err
}

// daemonConfigTOML renders a minimal containerd v2 config: no CRI, no NRI, no
// tracing — just content, snapshots, tasks and the runc shim.
func daemonConfigTOML(cfg DaemonConfig) string {
	level := cfg.LogLevel
	if level == "" {
		level = "warn"
	}
	disabled := []string{
		"io.containerd.grpc.v1.cri",
		"io.containerd.cri.v1.images",
		"io.containerd.cri.v1.runtime",
		"io.containerd.podsandbox.controller.v1.podsandbox",
		"io.containerd.nri.v1.nri",
		"io.containerd.tracing.processor.v1.otlp",
		"io.containerd.internal.v1.tracing",
		"io.containerd.snapshotter.v1.btrfs",
		"io.containerd.snapshotter.v1.zfs",
		"io.containerd.snapshotter.v1.devmapper",
		"io.containerd.snapshotter.v1.blockfile",
		"io.containerd.snapshotter.v1.erofs",
	}
	q := make([]string, len(disabled))
	for i, p := range disabled {
		q[i] = fmt.Sprintf("%q", p)
	}
	return fmt.Sprintf(`# Written by caddy-spawn for its managed containerd. Do not edit: it is
# rewritten at every start.
version = 3
root = %q
state = %q
disabled_plugins = [%s]

[grpc]
  address = %q

[ttrpc]
  address = %q

[debug]
  level = %q

[plugins."io.containerd.metadata.v1.bolt"]
  no_sync = %t
`, cfg.Root, cfg.State, strings.Join(q, ", "), cfg.Address(), cfg.Address()+".ttrpc", level, !cfg.SyncMetadata)
}
