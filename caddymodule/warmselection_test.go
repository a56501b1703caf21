package caddymodule

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"
)

// fleetPool is an upstream pool of n nodes, 198.18.0.1:8080 and on.
func fleetPool(n int) reverseproxy.UpstreamPool {
	pool := make(reverseproxy.UpstreamPool, n)
	for i := range pool {
		pool[i] = &reverseproxy.Upstream{Host: new(reverseproxy.Host), Dial: "198.18.0." + strconv.Itoa(i+1) + ":8080"}
	}
	return pool
}

// homeOrder is the pool's dial addresses by rendezvous weight for route.
func homeOrder(pool reverseproxy.UpstreamPool, route string) []string {
	cands := make([]candidate, len(pool))
	for i, up := range pool {
		cands[i] = candidate{up: up, weight: rendezvousWeight(route, up.Dial)}
	}
	sortByWeight(cands)
	out := make([]string, len(cands))
	for i, c := range cands {
		out[i] = c.up.Dial
	}
	return out
}

// report is a ready node's status with idle containers per route.
func report(idle map[string]int) nodeStatus {
	st := nodeStatus{Ready: true, Routes: map[string]routeStatus{}}
	for r, n := range idle {
		st.Routes[r] = routeStatus{Idle: n, Target: n, Ready: true}
	}
	return st
}

// TestWarmPickFallback: with no reports the policy is a rendezvous hash:
// a route always goes to its first home node, different routes spread,
// and removing a node that is not a route's home leaves it alone.
func TestWarmPickFallback(t *testing.T) {
	pool := fleetPool(5)
	w := newWarmReports(time.Second)
	now := time.Now()
	homes := map[string]bool{}
	for _, route := range []string{"a", "b", "c", "d", "e", "f", "g", "h"} {
		want := homeOrder(pool, route)[0]
		for range 3 {
			if got := w.pick(pool, route, 2, nil, now); got.Dial != want {
				t.Fatalf("route %s: picked %s, want its first home %s", route, got.Dial, want)
			}
		}
		homes[want] = true
		// Without a node that is not among its top two, the route stays.
		var smaller reverseproxy.UpstreamPool
		last := homeOrder(pool, route)[4]
		for _, up := range pool {
			if up.Dial != last {
				smaller = append(smaller, up)
			}
		}
		if got := w.pick(smaller, route, 2, nil, now); got.Dial != want {
			t.Errorf("route %s without %s: picked %s, want %s", route, last, got.Dial, want)
		}
	}
	if len(homes) < 2 {
		t.Errorf("8 routes all homed on %v: no spread", homes)
	}
	if got := w.pick(nil, "a", 2, nil, now); got != nil {
		t.Errorf("empty pool: picked %v, want nil", got)
	}
}

// TestWarmPickWarm: a request goes to the home node with the most warm
// containers, counted down per request sent; when the home set has none,
// to another node reporting some; when none has any, back home.
func TestWarmPickWarm(t *testing.T) {
	pool := fleetPool(3)
	order := homeOrder(pool, "a")
	w := newWarmReports(time.Minute)
	now := time.Now()
	w.see(pool, now)
	w.set(order[0], report(map[string]int{"a": 1}), now)
	w.set(order[1], report(map[string]int{"a": 2}), now)
	w.set(order[2], report(map[string]int{"a": 3, "b": 1}), now)

	var got []string
	for range 7 {
		up := w.pick(pool, "a", 2, nil, now)
		w.sent(up.Dial, "a")
		got = append(got, up.Dial)
	}
	// Home nodes first, the warmer one first (ties to the higher weight);
	// then the spill-over node's 3; then, nothing warm, the first home.
	want := []string{order[1], order[0], order[1], order[2], order[2], order[2], order[0]}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("picks %v, want %v (home %v)", got, want, order)
		}
	}
	// A new report starts the count again.
	w.set(order[1], report(map[string]int{"a": 1}), now)
	if up := w.pick(pool, "a", 2, nil, now); up.Dial != order[1] {
		t.Errorf("after a fresh report of 1 idle on %s: picked %s", order[1], up.Dial)
	}
}

