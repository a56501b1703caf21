//go:build integration

package e2e

import (
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// pooledRoute is a testfn route with a pool, reporting how each request
// got its container in response headers.
func pooledRoute(matcher, name, args string, pool int) string {
	r := testfnRoute(matcher, name, args, fmt.Sprintf("pool %d", pool))
	// Deferred headers: the placeholders are set by the handler.
	return strings.Replace(r, "\t\tspawn ", "\t\theader >X-Spawn-Start {http.spawn.start_type}\n\t\theader >X-Spawn-Container {http.spawn.container}\n\t\tspawn ", 1)
}

// waitPoolFull waits until route has n pooled (unclaimed) containers.
func (p *caddyProc) waitPoolFull(t *testing.T, route string, n int) []string {
	t.Helper()
	var ids []string
	eventually(t, 30*time.Second, func() (bool, string) {
		cs, _, err := p.containerStates()
		if err != nil {
			return false, err.Error()
		}
		ids = ids[:0]
		for _, c := range cs {
			if c.Route == route && !c.claimed() {
				ids = append(ids, c.ID)
			}
		}
		return len(ids) >= n, fmt.Sprintf("route %s: %d pooled containers, want %d", route, len(ids), n)
	})
	return ids
}

// markerWarmSingleUse sends request i to the marker route, whose pool is
// full, and checks it got a warm container none of seen had, that saw no
// earlier request's marker file; it adds the container to seen and
// returns the body.
func (p *caddyProc) markerWarmSingleUse(t *testing.T, i int, seen map[string]bool) []byte {
	t.Helper()
	resp, body := p.get(t, "/marker")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("request %d: status %d body %q", i, resp.StatusCode, body)
	}
	if got := resp.Header.Get("X-Spawn-Start"); got != "warm" {
		t.Errorf("request %d: start type %q, want warm (the pool was full)", i, got)
	}
	id := resp.Header.Get("X-Spawn-Container")
	if id == "" || seen[id] {
		t.Fatalf("request %d: container %q reused or unknown: containers must be single-use", i, id)
	}
	seen[id] = true
	if !strings.Contains(string(body), "seen-marker=false") {
		t.Fatalf("request %d (%s) saw a previous request's marker: %q", i, id, body)
	}
	return body
}

// TestPoolSingleUse: every warm request gets a container nobody used
// before: a marker file written by the previous request is never seen.
func TestPoolSingleUse(t *testing.T) {
	port := freePort(t)
	const pool, requests = 3, 50
	p := startCaddy(t, port, site(port, pooledRoute("/marker", "marker", "marker", pool)))
	containers := map[string]bool{}
	pids := map[string]int{}
	for i := range requests {
		p.waitPoolFull(t, "marker", pool)
		body := p.markerWarmSingleUse(t, i, containers)
		if m := regexp.MustCompile(`pid=(\d+)`).FindSubmatch(body); m != nil {
			pids[string(m[1])]++
		}
	}
	if len(containers) != requests {
		t.Errorf("%d distinct containers for %d requests", len(containers), requests)
	}
	t.Logf("%d warm requests, %d distinct containers, program PIDs seen: %v", requests, len(containers), pids)
}

// TestPoolWarmEnv: the CGI environment of a container started before its
// request is that request's, on the warm path.
func TestPoolWarmEnv(t *testing.T) {
	port := freePort(t)
	p := startCaddy(t, port, site(port, pooledRoute("/env", "env", "env", 2)))
	methods := []string{"GET", "POST", "PUT", "DELETE", "PATCH"}
	for i := range 10 {
		p.waitPoolFull(t, "env", 2)
		method := methods[i%len(methods)]
		var body io.Reader
		if method != "GET" && method != "DELETE" {
			body = strings.NewReader(strings.Repeat("x", i+1))
		}
		req, err := http.NewRequest(method, p.url(fmt.Sprintf("/env?i=%d&tag=req%d", i, i)), body)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("X-Req", strconv.Itoa(i))
		resp, out := p.do(t, req)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("request %d: status %d body %q", i, resp.StatusCode, out)
		}
		if got := resp.Header.Get("X-Spawn-Start"); got != "warm" {
			t.Errorf("request %d: start type %q, want warm", i, got)
		}
		env := map[string]string{}
		for line := range strings.SplitSeq(string(out), "\n") {
			if k, v, ok := strings.Cut(line, "="); ok {
				env[k] = v
			}
		}
		want := map[string]string{
			"REQUEST_METHOD": method,
			"QUERY_STRING":   fmt.Sprintf("i=%d&tag=req%d", i, i),
			"HTTP_X_REQ":     strconv.Itoa(i),
			"FN_IMAGE_ENV":   "from-image",
		}
		if body != nil {
			want["CONTENT_LENGTH"] = strconv.Itoa(i + 1)
		}
		for k, v := range want {
			if env[k] != v {
				t.Errorf("request %d: %s=%q, want %q", i, k, env[k], v)
			}
		}
		if body == nil {
			if _, ok := env["CONTENT_LENGTH"]; ok {
				t.Errorf("request %d (%s, no body): CONTENT_LENGTH=%q set", i, method, env["CONTENT_LENGTH"])
			}
		}
		if _, ok := env["SPAWN_EXIT_TOKEN"]; ok {
			t.Errorf("request %d: the init's exit token leaked into the program's environment", i)
		}
	}
}

