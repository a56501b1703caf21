//go:build integration

package e2e

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// taskServerPid is the pid the fast path's task server was last started with.
func (p *caddyProc) taskServerPid(t *testing.T) int {
	t.Helper()
	var pid int
	for _, msg := range []string{"fast path: task server started", "task server restarted"} {
		for _, e := range p.logs.FindAll(msg, nil) {
			if v, ok := e["pid"].(float64); ok {
				pid = int(v)
			}
		}
	}
	if pid == 0 {
		t.Fatalf("no task server in the log: the fast path is not running (see %s)", p.logs.Path())
	}
	return pid
}

// ctrTasks runs `ctr -n caddy-spawn tasks ls` against Caddy's managed
// containerd and returns task ID → status.
func (p *caddyProc) ctrTasks(t *testing.T) map[string]string {
	t.Helper()
	addr := ""
	for _, e := range p.logs.FindAll("managed containerd started", nil) {
		addr, _ = e["address"].(string)
	}
	if addr == "" {
		t.Fatal("no managed containerd address in the log")
	}
	out, err := exec.Command("ctr", "-a", addr, "-n", "caddy-spawn", "tasks", "ls").CombinedOutput()
	if err != nil {
		t.Fatalf("ctr tasks ls: %v\n%s", err, out)
	}
	tasks := map[string]string{}
	for _, line := range strings.Split(string(out), "\n")[1:] {
		if f := strings.Fields(line); len(f) == 3 {
			tasks[f[0]] = f[2]
		}
	}
	return tasks
}

// TestFastPathTaskServerKilled: containerd lists the fast path's request
// containers as tasks (`ctr tasks ls`); SIGKILL of the task server makes the
// request in flight fail cleanly, the supervisor starts a new server, new
// requests are served without restarting Caddy, and nothing of the old
// containers is left: no container, snapshot, process, cgroup, mount,
// FIFO or runtime state.
func TestFastPathTaskServerKilled(t *testing.T) {
	port := freePort(t)
	sites := site(port,
		testfnRoute("/sleep", "sleep", "sleep 1h", "pool 1", "timeout 10m"),
		testfnRoute("/env", "env", "env", "pool 1"))
	p := startCaddy(t, port, sites)
	oldServer := p.taskServerPid(t)

	type result struct {
		status int
		err    error
	}
	inflight := make(chan result, 1)
	go func() {
		resp, err := p.client.Get(p.url("/sleep"))
		if err != nil {
			inflight <- result{err: err}
			return
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		inflight <- result{status: resp.StatusCode}
	}()
	serving := p.waitClaimed(t, 30*time.Second, "/testfn sleep 1h")
	p.waitPoolFull(t, "sleep", 1)
	p.waitPoolFull(t, "env", 1)

	// containerd is the authority: the live request container is its task.
	tasks := p.ctrTasks(t)
	if tasks[serving] != "RUNNING" {
		t.Fatalf("ctr tasks ls: %s is %q, want RUNNING; all: %v", serving, tasks[serving], tasks)
	}
	cs, _, err := p.containerStates()
	if err != nil {
		t.Fatal(err)
	}
	var old []string
	for _, c := range cs {
		old = append(old, c.ID)
		if _, ok := tasks[c.ID]; !ok {
			t.Errorf("container %s has no task in ctr tasks ls: %v", c.ID, tasks)
		}
	}

	if err := syscall.Kill(oldServer, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-inflight:
		if r.err == nil && r.status != http.StatusBadGateway && r.status != http.StatusServiceUnavailable {
			t.Errorf("request in flight when the task server died: status %d, want 502 or 503", r.status)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the request in flight did not end after the task server died")
	}
	p.waitLog(t, 30*time.Second, "task server restarted", nil)
	if pid := p.taskServerPid(t); pid == oldServer {
		t.Fatalf("task server pid still %d after the restart", pid)
	}
	eventually(t, 30*time.Second, func() (bool, string) {
		resp, err := p.client.Get(p.url("/env"))
		if err != nil {
			return false, err.Error()
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK && strings.Contains(string(body), "REQUEST_METHOD=GET"),
			fmt.Sprintf("GET /env after the restart: %d %q", resp.StatusCode, body)
	})
	eventually(t, 30*time.Second, func() (bool, string) {
		return p.noRemainsOf(old)
	})
	p.Stop()
}

// noRemainsOf reports whether nothing of the given containers is left.
func (p *caddyProc) noRemainsOf(ids []string) (bool, string) {
	cs, snaps, err := p.containerStates()
	if err != nil {
		return false, err.Error()
	}
	var left []string
	for _, c := range cs {
		if slices.Contains(ids, c.ID) {
			left = append(left, "container "+c.ID)
		}
	}
	for _, id := range ids {
		for _, s := range snaps {
			if strings.HasPrefix(s, id) {
				left = append(left, "snapshot "+s)
			}
		}
		if cgroupPopulated(id) {
			left = append(left, "processes in the cgroup of "+id)
		}
		for _, root := range []string{"/sys/fs/cgroup/pids", "/sys/fs/cgroup"} {
			if _, err := os.Stat(filepath.Join(root, "caddy-spawn", id)); err == nil {
				left = append(left, "cgroup "+filepath.Join(root, "caddy-spawn", id))
			}
		}
		if m := mountsMentioning(id); len(m) > 0 {
			left = append(left, fmt.Sprint("mounts ", m))
		}
		if procs := processesMentioning(id); len(procs) > 0 {
			left = append(left, fmt.Sprint("processes ", procs))
		}
		// FIFOs (run_dir/fifo/<owner>/<tmp>/<id>-std*), containerd's bundle
		// (state/io.containerd.runtime.v2.task/<ns>/<id>) and crun's
		// state (state/task-server/crun/<id>).
		for _, pattern := range []string{
			filepath.Join(runDir, "fifo", "*", "*", id+"*"),
			filepath.Join(stateDir, "*", "*", id),
			filepath.Join(stateDir, "task-server", "crun", id),
		} {
			if matches, _ := filepath.Glob(pattern); len(matches) > 0 {
				left = append(left, fmt.Sprint("files ", matches))
			}
		}
	}
	return len(left) == 0, fmt.Sprintf("left of the old containers: %v", left)
}
