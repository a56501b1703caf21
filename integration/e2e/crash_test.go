//go:build integration

package e2e

import (
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestCrashRecovery: Caddy killed with SIGKILL mid-request leaves running
// and frozen containers behind (their shims outlive it; its managed
// containerd dies with it). The next start sweeps every one of them —
// thawing the frozen ones first — and leaves no shim, mount or snapshot.
func TestCrashRecovery(t *testing.T) {
	port := freePort(t)
	sites := site(port, testfnRoute("/crash", "crash", "sleep 1h", "pool 2", "timeout 10m"))
	first := startCaddy(t, port, sites)

	go func() {
		resp, err := first.client.Get(first.url("/crash"))
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	}()
	serving := first.waitClaimed(t, 30*time.Second, "/testfn sleep 1h")
	first.waitPoolFull(t, "crash", 2)
	cs, snaps, err := first.containerStates()
	if err != nil {
		t.Fatal(err)
	}
	var old []string
	for _, c := range cs {
		old = append(old, c.ID)
	}
	if !slices.Contains(old, serving) || len(old) < 3 {
		t.Fatalf("before the crash: containers %v, want the serving one %s and 2 pooled", old, serving)
	}
	t.Logf("before the crash: containers %v, snapshots %d", old, len(snaps))

	// SIGKILL Caddy alone (not its process group): no shutdown code runs.
	if err := syscall.Kill(first.proc.Pid(), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-first.proc.Exited()
	first.ctrd = nil // its client talked to the daemon that just died
	// On the stock path the shims outlive Caddy; on the fast path the task
	// server dies with it, and the containers' processes, cgroups and
	// rootfs mounts are what is left.
	_, fast := first.logs.Find("fast path: task server started", nil)
	eventually(t, 10*time.Second, func() (bool, string) {
		var left []string
		for _, id := range old {
			if fast {
				if cgroupPopulated(id) && len(mountsMentioning(id)) > 0 {
					left = append(left, id)
				}
			} else if procs := processesMentioning(id); len(procs) > 0 {
				left = append(left, id)
			}
		}
		return len(left) == len(old), fmt.Sprintf("containers alive for %v of %v (fast path: %v): the crash should leave them", left, old, fast)
	})

	second := startCaddy(t, port, sites)
	second.waitPoolFull(t, "crash", 2)
	eventually(t, 30*time.Second, func() (bool, string) {
		cs, snaps, err := second.containerStates()
		if err != nil {
			return false, err.Error()
		}
		var left []string
		for _, c := range cs {
			if slices.Contains(old, c.ID) {
				left = append(left, c.ID)
			}
		}
		for _, s := range snaps {
			for _, id := range old {
				if strings.HasPrefix(s, id) {
					left = append(left, s)
				}
			}
		}
		for _, id := range old {
			if procs := processesMentioning(id); len(procs) > 0 {
				left = append(left, fmt.Sprint(procs))
			}
			if m := mountsMentioning(id); len(m) > 0 {
				left = append(left, fmt.Sprint(m))
			}
			if cgroupPopulated(id) {
				left = append(left, "processes in the cgroup of "+id)
			}
		}
		return len(left) == 0, fmt.Sprintf("left from before the crash: %v", left)
	})
	if _, ok := second.logs.Find("swept leftovers", nil); !ok {
		t.Error(`no "swept leftovers" log line after restart`)
	}
	second.Stop()
}

// mountsMentioning returns the mount points whose path contains s (a
// container ID appears in its rootfs mount point).
func mountsMentioning(s string) []string {
	var out []string
	for _, mp := range mountsUnder("/") {
		if strings.Contains(mp, s) {
			out = append(out, mp)
		}
	}
	return out
}

// cgroupPopulated reports whether the container's pids cgroup (cgroup v1)
// or its unified cgroup (v2) still holds processes.
func cgroupPopulated(id string) bool {
	for _, f := range []string{
		"/sys/fs/cgroup/pids/caddy-spawn/" + id + "/cgroup.procs",
		"/sys/fs/cgroup/caddy-spawn/" + id + "/cgroup.procs",
	} {
		if b, err := os.ReadFile(f); err == nil && len(strings.TrimSpace(string(b))) > 0 {
			return true
		}
	}
	return false
}
