//go:build integration

package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/cgi" //nolint:gosec // G504 is about Go < 1.6.3; the host CGI baseline needs this package
	"net/http/httptest"
	"sync"
	"time"
)

// sample is one request's outcome.
type sample struct {
	total     time.Duration // request sent → last body byte read
	ttfb      time.Duration // request sent → response header read
	startType string        // X-Spawn-Start (Caddy routes)
	err       error
}

// get sends GET url and reads the whole answer, which must be the hello
// program's 200 with its greeting (and exit code 0 when Caddy reports it).
func (b *bench) get(ctx context.Context, url string) sample {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return sample{err: err}
	}
	t0 := time.Now()
	resp, err := b.http.Do(req)
	if err != nil {
		return sample{err: err}
	}
	s := sample{ttfb: time.Since(t0), startType: resp.Header.Get("X-Spawn-Start")}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	s.total = time.Since(t0)
	switch {
	case err != nil:
		s.err = fmt.Errorf("GET %s: reading body: %w", url, err)
	case resp.StatusCode != http.StatusOK:
		s.err = fmt.Errorf("GET %s: status %d: %.200q", url, resp.StatusCode, body)
	case !bytes.Contains(body, []byte(greeting)):
		s.err = fmt.Errorf("GET %s: body lacks the greeting: %.200q", url, body)
	case resp.Trailer.Get("Spawn-Exit-Code") != "" && resp.Trailer.Get("Spawn-Exit-Code") != "0":
		s.err = fmt.Errorf("GET %s: function exit code %s", url, resp.Trailer.Get("Spawn-Exit-Code"))
	}
	return s
}

// noteErr counts a failed request and keeps the first few messages.
func (b *bench) noteErr(mode string, err error) {
	b.res.Errors++
	if len(b.errSample) < 5 {
		b.errSample = append(b.errSample, mode+": "+err.Error())
	}
}

// series runs warm-up plus measured requests one after another; before
// each, pace (if set) waits for the system to settle.
func (b *bench) series(ctx context.Context, mode, url string, pace func() error) ([]sample, error) {
	var out []sample
	for i := range b.cfg.warmup + b.cfg.requests {
		if pace != nil {
			if err := pace(); err != nil {
				return nil, err
			}
		}
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		s := b.get(ctx, url)
		if i < b.cfg.warmup {
			continue
		}
		if s.err != nil {
			b.noteErr(mode, s.err)
		}
		out = append(out, s)
	}
	return out, nil
}

// runHostCGI: Go's net/http/cgi runs the hello binary per request, served
// on loopback by this process.
func (b *bench) runHostCGI(ctx context.Context) error {
	progress("host CGI: %d+%d requests", b.cfg.warmup, b.cfg.requests)
	srv := httptest.NewServer(&cgi.Handler{Path: b.helloBin})
	defer srv.Close()
	ss, err := b.series(ctx, "host CGI", srv.URL+"/hello", nil)
	if err != nil {
		return err
	}
	st := latencies(ss)
	b.res.HostCGIP50, b.res.HostCGIP90, b.res.HostCGIP99 = st.p50, st.p90, st.p99
	b.res.hostCGI = st
	return nil
}