// TestWarmPickStanding: nodes that report not ready or draining get
// nothing while another is ready; nodes without a fresh report (never
// polled, failed poll, expired) only when no node is ready; when all
// refuse, everyone takes part.
func TestWarmPickStanding(t *testing.T) {
	pool := fleetPool(3)
	order := homeOrder(pool, "a")
	now := time.Now()
	for _, tc := range []struct {
		name    string
		reports map[string]*nodeStatus // by order index; nil: none
		forget  int                    // index to forget after set, or -1
		age     time.Duration
		want    []string // allowed picks
	}{
		{
			name: "only the ready one",
			reports: map[string]*nodeStatus{
				order[0]: {Ready: false}, order[1]: {Ready: true, Draining: true}, order[2]: {Ready: true},
			},
			forget: -1, want: []string{order[2]},
		},
		{
			name:    "unknown nodes lose to a ready one",
			reports: map[string]*nodeStatus{order[2]: {Ready: true}},
			forget:  -1, want: []string{order[2]},
		},
		{
			name: "a failed poll makes a node unknown",
			reports: map[string]*nodeStatus{
				order[0]: {Ready: true}, order[1]: {Ready: true}, order[2]: {Ready: false},
			},
			forget: 0, want: []string{order[1]},
		},
		{
			name:    "expired reports: back to the hash",
			reports: map[string]*nodeStatus{order[2]: {Ready: true}},
			forget:  -1, age: 2 * time.Minute, want: []string{order[0]},
		},
		{
			name:    "none ready, some unknown: the unknown",
			reports: map[string]*nodeStatus{order[0]: {Draining: true}},
			forget:  -1, want: []string{order[1]},
		},
		{
			name: "all refuse: the hash over all",
			reports: map[string]*nodeStatus{
				order[0]: {Draining: true}, order[1]: {}, order[2]: {},
			},
			forget: -1, want: []string{order[0]},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newWarmReports(time.Minute)
			w.see(pool, now)
			for dial, st := range tc.reports {
				w.set(dial, *st, now.Add(-tc.age))
			}
			if tc.forget >= 0 {
				w.forget(order[tc.forget])
			}
			up := w.pick(pool, "a", 2, nil, now)
			if up == nil || up.Dial != tc.want[0] {
				t.Errorf("picked %v, want %s (home order %v)", up, tc.want[0], order)
			}
		})
	}
}

// TestWarmPoll: the policy polls each node's status endpoint on
// status_port of the upstream's host, and forgets a node that stops
// answering.
func TestWarmPoll(t *testing.T) {
	st := report(map[string]int{"a": 4})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/status" {
			http.NotFound(w, r)
			return
		}
		_ = json.NewEncoder(w).Encode(st)
	}))
	_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
	p, _ := strconv.Atoi(port)
	s := &WarmSelection{StatusPort: p, PollInterval: caddy.Duration(20 * time.Millisecond), logger: zap.NewNop()}
	s.setDefaults()
	if err := s.Validate(); err != nil {
		t.Fatal(err)
	}
	s.reports = newWarmReports(time.Duration(s.ReportTTL))
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	go s.pollLoop(ctx)

	pool := reverseproxy.UpstreamPool{{Host: new(reverseproxy.Host), Dial: "127.0.0.1:1"}}
	s.reports.see(pool, time.Now())
	warm := func() int {
		s.reports.mu.Lock()
		defer s.reports.mu.Unlock()
		n := s.reports.nodes["127.0.0.1:1"]
		if n.report == nil {
			return -1
		}
		return n.report.Routes["a"].Idle
	}
	waitFor(t, func() bool { return warm() == 4 }, "a report of 4 idle")
	srv.Close()
	waitFor(t, func() bool { return warm() == -1 }, "the report dropped after the node went away")
}

