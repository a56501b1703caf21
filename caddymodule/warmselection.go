package caddymodule

import (
	"context"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"
)

func init() {
	caddy.RegisterModule(WarmSelection{})
}

// Defaults of the spawn_warm policy's settings.
const (
	defaultWarmRoute        = "{http.request.uri.path.0}"
	defaultWarmHome         = 2
	defaultWarmStatusPort   = 9180
	defaultWarmPollInterval = 500 * time.Millisecond
	defaultWarmReportTTL    = 3 * time.Second
	// warmTriedKey holds, in the request's replacer, the upstreams this
	// request was sent to already: a retry (after a refusal or a dial
	// error) goes elsewhere while another node can take it.
	warmTriedKey = "http.reverse_proxy.spawn_warm.tried"
	// warmForgetAfter is how long a node the pool no longer lists is
	// still polled.
	warmForgetAfter = time.Minute
)

// WarmSelection is a reverse_proxy selection policy for a fleet of
// caddy-spawn nodes: it sends a request to a node that holds warm (pooled,
// paused) containers for the request's route. Each route has a small home
// set of nodes, chosen by rendezvous hashing of the route's name over the
// nodes, so a quiet route stays where its pools are and losing a node
// moves only its routes. The policy polls every node's status endpoint
// (the spawn_status handler, GET /status) for its readiness and idle
// counts per route, and counts down a node's idle count locally for each
// request it sends there until the next report.
//
// A request goes to the home node with the most warm containers for its
// route; when no home node has one, to any other node that reports one
// (spill-over); when none does, to the node with the fewest requests in
// flight (like least_conn: without a known warm container, spreading the
// load drains every node's pool evenly and lets them refill in parallel). A retry of a request goes to a node it was not sent to yet,
// while there is one. Nodes whose report says not ready or draining get nothing;
// nodes without a fresh report (not polled yet, unreachable, or silent
// for longer than report_ttl) are used only when no node has a fresh
// ready report, so a fleet whose status endpoint is unreachable still
// works as a plain rendezvous hash.
//
// In a Caddyfile: `lb_policy spawn_warm { ... }` in a reverse_proxy block.
// EXPERIMENTAL.
type WarmSelection struct {
	// Route is the request's route name as the nodes name it (a spawn
	// handler's name), usually a placeholder. Default:
	// "{http.request.uri.path.0}", the first path segment: name each
	// route after it, or set this to e.g. "{http.request.header.X-Fn}".
	Route string `json:"route,omitempty"`

	// Home is how many nodes form a route's home set. Default: 2.
	Home int `json:"home,omitempty"`

	// StatusPort is the port of the nodes' status site (spawn_status), on
	// the same host as the upstream's dial address. Default: 9180.
	StatusPort int `json:"status_port,omitempty"`

	// PollInterval is how often each node's status is polled. Default:
	// 500ms.
	PollInterval caddy.Duration `json:"poll_interval,omitempty"`

	// ReportTTL is how long a node's report counts; a node silent for
	// longer is treated as unknown. Default: 3s.
	ReportTTL caddy.Duration `json:"report_ttl,omitempty"`

	reports *warmReports
	logger  *zap.Logger
}

// CaddyModule returns the Caddy module information.
func (WarmSelection) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.reverse_proxy.selection_policies.spawn_warm",
		New: func() caddy.Module { return new(WarmSelection) },
	}
}

// Provision applies defaults and starts polling, which stops with the
// config (ctx.Done). Nothing is polled before a request lists the nodes.
func (s *WarmSelection) Provision(ctx caddy.Context) error {
	s.logger = ctx.Logger()
	s.setDefaults()
	s.reports = newWarmReports(time.Duration(s.ReportTTL))
	go s.pollLoop(ctx)
	return nil
}

// Validate checks the settings, naming the field at fault.
func (s *WarmSelection) Validate() error {
	return firstError(
		checkWarmHome(s.Home),
		checkWarmStatusPort(s.StatusPort),
		checkWarmDurations(s.PollInterval, s.ReportTTL),
	)
}

// Select returns the upstream to try next, or nil when none is available.
func (s *WarmSelection) Select(pool reverseproxy.UpstreamPool, r *http.Request, _ http.ResponseWriter) *reverseproxy.Upstream {
	route := s.Route
	repl, _ := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	var tried string
	if repl != nil {
		route = repl.ReplaceAll(s.Route, "")
		tried, _ = repl.GetString(warmTriedKey)
	}
	now := time.Now()
	s.reports.see(pool, now)
	up := s.reports.pick(pool, route, s.Home, splitTried(tried), now)
	if up != nil {
		s.reports.sent(up.Dial, route)
		if repl != nil {
			repl.Set(warmTriedKey, tried+up.Dial+" ")
		}
	}
	return up
}

