// Package caddyproc runs the Caddy binary (build/caddy, with caddy-spawn
// linked in) as a subprocess, for the end-to-end tests and the bench: it
// starts Caddy from a Caddyfile in its own directory and process group, keeps
// its output in memory and in a file (Log), waits until it serves, stops it
// with SIGTERM as an operator would, and picks free loopback ports for it.
// It is a test harness: nothing in the module's production code imports it.
package caddyproc

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"time"
)

// Options describe one Caddy process.
type Options struct {
	// Bin is the Caddy binary.
	Bin string
	// Dir is the process's working directory. The Caddyfile is written
	// there, and Caddy's data and config directories (XDG_DATA_HOME,
	// XDG_CONFIG_HOME: where the spawn app installs its init and where
	// Caddy would autosave) stay inside it.
	Dir string
	// Caddyfile is the whole configuration, adapted by Caddy.
	Caddyfile string
	// LogPath is the file that keeps Caddy's stdout and stderr, besides
	// memory.
	LogPath string
	// Wrapper, when set, is a command that execs Caddy in its place (its
	// arguments follow), e.g. nsenter into a network namespace: Pid is
	// then still Caddy's.
	Wrapper []string
	// Env is added to Caddy's environment.
	Env []string
}

// Process is one running (or exited) Caddy.
type Process struct {
	// Log is Caddy's output: JSON log lines plus any plain text, such as
	// a start-up error.
	Log *Log
	// ConfigPath is the Caddyfile Caddy was started with.
	ConfigPath string

	cmd     *exec.Cmd
	exited  chan struct{}
	waitErr error
}

// Start starts Caddy and returns at once; WaitServing tells when it serves.
// Caddy runs in its own process group and is killed if this process dies,
// taking its managed containerd along.
func Start(o Options) (*Process, error) {
	cfgPath := filepath.Join(o.Dir, "Caddyfile")
	if err := os.WriteFile(cfgPath, []byte(o.Caddyfile), 0o600); err != nil {
		return nil, fmt.Errorf("writing the Caddyfile: %w", err)
	}
	logs, err := NewLog(o.LogPath)
	if err != nil {
		return nil, err
	}
	argv := append(append([]string(nil), o.Wrapper...), o.Bin, "run", "--config", cfgPath, "--adapter", "caddyfile")
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir = o.Dir
	cmd.Stdout = logs
	cmd.Stderr = logs
	cmd.Env = append(os.Environ(),
		"XDG_DATA_HOME="+filepath.Join(o.Dir, "data"),
		"XDG_CONFIG_HOME="+filepath.Join(o.Dir, "config"),
	)
	cmd.Env = append(cmd.Env, o.Env...)
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		logs.Close()
		return nil, fmt.Errorf("starting %s: %w", o.Bin, err)
	}
	p := &Process{Log: logs, ConfigPath: cfgPath, cmd: cmd, exited: make(chan struct{})}
	go func() {
		p.waitErr = cmd.Wait()
		logs.Close()
		close(p.exited)
	}()
	return p, nil
}

// Pid is Caddy's process ID.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Exited is closed once Caddy has exited; Err then returns how.
func (p *Process) Exited() <-chan struct{} { return p.exited }

// Err returns the error of Caddy's exit (nil for exit status 0). Call it only
// after Exited is closed.
func (p *Process) Err() error { return p.waitErr }

// WaitServing waits until Caddy has started all its apps (its "serving
// initial configuration" log line; the spawn app has started containerd and
// readied its images by then) and addr, its HTTP site, accepts connections.
func (p *Process) WaitServing(ctx context.Context, addr string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		select {
		case <-p.exited:
			return fmt.Errorf("caddy exited during start-up: %w", p.errOrExit())
		default:
		}
		if p.Log.Contains("serving initial configuration") {
			c, err := net.DialTimeout("tcp", addr, time.Second)
			if err == nil {
				_ = c.Close()
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not serving on %s after %s", addr, timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Stop ends Caddy with SIGTERM, as an operator would, and waits for it to
// exit. If it has not exited within timeout, it kills Caddy's whole process
// group and says so. A Caddy that had exited already is not an error here:
// callers that care check Exited first.
func (p *Process) Stop(timeout time.Duration) error {
	select {
	case <-p.exited:
		return nil
	default:
	}
	_ = p.cmd.Process.Signal(terminate)
	select {
	case <-p.exited:
		if p.waitErr != nil {
			return fmt.Errorf("caddy exited with %w after SIGTERM", p.waitErr)
		}
		return nil
	case <-time.After(timeout):
		killGroup(p.cmd.Process)
		<-p.exited
		return fmt.Errorf("caddy did not exit within %s of SIGTERM; killed its process group", timeout)
	}
}

// errOrExit is Err, or a note that Caddy exited with status 0.
func (p *Process) errOrExit() error {
	if p.waitErr != nil {
		return p.waitErr
	}
	return errors.New("exit status 0")
}
