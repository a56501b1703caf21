//go:build integration

package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"time"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/namespaces"

	"github.com/caddy-spawn/caddy-spawn/internal/hostprobe"
	"github.com/caddy-spawn/caddy-spawn/spawner"
	"github.com/caddy-spawn/caddy-spawn/spawner/taskserver"
)

// verifyNothingLeft runs after a path's Caddy (and its containerd) stopped:
// it starts a throw-away containerd on the same root and checks that no
// container is left in any namespace and that the baselines' namespaces are
// gone; it checks that no task state, crun or runc state or container cgroup
// is left on the host either, and removes the namespaces' empty parent
// cgroups.
func (b *bench) verifyNothingLeft(p *pathRun) error {
	var errs []error
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	// Task bundles of the stopped daemon, and the task server's crun state
	// (its directory is removed when nothing is left in it).
	for _, ns := range namespacesUsed {
		dir := filepath.Join(p.state, "io.containerd.runtime.v2.task", ns)
		if entries, err := os.ReadDir(dir); err == nil && len(entries) > 0 {
			errs = append(errs, fmt.Errorf("task bundles left in %s: %d", dir, len(entries)))
		}
	}
	if entries, err := os.ReadDir(filepath.Join(p.state, "task-server", "crun")); err == nil && len(entries) > 0 {
		errs = append(errs, fmt.Errorf("crun state of %d containers left in %s", len(entries), filepath.Join(p.state, "task-server", "crun")))
	}

	state := p.state + "-v"
	d, err := spawner.StartDaemon(ctx, spawner.DaemonConfig{Root: p.ctrdRoot, State: state}, b.log)
	if err != nil {
		return errors.Join(append(errs, fmt.Errorf("starting a containerd to check for leftovers: %w", err))...)
	}
	c, err := client.New(d.Address(), client.WithTimeout(10*time.Second))
	if err != nil {
		errs = append(errs, fmt.Errorf("connecting to the checking containerd: %w", err))
	} else {
		total := 0
		nss, err := c.NamespaceService().List(ctx)
		if err != nil {
			errs = append(errs, fmt.Errorf("listing namespaces: %w", err))
		}
		for _, ns := range nss {
			if ns == nsNaive || ns == nsThaw {
				errs = append(errs, fmt.Errorf("namespace %s still exists after its baseline", ns))
			}
			cs, err := c.Containers(namespaces.WithNamespace(ctx, ns))
			if err != nil {
				errs = append(errs, fmt.Errorf("listing containers in %s: %w", ns, err))
				continue
			}
			for _, ctr := range cs {
				errs = append(errs, fmt.Errorf("container %s left in namespace %s", ctr.ID(), ns))
			}
			total += len(cs)
		}
		p.res.LeftoverContainers = total
		c.Close()
	}
	_ = d.Stop(context.Background())
	if err := waitNoProcesses(state+"/", 20*time.Second); err != nil {
		errs = append(errs, err)
	}
	if mounts := mountsUnder(state, p.ctrdRoot); len(mounts) == 0 {
		_ = os.RemoveAll(state)
	}

	for _, ns := range namespacesUsed {
		// The runc shim's state directory of the namespace.
		dir := filepath.Join("/run/containerd/runc", ns)
		if entries, err := os.ReadDir(dir); err == nil {
			if len(entries) > 0 {
				errs = append(errs, fmt.Errorf("runc state left in %s: %d containers", dir, len(entries)))
			} else {
				_ = os.Remove(dir)
			}
		}
		if err := hostprobe.RemoveNamespaceCgroups(ns); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// namespacesUsed are the containerd namespaces the bench uses (whose
// cgroups and runc state it checks).
var namespacesUsed = []string{nsCaddy, nsNaive, nsThaw}

// removeDirs removes the run's directories that outlive the paths.
func (b *bench) removeDirs() error {
	err := removeDirs(b.tmp, b.benchRun)
	_ = os.Remove(runParent) // only if empty: another run may use it
	return err
}

// removeDirs removes directories, unless something is still mounted under
// them (removing would delete through the mounts).
func removeDirs(dirs ...string) error {
	dirs = slices.DeleteFunc(slices.Clone(dirs), func(d string) bool { return d == "" || d == "." })
	if len(dirs) == 0 {
		return nil
	}
	if mounts := mountsUnder(dirs...); len(mounts) > 0 {
		return fmt.Errorf("mounts left, not removing %v: %v", dirs, mounts)
	}
	var errs []error
	for _, d := range dirs {
		if err := os.RemoveAll(d); err != nil {
			errs = append(errs, fmt.Errorf("removing %s: %w", d, err))
		}
	}
	return errors.Join(errs...)
}

// waitNoTaskServer waits until no task server of the path runs: no process
// with the task server's configuration naming the path's state directory
// in its environment, and none of the pids Caddy logged for it still a task
// server.
func waitNoTaskServer(p *pathRun, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		left := taskServersOf(p.state + "/")
		if len(left) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("task server still running after Caddy stopped: pids %v", left)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// taskServersOf lists the processes whose environment holds the task
// server's configuration (taskserver.EnvConfig) with marker in it.
func taskServersOf(marker string) []int {
	entries, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		env, err := os.ReadFile(filepath.Join("/proc", e.Name(), "environ"))
		if err != nil {
			continue
		}
		for kv := range bytes.SplitSeq(env, []byte{0}) {
			if bytes.HasPrefix(kv, []byte(taskserver.EnvConfig+"=")) && bytes.Contains(kv, []byte(marker)) {
				out = append(out, pid)
				break
			}
		}
	}
	return out
}

// waitNoProcesses waits until no process's command line mentions marker
// (the managed containerd and its shims name its state directory).
func waitNoProcesses(marker string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		procs := processesMentioning(marker)
		if len(procs) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("processes of the managed containerd still running: %v", procs)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// processesMentioning lists the processes whose command line mentions marker.
func processesMentioning(marker string) []string {
	procs := hostprobe.Processes(marker)
	out := make([]string, 0, len(procs))
	for _, p := range procs {
		out = append(out, p.String())
	}
	return out
}

// mountsUnder returns the mount points under any of dirs.
func mountsUnder(dirs ...string) []string { return hostprobe.MountsUnder(dirs...) }
