//go:build integration

package e2e

import (
	"net/http"
	"testing"
)

// TestHeaderTrust: through a real Caddy, the client's forwarding headers
// and credentials don't reach the program unless configured; the program
// can't forge our Spawn-* fields or send Alt-Svc or a protocol-relative
// Location; PATH_INFO is cleaned.
func TestHeaderTrust(t *testing.T) {
	port := freePort(t)
	p := startCaddy(t, port, site(port,
		testfnRoute("/env/*", "env", "env", "script_name /env", "pool 0"),
		testfnRoute("/auth/*", "auth", "env", "script_name /auth", "pool 0", "pass_authorization"),
		testfnRoute("/forged", "forged", "forged", "pool 0"),
		testfnRoute("/evil-location", "evil", "location //evil.example/x", "pool 0"),
	))

	get := func(path string, h map[string]string) (*http.Response, map[string]string) {
		t.Helper()
		req, err := http.NewRequest(http.MethodGet, p.url(path), nil)
		if err != nil {
			t.Fatal(err)
		}
		for k, v := range h {
			req.Header.Set(k, v)
		}
		resp, body := p.do(t, req)
		return resp, parseEnv(body)
	}
	client := map[string]string{
		"X-Forwarded-For": "10.9.9.9", "Forwarded": "for=10.9.9.9", "X-Real-IP": "10.9.9.9",
		"Authorization": "Basic dXNlcjpwYXNz", "X-Other": "kept",
	}

	t.Run("untrusted client, no pass_authorization", func(t *testing.T) {
		resp, env := get("/env/x", client)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("status %d", resp.StatusCode)
		}
		for _, k := range []string{"HTTP_X_FORWARDED_FOR", "HTTP_FORWARDED", "HTTP_X_REAL_IP", "HTTP_AUTHORIZATION"} {
			if v, ok := env[k]; ok {
				t.Errorf("%s=%q reached the program", k, v)
			}
		}
		if env["REMOTE_ADDR"] != "127.0.0.1" || env["HTTP_X_OTHER"] != "kept" {
			t.Errorf("REMOTE_ADDR %q, HTTP_X_OTHER %q; want 127.0.0.1, kept", env["REMOTE_ADDR"], env["HTTP_X_OTHER"])
		}
	})

	t.Run("pass_authorization", func(t *testing.T) {
		_, env := get("/auth/x", client)
		if env["HTTP_AUTHORIZATION"] != "Basic dXNlcjpwYXNz" {
			t.Errorf("HTTP_AUTHORIZATION %q, want the client's", env["HTTP_AUTHORIZATION"])
		}
		if _, ok := env["HTTP_X_FORWARDED_FOR"]; ok {
			t.Error("X-Forwarded-For from an untrusted client reached the program")
		}
	})

	t.Run("PATH_INFO cleaned", func(t *testing.T) {
		req, err := http.NewRequest(http.MethodGet, p.url("/env/a/./b//c/../d/"), nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, body := p.do(t, req)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("status %d, body %q", resp.StatusCode, body)
		}
		if env := parseEnv(body); env["PATH_INFO"] != "/a/b/d/" {
			t.Errorf("PATH_INFO %q, want /a/b/d/ (cleaned, trailing slash kept)", env["PATH_INFO"])
		}
	})

	t.Run("forged Spawn-* and Alt-Svc dropped", func(t *testing.T) {
		resp, body := p.get(t, "/forged")
		if resp.StatusCode != http.StatusOK || string(body) != "forged\n" {
			t.Fatalf("status %d body %q", resp.StatusCode, body)
		}
		for _, k := range []string{"Spawn-Exit-Code", "Spawn-Error", "Alt-Svc"} {
			if v := resp.Header.Get(k); v != "" {
				t.Errorf("header %s: %q from the program reached the client", k, v)
			}
		}
		if got := resp.Trailer.Get("Spawn-Exit-Code"); got != "3" {
			t.Errorf("trailer Spawn-Exit-Code %q, want the real 3", got)
		}
	})

	t.Run("protocol-relative Location is 502", func(t *testing.T) {
		resp, _ := p.get(t, "/evil-location")
		if resp.StatusCode != http.StatusBadGateway {
			t.Errorf("status %d, want 502", resp.StatusCode)
		}
		if loc := resp.Header.Get("Location"); loc != "" {
			t.Errorf("Location %q sent", loc)
		}
	})
}
