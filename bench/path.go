//go:build integration

package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/containerd/containerd/v2/client"
)

// pathRun is one of the two ways of running containers, measured through a
// Caddy of its own with a managed containerd of its own.
type pathRun struct {
	name     string // "fast" or "stock"
	fastPath string // the spawn app's fast_path option: "on" or "off"

	ctrdRoot string // managed containerd root: <tmp>/<name>/containerd
	state    string // managed containerd state: <runParent>/<id>-<name>
	runDir   string // spawn app run_dir: <runParent>/<id>-<name>-run

	caddy               *caddyProc
	httpPort, adminPort int
	ctrd                *client.Client
	// taskServers are the task server pids Caddy logged (fast path).
	taskServers []int
	stopped     bool // stopPath ran

	res       pathResults
	refillErr string // first "refilling pool" warning in Caddy's log
}

func (b *bench) newPath(name, fastPath, runtime string) *pathRun {
	state := filepath.Join(runParent, b.id+"-"+name[:1])
	p := &pathRun{
		name: name, fastPath: fastPath,
		ctrdRoot: filepath.Join(b.tmp, name, "containerd"),
		state:    state,
		runDir:   state + "-run",
	}
	p.res.FastPath = fastPath
	p.res.Runtime = runtime
	p.res.LeftoverContainers = -1
	return p
}

// runPath starts the path's Caddy and runs its measurements (and, on the
// stock path, the in-process baselines in its containerd). stopPath stops
// it.
func (b *bench) runPath(ctx context.Context, p *pathRun) error {
	for _, d := range []string{p.state, p.runDir} {
		if err := os.MkdirAll(d, 0o711); err != nil {
			return fmt.Errorf("creating %s: %w", d, err)
		}
	}
	progress("%s path: starting Caddy %s (fast_path %s, managed containerd, state %s)", p.name, b.pre.caddyBin, p.fastPath, p.state)
	b.cur = p
	if err := b.startCaddy(ctx, p); err != nil {
		return err
	}
	b.caddy = p.caddy
	if err := b.connect(p); err != nil {
		return err
	}
	if v, err := p.ctrd.Version(ctx); err == nil {
		b.res.ContainerdVersion = v.Version
	}
	if err := b.checkRuntime(p); err != nil {
		return err
	}
	// The pools fill in the background after the start.
	if err := b.quiesceAll(ctx, 2*time.Minute); err != nil {
		return fmt.Errorf("waiting for the pools to fill: %w", err)
	}
	mem, err := b.measureMemory(ctx, p)
	if err != nil {
		return fmt.Errorf("memory after the pools filled: %w", err)
	}
	p.res.MemoryAtStart = mem

	steps := []struct {
		name string
		fn   func(context.Context) error
	}{
		{"warm", b.runWarm},
		{"cold", b.runCold},
		{"userns", b.runUserns},
		{"sustained", b.runSustained},
		{"memory", func(ctx context.Context) error {
			if err := b.quiesceAll(ctx, time.Minute); err != nil {
				return err
			}
			mem, err := b.measureMemory(ctx, p)
			p.res.Memory = mem
			return err
		}},
	}
	if p.name == "stock" {
		steps = append(steps,
			struct {
				name string
				fn   func(context.Context) error
			}{"naive", b.runNaive},
			struct {
				name string
				fn   func(context.Context) error
			}{"thaw", b.runThaw})
	}
	for _, s := range steps {
		if err := b.step(ctx, p.name+" "+s.name, s.fn); err != nil {
			return err
		}
	}
	// Only the pools may be left: every container a request used is gone.
	return b.checkOnlyPooled(ctx)
}

// connect connects to the path's managed containerd.
func (b *bench) connect(p *pathRun) error {
	var err error
	p.ctrd, err = client.New(filepath.Join(p.state, "containerd.sock"),
		client.WithDefaultNamespace(nsCaddy), client.WithTimeout(10*time.Second))
	if err != nil {
		return fmt.Errorf("connecting to the managed containerd: %w", err)
	}
	b.ctrd = p.ctrd
	return nil
}

// checkRuntime checks from Caddy's log that the path runs as asked: the
// task server started (fast), or not (stock).
func (b *bench) checkRuntime(p *pathRun) error {
	p.taskServers = taskServerPids(p.caddy)
	switch {
	case p.fastPath == "on" && len(p.taskServers) == 0:
		return fmt.Errorf(`fast_path on, but no "fast path: task server started" in Caddy's log %s`, p.caddy.proc.Log.Path())
	case p.fastPath == "off" && len(p.taskServers) > 0:
		return fmt.Errorf("fast_path off, but Caddy started a task server (pid %d)", p.taskServers[0])
	}
	return nil
}

// taskServerPids returns every task server pid Caddy logged, the first
// start's and any restart's.
func taskServerPids(c *caddyProc) []int {
	var pids []int
	for _, msg := range []string{"fast path: task server started", "task server restarted"} {
		for _, e := range c.proc.Log.FindAll(msg, nil) {
			if v, ok := e["pid"].(float64); ok && v > 0 {
				pids = append(pids, int(v))
			}
		}
	}
	return pids
}

// stopPath stops the path's Caddy (which stops its task server and
// containerd), checks that nothing of it is left, and removes its
// directories. It runs once per path; later calls do nothing.
func (b *bench) stopPath(p *pathRun) error {
	if p.stopped {
		return nil
	}
	p.stopped = true
	var errs []error
	if b.http != nil {
		b.http.CloseIdleConnections()
	}
	if p.ctrd != nil {
		_ = p.ctrd.Close()
	}
	if p.caddy != nil {
		progress("%s path: stopping Caddy (SIGTERM)", p.name)
		if err := p.caddy.stop(60 * time.Second); err != nil {
			errs = append(errs, err)
		}
		p.res.CaddyRefillFailureLogs, p.refillErr = countLogs(p.caddy.proc.Log, "refilling pool")
		p.taskServers = taskServerPids(p.caddy)
		if n := len(p.taskServers); n > 1 {
			errs = append(errs, fmt.Errorf("the task server was restarted %d times during the run", n-1))
		}
	}
	// containerd, its shims and crun name the state directory on their
	// command lines; the task server has it in its environment.
	if err := waitNoProcesses(p.state+"/", 20*time.Second); err != nil {
		errs = append(errs, err)
	}
	if err := waitNoTaskServer(p, 20*time.Second); err != nil {
		errs = append(errs, err)
	}
	if p.caddy != nil && p.caddy.started {
		if err := b.verifyNothingLeft(p); err != nil {
			errs = append(errs, err)
		}
	}
	if err := removeDirs(p.state, p.runDir, filepath.Dir(p.ctrdRoot)); err != nil {
		errs = append(errs, err)
	}
	if b.cur == p {
		b.cur, b.caddy, b.ctrd = nil, nil, nil
	}
	if len(errs) == 0 {
		progress("%s path: stopped; nothing of it is left", p.name)
	}
	return errors.Join(errs...)
}
