//go:build integration && soak

package e2e

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestSoak sends many mixed requests — ok, non-zero exit, timeout, client
// disconnect, oversized body — and checks that Caddy's open fds and
// goroutines, the host's mounts and containerd/shim processes, and our containers and
// snapshots return to their starting counts. Run it with `make soak`
// (SOAK_REQUESTS, default 10000; SOAK_CONCURRENCY, default 8).
func TestSoak(t *testing.T) {
	port := freePort(t)
	total := envInt("SOAK_REQUESTS", 10000)
	conc := envInt("SOAK_CONCURRENCY", 8)
	const pool = 2
	sites := site(port,
		testfnRoute("/ok", "ok", "cat", fmt.Sprintf("pool %d", pool), "max_request_body 64KiB"),
		testfnRoute("/exit", "exit", "exit 3", fmt.Sprintf("pool %d", pool)),
		testfnRoute("/slow", "slow", "sleep 1h", "pool 0", "timeout 1s"),
	)
	p := startCaddy(t, port, sites)
	for _, r := range []string{"ok", "exit"} {
		p.waitPoolFull(t, r, pool)
	}
	pid := p.proc.Pid()
	time.Sleep(2 * time.Second) // let start-up goroutines settle
	start := p.counts(t, pid)
	t.Logf("start: %+v", start)

	kinds := []struct {
		name   string
		weight int
		do     func() (int, error)
	}{
		{"ok", 45, func() (int, error) {
			body := bytes.Repeat([]byte("x"), 1+rand.IntN(32<<10))
			resp, err := p.client.Post(p.url("/ok"), "application/octet-stream", bytes.NewReader(body))
			if err != nil {
				return 0, err
			}
			defer resp.Body.Close()
			got, err := io.ReadAll(resp.Body)
			if err == nil && !bytes.Equal(got, body) {
				err = fmt.Errorf("echo mismatch: %d bytes back for %d", len(got), len(body))
			}
			return resp.StatusCode, err
		}},
		{"exit", 15, func() (int, error) { return p.status("/exit", nil) }},
		{"timeout", 2, func() (int, error) { return p.status("/slow", nil) }},
		{"disconnect", 5, func() (int, error) {
			ctx, cancel := context.WithTimeout(context.Background(), 150*time.Millisecond)
			defer cancel()
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, p.url("/slow"), nil)
			resp, err := p.client.Do(req)
			if err == nil {
				resp.Body.Close()
				return resp.StatusCode, fmt.Errorf("want the client to give up, got %d", resp.StatusCode)
			}
			return 499, nil
		}},
		{"oversized", 33, func() (int, error) {
			return p.status("/ok", bytes.NewReader(make([]byte, 128<<10)))
		}},
	}
	want := map[string]int{"ok": 200, "exit": 502, "timeout": 504, "disconnect": 499, "oversized": 413}
	var weights []string
	for _, k := range kinds {
		for range k.weight {
			weights = append(weights, k.name)
		}
	}
	var (
		mu     sync.Mutex
		counts = map[string]int{}
		bad    = map[string]int{}
		next   atomic.Int64
		wg     sync.WaitGroup
	)
	began := time.Now()
	for range conc {
		wg.Go(func() {
			for n := next.Add(1); n <= int64(total); n = next.Add(1) {
				name := weights[rand.IntN(len(weights))]
				var code int
				var err error
				for _, k := range kinds {
					if k.name == name {
						code, err = k.do()
					}
				}
				mu.Lock()
				counts[name]++
				if err != nil || code != want[name] {
					bad[fmt.Sprintf("%s: %d %v", name, code, err)]++
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	took := time.Since(began)
	t.Logf("%d requests in %s (%.1f/s): %v", total, took.Round(time.Second), float64(total)/took.Seconds(), counts)
	for k, n := range bad {
		t.Errorf("%d × unexpected answer %s", n, k)
	}

	// Quiesce: pools full again, nothing else alive.
	for _, r := range []string{"ok", "exit"} {
		p.waitPoolFull(t, r, pool)
	}
	p.client.CloseIdleConnections()
	var end soakCounts
	eventually(t, 60*time.Second, func() (bool, string) {
		end = p.counts(t, pid)
		return end.equal(start), fmt.Sprintf("counts did not return: start %+v, now %+v", start, end)
	})
	t.Logf("end:   %+v", end)
}

type soakCounts struct {
	FDs, Goroutines, Mounts, Procs, Containers, Snapshots int
}

// equal allows a few goroutines of slack (HTTP keep-alive, timers).
func (a soakCounts) equal(b soakCounts) bool {
	return a.FDs == b.FDs && a.Mounts == b.Mounts && a.Procs == b.Procs &&
		a.Containers == b.Containers && a.Snapshots == b.Snapshots &&
		b.Goroutines <= a.Goroutines+5
}

func (p *caddyProc) counts(t *testing.T, pid int) soakCounts {
	t.Helper()
	var c soakCounts
	// Read goroutines over a connection that closes, so it does not count
	// as one of Caddy's open fds.
	req, _ := http.NewRequest(http.MethodGet, "http://"+adminAddr+"/debug/pprof/goroutine?debug=1", nil)
	req.Close = true
	if resp, err := http.DefaultClient.Do(req); err == nil {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		// "goroutine profile: total N"
		if _, after, ok := strings.Cut(string(b), "total "); ok {
			c.Goroutines, _ = strconv.Atoi(strings.Fields(after)[0])
		}
	}
	time.Sleep(100 * time.Millisecond)
	if fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid)); err == nil {
		c.FDs = len(fds)
	}
	c.Mounts = len(mountsUnder(ctrdRoot, stateDir, runDir))
	// The managed containerd and every shim name its state directory.
	c.Procs = len(processesMentioning(stateDir))
	if cs, snaps, err := p.containerStates(); err == nil {
		c.Containers, c.Snapshots = len(cs), len(snaps)
	}
	return c
}

// status sends a request (POST with body when body != nil) and returns
// its status, reading the body.
func (p *caddyProc) status(path string, body io.Reader) (int, error) {
	method := http.MethodGet
	if body != nil {
		method = http.MethodPost
	}
	req, err := http.NewRequest(method, p.url(path), body)
	if err != nil {
		return 0, err
	}
	resp, err := p.client.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, nil
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}
