//go:build integration && fleet

package fleet

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

const (
	// scalingBase is the front's port for the first n nodes: base+n.
	scalingBase = 8100
	// scalingWorkers is the closed-loop clients per node: enough to keep
	// a half-CPU node busy (its own cold creations are what caps it).
	scalingWorkers = 6
	// scalingRun is how long each fleet size is loaded.
	scalingRun = 15 * time.Second
	// scalingCPUs is each node's CPU cap here: three nodes at 0.3 CPU
	// leave the 2-core host room for what the caps do not hold (the
	// front, the client, the containers' own cgroups), so the figures
	// are the fleet's scaling, not the host's limit (at 0.5 CPU a node,
	// three nodes measured 1.85 CPUs busy: 2.34× one node).
	scalingCPUs = 0.3
)

// BenchmarkFleetScaling measures fresh containers per second through a
// front Caddy with 1, 2 and then 3 nodes of the lab, each capped at
// scalingCPUs, in one run: every request is a new single-use container
// (pooled or created on the spot), GETs of the three 50 ms routes in turn,
// scalingWorkers clients per node in a closed loop, least_conn over the
// nodes in play. It reports each size's rate, p50 and p99, all-CPU
// milliseconds per container (from /proc/stat: nodes, front and client
// together), and the 2- and 3-node rates over the 1-node rate. Run it with
// `make bench-fleet`.
//
// What it asserts is what would make its figures wrong: no failed
// requests, each node in play serving a share (least_conn spreads the
// load), and the nodes not in play serving nothing.
func BenchmarkFleetScaling(b *testing.B) {
	l := theLab
	var nodes []*member
	for i := range 3 {
		nodes = append(nodes, newCappedNode(b, l, fmt.Sprintf("s%d", i+1), 31+i, scalingCPUs))
	}
	front := newMember(b, l, "sfront", 40, 0)
	front.config = frontAdmin(front.dir)
	for n := 1; n <= len(nodes); n++ {
		front.config += frontSite(scalingBase+n, nodes[:n], "least_conn")
	}
	for _, n := range nodes {
		n.start(b)
	}
	front.start(b)
	front.waitServing(b, scalingBase+1)
	for _, n := range nodes {
		n.waitServing(b, 9180)
		n.waitReady(b)
	}

	type level struct {
		nodes       int
		ok          int
		seconds     float64
		rate        float64
		p50, p99    time.Duration
		cpuMsPerCtr float64
		stealPct    float64
		byNode      map[string]int
	}
	var levels []level
	for b.Loop() {
		levels = levels[:0]
		for n := 1; n <= len(nodes); n++ {
			for _, m := range nodes {
				m.waitPoolsFull(b)
			}
			before := servedBy(b, nodes)
			busy0, steal0, _ := cpuBusyMs()
			ctx, cancel := context.WithTimeout(b.Context(), scalingRun)
			began := time.Now()
			out := load(ctx, fmt.Sprintf("http://%s:%d", front.addr, scalingBase+n), scalingWorkers*n, 1<<30, roundRobinGets)
			secs := time.Since(began).Seconds()
			cancel()
			busy1, steal1, cpuErr := cpuBusyMs()
			after := servedBy(b, nodes)

			tl := count(out)
			if tl.failedGets+tl.failedPosts > 0 {
				b.Fatalf("%d nodes: %d of %d requests failed: %v", n, tl.failedGets+tl.failedPosts, len(out), tl.failures)
			}
			lv := level{nodes: n, ok: len(out), seconds: secs, rate: float64(len(out)) / secs, byNode: map[string]int{}}
			lv.p50, lv.p99 = quantile(out, 50), quantile(out, 99)
			if cpuErr == nil && len(out) > 0 {
				lv.cpuMsPerCtr = (busy1 - busy0) / float64(len(out))
				lv.stealPct = 100 * (steal1 - steal0) / (secs * 1000 * float64(runtime.NumCPU()))
			}
			for i, m := range nodes {
				served := int(after[i] - before[i])
				lv.byNode[m.name] = served
				switch {
				case i < n && served < len(out)/(4*n):
					b.Errorf("%d nodes: %s served %d of %d requests: least_conn did not spread the load", n, m.name, served, len(out))
				case i >= n && served > 0:
					b.Errorf("%d nodes: %s, not in play, served %d requests", n, m.name, served)
				}
			}
			levels = append(levels, lv)
			b.Logf("%d node(s): %d fresh containers in %.1f s = %.1f/s, p50 %s, p99 %s, %.1f CPU ms/container (all CPUs, steal excluded), steal %.0f%%, by node %v",
				n, lv.ok, secs, lv.rate, lv.p50.Round(time.Millisecond), lv.p99.Round(time.Millisecond), lv.cpuMsPerCtr, lv.stealPct, lv.byNode)
		}
	}
	if len(levels) != len(nodes) {
		return
	}
	one := levels[0].rate
	var summary []string
	for _, lv := range levels {
		b.ReportMetric(lv.rate, fmt.Sprintf("fresh/s@%dnodes", lv.nodes))
		b.ReportMetric(float64(lv.p99.Milliseconds()), fmt.Sprintf("p99-ms@%dnodes", lv.nodes))
		b.ReportMetric(lv.cpuMsPerCtr, fmt.Sprintf("cpu-ms/ctr@%dnodes", lv.nodes))
		b.ReportMetric(lv.stealPct, fmt.Sprintf("steal-%%@%dnodes", lv.nodes))
		summary = append(summary, fmt.Sprintf("%d: %.1f/s (%.2f×)", lv.nodes, lv.rate, lv.rate/one))
		if lv.nodes > 1 {
			b.ReportMetric(lv.rate/one, fmt.Sprintf("scaling@%dnodes", lv.nodes))
		}
	}
	fmt.Fprintf(os.Stdout, "fleet scaling (nodes capped at %.1f CPU each, %d clients per node, least_conn, %s per size): %s\n",
		scalingCPUs, scalingWorkers, scalingRun, strings.Join(summary, ", "))
}

