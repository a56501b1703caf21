//go:build integration

package e2e

import (
	"context"
	"fmt"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/containerd/containerd/v2/client"

	"github.com/caddy-spawn/caddy-spawn/spawner"
)

// TestContainerdOutage: with an external containerd (address mode), a
// request while containerd is down gets 503 with Retry-After, and service
// comes back on its own once containerd is back — no Caddy restart.
func TestContainerdOutage(t *testing.T) {
	cfg := spawner.DaemonConfig{
		Root: filepath.Join(t.TempDir(), "ext-root"),
		// Not under stateDir: that one is the managed daemon's, which the
		// harness checks is gone after every Caddy.
		State: "/run/caddy-spawn-e2e-ext/" + randHex(8),
	}
	start := func() *spawner.Daemon {
		t.Helper()
		d, err := spawner.StartDaemon(context.Background(), cfg, zap.NewNop())
		if err != nil {
			t.Fatalf("starting external containerd: %v", err)
		}
		return d
	}
	d := start()
	defer func() { _ = d.Stop(context.Background()) }()

	port := freePort(t)
	config := fmt.Sprintf(`{
	admin %s
	spawn {
		address %s
		run_dir %s
	}
}

%s
`, adminAddr, cfg.Address(), runDir+"-ext", site(port, testfnRoute("/ok", "outage", "status 200", "pool 0")))
	p := launchCaddy(t, port, config)
	p.socket = cfg.Address()
	t.Cleanup(p.Stop)
	if err := p.waitServing(startTimeout); err != nil {
		p.dumpLogs()
		t.Fatalf("caddy did not start: %v", err)
	}
	if resp, body := p.get(t, "/ok"); resp.StatusCode != http.StatusOK {
		t.Fatalf("before the outage: status %d body %q", resp.StatusCode, body)
	}

	if err := d.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	resp, body := p.get(t, "/ok")
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("containerd down: status %d body %q, want 503", resp.StatusCode, body)
	}
	if resp.Header.Get("Retry-After") == "" {
		t.Error("containerd down: 503 without Retry-After")
	}

	d = start()
	eventually(t, 30*time.Second, func() (bool, string) {
		resp, body := p.get(t, "/ok")
		return resp.StatusCode == http.StatusOK, fmt.Sprintf("after containerd came back: status %d body %q", resp.StatusCode, body)
	})
	p.Stop()

	// Caddy swept everything of ours from the containerd it used.
	c, err := client.New(cfg.Address(), client.WithDefaultNamespace(namespace))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctrs, err := c.Containers(context.Background(), managedFilter)
	if err != nil {
		t.Fatal(err)
	}
	if len(ctrs) != 0 {
		t.Errorf("%d containers of ours left in the external containerd after Caddy stopped", len(ctrs))
	}
}
