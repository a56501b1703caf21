package caddymodule

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/caddy-spawn/caddy-spawn/spawner"
)

func TestLimitedBody(t *testing.T) {
	for _, tc := range []struct {
		name    string
		body    string
		limit   int64
		oneByte bool // read through iotest.OneByteReader
		want    string
		wantErr error
	}{
		{name: "under the limit", body: "hello", limit: 10, want: "hello"},
		{name: "exactly the limit", body: "hello", limit: 5, want: "hello"},
		{name: "exactly the limit, byte by byte", body: "hello", limit: 5, oneByte: true, want: "hello"},
		{name: "one byte over", body: "hello!", limit: 5, want: "hello", wantErr: errBodyTooLarge},
		{name: "one byte over, byte by byte", body: "hello!", limit: 5, oneByte: true, want: "hello", wantErr: errBodyTooLarge},
		{name: "far over", body: strings.Repeat("x", 100_000), limit: 1000, want: strings.Repeat("x", 1000), wantErr: errBodyTooLarge},
		{name: "empty body", body: "", limit: 1, want: ""},
		{name: "limit of one byte", body: "ab", limit: 1, want: "a", wantErr: errBodyTooLarge},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var r io.Reader = strings.NewReader(tc.body)
			if tc.oneByte {
				r = iotest.OneByteReader(r)
			}
			var out bytes.Buffer
			buf := make([]byte, 4096)
			_, err := io.CopyBuffer(writerOnly{&out}, &limitedBody{r: r, left: tc.limit}, buf)
			if !errors.Is(err, tc.wantErr) {
				t.Errorf("error %v, want %v", err, tc.wantErr)
			}
			if out.String() != tc.want {
				t.Errorf("passed %d bytes %.20q, want %d bytes %.20q", out.Len(), out.String(), len(tc.want), tc.want)
			}
		})
	}
}

func TestDescribeExit(t *testing.T) {
	for _, tc := range []struct {
		code uint32
		want string
	}{
		{0, "exit code 0"},
		{3, "exit code 3"},
		{128, "exit code 128"},
		{137, "exit code 137: killed by signal 9 (killed)"},
		{143, "exit code 143: killed by signal 15 (terminated)"},
		{255, "exit code 255"},
	} {
		if got := describeExit(tc.code); got != tc.want {
			t.Errorf("describeExit(%d) = %q, want %q", tc.code, got, tc.want)
		}
	}
}

func TestParseUser(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    spawner.User
		wantErr string
	}{
		{in: "65534", want: spawner.User{UID: 65534, GID: 65534}},
		{in: "1000:100", want: spawner.User{UID: 1000, GID: 100}},
		{in: "0", want: spawner.User{}},
		{in: "0:65534", want: spawner.User{GID: 65534}},
		{in: "4294967294:4294967294", want: spawner.User{UID: 4294967294, GID: 4294967294}},
		{in: "", wantErr: `uid "" must be a number`},
		{in: "nobody", wantErr: `uid "nobody" must be a number from 0 to 4294967294 (names are not looked up)`},
		{in: "1000:", wantErr: `gid "" must be`},
		{in: "1000:users", wantErr: `gid "users" must be`},
		{in: "4294967295", wantErr: `uid "4294967295" must be`},
		{in: "1:4294967295", wantErr: `gid "4294967295" must be`},
		{in: "+1", wantErr: `uid "+1" must be`},
		{in: " 1", wantErr: `uid " 1" must be`},
		{in: "0x10", wantErr: `uid "0x10" must be`},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got, err := parseUser(tc.in)
			switch {
			case tc.wantErr != "":
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Errorf("parseUser(%q) = %+v, %v; want an error containing %q", tc.in, got, err, tc.wantErr)
				}
			case err != nil:
				t.Errorf("parseUser(%q): %v", tc.in, err)
			case *got != tc.want:
				t.Errorf("parseUser(%q) = %+v, want %+v", tc.in, *got, tc.want)
			}
		})
	}
}