// roundRobinGets is the scaling load: GETs of a, b and c in turn.
func roundRobinGets(i int) shot {
	return shot{method: http.MethodGet, path: "/" + string(rune('a'+i%3)) + "/fn"}
}

// servedBy is each node's count of served requests, from its metrics.
func servedBy(b *testing.B, nodes []*member) []float64 {
	b.Helper()
	out := make([]float64, len(nodes))
	for i, m := range nodes {
		c, err := m.counters()
		if err != nil {
			b.Fatal(err)
		}
		out[i] = c.served
	}
	return out
}

// quantile is the q-th percentile latency of the outcomes.
func quantile(out []outcome, q int) time.Duration {
	if len(out) == 0 {
		return 0
	}
	d := make([]time.Duration, len(out))
	for i, o := range out {
		d[i] = o.took
	}
	slices.Sort(d)
	return d[min(len(d)-1, len(d)*q/100)]
}

// cpuBusyMs is the machine's CPU time since boot, in milliseconds, from
// /proc/stat's first line: busy (user, nice, system, irq, softirq; guest
// time is in user already) and, apart, steal (the hypervisor ran another
// guest).
func cpuBusyMs() (busy, steal float64, err error) {
	data, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0, err
	}
	line, _, _ := strings.Cut(string(data), "\n")
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return 0, 0, fmt.Errorf("/proc/stat: unexpected first line %q", line)
	}
	// cpu user nice system idle iowait irq softirq steal ...
	for _, i := range []int{1, 2, 3, 6, 7, 8} {
		n, err := strconv.ParseFloat(f[i], 64)
		if err != nil {
			return 0, 0, err
		}
		if i == 8 {
			steal = n
		} else {
			busy += n
		}
	}
	const msPerTick = 1000 / 100 // USER_HZ is 100 on Linux
	return busy * msPerTick, steal * msPerTick, nil
}