func waitFor(t *testing.T, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestWarmUnmarshalCaddyfile(t *testing.T) {
	for _, tc := range []struct {
		name, input string
		want        WarmSelection
		wantErr     string
	}{
		{name: "bare", input: "spawn_warm"},
		{
			name:  "all",
			input: "spawn_warm {\n\troute {http.request.header.X-Fn}\n\thome 3\n\tstatus_port 9181\n\tpoll_interval 200ms\n\treport_ttl 1s\n}",
			want: WarmSelection{
				Route: "{http.request.header.X-Fn}", Home: 3, StatusPort: 9181,
				PollInterval: caddy.Duration(200 * time.Millisecond), ReportTTL: caddy.Duration(time.Second),
			},
		},
		{name: "argument", input: "spawn_warm 3", wantErr: "wrong argument count"},
		{name: "unknown", input: "spawn_warm {\n\tfoo 1\n}", wantErr: `unknown subdirective "foo"`},
		{name: "duplicate", input: "spawn_warm {\n\thome 1\n\thome 2\n}", wantErr: `duplicate subdirective "home"`},
		{name: "home not a number", input: "spawn_warm {\n\thome two\n}", wantErr: "home: not a number"},
		{name: "bad duration", input: "spawn_warm {\n\tpoll_interval soon\n}", wantErr: "poll_interval"},
		{name: "missing value", input: "spawn_warm {\n\thome\n}", wantErr: "wrong argument count"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got WarmSelection
			err := got.UnmarshalCaddyfile(caddyfile.NewTestDispenser(tc.input))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || got.Route != tc.want.Route || got.Home != tc.want.Home || got.StatusPort != tc.want.StatusPort ||
				got.PollInterval != tc.want.PollInterval || got.ReportTTL != tc.want.ReportTTL {
				t.Errorf("got %+v, %v; want %+v", got, err, tc.want)
			}
		})
	}
}

func TestWarmValidate(t *testing.T) {
	for _, tc := range []struct {
		name    string
		s       WarmSelection
		wantErr string
	}{
		{name: "defaults"},
		{name: "home 0 after defaults is 2", s: WarmSelection{Home: 0}},
		{name: "home too big", s: WarmSelection{Home: 65}, wantErr: "home 65"},
		{name: "home negative", s: WarmSelection{Home: -1}, wantErr: "home -1"},
		{name: "status_port", s: WarmSelection{StatusPort: 70000}, wantErr: "status_port 70000"},
		{name: "poll_interval", s: WarmSelection{PollInterval: caddy.Duration(time.Millisecond)}, wantErr: "poll_interval 1ms"},
		{name: "report_ttl", s: WarmSelection{PollInterval: caddy.Duration(time.Second), ReportTTL: caddy.Duration(time.Second)}, wantErr: "report_ttl 1s"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.s.setDefaults()
			err := tc.s.Validate()
			if (err != nil) != (tc.wantErr != "") || (err != nil && !strings.Contains(err.Error(), tc.wantErr)) {
				t.Errorf("Validate = %v, want %q", err, tc.wantErr)
			}
		})
	}
}

// TestWarmSelectRetry: a retry of the same request (same replacer) goes
// to a node it was not sent to yet, the next best; once it was sent to
// every node, any may take it again.
func TestWarmSelectRetry(t *testing.T) {
	pool := fleetPool(3)
	order := homeOrder(pool, "a")
	// A bare replacer has no HTTP placeholders: name the route outright.
	s := &WarmSelection{Route: "a", reports: newWarmReports(time.Minute)}
	s.setDefaults()
	req := httptest.NewRequest(http.MethodGet, "/a/x", nil)
	repl := caddy.NewReplacer()
	req = req.WithContext(context.WithValue(req.Context(), caddy.ReplacerCtxKey, repl))
	var got []string
	for range 4 {
		got = append(got, s.Select(pool, req, nil).Dial)
	}
	want := []string{order[0], order[1], order[2]}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("attempts went to %v, want %v first", got, want)
		}
	}
	// A new request starts afresh.
	req2 := httptest.NewRequest(http.MethodGet, "/a/y", nil)
	req2 = req2.WithContext(context.WithValue(req2.Context(), caddy.ReplacerCtxKey, caddy.NewReplacer()))
	if up := s.Select(pool, req2, nil); up.Dial != order[0] {
		t.Errorf("a new request went to %s, want %s", up.Dial, order[0])
	}
}
