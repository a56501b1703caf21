//go:build integration

package main

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"
)

// poolsPath is the name of the run that compares pool policies on a bursty
// trace (fast path): an adaptive pool, a fixed pool holding as many idle
// containers on average, and no pool.
const poolsPath = "pools"

// The trace: a bursty route (burstSeconds at burstRate, then idleSeconds
// idle, cycles times) and a steady route at steadyRate throughout.
const (
	burstRate    = 20.0
	burstSeconds = 5
	idleSeconds  = 10
	steadyRate   = 2.0
)

// burstyResult is one policy's figures on the trace.
type burstyResult struct {
	Policy      string  `json:"policy"`
	Pool        string  `json:"pool"`
	Requests    int     `json:"requests"`
	Errors      int     `json:"errors"`
	WarmHits    int     `json:"warm_hits"`
	WarmRatio   float64 `json:"warm_hit_ratio"`
	BurstRatio  float64 `json:"burst_route_warm_hit_ratio"`
	SteadyRatio float64 `json:"steady_route_warm_hit_ratio"`
	P50         float64 `json:"p50_ms"`
	P99         float64 `json:"p99_ms"`
	// IdleContainerSeconds integrates both routes' pool_idle gauges
	// (sampled every 100 ms) over the trace: the warm memory it held.
	IdleContainerSeconds float64 `json:"idle_container_seconds"`
	AvgIdle              float64 `json:"average_idle"`
}

// poolRoutes is the Caddyfile routes of the pools run: the adaptive and
// no-pool variants, and the fixed one once its size is known.
func (b *bench) poolRoutes(route func(name string, pool int, extra ...string) string) string {
	adaptive := []string{"pool_min 0", "pool_max 8", "pool_idle_timeout 3s"}
	var s strings.Builder
	for _, kind := range []string{"burst", "steady"} {
		s.WriteString(route(kind+"-adaptive", -1, adaptive...))
		s.WriteString(route(kind+"-none", 0))
		if n, ok := b.fixedPools[kind]; ok {
			s.WriteString(route(kind+"-fixed", n))
		}
	}
	return s.String()
}

// runPools starts a fast-path Caddy with the pool comparison's routes and
// runs the trace on each policy.
func (b *bench) runPools(ctx context.Context, p *pathRun) error {
	if err := b.startPath(ctx, p); err != nil {
		return err
	}
	cycles := 2
	if b.cfg.quick {
		cycles = 1
	}
	adaptive, err := b.trace(ctx, "adaptive", "pool_min 0 pool_max 8 pool_idle_timeout 3s", cycles)
	if err != nil {
		return err
	}
	// The fixed pools hold, on average, what the adaptive ones held.
	b.fixedPools = map[string]int{
		"burst":  int(math.Round(adaptive.burstIdle)),
		"steady": max(int(math.Round(adaptive.steadyIdle)), 0),
	}
	if err := b.reload(ctx, p); err != nil {
		return err
	}
	for kind, n := range b.fixedPools {
		if err := b.quiesce(ctx, kind+"-fixed", n, time.Minute); err != nil {
			return err
		}
	}
	fixed, err := b.trace(ctx, "fixed", fmt.Sprintf("pool %d (burst), pool %d (steady)", b.fixedPools["burst"], b.fixedPools["steady"]), cycles)
	if err != nil {
		return err
	}
	none, err := b.trace(ctx, "none", "pool 0", cycles)
	if err != nil {
		return err
	}
	b.res.Bursty = []burstyResult{adaptive.res, fixed.res, none.res}
	return nil
}

// startPath starts p's Caddy and connects to its containerd.
func (b *bench) startPath(ctx context.Context, p *pathRun) error {
	for _, d := range []string{p.state, p.runDir} {
		if err := os.MkdirAll(d, 0o711); err != nil {
			return fmt.Errorf("creating %s: %w", d, err)
		}
	}
	if err := b.startCaddy(ctx, p); err != nil {
		return err
	}
	b.cur, b.caddy = p, p.caddy
	if err := b.checkRuntime(p); err != nil {
		return err
	}
	return b.connect(p)
}

// reload loads the path's Caddyfile again (with the fixed pools) through
// the admin endpoint; unchanged routes keep their pools.
func (b *bench) reload(ctx context.Context, p *pathRun) error {
	cfg := b.caddyfile(p, p.httpPort, p.adminPort)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.caddy.admin+"/load", bytes.NewBufferString(cfg))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "text/caddyfile")
	resp, err := b.http.Do(req)
	if err != nil {
		return fmt.Errorf("reloading the config: %w", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("reloading the config: status %d", resp.StatusCode)
	}
	return nil
}

