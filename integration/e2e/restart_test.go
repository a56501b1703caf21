//go:build integration

package e2e

import (
	"fmt"
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
	))
	p.waitPoolFull(t, "rwarm", 2)
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
}
