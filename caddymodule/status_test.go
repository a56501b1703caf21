package caddymodule

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/caddy-spawn/caddy-spawn/snapshots"
	"github.com/caddy-spawn/caddy-spawn/spawner"
)

// statusTest is a StatusHandler over an app with two routes: "a" (pool 2)
// and "b" (pool 0), neither ready yet.
func statusTest(t *testing.T) (*StatusHandler, *route, *route) {
	t.Helper()
	a := &App{mu: new(sync.Mutex)}
	ra := newRoute("ka", "a", snapshots.Source{Ref: "localhost/fn:1"}, spawner.Function{Name: "a"}, poolSpec{Min: 2, Max: 2})
	rb := newRoute("kb", "b", snapshots.Source{Ref: "localhost/fn:1"}, spawner.Function{Name: "b"}, poolSpec{})
	a.register(ra)
	a.register(rb)
	thisNode.draining.Store(false)
	t.Cleanup(func() { thisNode.draining.Store(false) })
	return &StatusHandler{app: a}, ra, rb
}

// makeReady gives r an (unstarted) pool and tells it it held n idle.
func makeReady(r *route, n int) {
	r.warm = spawner.NewPool(spawner.PoolConfig[*spawner.Instance]{Min: r.pool.Min, Max: r.pool.Max})
	r.noteIdle(n)
}

func getStatus(t *testing.T, s *StatusHandler) nodeStatus {
	t.Helper()
	rec := httptest.NewRecorder()
	if err := s.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/status", nil), nil); err != nil {
		t.Fatal(err)
	}
	var st nodeStatus
	if err := json.Unmarshal(rec.Body.Bytes(), &st); err != nil || rec.Code != http.StatusOK {
		t.Fatalf("GET /status: %d %q: %v", rec.Code, rec.Body, err)
	}
	return st
}

func getReady(t *testing.T, s *StatusHandler) int {
	t.Helper()
	rec := httptest.NewRecorder()
	if err := s.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/ready", nil), nil); err != nil {
		t.Fatal(err)
	}
	return rec.Code
}

// TestStatusReadiness: the node is ready once every route's image is
// ready and its pool was full once, stays ready when pools empty under
// load, and stops being ready when it drains.
func TestStatusReadiness(t *testing.T) {
	s, ra, rb := statusTest(t)
	if st := getStatus(t, s); st.Ready || st.Routes["a"].Ready || st.Routes["a"].Target != 2 || len(st.Routes) != 2 {
		t.Errorf("before any image is ready: %+v, want not ready, route a target 2", st)
	}
	if code := getReady(t, s); code != http.StatusServiceUnavailable {
		t.Errorf("GET /ready before: %d, want 503", code)
	}
	makeReady(rb, 0) // pool 0: ready with its image
	makeReady(ra, 1) // 1 of 2
	if st := getStatus(t, s); st.Ready || st.Routes["a"].Ready || !st.Routes["b"].Ready {
		t.Errorf("route a's pool at 1 of 2: %+v, want a (so the node) not ready, b ready", st)
	}
	ra.noteIdle(2)
	if st := getStatus(t, s); !st.Ready || !st.Routes["a"].Ready {
		t.Errorf("every pool full once: %+v, want ready", st)
	}
	ra.noteIdle(0)
	if code := getReady(t, s); code != http.StatusOK {
		t.Errorf("GET /ready after the pool emptied again: %d, want 200 (full once is enough)", code)
	}
	thisNode.draining.Store(true)
	if st := getStatus(t, s); st.Ready || !st.Draining {
		t.Errorf("draining: %+v, want draining and not ready", st)
	}
	if code := getReady(t, s); code != http.StatusServiceUnavailable {
		t.Errorf("GET /ready while draining: %d, want 503", code)
	}
}

// TestStatusDrain: POST /drain answers when no spawn request is in flight
// any more (200), or at its timeout (503); only loopback clients may
// drain.
func TestStatusDrain(t *testing.T) {
	s, _, _ := statusTest(t)
	leave := thisNode.enter()
	answered := make(chan *httptest.ResponseRecorder, 1)
	go func() {
		rec := httptest.NewRecorder()
		req := httptest.NewRequest(http.MethodPost, "/drain?timeout=30s", nil)
		req.RemoteAddr = "127.0.0.1:40000"
		if err := s.ServeHTTP(rec, req, nil); err != nil {
			t.Error(err)
		}
		answered <- rec
	}()
	deadline := time.Now().Add(10 * time.Second)
	for !thisNode.draining.Load() && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	select {
	case rec := <-answered:
		t.Fatalf("POST /drain answered %d with a request in flight", rec.Code)
	case <-time.After(100 * time.Millisecond):
	}
	leave()
	select {
	case rec := <-answered:
		var st nodeStatus
		if rec.Code != http.StatusOK || json.Unmarshal(rec.Body.Bytes(), &st) != nil || !st.Draining || st.Inflight != 0 {
			t.Errorf("POST /drain: %d %q, want 200 with draining and 0 in flight", rec.Code, rec.Body)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("POST /drain did not answer after the last request ended")
	}

	defer thisNode.enter()()
	rec := httptest.NewRecorder()
	req := httptest.NewRequest(http.MethodPost, "/drain?timeout=50ms", nil)
	req.RemoteAddr = "[::1]:40000"
	if err := s.ServeHTTP(rec, req, nil); err != nil || rec.Code != http.StatusServiceUnavailable {
		t.Errorf("POST /drain with a request stuck: %d, %v; want 503 at the timeout", rec.Code, err)
	}

	for _, tc := range []struct {
		name, remote, target string
		status               int
	}{
		{"not loopback", "198.18.0.5:40000", "/drain", http.StatusForbidden},
		{"bad timeout", "127.0.0.1:1", "/drain?timeout=soon", http.StatusBadRequest},
	} {
		req := httptest.NewRequest(http.MethodPost, tc.target, nil)
		req.RemoteAddr = tc.remote
		err := s.ServeHTTP(httptest.NewRecorder(), req, nil)
		if he, ok := err.(caddyhttp.HandlerError); !ok || he.StatusCode != tc.status {
			t.Errorf("%s: %v, want status %d", tc.name, err, tc.status)
		}
	}
}

// TestStatusPassesOn: other paths go to the next handler; the status
// paths refuse other methods.
func TestStatusPassesOn(t *testing.T) {
	s, _, _ := statusTest(t)
	called := false
	next := caddyhttp.HandlerFunc(func(http.ResponseWriter, *http.Request) error { called = true; return nil })
	if err := s.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, "/metrics", nil), next); err != nil || !called {
		t.Errorf("GET /metrics: next called %t, err %v", called, err)
	}
	err := s.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, "/drain", nil), next)
	if he, ok := err.(caddyhttp.HandlerError); !ok || he.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("GET /drain: %v, want 405", err)
	}
}

func TestStatusUnmarshalCaddyfile(t *testing.T) {
	for _, tc := range []struct {
		name, input string
		wantErr     bool
	}{
		{"bare", "spawn_status", false},
		{"argument", "spawn_status now", true},
		{"block", "spawn_status {\n\tfoo\n}", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := new(StatusHandler).UnmarshalCaddyfile(caddyfile.NewTestDispenser(tc.input))
			if (err != nil) != tc.wantErr {
				t.Errorf("err = %v, want error %t", err, tc.wantErr)
			}
		})
	}
}
