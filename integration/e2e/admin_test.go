//go:build integration

package e2e

import (
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// adminWarning is the spawn app's start-up warning when Caddy runs as root
// with an admin endpoint the host's network reaches (spelled out: the test
// checks the contract, not the code's constant).
const adminWarning = "admin endpoint reachable by every local user while Caddy runs as root: they, and any function on a network host route, can reconfigure Caddy; use a unix socket (admin unix//run/caddy-admin.sock) or admin off"

// TestHostNetworkAdmin: a function on a network host route could rewrite
// Caddy's config through an admin endpoint on TCP, so such a route is
// refused — by `caddy validate` and by a config load through the admin API —
// unless the admin endpoint is a unix socket (or off) or the spawn app's
// host_network_with_tcp_admin accepts the risk. Caddy running as root (as
// here) with a TCP admin endpoint warns at start.
func TestHostNetworkAdmin(t *testing.T) {
	port := freePort(t)
	refusal := fmt.Sprintf(`network: "host" is refused while the admin endpoint listens on TCP (%s): `+
		`a function could rewrite Caddy's config through it; set admin off or a unix socket (admin unix//run/caddy-admin.sock), `+
		`or set the spawn option host_network_with_tcp_admin`, adminAddr)

	t.Run("validate refuses it with a TCP admin endpoint", func(t *testing.T) {
		dir := t.TempDir()
		cfg := filepath.Join(dir, "Caddyfile")
		sites := site(port, testfnRoute("/host", "host-refused", "env", "network host"))
		if err := os.WriteFile(cfg, []byte(caddyfile(sites)), 0o600); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(caddyBin, "validate", "--config", cfg, "--adapter", "caddyfile")
		cmd.Env = append(os.Environ(), "XDG_DATA_HOME="+filepath.Join(dir, "data"), "XDG_CONFIG_HOME="+filepath.Join(dir, "config"))
		out, err := cmd.CombinedOutput()
		if err == nil {
			t.Fatalf("caddy validate accepted a network host route with the admin endpoint on TCP:\n%s", out)
		}
		if !strings.Contains(unquoteJSON(out), refusal) {
			t.Errorf("caddy validate: output does not contain\n%s\ngot:\n%s", refusal, out)
		}
	})

	t.Run("a unix admin socket", func(t *testing.T) {
		sock := filepath.Join(t.TempDir(), "admin.sock")
		// From the host's network the function reaches Caddy's own site.
		route := testfnRoute("/host", "host-unix-admin", fmt.Sprintf("connect 127.0.0.1:%d", port), "pool 0", "network host")
		p := startCaddyConfig(t, port, caddyfileAdmin("unix/"+sock, site(port, route), ""))
		resp, body := p.get(t, "/host")
		if resp.StatusCode != http.StatusOK || string(body) != "connected\n" {
			t.Errorf("GET /host: status %d body %q, want 200 connected", resp.StatusCode, body)
		}
		p.waitLog(t, 0, "admin endpoint started", map[string]string{"address": "unix/" + sock})
		if p.logs.Contains(adminWarning) {
			t.Errorf("warned about the admin endpoint although it is a unix socket")
		}
		p.Stop()
	})

	t.Run("the override", func(t *testing.T) {
		// What the override accepts: the function reaches the admin endpoint.
		route := testfnRoute("/host", "host-override", "connect "+adminAddr, "pool 0", "network host")
		p := startCaddyConfig(t, port, caddyfileWith(site(port, route), "host_network_with_tcp_admin"))
		resp, body := p.get(t, "/host")
		if resp.StatusCode != http.StatusOK || string(body) != "connected\n" {
			t.Errorf("GET /host: status %d body %q, want 200 connected (to the admin endpoint %s)", resp.StatusCode, body, adminAddr)
		}
		p.waitLog(t, 0, adminWarning, map[string]string{"address": "TCP (" + adminAddr + ")"})

		// The same config without the override, loaded through the admin
		// API, is refused; the running one keeps serving.
		req, err := http.NewRequest(http.MethodPost, "http://"+adminAddr+"/load", strings.NewReader(caddyfile(site(port, route))))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "text/caddyfile")
		resp, body = p.do(t, req)
		if resp.StatusCode == http.StatusOK {
			t.Errorf("POST /load of a network host route without the override: status 200, want an error")
		}
		if !strings.Contains(unquoteJSON(body), refusal) {
			t.Errorf("POST /load: error %q does not contain %q", body, refusal)
		}
		if resp, body := p.get(t, "/host"); resp.StatusCode != http.StatusOK {
			t.Errorf("after the refused load: GET /host: status %d body %q, want 200", resp.StatusCode, body)
		}
		p.Stop()
	})
}

// unquoteJSON undoes the escaping of quotes in JSON output (Caddy's log
// lines, the admin API's error objects), so a message can be looked for as
// it reads.
func unquoteJSON(b []byte) string { return strings.ReplaceAll(string(b), `\"`, `"`) }