// TestPoolRefillsAfterBurst: a burst larger than the pool is served (warm
// first, then cold), and the pool refills to its size afterwards.
func TestPoolRefillsAfterBurst(t *testing.T) {
	port := freePort(t)
	const pool, burst = 4, 12
	p := startCaddy(t, port, site(port, pooledRoute("/b", "burst", "status 200", pool)))
	before := p.waitPoolFull(t, "burst", pool)

	var wg sync.WaitGroup
	var mu sync.Mutex
	starts := map[string]int{}
	for range burst {
		wg.Go(func() {
			resp, err := p.client.Get(p.url("/b"))
			if err != nil {
				t.Errorf("burst request: %v", err)
				return
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			mu.Lock()
			defer mu.Unlock()
			if resp.StatusCode != http.StatusOK {
				t.Errorf("burst request: status %d", resp.StatusCode)
			}
			starts[resp.Header.Get("X-Spawn-Start")]++
		})
	}
	wg.Wait()
	if starts["warm"] < 1 || starts["warm"]+starts["cold"] != burst {
		t.Errorf("start types %v: want %d answers, some warm", starts, burst)
	}
	after := p.waitPoolFull(t, "burst", pool)
	for _, id := range after {
		for _, old := range before {
			if id == old {
				t.Errorf("container %s was in the pool before the burst and still is: the burst should have used it", id)
			}
		}
	}
	// The pool gauge agrees.
	eventually(t, 10*time.Second, func() (bool, string) {
		resp, err := http.Get("http://" + adminAddr + "/metrics")
		if err != nil {
			return false, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		want := fmt.Sprintf(`caddy_spawn_pool_idle{route="burst"} %d`, pool)
		return strings.Contains(string(b), want), "metrics lack " + want
	})
	t.Logf("burst of %d with pool %d: start types %v", burst, pool, starts)
}

// TestMaxConcurrent: past max_concurrent, a request waits queue_timeout,
// then gets 503 with Retry-After; the slot frees when the first ends.
func TestMaxConcurrent(t *testing.T) {
	port := freePort(t)
	p := startCaddy(t, port, site(port,
		testfnRoute("/slow", "slow", "sleep 1500ms", "pool 1", "max_concurrent 1", "queue_timeout 200ms")))
	first := make(chan int, 1)
	go func() {
		resp, err := p.client.Get(p.url("/slow"))
		if err != nil {
			t.Errorf("first request: %v", err)
			first <- 0
			return
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		first <- resp.StatusCode
	}()
	// Wait until the first request holds the slot (its program runs).
	p.waitClaimed(t, 10*time.Second, "/testfn sleep")
	resp, body := p.get(t, "/slow")
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("second request while the first runs: status %d body %q, want 503", resp.StatusCode, body)
	}
	if resp.Header.Get("Retry-After") == "" {
		t.Error("503 without Retry-After")
	}
	if code := <-first; code != http.StatusOK {
		t.Errorf("first request: status %d, want 200", code)
	}
	if resp, body := p.get(t, "/slow"); resp.StatusCode != http.StatusOK {
		t.Errorf("request after the slot freed: status %d body %q, want 200", resp.StatusCode, body)
	}
}
