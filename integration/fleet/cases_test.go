//go:build integration && fleet

package fleet

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/caddy-spawn/caddy-spawn/internal/hostprobe"
)

// Front sites: one per policy under comparison, and one that tries the
// drained node first.
const (
	portWarm      = 8081
	portLeastConn = 8082
	portURIHash   = 8083
	portDrainedRR = 8090
	// policyRequests is how many requests each policy gets in the
	// comparison, policyWorkers how many at once.
	policyRequests = 150
	policyWorkers  = 6
	// loadWorkers is how many requests the failure cases' load has in
	// flight at once.
	loadWorkers = 4
)

// frontConfig is the front's Caddyfile: a reverse_proxy site per policy
// over nodes, and one round_robin site over drainFirst and then nodes.
func frontConfig(dir string, nodes []*member, drainFirst *member) string {
	var others []*member
	for _, m := range nodes {
		if m != drainFirst {
			others = append(others, m)
		}
	}
	return frontAdmin(dir) +
		frontSite(portWarm, nodes, "spawn_warm {\n\t\t\tpoll_interval 200ms\n\t\t\treport_ttl 1s\n\t\t}") +
		frontSite(portLeastConn, nodes, "least_conn") +
		frontSite(portURIHash, nodes, "uri_hash") +
		frontSite(portDrainedRR, append([]*member{drainFirst}, others...), "round_robin")
}

// frontAdmin is a front Caddyfile's global options: its admin socket in dir.
func frontAdmin(dir string) string { return fmt.Sprintf("{\n\tadmin unix/%s/admin.sock\n}\n\n", dir) }

// frontSite is a front site on port: reverse_proxy over the nodes with
// policy, retrying dial errors, GETs, and refusals before the body
// (Spawn-Refused) on another node.
func frontSite(port int, nodes []*member, policy string) string {
	var ups []string
	for _, m := range nodes {
		ups = append(ups, m.addr+":8080")
	}
	return fmt.Sprintf(`:%d {
	reverse_proxy %s {
		lb_policy %s
		lb_try_duration 20s
		lb_try_interval 50ms
		lb_retry_match {
			method GET HEAD
		}
		lb_retry_match `+"`{rp.header.Spawn-Refused} in [\"draining\", \"overloaded\", \"not-ready\"]`"+`
		header_down -Spawn-Refused
		transport http {
			dial_timeout 2s
			expect_continue_timeout 30s
		}
	}
}
`, port, strings.Join(ups, " "), policy)
}