// TestContentLengthOverLimit checks that a body announced too large is
// refused before the handler touches its route: no container is started.
func TestContentLengthOverLimit(t *testing.T) {
	if err := initMetrics(prometheus.NewRegistry()); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name       string
		limit      *int64
		length     int64
		wantStatus int // 0: passes the check (and then needs a route)
	}{
		{name: "over the default", length: defaultMaxRequestBody + 1, wantStatus: http.StatusRequestEntityTooLarge},
		{name: "over a route's limit", limit: ptr(int64(1000)), length: 1001, wantStatus: http.StatusRequestEntityTooLarge},
		{name: "at the limit", limit: ptr(int64(1000)), length: 1000},
		{name: "unlimited", limit: ptr(int64(0)), length: 1 << 40},
		{name: "unknown length", limit: ptr(int64(1000)), length: -1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// No route: a request that gets past the check panics on it.
			h := &Handler{Name: "fn", MaxRequestBody: tc.limit}
			req := httptest.NewRequest(http.MethodPost, "/", strings.NewReader("x"))
			req.ContentLength = tc.length
			var err error
			panicked := func() (p bool) {
				defer func() { p = recover() != nil }()
				err = h.ServeHTTP(httptest.NewRecorder(), req, nil)
				return false
			}()
			if tc.wantStatus == 0 {
				if !panicked && err != nil {
					var he caddyhttp.HandlerError
					if errors.As(err, &he) && he.StatusCode == http.StatusRequestEntityTooLarge {
						t.Errorf("refused with 413: %v", err)
					}
				}
				return
			}
			if panicked {
				t.Fatalf("got past the body check, want %d", tc.wantStatus)
			}
			var he caddyhttp.HandlerError
			if !errors.As(err, &he) || he.StatusCode != tc.wantStatus {
				t.Fatalf("error %v, want a HandlerError with status %d", err, tc.wantStatus)
			}
			if !strings.Contains(err.Error(), "over max_request_body") {
				t.Errorf("error %q does not name max_request_body", err)
			}
		})
	}
}

// TestRouteKeyPullAlways checks that a route with pull_policy always gets a
// new key at every load, so that a reload pulls again instead of keeping
// the route (and the digest it pinned) of the previous config.
func TestRouteKeyPullAlways(t *testing.T) {
	h := &Handler{Image: "localhost/fn:1", Name: "fn", Pool: ptr(2), PullPolicy: "always", app: &App{}}
	if a, b := h.routeKey(), h.routeKey(); a == b {
		t.Errorf("pull_policy always: two loads share route key %s", a)
	}
	h.PullPolicy = "missing"
	if a, b := h.routeKey(), h.routeKey(); a != b {
		t.Errorf("pull_policy missing: keys %s and %s differ for the same config", a, b)
	}
}

func TestRouteKey(t *testing.T) {
	base := func() *Handler {
		return &Handler{Image: "localhost/fn:1", Name: "fn", Pool: ptr(2), Network: networkNone, app: &App{}}
	}
	key := base().routeKey()
	for _, tc := range []struct {
		name        string
		modify      func(h *Handler)
		wantChanged bool
	}{
		{name: "cpus", modify: func(h *Handler) { h.CPUs = 2 }, wantChanged: true},
		{name: "nofile", modify: func(h *Handler) { h.Nofile = 4096 }, wantChanged: true},
		{name: "network", modify: func(h *Handler) { h.Network = networkHost }, wantChanged: true},
		{name: "read_only", modify: func(h *Handler) { h.ReadOnly = true }, wantChanged: true},
		{name: "user", modify: func(h *Handler) { h.user = &spawner.User{UID: 1, GID: 1} }, wantChanged: true},
		{name: "memory", modify: func(h *Handler) { h.Memory = 64 << 20 }, wantChanged: true},
		// Enforced by the handler: the containers stay the same.
		{name: "max_request_body", modify: func(h *Handler) { h.MaxRequestBody = ptr(int64(1)) }},
		{name: "max_response_bytes", modify: func(h *Handler) { h.MaxResponseBytes = 1 }},
		{name: "pull_policy never", modify: func(h *Handler) { h.PullPolicy = "never" }, wantChanged: true},
		// Credentials don't change the containers.
		{name: "registry_auth", modify: func(h *Handler) { h.RegistryAuth = &RegistryAuth{Username: "u", Password: "p"} }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := base()
			tc.modify(h)
			if changed := h.routeKey() != key; changed != tc.wantChanged {
				t.Errorf("route key changed: %t, want %t", changed, tc.wantChanged)
			}
		})
	}
}
