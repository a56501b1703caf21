package caddymodule

import (
	"slices"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// TestPoolGaugesAcrossReload: a reload that changes a route makes a new
// route of the same name whose pool fills while the old one drains; the
// old one's end leaves the new one's figures, and the series go with the
// last route of the name.
func TestPoolGaugesAcrossReload(t *testing.T) {
	if err := initMetrics(prometheus.NewRegistry()); err != nil {
		t.Fatal(err)
	}
	const name = "gauges-reload"
	idle := func() float64 { return gaugeOf(t, spawnMetrics.poolIdle, name) }
	target := func() float64 { return gaugeOf(t, spawnMetrics.poolTarget, name) }

	old, cur := &route{name: name}, &route{name: name}
	poolGauges.update(old, func(c *poolCounts) { c.idle, c.target = 2, 2 })
	poolGauges.update(cur, func(c *poolCounts) { c.target = 3 })
	poolGauges.update(cur, func(c *poolCounts) { c.idle = 3 })
	if idle() != 5 || target() != 5 {
		t.Errorf("both pools live: idle %v, target %v; want the sums 5 and 5", idle(), target())
	}
	poolGauges.update(old, func(c *poolCounts) { c.idle = 0 }) // draining
	poolGauges.remove(old)
	if idle() != 3 || target() != 3 {
		t.Errorf("after the old route's end: idle %v, target %v; want the new pool's 3 and 3", idle(), target())
	}
	if !slices.Contains(collectLabels(t, spawnMetrics.poolIdle), name) {
		t.Fatalf("no pool_idle series of %s while its route lives", name)
	}
	poolGauges.remove(cur)
	if slices.Contains(collectLabels(t, spawnMetrics.poolIdle), name) {
		t.Errorf("the pool_idle series of %s outlived its last route", name)
	}
}

// collectLabels lists the route labels of a gauge vector's series.
func collectLabels(t *testing.T, c prometheus.Collector) []string {
	t.Helper()
	var names []string
	for name := range gauges(t, c) {
		names = append(names, name)
	}
	return names
}

// gaugeOf is the value of the series of route in a gauge vector (0 when
// it has none).
func gaugeOf(t *testing.T, c prometheus.Collector, route string) float64 {
	t.Helper()
	return gauges(t, c)[route]
}

// gauges gathers a gauge vector's series by route label.
func gauges(t *testing.T, c prometheus.Collector) map[string]float64 {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "route" {
					out[l.GetValue()] = m.GetGauge().GetValue()
				}
			}
		}
	}
	return out
}