type traceResult struct {
	res                   burstyResult
	burstIdle, steadyIdle float64 // average pool_idle of each route
}

// trace runs the bursty trace against one policy's routes.
func (b *bench) trace(ctx context.Context, policy, pool string, cycles int) (traceResult, error) {
	progress("pools: %s (%s): %d × (%d s at %.0f/s, %d s idle) on burst-%s, %.0f/s on steady-%s",
		policy, pool, cycles, burstSeconds, burstRate, idleSeconds, policy, steadyRate, policy)
	total := time.Duration(cycles*(burstSeconds+idleSeconds)) * time.Second
	burstURL, steadyURL := b.caddy.base+"/burst-"+policy, b.caddy.base+"/steady-"+policy
	series := func(route string) string { return fmt.Sprintf(`caddy_spawn_pool_idle{route="%s-%s"}`, route, policy) }

	var mu sync.Mutex
	var burst, steady []sample
	var wg sync.WaitGroup
	send := func(url string, into *[]sample) {
		wg.Go(func() {
			s := b.get(ctx, url)
			mu.Lock()
			*into = append(*into, s)
			mu.Unlock()
		})
	}
	// Idle containers, integrated while the trace runs.
	var burstIdle, steadyIdle float64
	samples := 0
	stop := make(chan struct{})
	var sampler sync.WaitGroup
	sampler.Go(func() {
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
			}
			m, err := b.metrics(ctx)
			if err != nil {
				continue
			}
			burstIdle += m[series("burst")]
			steadyIdle += m[series("steady")]
			samples++
		}
	})
	began := time.Now()
	steadyEvery := time.Duration(float64(time.Second) / steadyRate)
	burstEvery := time.Duration(float64(time.Second) / burstRate)
	nextSteady, nextBurst := began, began
	for now := time.Now(); now.Sub(began) < total; now = time.Now() {
		if !nextSteady.After(now) {
			send(steadyURL, &steady)
			nextSteady = nextSteady.Add(steadyEvery)
		}
		inBurst := int(now.Sub(began)/time.Second)%(burstSeconds+idleSeconds) < burstSeconds
		if !nextBurst.After(now) {
			if inBurst {
				send(burstURL, &burst)
			}
			nextBurst = nextBurst.Add(burstEvery)
		}
		time.Sleep(time.Until(minTime(nextSteady, nextBurst)))
		if err := ctx.Err(); err != nil {
			return traceResult{}, err
		}
	}
	wg.Wait()
	close(stop)
	sampler.Wait()

	r := burstyResult{Policy: policy, Pool: pool}
	warmOf := func(ss []sample) (warm, ok int) {
		for _, s := range ss {
			if s.err != nil {
				b.noteErr("pools "+policy, s.err)
				continue
			}
			ok++
			if s.startType == "warm" {
				warm++
			}
		}
		return warm, ok
	}
	bw, bok := warmOf(burst)
	sw, sok := warmOf(steady)
	all := append(append([]sample{}, burst...), steady...)
	st := latencies(all)
	r.Requests, r.Errors, r.WarmHits = len(all), len(all)-bok-sok, bw+sw
	r.WarmRatio = ratio(float64(bw+sw), float64(bok+sok))
	r.BurstRatio, r.SteadyRatio = ratio(float64(bw), float64(bok)), ratio(float64(sw), float64(sok))
	r.P50, r.P99 = st.p50, st.p99
	out := traceResult{res: r}
	if samples > 0 {
		out.burstIdle, out.steadyIdle = burstIdle/float64(samples), steadyIdle/float64(samples)
		out.res.AvgIdle = round(out.burstIdle + out.steadyIdle)
		out.res.IdleContainerSeconds = round((out.burstIdle + out.steadyIdle) * time.Since(began).Seconds())
	}
	progress("pools: %s: warm %.0f%% (burst %.0f%%, steady %.0f%%), p50 %.1f ms, p99 %.1f ms, %.1f idle-container-seconds",
		policy, 100*out.res.WarmRatio, 100*r.BurstRatio, 100*r.SteadyRatio, r.P50, r.P99, out.res.IdleContainerSeconds)
	return out, nil
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}
