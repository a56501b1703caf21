//go:build integration

package e2e

import (
	"fmt"
	"io"
	"net/http"
	"syscall"
	"testing"
	"time"
)

// TestManagedContainerdRestart: the managed containerd dies under Caddy;
// the app restarts it, and both the warm and the cold path serve again
// without restarting Caddy.
func TestManagedContainerdRestart(t *testing.T) {
	port := freePort(t)
	p := startCaddy(t, port, site(port,
		testfnRoute("/warm", "rwarm", "status 200", "pool 2"),
		testfnRoute("/cold", "rcold", "status 200", "pool 0"),
		testfnRoute("/slow", "rslow", "sleep 4s", "pool 0", "timeout 1m"),
	))
	p.waitPoolFull(t, "rwarm", 2)
	// A request in flight when containerd dies is not lost: its program
	// runs on, and its exit is waited for again once containerd is back.
	inflight := make(chan int, 1)
	go func() {
		resp, err := p.client.Get(p.url("/slow"))
		if err != nil {
			inflight <- 0
			return
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		inflight <- resp.StatusCode
	}()
	p.waitClaimed(t, 30*time.Second, "/testfn sleep 4s")
	cs, _, err := p.containerStates()
	if err != nil {
		t.Fatal(err)
	}
	var before []string
	for _, c := range cs {
		before = append(before, c.ID)
	}
	old, ok := p.daemonPID()
	if !ok {
		t.Fatal(`no "managed containerd started" log line`)
	}
	if err := syscall.Kill(old, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	p.waitLog(t, 30*time.Second, "managed containerd restarted", nil)
	for _, path := range []string{"/warm", "/cold", "/warm", "/cold"} {
		eventually(t, 30*time.Second, func() (bool, string) {
			resp, body := p.get(t, path)
			return resp.StatusCode == http.StatusOK, fmt.Sprintf("GET %s after the restart: %d %q", path, resp.StatusCode, body)
		})
	}
	p.waitPoolFull(t, "rwarm", 2)
	select {
	case code := <-inflight:
		if code != http.StatusOK {
			t.Errorf("request in flight when containerd died: status %d, want 200 (the program ran on)", code)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("the request in flight did not end after containerd was killed")
	}
	// Every container of before the kill is gone for good: the one that
	// served, the pooled ones (replaced), with all their remains.
	eventually(t, 30*time.Second, func() (bool, string) { return p.noRemainsOf(before) })
}
