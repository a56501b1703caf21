//go:build integration

package e2e

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// usernsHostID is spawner.DefaultUsernsHostID.
const usernsHostID = 0x70000000

// TestUserns checks the opt-in user namespace on whatever path the suite
// runs: the kernel's mapping as the function sees it, the image's files
// and the writable layer owned by the container's root, the host seeing an
// unprivileged user, the hardening kept, the default left alone, a refused
// combination, and no id-mapped view left after a crash or a stop.
func TestUserns(t *testing.T) {
	port := freePort(t)
	sites := site(port,
		// Pooled: frozen and thawed in its user namespace, then refilled.
		testfnRoute("/userns", "userns", "userns", "userns", "pool 1"),
		testfnRoute("/userns-cold", "userns-cold", "userns", "userns", "pool 0"),
		testfnRoute("/userns-range", "userns-range", "userns", "userns 2000000000", "pool 0"),
		testfnRoute("/plain", "plain", "userns", "pool 0"),
		testfnRoute("/userns-security", "userns-security", "security", "userns", "pool 0"),
		testfnRoute("/userns-nobody", "userns-nobody", "id", "userns", "user 65534", "pool 0"),
		testfnRoute("/userns-ro", "userns-ro", "write /probe /tmp/probe", "userns", "read_only", "pool 0"),
		testfnRoute("/userns-sleep", "userns-sleep", "sleep 1h", "userns", "pool 0", "timeout 10m"),
	)
	p := startCaddy(t, port, sites)
	report := func(hostID uint32) string {
		return fmt.Sprintf("uid_map=0 %d 65536\ngid_map=0 %d 65536\nuid=0 gid=0\nimage_file=0:0\nwrite=ok written_file=0:0\n", hostID, hostID)
	}

	t.Run("mapping, image files and writable layer", func(t *testing.T) {
		for i := range 3 { // warm, then refills
			if got := p.okBody(t, "/userns"); got != report(usernsHostID) {
				t.Errorf("pooled request %d: %q, want %q", i, got, report(usernsHostID))
			}
		}
		if got := p.okBody(t, "/userns-cold"); got != report(usernsHostID) {
			t.Errorf("cold: %q, want %q", got, report(usernsHostID))
		}
		if got := p.okBody(t, "/userns-range"); got != report(2000000000) {
			t.Errorf("userns 2000000000: %q, want %q", got, report(2000000000))
		}
		want := "uid_map=0 0 4294967295\ngid_map=0 0 4294967295\nuid=0 gid=0\nimage_file=0:0\nwrite=ok written_file=0:0\n"
		if got := p.okBody(t, "/plain"); got != want {
			t.Errorf("without userns: %q, want the host's own IDs %q", got, want)
		}
	})

	t.Run("hardening kept", func(t *testing.T) {
		checkUnprivileged(t, p.okBody(t, "/userns-security"))
		if got := p.okBody(t, "/userns-nobody"); got != "uid=65534 gid=65534 groups=[65534]\n" {
			t.Errorf("userns + user 65534: %q", got)
		}
		want := "/probe: error: open /probe: read-only file system\n/tmp/probe: ok\n"
		if got := p.okBody(t, "/userns-ro"); got != want {
			t.Errorf("userns + read_only: %q, want %q", got, want)
		}
	})

	t.Run("the host sees an unprivileged user", func(t *testing.T) {
		// The request runs until the crash below ends it.
		go func() {
			resp, err := p.client.Get(p.url("/userns-sleep"))
			if err == nil {
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		}()
		p.waitClaimed(t, 30*time.Second, "/testfn sleep 1h")
		eventually(t, 10*time.Second, func() (bool, string) {
			return len(sleepersOfUID(usernsHostID)) > 0, fmt.Sprintf("no process of host uid %d runs the function", usernsHostID)
		})
		if root := sleepersOfUID(0); len(root) > 0 {
			t.Errorf("the function runs as host root too: pids %v", root)
		}
	})

	t.Run("refused with network host", func(t *testing.T) {
		dir := t.TempDir()
		cf := filepath.Join(dir, "Caddyfile")
		bad := caddyfile(site(port, testfnRoute("/bad", "bad", "id", "userns", "network host")))
		if err := os.WriteFile(cf, []byte(bad), 0o600); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(caddyBin, "validate", "--config", cf, "--adapter", "caddyfile").CombinedOutput()
		if err == nil || !strings.Contains(string(out), "userns: can't be combined with network host") {
			t.Errorf("caddy validate: %v, output %s; want a failure naming userns", err, out)
		}
	})

	t.Run("crash leaves nothing after the restart", func(t *testing.T) {
		views := idmapViews()
		_, fast := p.logs.Find("fast path: task server started", nil)
		if fast && len(views) == 0 {
			t.Fatalf("fast path: no id-mapped layer view is mounted while userns containers live")
		}
		if err := syscall.Kill(p.proc.Pid(), syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		<-p.proc.Exited()
		p.ctrd = nil
		second := startCaddy(t, port, sites)
		if got := second.okBody(t, "/userns"); got != report(usernsHostID) {
			t.Errorf("after the restart: %q, want %q", got, report(usernsHostID))
		}
		eventually(t, 30*time.Second, func() (bool, string) {
			var left []string
			for _, v := range idmapViews() {
				if slices.Contains(views, v) {
					left = append(left, v)
				}
			}
			return len(left) == 0, fmt.Sprintf("id-mapped views of the killed task server still mounted: %v", left)
		})
		// second's Stop (at cleanup) checks that no mount at all is left
		// under the managed directories, views included.
	})
}

// idmapViews lists the task servers' id-mapped layer views now mounted.
func idmapViews() []string {
	var out []string
	for _, m := range mountsUnder(stateDir, runDir) {
		if strings.Contains(m, "/idmap/view-") {
			out = append(out, m)
		}
	}
	return out
}

// sleepersOfUID returns the pids of testfn's "sleep" mode whose real uid
// on the host is uid.
func sleepersOfUID(uid uint32) []int {
	var out []int
	for _, pr := range processArgs("testfn") {
		if got, ok := hostUID(pr.PID); ok && got == uid && slices.Contains(pr.Args, "sleep") {
			out = append(out, pr.PID)
		}
	}
	return out
}

// hostUID is pid's real uid as the host sees it; false if it can't be
// read (the process is gone).
func hostUID(pid int) (uint32, bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, false
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "Uid:"); ok {
			var real uint32
			if _, err := fmt.Sscan(rest, &real); err == nil {
				return real, true
			}
		}
	}
	return 0, false
}
