//go:build integration

package main

import (
	"bytes"
	"context"
	"errors"
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
	// StealPercent is the CPU time the hypervisor stole over the trace.
	StealPercent float64 `json:"steal_percent"`
	// Timeline is the gauges each second of the trace (means of the
	// samples): where the idle containers were held.
	Timeline []timelinePoint `json:"timeline"`
}

// timelinePoint is one second of a trace.
type timelinePoint struct {
	Second       int     `json:"s"`
	BurstIdle    float64 `json:"burst_idle"`
	BurstTarget  float64 `json:"burst_target"`
	SteadyIdle   float64 `json:"steady_idle"`
	SteadyTarget float64 `json:"steady_target"`
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
	// The first policy measured must not pay for a fresh Caddy's first
	// containers (page cache, the task server's first runs): in runs
	// without this, whichever went first had p50s of 0.6 s where the
	// same trace later measured 30 ms.
	if err := b.warmUp(ctx, b.caddy.base+"/burst-none", 3*time.Second); err != nil {
		return err
	}
	adaptive, err := b.trace(ctx, "adaptive", "pool_min 0 pool_max 8 pool_idle_timeout 3s", cycles)
	if err != nil {
		return err
	}
	fixed, err := b.fixedLadder(ctx, p, adaptive, cycles)
	if err != nil {
		return err
	}
	none, err := b.trace(ctx, "none", "pool 0", cycles)
	if err != nil {
		return err
	}
	b.res.Bursty = append(append([]burstyResult{adaptive.res}, fixed...), none.res)
	b.res.PoolsVerdict = poolsVerdict(adaptive.res, fixed)
	return nil
}

// maxFixedRuns bounds the fixed pools tried on the trace.
const maxFixedRuns = 3

// fixedLadder runs the trace on fixed pools until two of them bracket the
// adaptive pools' idle-container-seconds: it starts from the adaptive
// pools' average idle per route (rounded) and grows (or shrinks) by one
// the route whose fixed pool held fewer (or more) idle containers than its
// adaptive one. A fixed pool sits full between bursts and empties during
// them, the adaptive one the other way round, so the same configured size
// is not the same memory; pool sizes are whole numbers, so the same memory
// lies between two of them.
func (b *bench) fixedLadder(ctx context.Context, p *pathRun, adaptive traceResult, cycles int) ([]burstyResult, error) {
	b.fixedPools = map[string]int{
		"burst":  int(math.Round(adaptive.burstIdle)),
		"steady": int(math.Round(adaptive.steadyIdle)),
	}
	var runs []burstyResult
	var below, above bool
	for range maxFixedRuns {
		if err := b.reload(ctx, p); err != nil {
			return nil, err
		}
		for kind, n := range b.fixedPools {
			if err := b.quiesce(ctx, kind+"-fixed", n, time.Minute); err != nil {
				return nil, err
			}
		}
		f, err := b.trace(ctx, "fixed", fmt.Sprintf("pool %d (burst), pool %d (steady)", b.fixedPools["burst"], b.fixedPools["steady"]), cycles)
		if err != nil {
			return nil, err
		}
		runs = append(runs, f.res)
		more := f.res.IdleContainerSeconds >= adaptive.res.IdleContainerSeconds
		below, above = below || !more, above || more
		if below && above {
			break
		}
		burstGap, steadyGap := adaptive.burstIdle-f.burstIdle, adaptive.steadyIdle-f.steadyIdle
		switch {
		case !more && burstGap >= steadyGap:
			b.fixedPools["burst"]++
		case !more:
			b.fixedPools["steady"]++
		case b.fixedPools["burst"] > 0 && (burstGap <= steadyGap || b.fixedPools["steady"] == 0):
			b.fixedPools["burst"]--
		case b.fixedPools["steady"] > 0:
			b.fixedPools["steady"]--
		default:
			return runs, nil // nothing smaller than no pool
		}
	}
	return runs, nil
}