// UnmarshalCaddyfile sets up the policy from Caddyfile tokens. Syntax:
//
//	lb_policy spawn_warm {
//		route         <placeholder>
//		home          <nodes>
//		status_port   <port>
//		poll_interval <duration>
//		report_ttl    <duration>
//	}
func (s *WarmSelection) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // the policy's name
	if d.NextArg() {
		return d.ArgErr()
	}
	seen := map[string]bool{}
	for d.NextBlock(0) {
		name := d.Val()
		if seen[name] {
			return d.Errf("spawn_warm: duplicate subdirective %q", name)
		}
		seen[name] = true
		var arg string
		if !d.Args(&arg) || d.NextArg() {
			return d.ArgErr()
		}
		switch name {
		case "route":
			s.Route = arg
		case "home", "status_port":
			n, err := strconv.Atoi(arg)
			if err != nil {
				return d.Errf("spawn_warm: %s: not a number: %q", name, arg)
			}
			if name == "home" {
				s.Home = n
			} else {
				s.StatusPort = n
			}
		case "poll_interval", "report_ttl":
			dur, err := caddy.ParseDuration(arg)
			if err != nil {
				return d.Errf("spawn_warm: %s: %v", name, err)
			}
			if name == "poll_interval" {
				s.PollInterval = caddy.Duration(dur)
			} else {
				s.ReportTTL = caddy.Duration(dur)
			}
		default:
			return d.Errf("spawn_warm: unknown subdirective %q", name)
		}
	}
	return nil
}

// setDefaults fills in every setting left unset.
func (s *WarmSelection) setDefaults() {
	if s.Route == "" {
		s.Route = defaultWarmRoute
	}
	if s.Home == 0 {
		s.Home = defaultWarmHome
	}
	if s.StatusPort == 0 {
		s.StatusPort = defaultWarmStatusPort
	}
	if s.PollInterval == 0 {
		s.PollInterval = caddy.Duration(defaultWarmPollInterval)
	}
	if s.ReportTTL == 0 {
		s.ReportTTL = caddy.Duration(defaultWarmReportTTL)
	}
}

// pollLoop polls every known node each PollInterval until ctx is done.
func (s *WarmSelection) pollLoop(ctx context.Context) {
	interval := time.Duration(s.PollInterval)
	cl := &http.Client{
		Timeout:   max(interval, time.Second),
		Transport: &http.Transport{Proxy: nil, MaxIdleConnsPerHost: 1, IdleConnTimeout: 10 * interval},
	}
	defer cl.CloseIdleConnections()
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		var wg sync.WaitGroup
		for _, dial := range s.reports.polled(time.Now()) {
			wg.Go(func() {
				rep, err := fetchStatus(ctx, cl, statusURL(dial, s.StatusPort))
				if err != nil {
					if c := s.logger.Check(zap.DebugLevel, "node status unavailable"); c != nil {
						c.Write(zap.String("upstream", dial), zap.Error(err))
					}
					s.reports.forget(dial)
					return
				}
				s.reports.set(dial, rep, time.Now())
			})
		}
		wg.Wait()
	}
}

// statusURL is the status endpoint of the node an upstream dials.
func statusURL(dial string, port int) string {
	host, _, err := net.SplitHostPort(dial)
	if err != nil {
		host = dial
	}
	return "http://" + net.JoinHostPort(host, strconv.Itoa(port)) + "/status"
}

// fetchStatus GETs and decodes one node's status.
func fetchStatus(ctx context.Context, cl *http.Client, url string) (nodeStatus, error) {
	var st nodeStatus
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return st, err
	}
	resp, err := cl.Do(req)
	if err != nil {
		return st, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return st, fmt.Errorf("GET %s: status %d", url, resp.StatusCode)
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&st); err != nil {
		return st, fmt.Errorf("decoding %s: %w", url, err)
	}
	return st, nil
}

// warmReports is what the policy knows of each node: its last report and
// the requests sent since, and when the pool last listed it.
type warmReports struct {
	ttl time.Duration

	mu    sync.Mutex
	nodes map[string]*warmNode // by dial address
}

type warmNode struct {
	lastSeen time.Time
	report   *nodeStatus // nil until polled, and after a failed poll
	at       time.Time   // when report came
	sent     map[string]int
}

func newWarmReports(ttl time.Duration) *warmReports {
	return &warmReports{ttl: ttl, nodes: map[string]*warmNode{}}
}

// see records the pool's nodes, so they are polled.
func (w *warmReports) see(pool reverseproxy.UpstreamPool, now time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, up := range pool {
		n := w.nodes[up.Dial]
		if n == nil {
			n = &warmNode{sent: map[string]int{}}
			w.nodes[up.Dial] = n
		}
		n.lastSeen = now
	}
}

// polled lists the nodes to poll, forgetting those no pool listed lately.
func (w *warmReports) polled(now time.Time) []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := make([]string, 0, len(w.nodes))
	for dial, n := range w.nodes {
		if now.Sub(n.lastSeen) > warmForgetAfter {
			delete(w.nodes, dial)
			continue
		}
		out = append(out, dial)
	}
	return out
}

