//go:build integration

package e2e

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// metric returns the value of the sample named exactly series (name and
// labels) on Caddy's /metrics, and whether it is there.
func (p *caddyProc) metric(t *testing.T, series string) (float64, bool) {
	t.Helper()
	resp, err := p.client.Get("http://" + adminAddr + "/metrics")
	if err != nil {
		t.Fatalf("metrics: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` (\S+)$`).FindSubmatch(b)
	if m == nil {
		return 0, false
	}
	v, err := strconv.ParseFloat(string(m[1]), 64)
	return v, err == nil
}

// frozen reports whether container id's cgroup is frozen (paused in a pool).
func frozen(id string) bool {
	path := "/" + namespace + "/" + id
	if b, err := os.ReadFile(filepath.Join("/sys/fs/cgroup/freezer", path, "freezer.state")); err == nil {
		return strings.TrimSpace(string(b)) == "FROZEN"
	}
	b, err := os.ReadFile(filepath.Join("/sys/fs/cgroup", path, "cgroup.freeze"))
	return err == nil && strings.TrimSpace(string(b)) == "1"
}

// startTypeRoute is a testfn route whose responses say how the request got
// its container.
func startTypeRoute(matcher, name, args string, extra ...string) string {
	return strings.Replace(testfnRoute(matcher, name, args, extra...), "\t\tspawn ",
		"\t\theader >X-Spawn-Start {http.spawn.start_type}\n\t\tspawn ", 1)
}

// TestAdaptivePool: a pool_min 0 route starts with no container, grows
// under a steady load so that requests after the first second are mostly
// warm, and scales back to zero a few seconds after the load stops; a
// second route is served throughout, and the containers waiting in pools
// never hold more than warm_memory.
func TestAdaptivePool(t *testing.T) {
	port := freePort(t)
	const mem, budget = 32 << 20, 160 << 20
	p := startCaddyConfig(t, port, caddyfileWith(site(port,
		startTypeRoute("/burst", "burst", "sleep 20ms", "memory 32MiB", "pool_min 0", "pool_max 8", "pool_idle_timeout 2s"),
		startTypeRoute("/steady", "steady", "sleep 1ms", "memory 32MiB", "pool 2"),
	), fmt.Sprintf("warm_memory %d", budget)))

	p.waitPoolFull(t, "steady", 2)
	if v, _ := p.metric(t, `caddy_spawn_pool_target{route="burst"}`); v != 0 {
		t.Errorf("burst route's target before any request = %v, want 0", v)
	}
	if v, ok := p.metric(t, `caddy_spawn_warm_memory_budget_bytes`); !ok || v != budget {
		t.Errorf("warm_memory_budget_bytes = %v (%v), want %d", v, ok, budget)
	}

	// Watch the pools while the load runs: gauges and containers present.
	stop := make(chan struct{})
	var mu sync.Mutex
	var maxIdle float64
	var over []string
	var watch sync.WaitGroup
	watch.Go(func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(100 * time.Millisecond):
			}
			idle, _ := p.metric(t, `caddy_spawn_pool_idle{route="burst"}`)
			used, _ := p.metric(t, `caddy_spawn_warm_memory_bytes`)
			cs, _, err := p.containerStates()
			n := 0
			for _, c := range cs {
				if frozen(c.ID) {
					n++
				}
			}
			mu.Lock()
			maxIdle = max(maxIdle, idle)
			if used > budget {
				over = append(over, fmt.Sprintf("warm_memory_bytes %v", used))
			}
			if err == nil && n*mem > budget {
				over = append(over, fmt.Sprintf("%d frozen containers of %d MiB", n, mem>>20))
			}
			mu.Unlock()
		}
	})

	// 10 requests a second to /burst and 2 to /steady, for 6 s.
	type result struct {
		at     time.Duration
		status int
		start  string
		route  string
	}
	var results []result
	var rmu sync.Mutex
	var load sync.WaitGroup
	began := time.Now()
	for i := range 60 {
		time.Sleep(time.Until(began.Add(time.Duration(i) * 100 * time.Millisecond)))
		paths := []string{"/burst"}
		if i%5 == 0 {
			paths = append(paths, "/steady")
		}
		for _, path := range paths {
			load.Go(func() {
				at := time.Since(began)
				r := result{at: at, route: path}
				resp, err := p.client.Get(p.url(path))
				if err == nil {
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					r.status, r.start = resp.StatusCode, resp.Header.Get("X-Spawn-Start")
				}
				rmu.Lock()
				results = append(results, r)
				rmu.Unlock()
			})
		}
	}
	load.Wait()
	close(stop)
	watch.Wait()

	warm, later := 0, 0
	for _, r := range results {
		if r.status != http.StatusOK {
			t.Errorf("%s at %v: status %d", r.route, r.at.Round(time.Millisecond), r.status)
			continue
		}
		if r.route == "/burst" && r.at > time.Second {
			later++
			if r.start == "warm" {
				warm++
			}
		}
	}
	t.Logf("burst: %d of %d requests after the first second warm; pool_idle peaked at %v", warm, later, maxIdle)
	if later == 0 || warm*2 < later {
		t.Errorf("%d of %d burst requests after the first second were warm, want most", warm, later)
	}
	if maxIdle <= 1 {
		t.Errorf("burst pool_idle peaked at %v under load, want above 1", maxIdle)
	}
	mu.Lock()
	if len(over) > 0 {
		t.Errorf("warm_memory %d exceeded: %v", budget, over)
	}
	mu.Unlock()
	if v, _ := p.metric(t, `caddy_spawn_pool_scale_events_total{direction="up",route="burst"}`); v < 1 {
		t.Errorf("no scale-up event for the burst route (%v)", v)
	}

	// Idle: the burst route goes back to zero; the steady one keeps its 2.
	eventually(t, 20*time.Second, func() (bool, string) {
		idle, _ := p.metric(t, `caddy_spawn_pool_idle{route="burst"}`)
		target, _ := p.metric(t, `caddy_spawn_pool_target{route="burst"}`)
		cs, _, err := p.containerStates()
		if err != nil {
			return false, err.Error()
		}
		n := 0
		for _, c := range cs {
			if c.Route == "burst" {
				n++
			}
		}
		return idle == 0 && target == 0 && n == 0,
			fmt.Sprintf("burst route after the load: pool_idle %v, target %v, %d containers", idle, target, n)
	})
	p.waitPoolFull(t, "steady", 2)
	if resp, body := p.get(t, "/steady"); resp.StatusCode != http.StatusOK {
		t.Errorf("steady route after the burst: %d %q", resp.StatusCode, body)
	}
}

