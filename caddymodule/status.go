package caddymodule

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

func init() {
	caddy.RegisterModule(StatusHandler{})
}

// defaultDrainTimeout bounds POST /drain without ?timeout=.
const defaultDrainTimeout = 60 * time.Second

// StatusHandler serves this node's state to a fleet: its front (the
// spawn_warm selection policy), its orchestrator's probes and its preStop
// hook. Put it on an internal site of its own, e.g. `:9180 { spawn_status }`:
//
//   - GET /status: 200 and JSON {"ready", "draining", "inflight",
//     "routes": {"<route>": {"idle", "target", "ready"}}}: whether the node
//     is ready (see /ready), whether it drains, the spawn requests it
//     serves, and per route the containers waiting in its pool, the pool's
//     size, and whether the route's image is ready and its pool has been
//     full once.
//   - GET /ready: 200 "ready" when every route is ready and the node does
//     not drain, else 503: a readiness probe.
//   - POST /drain[?timeout=60s]: the node starts draining (for the rest of
//     the process's life): /ready answers 503, and new spawn requests get
//     503 with "Spawn-Refused: draining" before their body is read. The
//     answer comes when no spawn request is in flight (200) or at the
//     timeout (503), with the status as JSON. Only clients on loopback may
//     drain (the preStop hook runs `caddy spawn drain` in the node's own
//     network namespace); others get 403.
//
// Other requests go to the next handler.
type StatusHandler struct {
	app *App
}

// CaddyModule returns the Caddy module information.
func (StatusHandler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.spawn_status",
		New: func() caddy.Module { return new(StatusHandler) },
	}
}

// Provision gets the spawn app, whose routes it reports.
func (s *StatusHandler) Provision(ctx caddy.Context) error {
	appIface, err := ctx.App("spawn")
	if err != nil {
		return fmt.Errorf("getting spawn app: %w", err)
	}
	s.app = appIface.(*App)
	return nil
}

// ServeHTTP answers /status, /ready and /drain.
func (s *StatusHandler) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	switch {
	case r.URL.Path == "/status" && r.Method == http.MethodGet:
		return writeStatus(w, http.StatusOK, s.status())
	case r.URL.Path == "/ready" && r.Method == http.MethodGet:
		if !s.status().Ready {
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = w.Write([]byte("not ready\n"))
			return nil
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ready\n"))
		return nil
	case r.URL.Path == "/drain" && r.Method == http.MethodPost:
		return s.serveDrain(w, r)
	case r.URL.Path == "/status", r.URL.Path == "/ready", r.URL.Path == "/drain":
		return caddyhttp.Error(http.StatusMethodNotAllowed, fmt.Errorf("%s %s", r.Method, r.URL.Path))
	}
	return next.ServeHTTP(w, r)
}

// UnmarshalCaddyfile sets up the handler from Caddyfile tokens. Syntax:
//
//	spawn_status
func (s *StatusHandler) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // the directive's name
	if d.NextArg() {
		return d.ArgErr()
	}
	if d.NextBlock(0) {
		return d.Errf("spawn_status takes no block")
	}
	return nil
}

// serveDrain drains the node and answers when it is drained or at the
// timeout.
func (s *StatusHandler) serveDrain(w http.ResponseWriter, r *http.Request) error {
	if !fromLoopback(r) {
		return caddyhttp.Error(http.StatusForbidden, fmt.Errorf("drain from %s: only loopback clients may drain", r.RemoteAddr))
	}
	timeout := defaultDrainTimeout
	if v := r.URL.Query().Get("timeout"); v != "" {
		d, err := caddy.ParseDuration(v)
		if err != nil || d <= 0 {
			return caddyhttp.Error(http.StatusBadRequest, fmt.Errorf("drain: timeout %q: want a positive duration", v))
		}
		timeout = d
	}
	ctx, cancel := context.WithTimeout(r.Context(), timeout)
	defer cancel()
	status := http.StatusOK
	if !thisNode.drain(ctx) {
		status = http.StatusServiceUnavailable
	}
	return writeStatus(w, status, s.status())
}

// status is this node's state now.
func (s *StatusHandler) status() nodeStatus {
	st := nodeStatus{
		Draining: thisNode.draining.Load(),
		Inflight: thisNode.inflight.Load(),
		Routes:   map[string]routeStatus{},
	}
	routes := s.app.routeList()
	st.Ready = !st.Draining && len(routes) > 0
	for _, r := range routes {
		rs := r.status()
		st.Routes[r.name] = rs
		st.Ready = st.Ready && rs.Ready
	}
	return st
}

// nodeStatus is what GET /status answers, and what spawn_warm reads.
type nodeStatus struct {
	Ready    bool                   `json:"ready"`
	Draining bool                   `json:"draining"`
	Inflight int64                  `json:"inflight"`
	Routes   map[string]routeStatus `json:"routes"`
}

// routeStatus is one route's part of nodeStatus.
type routeStatus struct {
	Idle   int  `json:"idle"`
	Target int  `json:"target"`
	Ready  bool `json:"ready"`
}

// status is the route's part of the node's status: its pool's idle count
// and target, and whether its image is ready and its pool was full once.
func (r *route) status() routeStatus {
	r.mu.Lock()
	pool := r.warm
	r.mu.Unlock()
	rs := routeStatus{Target: r.pool.Max}
	if pool != nil {
		rs.Idle, rs.Target = pool.Idle(), pool.Target()
		rs.Ready = r.warmed.Load()
	}
	return rs
}

// noteIdle latches warmed once the pool holds pool_min (a fixed pool: its
// size). It runs under the pool's lock: it must not call the pool.
func (r *route) noteIdle(n int) {
	if n >= r.pool.Min {
		r.warmed.Store(true)
	}
}

// writeStatus writes st as JSON with status code.
func writeStatus(w http.ResponseWriter, code int, st nodeStatus) error {
	b, err := json.Marshal(st)
	if err != nil {
		return caddyhttp.Error(http.StatusInternalServerError, err)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_, _ = w.Write(append(b, '\n'))
	return nil
}

// fromLoopback reports whether r's client is on a loopback address.
func fromLoopback(r *http.Request) bool {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return false
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// Interface guards
var (
	_ caddy.Provisioner           = (*StatusHandler)(nil)
	_ caddyhttp.MiddlewareHandler = (*StatusHandler)(nil)
	_ caddyfile.Unmarshaler       = (*StatusHandler)(nil)
)