// set stores a node's fresh report; the local counts start again from it.
func (w *warmReports) set(dial string, st nodeStatus, now time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if n := w.nodes[dial]; n != nil {
		n.report, n.at = &st, now
		clear(n.sent)
	}
}

// forget drops a node's report after a failed poll.
func (w *warmReports) forget(dial string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if n := w.nodes[dial]; n != nil {
		n.report = nil
	}
}

// sent counts one request sent to dial for route.
func (w *warmReports) sent(dial, route string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if n := w.nodes[dial]; n != nil {
		n.sent[route]++
	}
}

// Node standings of one pick.
const (
	standingUnknown = iota // no fresh report
	standingOut            // fresh report: not ready or draining
	standingReady
)

// candidate is one available upstream as a pick sees it.
type candidate struct {
	up       *reverseproxy.Upstream
	weight   uint64 // rendezvous weight for the route
	warm     int    // reported idle minus sent since
	standing int
}

// pick chooses the upstream for route among the available ones of pool.
// Upstreams in tried count only when no other is available.
func (w *warmReports) pick(pool reverseproxy.UpstreamPool, route string, home int, tried map[string]bool, now time.Time) *reverseproxy.Upstream {
	untried := 0
	for _, up := range pool {
		if up.Available() && !tried[up.Dial] {
			untried++
		}
	}
	w.mu.Lock()
	cands := make([]candidate, 0, len(pool))
	for _, up := range pool {
		if !up.Available() || (untried > 0 && tried[up.Dial]) {
			continue
		}
		c := candidate{up: up, weight: rendezvousWeight(route, up.Dial)}
		if n := w.nodes[up.Dial]; n != nil && n.report != nil && now.Sub(n.at) <= w.ttl {
			c.standing = standingOut
			if n.report.Ready && !n.report.Draining {
				c.standing = standingReady
			}
			c.warm = n.report.Routes[route].Idle - n.sent[route]
		}
		cands = append(cands, c)
	}
	w.mu.Unlock()
	if len(cands) == 0 {
		return nil
	}
	// The best standing any node has decides who takes part: ready nodes
	// if any, else unknown ones, else (all refuse) everyone, whose
	// refusals the front retries until one admits.
	best := standingOut
	for _, c := range cands {
		if c.standing == standingReady {
			best = standingReady
			break
		}
		if c.standing == standingUnknown {
			best = standingUnknown
		}
	}
	kept := cands[:0]
	for _, c := range cands {
		if c.standing == best || best == standingOut {
			kept = append(kept, c)
		}
	}
	return chooseWarm(kept, home)
}

// splitTried is the set of upstreams in a warmTriedKey value.
func splitTried(s string) map[string]bool {
	if s == "" {
		return nil
	}
	m := map[string]bool{}
	for d := range strings.FieldsSeq(s) {
		m[d] = true
	}
	return m
}

// chooseWarm picks among cands: the home node (one of the home highest
// rendezvous weights) with the most warm containers; else the other node
// with the most; else the node with the fewest requests in flight, home
// nodes first on ties.
func chooseWarm(cands []candidate, home int) *reverseproxy.Upstream {
	sortByWeight(cands)
	home = min(home, len(cands))
	if c := mostWarm(cands[:home]); c != nil {
		return c.up
	}
	if c := mostWarm(cands[home:]); c != nil {
		return c.up
	}
	least := &cands[0]
	for i := 1; i < len(cands); i++ {
		if cands[i].up.NumRequests() < least.up.NumRequests() {
			least = &cands[i]
		}
	}
	return least.up
}

// mostWarm is the candidate with the most warm containers (the first
// such on ties), or nil when none has one.
func mostWarm(cands []candidate) *candidate {
	var best *candidate
	for i := range cands {
		if cands[i].warm > 0 && (best == nil || cands[i].warm > best.warm) {
			best = &cands[i]
		}
	}
	return best
}

// sortByWeight orders cands by descending rendezvous weight (few nodes:
// insertion sort).
func sortByWeight(cands []candidate) {
	for i := 1; i < len(cands); i++ {
		for j := i; j > 0 && cands[j].weight > cands[j-1].weight; j-- {
			cands[j], cands[j-1] = cands[j-1], cands[j]
		}
	}
}

// rendezvousWeight is the highest-random-weight hash of a route on a node.
func rendezvousWeight(route, dial string) uint64 {
	h := fnv.New64a()
	_, _ = io.WriteString(h, route)
	_, _ = h.Write([]byte{0})
	_, _ = io.WriteString(h, dial)
	// FNV's low bits mix poorly for similar inputs: finish with a
	// 64-bit mixer (splitmix64's).
	x := h.Sum64()
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

// Interface guards
var (
	_ caddy.Provisioner     = (*WarmSelection)(nil)
	_ caddy.Validator       = (*WarmSelection)(nil)
	_ reverseproxy.Selector = (*WarmSelection)(nil)
	_ caddyfile.Unmarshaler = (*WarmSelection)(nil)
)
