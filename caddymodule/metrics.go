package caddymodule

import (
	"errors"
	"strconv"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/caddy-spawn/caddy-spawn/spawner"
)

// spawnMetrics are process-wide collectors, registered on each config's
// registry; their labels are bounded: route (a configured name) and small
// enums, never container or request IDs.
var spawnMetrics = struct {
	once           sync.Once
	poolIdle       *prometheus.GaugeVec
	poolTarget     *prometheus.GaugeVec
	poolScale      *prometheus.CounterVec
	warmUsed       prometheus.Gauge
	warmBudget     prometheus.Gauge
	rejects        *prometheus.CounterVec
	claims         *prometheus.CounterVec
	startSeconds   *prometheus.HistogramVec
	requestSeconds *prometheus.HistogramVec
	exits          *prometheus.CounterVec
	cpuSeconds     *prometheus.HistogramVec
	memoryPeak     *prometheus.HistogramVec
}{}

// warmBudget is the app's warm_memory, shared by every route's pool and,
// like the pools, kept across config reloads (Start sets its total).
var warmBudget = spawner.NewWarmBudget(0, func(used int64) {
	if g := spawnMetrics.warmUsed; g != nil {
		g.Set(float64(used))
	}
})

func initMetrics(registry *prometheus.Registry) error {
	const ns, sub = "caddy", "spawn"
	spawnMetrics.once.Do(func() {
		spawnMetrics.poolIdle = prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: ns, Subsystem: sub, Name: "pool_idle",
			Help: "Paused single-use containers waiting in a route's pool.",
		}, []string{"route"})
		spawnMetrics.poolTarget = prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: ns, Subsystem: sub, Name: "pool_target",
			Help: "How many idle containers a route's pool aims to keep now (adaptive pools follow demand and warm_memory).",
		}, []string{"route"})
		spawnMetrics.poolScale = prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "pool_scale_events_total",
			Help: "Changes of a route's pool target, by direction (up or down).",
		}, []string{"route", "direction"})
		spawnMetrics.warmUsed = prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: ns, Subsystem: sub, Name: "warm_memory_bytes",
			Help: "Memory counted against warm_memory: every idle pooled container at its route's memory limit.",
		})
		spawnMetrics.warmBudget = prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: ns, Subsystem: sub, Name: "warm_memory_budget_bytes",
			Help: "The warm_memory budget (0: no cap).",
		})
		spawnMetrics.rejects = prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "early_rejections_total",
			Help: "Requests answered 503 at once because their estimated wait exceeded queue_timeout.",
		}, []string{"route"})
		spawnMetrics.claims = prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "claims_total",
			Help: "Containers claimed for requests: result is hit (from the pool) or miss (created on the spot).",
		}, []string{"route", "result"})
		spawnMetrics.startSeconds = prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: ns, Subsystem: sub, Name: "start_seconds",
			Help:    "Time to get a running container for a request, by start type (warm: claimed from the pool, thawed when its request begins; cold: created).",
			Buckets: []float64{.0005, .001, .002, .005, .01, .02, .05, .1, .2, .5, 1, 2},
		}, []string{"route", "type"})
		spawnMetrics.requestSeconds = prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: ns, Subsystem: sub, Name: "request_duration_seconds",
			Help:    "Time from the start of a request to its last byte, by route.",
			Buckets: prometheus.ExponentialBuckets(.001, 2.5, 12),
		}, []string{"route"})
		spawnMetrics.exits = prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "exits_total",
			Help: "Function exits by route and exit code (\"killed\" when the container was killed).",
		}, []string{"route", "code"})
		spawnMetrics.cpuSeconds = prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: ns, Subsystem: sub, Name: "cpu_seconds",
			Help:    "CPU time (user and system) a request's container used from the request's start, by route.",
			Buckets: prometheus.ExponentialBuckets(.001, 2.5, 12),
		}, []string{"route"})
		spawnMetrics.memoryPeak = prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: ns, Subsystem: sub, Name: "memory_peak_bytes",
			Help:    "Peak memory of a request's container, by route.",
			Buckets: prometheus.ExponentialBuckets(1<<20, 2, 12),
		}, []string{"route"})
	})
	for _, c := range []prometheus.Collector{
		spawnMetrics.poolIdle, spawnMetrics.poolTarget, spawnMetrics.poolScale, spawnMetrics.warmUsed,
		spawnMetrics.warmBudget, spawnMetrics.rejects, spawnMetrics.claims, spawnMetrics.startSeconds,
		spawnMetrics.requestSeconds, spawnMetrics.exits, spawnMetrics.cpuSeconds, spawnMetrics.memoryPeak,
	} {
		if err := registry.Register(c); err != nil {
			if _, ok := errors.AsType[prometheus.AlreadyRegisteredError](err); !ok {
				return err
			}
		}
	}
	return nil
}

// poolGauges sets pool_idle and pool_target per route name to the sum over
// the live routes of that name: a reload that changes a route starts its
// new pool while the old one still drains, both under the same name, and
// the old one's end must neither zero nor delete the new one's series.
var poolGauges = &routeGauges{live: map[string]map[*route]poolCounts{}}

type routeGauges struct {
	mu   sync.Mutex
	live map[string]map[*route]poolCounts
}

type poolCounts struct{ idle, target int }

// update changes r's counts with f and sets its name's gauges to the sum.
func (g *routeGauges) update(r *route, f func(*poolCounts)) {
	g.mu.Lock()
	defer g.mu.Unlock()
	byRoute := g.live[r.name]
	if byRoute == nil {
		byRoute = map[*route]poolCounts{}
		g.live[r.name] = byRoute
	}
	c := byRoute[r]
	f(&c)
	byRoute[r] = c
	g.publish(r.name)
}

// remove forgets r; its name's series go once no live route has it.
func (g *routeGauges) remove(r *route) {
	g.mu.Lock()
	defer g.mu.Unlock()
	delete(g.live[r.name], r)
	if len(g.live[r.name]) == 0 {
		delete(g.live, r.name)
		if spawnMetrics.poolIdle != nil {
			spawnMetrics.poolIdle.DeleteLabelValues(r.name)
			spawnMetrics.poolTarget.DeleteLabelValues(r.name)
		}
		return
	}
	g.publish(r.name)
}

// publish sets name's gauges; call with g.mu held.
func (g *routeGauges) publish(name string) {
	if spawnMetrics.poolIdle == nil {
		return
	}
	var sum poolCounts
	for _, c := range g.live[name] {
		sum.idle += c.idle
		sum.target += c.target
	}
	spawnMetrics.poolIdle.WithLabelValues(name).Set(float64(sum.idle))
	spawnMetrics.poolTarget.WithLabelValues(name).Set(float64(sum.target))
}

func exitCodeLabel(code uint32) string {
	if code > 255 {
		return "other"
	}
	return strconv.FormatUint(uint64(code), 10)
}