// poolsVerdict compares the adaptive pools with fixed ones of the same
// idle memory: the warm-hit ratio at the adaptive pools'
// idle-container-seconds on the line between the two fixed runs that
// bracket them (the nearest below and above). Without a bracket it
// compares with the nearest fixed run directly: better on one figure and
// no worse on the other.
func poolsVerdict(adaptive burstyResult, fixed []burstyResult) string {
	if len(fixed) == 0 {
		return ""
	}
	a := adaptive.IdleContainerSeconds
	var lo, hi *burstyResult
	for i := range fixed {
		f := &fixed[i]
		if f.IdleContainerSeconds < a && (lo == nil || f.IdleContainerSeconds > lo.IdleContainerSeconds) {
			lo = f
		}
		if f.IdleContainerSeconds >= a && (hi == nil || f.IdleContainerSeconds < hi.IdleContainerSeconds) {
			hi = f
		}
	}
	if lo != nil && hi != nil {
		span := hi.IdleContainerSeconds - lo.IdleContainerSeconds
		w := 1.0
		if span > 0 {
			w = (a - lo.IdleContainerSeconds) / span
		}
		eq := lo.WarmRatio + w*(hi.WarmRatio-lo.WarmRatio)
		verdict := "adaptive LOSES to"
		if adaptive.WarmRatio > eq {
			verdict = "adaptive beats"
		}
		return fmt.Sprintf("%s fixed pools of the same idle memory: warm-hit ratio %.0f%% vs %.0f%% at %.1f idle-container-seconds (between fixed %s: %.0f%% at %.1f and %s: %.0f%% at %.1f)",
			verdict, 100*adaptive.WarmRatio, 100*eq, a, lo.Pool, 100*lo.WarmRatio, lo.IdleContainerSeconds, hi.Pool, 100*hi.WarmRatio, hi.IdleContainerSeconds)
	}
	eq := lo
	if eq == nil {
		eq = hi
	}
	warmer, noWorseWarm := adaptive.WarmRatio > eq.WarmRatio, adaptive.WarmRatio >= eq.WarmRatio
	leaner, noMoreIdle := a < eq.IdleContainerSeconds, a <= eq.IdleContainerSeconds
	verdict := "adaptive LOSES to (or trades off against)"
	if (warmer && noMoreIdle) || (leaner && noWorseWarm) {
		verdict = "adaptive beats"
	}
	return fmt.Sprintf("%s fixed %s (no pair of fixed runs brackets its memory): warm-hit ratio %.0f%% vs %.0f%%, idle-container-seconds %.1f vs %.1f",
		verdict, eq.Pool, 100*adaptive.WarmRatio, 100*eq.WarmRatio, a, eq.IdleContainerSeconds)
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

// warmUp sends burstRate requests a second to url for d, unmeasured, and
// lets the machine settle for as long again.
func (b *bench) warmUp(ctx context.Context, url string, d time.Duration) error {
	progress("pools: warming up: %s at %.0f/s to %s", d, burstRate, url)
	var wg sync.WaitGroup
	every := time.Duration(float64(time.Second) / burstRate)
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(every) {
		wg.Go(func() { b.get(ctx, url) })
	}
	wg.Wait()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}

// trace runs the bursty trace against one policy's routes.
func (b *bench) trace(ctx context.Context, policy, pool string, cycles int) (traceResult, error) {
	progress("pools: %s (%s): %d × (%d s at %.0f/s, %d s idle) on burst-%s, %.0f/s on steady-%s",
		policy, pool, cycles, burstSeconds, burstRate, idleSeconds, policy, steadyRate, policy)
	total := time.Duration(cycles*(burstSeconds+idleSeconds)) * time.Second
	burstURL, steadyURL := b.caddy.base+"/burst-"+policy, b.caddy.base+"/steady-"+policy
	series := func(gauge, route string) string {
		return fmt.Sprintf(`caddy_spawn_pool_%s{route="%s-%s"}`, gauge, route, policy)
	}

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
	var timeline []timelinePoint
	perSecond := 0 // samples in timeline's last point
	stop := make(chan struct{})
	cpu0, cpuErr := readCPU()
	began := time.Now()
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
			bi, si := m[series("idle", "burst")], m[series("idle", "steady")]
			burstIdle += bi
			steadyIdle += si
			samples++
			sec := int(time.Since(began) / time.Second)
			if len(timeline) == 0 || timeline[len(timeline)-1].Second != sec {
				meanOfLast(timeline, perSecond)
				timeline = append(timeline, timelinePoint{Second: sec})
				perSecond = 0
			}
			pt := &timeline[len(timeline)-1]
			pt.BurstIdle += bi
			pt.BurstTarget += m[series("target", "burst")]
			pt.SteadyIdle += si
			pt.SteadyTarget += m[series("target", "steady")]
			perSecond++
		}
	})
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
	meanOfLast(timeline, perSecond)
	cpu1, err := readCPU()
	cpuErr = errors.Join(cpuErr, err)

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
	r.Timeline = timeline
	if cpuErr == nil {
		r.StealPercent = stealPercent(cpu1.sub(cpu0))
	}
	out := traceResult{res: r}
	if samples > 0 {
		out.burstIdle, out.steadyIdle = burstIdle/float64(samples), steadyIdle/float64(samples)
		out.res.AvgIdle = round(out.burstIdle + out.steadyIdle)
		out.res.IdleContainerSeconds = round((out.burstIdle + out.steadyIdle) * time.Since(began).Seconds())
	}
	progress("pools: %s: warm %.0f%% (burst %.0f%%, steady %.0f%%), p50 %.1f ms, p99 %.1f ms, %.1f idle-container-seconds, steal %.0f%%",
		policy, 100*out.res.WarmRatio, 100*r.BurstRatio, 100*r.SteadyRatio, r.P50, r.P99, out.res.IdleContainerSeconds, r.StealPercent)
	return out, nil
}

// meanOfLast divides the sums of the timeline's last point by its n
// samples.
func meanOfLast(tl []timelinePoint, n int) {
	if len(tl) == 0 || n == 0 {
		return
	}
	pt := &tl[len(tl)-1]
	f := float64(n)
	pt.BurstIdle, pt.BurstTarget = round(pt.BurstIdle/f), round(pt.BurstTarget/f)
	pt.SteadyIdle, pt.SteadyTarget = round(pt.SteadyIdle/f), round(pt.SteadyTarget/f)
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}