// TestEarlyRejection: once a route knows how long its requests hold its
// only slot, a request that would wait longer than queue_timeout gets 503
// with the estimate as Retry-After at once, not after queue_timeout.
func TestEarlyRejection(t *testing.T) {
	port := freePort(t)
	const queueTimeout = 4 * time.Second
	p := startCaddy(t, port, site(port,
		testfnRoute("/slow", "slow", "sleep 8s", "pool 1", "max_concurrent 1", "queue_timeout 4s", "timeout 30s")))
	// One request teaches the route its service time (~8 s).
	if resp, body := p.get(t, "/slow"); resp.StatusCode != http.StatusOK {
		t.Fatalf("first request: %d %q", resp.StatusCode, body)
	}
	first := make(chan int, 1)
	go func() {
		resp, err := p.client.Get(p.url("/slow"))
		if err != nil {
			first <- 0
			return
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		first <- resp.StatusCode
	}()
	p.waitClaimed(t, 10*time.Second, "/testfn sleep")
	began := time.Now()
	resp, body := p.get(t, "/slow")
	took := time.Since(began)
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("request behind an 8 s one with queue_timeout 4s: %d %q, want 503", resp.StatusCode, body)
	}
	if took >= queueTimeout {
		t.Errorf("the 503 took %v: it waited out queue_timeout %v instead of refusing at once", took, queueTimeout)
	}
	ra, err := strconv.Atoi(resp.Header.Get("Retry-After"))
	if err != nil || ra <= 4 || ra > 9 {
		t.Errorf("Retry-After %q, want the estimate (5..9 s)", resp.Header.Get("Retry-After"))
	}
	if v, _ := p.metric(t, `caddy_spawn_early_rejections_total{route="slow"}`); v != 1 {
		t.Errorf("early_rejections_total = %v, want 1", v)
	}
	if code := <-first; code != http.StatusOK {
		t.Errorf("the request holding the slot: %d", code)
	}
}