// runWarm: the pooled route, paced so that the pool is full and the
// previous request's container removed before every request; every
// measured answer must be warm.
func (b *bench) runWarm(ctx context.Context) error {
	progress("%s warm: %d+%d requests, each after the pool refilled", b.cur.name, b.cfg.warmup, b.cfg.requests)
	var beforeMeasured map[string]float64
	i := 0
	ss, err := b.series(ctx, b.cur.name+" warm", b.caddy.base+"/warm", func() error {
		if err := b.quiesce(ctx, "warm", warmPool, 30*time.Second); err != nil {
			return err
		}
		if i == b.cfg.warmup {
			m, err := b.metrics(ctx)
			if err != nil {
				return err
			}
			beforeMeasured = m
		}
		i++
		return nil
	})
	if err != nil {
		return err
	}
	after, err := b.metrics(ctx)
	if err != nil {
		return err
	}
	r := &b.cur.res
	st := latencies(ss)
	r.WarmP50, r.WarmP90, r.WarmP99 = st.p50, st.p90, st.p99
	r.warm = st
	ttfb := make([]time.Duration, 0, len(ss))
	for _, s := range ss {
		if s.err == nil {
			ttfb = append(ttfb, s.ttfb)
			if s.startType != "warm" {
				r.WarmMisses++
			}
		} else {
			r.WarmMisses++
		}
	}
	r.WarmTTFBP50 = summarize(ttfb).p50
	// Server-side view over the measured requests: time to get a running
	// container (acquire + thaw), and the handler's whole time.
	d := func(name string) float64 { return after[name] - beforeMeasured[name] }
	if n := d(`caddy_spawn_start_seconds_count{route="warm",type="warm"}`); n > 0 {
		r.WarmServerStartMean = round(d(`caddy_spawn_start_seconds_sum{route="warm",type="warm"}`) / n * 1000)
	}
	if n := d(`caddy_spawn_request_duration_seconds_count{route="warm"}`); n > 0 {
		r.WarmServerHandlerMean = round(d(`caddy_spawn_request_duration_seconds_sum{route="warm"}`) / n * 1000)
	}
	return nil
}

// runCold: the route with pool 0, paced so that the previous request's
// container is removed first (its teardown runs after the response).
func (b *bench) runCold(ctx context.Context) error {
	progress("%s cold: %d+%d requests, each after the previous container was removed", b.cur.name, b.cfg.warmup, b.cfg.requests)
	st, err := b.pacedSeries(ctx, "cold", 0, "cold")
	if err != nil {
		return err
	}
	r := &b.cur.res
	r.ColdP50, r.ColdP90, r.ColdP99 = st.p50, st.p90, st.p99
	r.cold = st
	return nil
}

// runUserns: warm and cold again, paced the same way, on the routes with
// `userns`: what a user namespace with id-mapped layers adds.
func (b *bench) runUserns(ctx context.Context) error {
	r := &b.cur.res
	for _, m := range []struct {
		route, start string
		pool         int
		p50, p90     *float64
	}{
		{"warm-userns", "warm", usernsPool, &r.UsernsWarmP50, &r.UsernsWarmP90},
		{"cold-userns", "cold", 0, &r.UsernsColdP50, &r.UsernsColdP90},
	} {
		progress("%s %s: %d+%d requests, each after the pool refilled and the previous container was removed", b.cur.name, m.route, b.cfg.warmup, b.cfg.requests)
		st, err := b.pacedSeries(ctx, m.route, m.pool, m.start)
		if err != nil {
			return err
		}
		*m.p50, *m.p90 = st.p50, st.p90
	}
	return nil
}

// pacedSeries sends the series to route, each request once the route holds
// exactly pool containers again (the previous one removed, the pool
// refilled), and notes every answer whose X-Spawn-Start is not start.
func (b *bench) pacedSeries(ctx context.Context, route string, pool int, start string) (stats, error) {
	mode := b.cur.name + " " + route
	ss, err := b.series(ctx, mode, b.caddy.base+"/"+route, func() error {
		return b.quiesce(ctx, route, pool, 30*time.Second)
	})
	if err != nil {
		return stats{}, err
	}
	for _, s := range ss {
		if s.err == nil && s.startType != start {
			b.noteErr(mode, fmt.Errorf("X-Spawn-Start %q, want %s", s.startType, start))
		}
	}
	return latencies(ss), nil
}