// TestFleet runs the cases on one fleet, in order: the policy comparison
// (a), SIGKILL of a node under load and its restart (b), with the restarted
// node getting traffic only once ready (d), a drain (c), and a brand-new
// node joining, again only once ready (d).
func TestFleet(t *testing.T) {
	l := theLab
	n1, n2, n3 := newNode(t, l, "n1", 11), newNode(t, l, "n2", 12), newNode(t, l, "n3", 13)
	nodes := []*member{n1, n2, n3}
	front := newMember(t, l, "front", 20, 0)
	front.config = frontConfig(front.dir, nodes, n3)
	for _, n := range nodes {
		n.start(t)
	}
	front.start(t)
	front.waitServing(t, portWarm)
	for _, n := range nodes {
		n.waitServing(t, 9180)
		n.waitReady(t)
	}
	base := func(port int) string { return fmt.Sprintf("http://%s:%d", front.addr, port) }

	t.Run("PolicyComparison", func(t *testing.T) {
		type result struct {
			hitRatio float64
			p99      time.Duration
		}
		results := map[string]result{}
		for _, pc := range []struct {
			name string
			port int
		}{{"spawn_warm", portWarm}, {"least_conn", portLeastConn}, {"uri_hash", portURIHash}} {
			for _, n := range nodes {
				n.waitPoolsFull(t)
			}
			before := sumCounters(t, nodes)
			out := load(t.Context(), base(pc.port), policyWorkers, policyRequests, skewed)
			after := sumCounters(t, nodes)
			tl := count(out)
			if tl.failedGets > 0 || len(out) != policyRequests {
				t.Fatalf("%s: %d of %d requests failed: %v", pc.name, tl.failedGets, len(out), tl.failures)
			}
			hits, misses := after.hits-before.hits, after.misses-before.misses
			if hits+misses != policyRequests {
				t.Fatalf("%s: the nodes counted %v claims for %d requests", pc.name, hits+misses, policyRequests)
			}
			r := result{hitRatio: hits / (hits + misses), p99: p99(out)}
			results[pc.name] = r
			t.Logf("%s: warm-hit ratio %.2f (%v hits, %v misses, from the nodes' metrics), p99 %s, by node %v",
				pc.name, r.hitRatio, hits, misses, r.p99.Round(time.Millisecond), tl.byNode)
		}
		warm, lc, uh := results["spawn_warm"], results["least_conn"], results["uri_hash"]
		// Every node here pools every route, and since containers refill
		// in tens of milliseconds least_conn, spreading evenly, uses every
		// pool as well as spawn_warm does: measured 0.88 vs 0.84 and 0.83
		// vs 0.86 on 150 requests. So spawn_warm must not be materially
		// worse than least_conn (5 points, ~7 requests), and must beat the
		// warm-blind uri_hash clearly.
		if warm.hitRatio < lc.hitRatio-0.05 {
			t.Errorf("spawn_warm's warm-hit ratio %.2f is below least_conn's %.2f by more than 0.05", warm.hitRatio, lc.hitRatio)
		}
		if warm.hitRatio < uh.hitRatio+0.15 {
			t.Errorf("spawn_warm's warm-hit ratio %.2f is not clearly above uri_hash's %.2f (by 0.15)", warm.hitRatio, uh.hitRatio)
		}
		// p99 of 150 requests is their second slowest: within 5% of each
		// other counts as no worse (a run measured 1.3128s against
		// 1.3127s, one cold start each).
		if float64(warm.p99) > 1.05*float64(uh.p99) {
			t.Errorf("spawn_warm's p99 %s is worse than uri_hash's %s (by more than 5%%)", warm.p99, uh.p99)
		}
	})

	t.Run("KillNodeUnderLoad", func(t *testing.T) {
		for _, n := range nodes {
			n.waitPoolsFull(t)
		}
		ctx, stop := context.WithCancel(t.Context())
		defer stop()
		done := make(chan []outcome, 1)
		go func() { done <- load(ctx, base(portWarm), loadWorkers, 5000, mixed) }()

		// Under load, with n2 serving: note what it runs, then SIGKILL
		// its Caddy alone.
		var inflight int64
		var before []string
		eventually(t, time.Minute, func() (bool, string) {
			st, err := n2.status()
			if err != nil {
				return false, err.Error()
			}
			inflight = st.Inflight
			return inflight > 0, "n2 has nothing in flight yet"
		})
		before, err := n2.containers()
		if err != nil {
			t.Fatal(err)
		}
		st, err := n2.status()
		if err != nil {
			t.Fatal(err)
		}
		inflight = max(inflight, st.Inflight)
		if err := syscall.Kill(n2.proc.Pid(), syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		killedAt := time.Now()
		<-n2.proc.Exited()
		// Past this, the front has seen n2's connections close.
		settledAt := time.Now().Add(time.Second)
		t.Logf("SIGKILLed n2 with %d spawn requests in flight and %d containers", inflight, len(before))
		time.Sleep(3 * time.Second) // load goes on without n2

		// (d) The restarted node gets traffic only once ready: its own
		// count of served requests stays 0 until its status says ready
		// (counters are read before the status, so a request served
		// before readiness can't hide).
		n2.start(t)
		readyAt, _ := n2.waitServedOnceReady(t)
		t.Logf("the restarted n2 was ready %s after the kill and then got traffic", readyAt.Sub(killedAt).Round(time.Millisecond))
		stop()
		out := <-done

		tl := count(out)
		t.Logf("%d GETs, %d POSTs; failed: %d GETs, %d POSTs; by node %v", tl.gets, tl.posts, tl.failedGets, tl.failedPosts, tl.byNode)
		// Only what n2 was serving when it died may fail: a POST whose
		// body the front had begun to send, or a GET whose head n2 had
		// already sent (nobody can retry a half-read answer). Any other
		// GET must have been retried on another node. There are at most
		// loadWorkers requests in flight at once.
		for _, o := range out {
			if !o.failed() {
				continue
			}
			n2Answering := o.midBody() && o.node == "n2"
			switch {
			case o.sent.After(settledAt):
				t.Errorf("%s %s sent %s after the kill failed (%s): %v", o.method, o.path, o.sent.Sub(killedAt).Round(time.Millisecond), o.where(), o.err)
			case o.method == http.MethodGet && !n2Answering:
				t.Errorf("GET %s failed without n2 having begun to answer it (%s): the front must retry it: %v", o.path, o.where(), o.err)
			}
		}
		if n := tl.failedGets + tl.failedPosts; n > loadWorkers {
			t.Errorf("%d requests failed, more than the %d the load has in flight at once: %v", n, loadWorkers, tl.failures)
		}
		if tl.slowestFailure > 10*time.Second {
			t.Errorf("a failed request took %s: failures must be answered promptly: %v", tl.slowestFailure, tl.failures)
		}
		for _, n := range []*member{n1, n3} {
			n.waitOnlyPooled(t)
		}
		// The killed node swept what it left.
		n2.waitOnlyPooled(t)
		ids, err := n2.containers()
		if err != nil {
			t.Fatal(err)
		}
		for _, id := range before {
			if slices.Contains(ids, id) || len(hostprobe.Processes(id)) > 0 {
				t.Errorf("container %s of the killed n2 is still there after its restart", id)
			}
		}
		if !n2.proc.Log.Contains("swept leftovers") {
			t.Error(`no "swept leftovers" in the restarted n2's log`)
		}
	})

	t.Run("DrainNode", func(t *testing.T) {
		for _, n := range nodes {
			n.waitPoolsFull(t)
		}
		ctx, stop := context.WithCancel(t.Context())
		defer stop()
		done := make(chan []outcome, 1)
		go func() { done <- load(ctx, base(portWarm), 4, 5000, mixed) }()
		time.Sleep(2 * time.Second)

		// The preStop hook's command, in n3's network namespace.
		drainStart := time.Now()
		out, err := exec.Command("nsenter", "--net="+n3.netns, "--", caddyBin, "spawn", "drain", "--timeout", "60s").CombinedOutput()
		if err != nil {
			t.Fatalf("caddy spawn drain: %v: %s", err, out)
		}
		t.Logf("drained n3 in %s: %s", time.Since(drainStart).Round(time.Millisecond), strings.TrimSpace(string(out)))

		// Refusal before the body: a POST with Expect: 100-continue to the
		// draining node gets 503 + Spawn-Refused before the client sent
		// any byte of its body...
		var read atomic.Int64
		req, err := http.NewRequest(http.MethodPost, "http://"+n3.addr+":8080/p/fn", &countingReader{n: 256 << 10, read: &read})
		if err != nil {
			t.Fatal(err)
		}
		req.ContentLength = 256 << 10
		req.Header.Set("Expect", "100-continue")
		cl := &http.Client{Transport: &http.Transport{Proxy: nil, ExpectContinueTimeout: 30 * time.Second}}
		resp, err := cl.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Spawn-Refused") != "draining" || read.Load() != 0 {
			t.Errorf("POST to the draining n3: %d, Spawn-Refused %q, %d body bytes sent; want 503, draining, 0",
				resp.StatusCode, resp.Header.Get("Spawn-Refused"), read.Load())
		}
		// ...so the front retries it, body and all, on another node
		// (round_robin tries n3 first every other request).
		fc := &http.Client{Transport: &http.Transport{Proxy: nil, ExpectContinueTimeout: 30 * time.Second}}
		for i := range 4 {
			o := fire(fc, base(portDrainedRR), shot{method: http.MethodPost, path: "/p/fn", body: 256 << 10, expect: true})
			if o.failed() || o.node == "n3" {
				t.Errorf("POST %d with Expect through the front: %v, served by %q", i, o.err, o.node)
			}
		}
		// Without Expect, the front has sent (some of) the body to n3
		// by the time it refuses, and cannot replay it: documented,
		// shown here, not a requirement.
		var noExpect []string
		for range 4 {
			o := fire(fc, base(portDrainedRR), shot{method: http.MethodPost, path: "/p/fn", body: 256 << 10})
			noExpect = append(noExpect, fmt.Sprintf("%d/%s", o.status, o.node))
		}
		t.Logf("POSTs of 256 KiB without Expect through the round_robin site (n3 draining): %v", noExpect)

		// Then SIGTERM, as Kubernetes sends after preStop.
		if err := n3.proc.Stop(30 * time.Second); err != nil {
			t.Error(err)
		}
		time.Sleep(2 * time.Second)
		stop()
		tl := count(<-done)
		t.Logf("%d GETs, %d POSTs; failed %d GETs, %d POSTs; by node %v", tl.gets, tl.posts, tl.failedGets, tl.failedPosts, tl.byNode)
		if tl.failedGets+tl.failedPosts > 0 {
			t.Errorf("draining n3 failed %d GETs and %d POSTs: %v", tl.failedGets, tl.failedPosts, tl.failures)
		}
		if tl.byNode["n3"] == 0 {
			t.Error("n3 served nothing in the drain phase: the case did not test a drain under load")
		}
	})

	// (d) A brand-new node joins under load: the front is reloaded with n4
	// among its upstreams before n4 exists, then n4 starts with an empty
	// containerd (it pulls the image from the registry and fills its
	// pools): it gets no request before its status says ready, then some,
	// and the load sees no failure.
	t.Run("NewNodeJoins", func(t *testing.T) {
		n4 := newNode(t, l, "n4", 14)
		front.reload(t, frontConfig(front.dir, []*member{n1, n2, n4}, n4))
		ctx, stop := context.WithCancel(t.Context())
		defer stop()
		done := make(chan []outcome, 1)
		go func() { done <- load(ctx, base(portWarm), 4, 5000, mixed) }()
		time.Sleep(2 * time.Second) // load on n1 and n2, n4 a dead upstream
		n4.start(t)
		joinedAt := time.Now()
		readyAt, notReady := n4.waitServedOnceReady(t)
		stop()
		tl := count(<-done)
		t.Logf("the new n4 was ready %s after its start (%d polls found it up and not ready), then got traffic; %d GETs, %d POSTs; failed %d GETs, %d POSTs; by node %v",
			readyAt.Sub(joinedAt).Round(time.Millisecond), notReady, tl.gets, tl.posts, tl.failedGets, tl.failedPosts, tl.byNode)
		if notReady == 0 {
			t.Error("n4 was never seen up and not yet ready: the case did not test the gap")
		}
		if tl.failedGets+tl.failedPosts > 0 {
			t.Errorf("a node joining failed %d GETs and %d POSTs: %v", tl.failedGets, tl.failedPosts, tl.failures)
		}
		if tl.byNode["n4"] == 0 {
			t.Error("the load saw no response from n4")
		}
	})
}

