package spawner

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
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

// Daemon is a running managed containerd. It is supervised: if it dies, it
// is restarted (with back-off) until Stop; meanwhile calls fail with
// "unavailable" and the client reconnects on its own once it is back.
type Daemon struct {
	cfg      DaemonConfig
	path     string
	confPath string
	logPath  string
	logger   *zap.Logger

	mu       sync.Mutex
	cmd      *exec.Cmd
	exited   chan struct{} // closed when the current process has exited
	stopping bool
	done     chan struct{} // closed when supervision has ended
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
	d := &Daemon{
		cfg: cfg, path: path, logger: logger,
		confPath: filepath.Join(cfg.State, "config.toml"),
		logPath:  filepath.Join(cfg.State, "containerd.log"),
		done:     make(chan struct{}),
	}
	if err := os.WriteFile(d.confPath, []byte(daemonConfigTOML(cfg)), 0o600); err != nil {
		return nil, fmt.Errorf("writing managed containerd config: %w", err)
	}
	if err := d.spawn(); err != nil {
		return nil, err
	}
	start := time.Now()
	if err := d.waitReady(ctx); err != nil {
		d.kill()
		return nil, err
	}
	logger.Info("managed containerd started",
		zap.String("address", cfg.Address()),
		zap.String("root", cfg.Root),
		zap.Int("pid", d.pid()),
		zap.Duration("took", time.Since(start)))
	go d.supervise()
	return d, nil
}

// spawn starts one containerd process.
func (d *Daemon) spawn() error {
	logFile, err := os.OpenFile(d.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("opening managed containerd log: %w", err)
	}
	defer logFile.Close()
	cmd := exec.Command(d.path, "--config", d.confPath)
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	cmd.SysProcAttr = daemonProcAttr()
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting managed containerd: %w", err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	d.mu.Lock()
	d.cmd, d.exited = cmd, exited
	d.mu.Unlock()
	return nil
}

// waitReady waits until the API answers, the process exits or 30s pass.
func (d *Daemon) waitReady(ctx context.Context) error {
	d.mu.Lock()
	exited := d.exited
	d.mu.Unlock()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if err := ping(ctx, d.cfg.Address()); err == nil {
			return nil
		}
		select {
		case <-exited:
			return fmt.Errorf("managed containerd exited during start-up; see %s", d.logPath)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("managed containerd did not answer on %s within 30s; see %s", d.cfg.Address(), d.logPath)
		}
	}
}

// supervise restarts the daemon whenever it exits, until Stop.
func (d *Daemon) supervise() {
	defer close(d.done)
	backoff := 100 * time.Millisecond
	for {
		d.mu.Lock()
		exited := d.exited
		d.mu.Unlock()
		<-exited
		d.mu.Lock()
		stopping := d.stopping
		d.mu.Unlock()
		if stopping {
			return
		}
		d.logger.Error("managed containerd exited; restarting",
			zap.String("address", d.cfg.Address()), zap.Duration("retry_in", backoff), zap.String("log", d.logPath))
		time.Sleep(backoff)
		d.mu.Lock()
		stopping = d.stopping
		d.mu.Unlock()
		if stopping {
			return
		}
		if err := d.spawn(); err != nil {
			d.logger.Error("restarting managed containerd", zap.Error(err))
			backoff = min(backoff*2, 10*time.Second)
			continue
		}
		d.mu.Lock()
		stopping, cmd, exited := d.stopping, d.cmd, d.exited
		d.mu.Unlock()
		if stopping { // Stop ran while we spawned: it may have missed this one
			_ = cmd.Process.Kill()
			<-exited
			return
		}
		if err := d.waitReady(context.Background()); err != nil {
			d.logger.Error("restarting managed containerd", zap.Error(err))
			backoff = min(backoff*2, 10*time.Second)
			continue
		}
		backoff = 100 * time.Millisecond
		d.logger.Info("managed containerd restarted", zap.Int("pid", d.pid()))
	}
}

func (d *Daemon) pid() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.cmd.Process.Pid
}

func (d *Daemon) kill() {
	d.mu.Lock()
	d.stopping = true
	cmd, exited := d.cmd, d.exited
	d.mu.Unlock()
	_ = cmd.Process.Kill()
	<-exited
}

// Address returns the daemon's socket.
func (d *Daemon) Address() string { return d.cfg.Address() }

// Pid returns the process ID of the current containerd process.
func (d *Daemon) Pid() int { return d.pid() }

// Stop asks containerd to exit, kills it if it doesn't within 10s, and ends
// supervision.
func (d *Daemon) Stop(ctx context.Context) error {
	d.mu.Lock()
	d.stopping = true
	cmd, exited := d.cmd, d.exited
	d.mu.Unlock()
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(10 * time.Second):
		_ = cmd.Process.Kill()
		<-exited
	case <-ctx.Done():
		_ = cmd.Process.Kill()
		<-exited
	}
	<-d.done
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
