package spawner

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
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
}

// Address is the socket the managed daemon listens on.
func (c DaemonConfig) Address() string {
	return filepath.Join(c.State, "containerd.sock")
}

// Daemon is a running managed containerd.
type Daemon struct {
	cfg    DaemonConfig
	cmd    *exec.Cmd
	exited chan struct{}
	err    error
	logger *zap.Logger
}

// StartDaemon starts containerd as a child process and waits until its API
// answers. The child gets SIGKILL if we die, so no daemon outlives us.
func StartDaemon(ctx context.Context, cfg DaemonConfig, logger *zap.Logger) (*Daemon, error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("starting managed containerd: caddy-spawn needs root to run containers (or configure the socket of a containerd you run)")
	}
	bin := cfg.Binary
	if bin == "" {
		bin = "containerd"
	}
	path, err := exec.LookPath(bin)
	if err != nil {
		return nil, fmt.Errorf("finding containerd binary %q (install it, e.g. `make tools`, or set containerd_binary): %w", bin, err)
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

	// If a daemon of a crashed previous run still holds the socket, reuse
	// nothing of it: the socket file is stale or owned by a live process; in
	// the latter case our start fails loudly below.
	logFile, err := os.OpenFile(filepath.Join(cfg.State, "containerd.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("opening managed containerd log: %w", err)
	}
	defer logFile.Close()

	cmd := exec.Command(path, "--config", confPath)
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.Env = os.Environ()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting managed containerd: %w", err)
	}
	d := &Daemon{cfg: cfg, cmd: cmd, exited: make(chan struct{}), logger: logger}
	go func() {
		d.err = cmd.Wait()
		close(d.exited)
	}()

	start := time.Now()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if err := ping(ctx, cfg.Address()); err == nil {
			break
		}
		select {
		case <-d.exited:
			return nil, fmt.Errorf("managed containerd exited during start-up (%v); see %s", d.err, logFile.Name())
		case <-ctx.Done():
			_ = d.Stop(context.Background())
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			_ = d.Stop(context.Background())
			return nil, fmt.Errorf("managed containerd did not answer on %s within 30s; see %s", cfg.Address(), logFile.Name())
		}
	}
	logger.Info("managed containerd started",
		zap.String("address", cfg.Address()),
		zap.String("root", cfg.Root),
		zap.Int("pid", cmd.Process.Pid),
		zap.Duration("took", time.Since(start)))
	return d, nil
}

// Address returns the daemon's socket.
func (d *Daemon) Address() string { return d.cfg.Address() }

// Exited is closed when the daemon process has exited.
func (d *Daemon) Exited() <-chan struct{} { return d.exited }

// Stop asks containerd to exit and kills it if it doesn't within 10s.
func (d *Daemon) Stop(ctx context.Context) error {
	select {
	case <-d.exited:
		return nil
	default:
	}
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.exited:
	case <-time.After(10 * time.Second):
		_ = d.cmd.Process.Kill()
		<-d.exited
	case <-ctx.Done():
		_ = d.cmd.Process.Kill()
		<-d.exited
	}
	d.logger.Info("managed containerd stopped", zap.String("address", d.cfg.Address()))
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
`, cfg.Root, cfg.State, strings.Join(q, ", "), cfg.Address(), cfg.Address()+".ttrpc", level)
}