// runSustained: fresh containers per second through Caddy at each
// concurrency level for a fixed time, starting from a full pool and a quiet
// system. Only 200s with the greeting count. The CPU the machine spends from
// the level's first request until the pool is full again and every used
// container is removed is divided by the containers served.
func (b *bench) runSustained(ctx context.Context) error {
	r := &b.cur.res
	url := b.caddy.base + "/sustained"
	if err := b.quiesce(ctx, "sustained", sustainedPool, time.Minute); err != nil {
		return err
	}
	// The machine's CPU rate with this path idle: what runs beside the bench.
	idle0, err := b.readCPU()
	if err != nil {
		return err
	}
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(idleSample):
	}
	idle1, err := b.readCPU()
	if err != nil {
		return err
	}
	idle := idle1.sub(idle0)
	idleRate := idle.allMs / idle.wall.Seconds() // ms per second
	r.IdleCPUMsPerS = round(idleRate)

	var totalCPU, totalClient, totalNet, totalOurs float64
	oursOK := true
	var totalContainers int
	r.Sustained = nil
	for _, conc := range b.cfg.levels {
		if err := b.quiesce(ctx, "sustained", sustainedPool, time.Minute); err != nil {
			return err
		}
		progress("%s sustained: %s at concurrency %d", b.cur.name, b.cfg.sustained, conc)
		var (
			mu       sync.Mutex
			ss       []sample
			wg       sync.WaitGroup
			lastDone time.Time
		)
		cpu0, err := b.readCPU()
		if err != nil {
			return err
		}
		start := time.Now()
		end := start.Add(b.cfg.sustained)
		for range conc {
			wg.Go(func() {
				for time.Now().Before(end) && ctx.Err() == nil {
					s := b.get(ctx, url)
					mu.Lock()
					ss = append(ss, s)
					lastDone = time.Now()
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		if err := ctx.Err(); err != nil {
			return err
		}
		// The containers served are torn down and the pool refilled after
		// the responses: that is part of their cost.
		if err := b.quiesceEvery(ctx, "sustained", sustainedPool, time.Minute, 100*time.Millisecond); err != nil {
			return err
		}
		cpu1, err := b.readCPU()
		if err != nil {
			return err
		}
		used := cpu1.sub(cpu0)

		lv := sustainedLevel{Concurrency: conc, Requests: len(ss)}
		var ok []time.Duration
		for _, s := range ss {
			if s.err != nil {
				lv.Errors++
				b.noteErr(fmt.Sprintf("%s sustained c%d", b.cur.name, conc), s.err)
				continue
			}
			ok = append(ok, s.total)
			if s.startType == "warm" {
				lv.Warm++
			}
		}
		lv.OK = len(ok)
		lv.Seconds = round(lastDone.Sub(start).Seconds())
		if lv.Seconds > 0 {
			lv.PerSecond = round(float64(lv.OK) / lastDone.Sub(start).Seconds())
		}
		st := summarize(ok)
		lv.P50, lv.P99 = st.p50, st.p99
		lv.CPUSeconds = round(used.wall.Seconds())
		lv.CPUMs = round(used.allMs)
		lv.StealPercent = stealPercent(used)
		lv.ClientCPUMs = round(used.selfMs)
		net := max(0, used.allMs-idleRate*used.wall.Seconds())
		if lv.Requests > 0 {
			lv.CPUMsPerContainer = round(used.allMs / float64(lv.Requests))
			lv.ClientCPUMsPerContainer = round(used.selfMs / float64(lv.Requests))
			lv.NetCPUMsPerContainer = round(net / float64(lv.Requests))
		}
		totalCPU += used.allMs
		totalClient += used.selfMs
		totalNet += net
		if used.oursMs >= 0 && lv.Requests > 0 {
			lv.OursCPUMs = round(used.oursMs)
			lv.OursCPUMsPerContainer = round(used.oursMs / float64(lv.Requests))
			totalOurs += used.oursMs
		} else {
			oursOK = false
		}
		totalContainers += lv.Requests
		r.Sustained = append(r.Sustained, lv)
		switch conc {
		case 1:
			r.FreshPerSC1 = lv.PerSecond
		case 4:
			r.FreshPerSC4 = lv.PerSecond
		case 16:
			r.FreshPerSC16 = lv.PerSecond
		}
	}
	if totalContainers > 0 {
		r.CPUMsPerContainer = round(totalCPU / float64(totalContainers))
		r.ClientCPUMsPerContainer = round(totalClient / float64(totalContainers))
		r.NetCPUMsPerContainer = round(totalNet / float64(totalContainers))
		if oursOK {
			r.OursCPUMsPerContainer = round(totalOurs / float64(totalContainers))
		}
	}
	return nil
}

// latencies summarizes the successful samples' total times.
func latencies(ss []sample) stats {
	var d []time.Duration
	for _, s := range ss {
		if s.err == nil {
			d = append(d, s.total)
		}
	}
	st := summarize(d)
	st.errors = len(ss) - len(d)
	return st
}