// waitServedOnceReady waits until the node (just started) has served a
// request, failing the test if it served any before its status said
// ready: counters are read before the status, so a request served before
// readiness can't hide. It returns when it was first seen ready and how
// many polls found it up and not ready.
func (m *member) waitServedOnceReady(t testing.TB) (readyAt time.Time, notReady int) {
	t.Helper()
	eventually(t, startTimeout, func() (bool, string) {
		c, cerr := m.counters()
		s, serr := m.status()
		if cerr != nil || serr != nil {
			return false, fmt.Sprintf("%s not up yet: %v %v", m.name, cerr, serr)
		}
		if !s.Ready {
			notReady++
		}
		if c.served > 0 && !s.Ready && readyAt.IsZero() {
			t.Fatalf("%s served %v requests before it was ready: %+v", m.name, c.served, s)
		}
		if s.Ready && readyAt.IsZero() {
			readyAt = time.Now()
		}
		return c.served > 0, fmt.Sprintf("%s ready %t, served %v", m.name, s.Ready, c.served)
	})
	return readyAt, notReady
}

// reload loads config into the member's Caddy through its admin socket.
func (m *member) reload(t testing.TB, config string) {
	t.Helper()
	cl := &http.Client{Timeout: time.Minute, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", filepath.Join(m.dir, "admin.sock"))
		},
	}}
	resp, err := cl.Post("http://localhost/load", "text/caddyfile", strings.NewReader(config))
	if err != nil {
		t.Fatalf("%s: reloading: %v", m.name, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("%s: reloading: status %d: %s", m.name, resp.StatusCode, b)
	}
	m.config = config
}

// sumCounters adds up the nodes' counters.
func sumCounters(t testing.TB, nodes []*member) counters {
	t.Helper()
	var sum counters
	for _, n := range nodes {
		c, err := n.counters()
		if err != nil {
			t.Fatal(err)
		}
		sum.hits += c.hits
		sum.misses += c.misses
		sum.served += c.served
	}
	return sum
}

// countingReader is a body of n bytes that counts what was read of it.
type countingReader struct {
	n    int
	read *atomic.Int64
}

func (r *countingReader) Read(p []byte) (int, error) {
	left := r.n - int(r.read.Load())
	if left <= 0 {
		return 0, io.EOF
	}
	k := min(len(p), left)
	for i := range p[:k] {
		p[i] = 'x'
	}
	r.read.Add(int64(k))
	return k, nil
}
