package spawner

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"

	"go.uber.org/zap"
)

// readyTimeout bounds how long a supervised child may take to serve.
// Generous: on a slow host (software emulation, `make test-vm`) a task
// server that first sweeps a crashed one's containers took over 30 s.
const readyTimeout = 60 * time.Second

// child is a long-lived child process we supervise — the managed containerd,
// the fast path's task server: started and waited for until it serves,
// restarted with back-off whenever it exits, stopped with SIGTERM (SIGKILL
// after a grace period). Its output goes to logPath.
type child struct {
	name    string           // in logs and errors: "managed containerd", "task server"
	command func() *exec.Cmd // a fresh command for each start
	// ready reports nil once the process serves, probed every poll.
	ready   func(ctx context.Context) error
	poll    time.Duration
	where   string // what ready probes, for errors: its socket
	logPath string
	logger  *zap.Logger
	fields  []zap.Field // added to the restart logs

	mu       sync.Mutex
	cmd      *exec.Cmd
	exited   chan struct{} // closed when the current process has exited
	stopping bool
	done     chan struct{} // closed when supervision has ended
}

// start starts the process, waits until it serves, and supervises it. On
// error nothing is left running.
func (c *child) start(ctx context.Context) error {
	c.done = make(chan struct{})
	if err := c.spawn(); err != nil {
		return err
	}
	if err := c.waitReady(ctx); err != nil {
		c.kill()
		return err
	}
	go c.supervise()
	return nil
}

// spawn starts one process.
func (c *child) spawn() error {
	logFile, err := os.OpenFile(c.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("opening %s log: %w", c.name, err)
	}
	defer logFile.Close()
	cmd := c.command()
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = childProcAttr()
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting %s: %w", c.name, err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	c.mu.Lock()
	c.cmd, c.exited = cmd, exited
	c.mu.Unlock()
	return nil
}

// waitReady waits until the process serves, exits, or readyTimeout passes.
func (c *child) waitReady(ctx context.Context) error {
	c.mu.Lock()
	exited := c.exited
	c.mu.Unlock()
	deadline := time.Now().Add(readyTimeout)
	for {
		if err := c.ready(ctx); err == nil {
			return nil
		}
		select {
		case <-exited:
			return fmt.Errorf("%s exited during start-up; see %s", c.name, c.logPath)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(c.poll):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s did not answer on %s within %v; see %s", c.name, c.where, readyTimeout, c.logPath)
		}
	}
}

// supervise restarts the process whenever it exits, until stop.
func (c *child) supervise() {
	defer close(c.done)
	backoff := 100 * time.Millisecond
	for {
		c.mu.Lock()
		exited := c.exited
		c.mu.Unlock()
		<-exited
		if c.isStopping() {
			return
		}
		c.logger.Error(c.name+" exited; restarting",
			append(append([]zap.Field(nil), c.fields...), zap.Duration("retry_in", backoff), zap.String("log", c.logPath))...)
		time.Sleep(backoff)
		if c.isStopping() {
			return
		}
		if err := c.spawn(); err != nil {
			c.logger.Error("restarting "+c.name, zap.Error(err))
			backoff = min(backoff*2, 10*time.Second)
			continue
		}
		if c.isStopping() { // stop ran while we spawned: it may have missed this one
			c.kill()
			return
		}
		if err := c.waitReady(context.Background()); err != nil {
			c.logger.Error("restarting "+c.name, zap.Error(err))
			backoff = min(backoff*2, 10*time.Second)
			continue
		}
		backoff = 100 * time.Millisecond
		c.logger.Info(c.name+" restarted", zap.Int("pid", c.pid()))
	}
}

func (c *child) isStopping() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stopping
}

// pid is the current process's ID.
func (c *child) pid() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cmd.Process.Pid
}

// kill ends supervision and the process at once.
func (c *child) kill() {
	c.mu.Lock()
	c.stopping = true
	cmd, exited := c.cmd, c.exited
	c.mu.Unlock()
	_ = cmd.Process.Kill()
	<-exited
}

// stop asks the process to exit, kills it if it doesn't within grace (or
// when ctx ends), and waits until supervision has ended.
func (c *child) stop(ctx context.Context, grace time.Duration) {
	c.mu.Lock()
	c.stopping = true
	cmd, exited := c.cmd, c.exited
	c.mu.Unlock()
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(grace):
		_ = cmd.Process.Kill()
		<-exited
	case <-ctx.Done():
		_ = cmd.Process.Kill()
		<-exited
	}
	<-c.done
}
