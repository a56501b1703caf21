package caddymodule

import (
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// asyncCollector reports the job queues of all routes with async on, read
// at scrape time: caddy_spawn_async_jobs{route,state},
// caddy_spawn_async_oldest_queued_seconds{route},
// caddy_spawn_async_retries_total{route} and
// caddy_spawn_async_failures_total{route}. Labels are bounded: route
// names and the three pending states.
type asyncCollector struct{}

var (
	asyncJobsDesc = prometheus.NewDesc("caddy_spawn_async_jobs",
		"Pending async jobs of a route, by state (queued, running, retrying).", []string{"route", "state"}, nil)
	asyncOldestDesc = prometheus.NewDesc("caddy_spawn_async_oldest_queued_seconds",
		"Age of the oldest async job of a route that waits to run (queued or retrying); 0 when none waits.", []string{"route"}, nil)
	asyncRetriesDesc = prometheus.NewDesc("caddy_spawn_async_retries_total",
		"Failed attempts of async jobs that were retried, by route.", []string{"route"}, nil)
	asyncFailuresDesc = prometheus.NewDesc("caddy_spawn_async_failures_total",
		"Async jobs that failed for good (all attempts failed), by route.", []string{"route"}, nil)
)

// initAsyncMetrics registers the collector on registry, once per registry.
func initAsyncMetrics(registry *prometheus.Registry) error {
	if err := registry.Register(asyncCollector{}); err != nil {
		if _, ok := errors.AsType[prometheus.AlreadyRegisteredError](err); !ok {
			return err
		}
	}
	return nil
}

func (asyncCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- asyncJobsDesc
	ch <- asyncOldestDesc
	ch <- asyncRetriesDesc
	ch <- asyncFailuresDesc
}

func (asyncCollector) Collect(ch chan<- prometheus.Metric) {
	now := time.Now()
	liveQueues.Range(func(_, v any) bool {
		a := v.(*asyncQueue)
		s := a.q.Stats()
		for state, n := range map[string]int{"queued": s.Queued, "running": s.Running, "retrying": s.Retrying} {
			ch <- prometheus.MustNewConstMetric(asyncJobsDesc, prometheus.GaugeValue, float64(n), a.name, state)
		}
		age := 0.0
		if !s.OldestQueued.IsZero() {
			age = now.Sub(s.OldestQueued).Seconds()
		}
		ch <- prometheus.MustNewConstMetric(asyncOldestDesc, prometheus.GaugeValue, age, a.name)
		ch <- prometheus.MustNewConstMetric(asyncRetriesDesc, prometheus.CounterValue, float64(a.retries.Load()), a.name)
		ch <- prometheus.MustNewConstMetric(asyncFailuresDesc, prometheus.CounterValue, float64(a.fails.Load()), a.name)
		return true
	})
}

// Interface guards
var _ prometheus.Collector = asyncCollector{}
