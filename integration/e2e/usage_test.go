//go:build integration

package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
)

// TestUsageMetering checks per-request metering from the container's
// cgroup: a function that burns 200 ms of CPU with 60 MiB touched reports
// that, within ±30 % and at least 50 MiB, in the trailers (report_usage),
// the access log, a placeholder and the metrics.
func TestUsageMetering(t *testing.T) {
	port := freePort(t)
	accessLog := filepath.Join(t.TempDir(), "access.log")
	sites := fmt.Sprintf("http://:%d {\n\tlog {\n\t\toutput file %s\n\t\tformat json\n\t}\n\tlog_append usage_placeholder {http.spawn.cpu_ms}\n%s%s}\n",
		port, accessLog,
		testfnRoute("/burn", "burn", "burn 200 60", "pool 0", "report_usage"),
		testfnRoute("/burn-warm", "burn-warm", "burn 200 60", "pool 1"))
	p := startCaddy(t, port, sites)
	inRange := func(what string, ms float64) {
		t.Helper()
		if ms < 140 || ms > 260 {
			t.Errorf("%s: %.1f ms of CPU, want 200 ± 30 %%", what, ms)
		}
	}

	resp, err := p.client.Get(p.url("/burn"))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body) // trailers arrive after the body
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(string(body), "burned ") {
		t.Fatalf("GET /burn: %d %q", resp.StatusCode, body)
	}
	cpu, err := strconv.ParseFloat(resp.Trailer.Get("Spawn-Cpu-Ms"), 64)
	if err != nil {
		t.Fatalf("trailer Spawn-Cpu-Ms %q: %v (trailers %v)", resp.Trailer.Get("Spawn-Cpu-Ms"), err, resp.Trailer)
	}
	inRange("trailer", cpu)
	peak, err := strconv.ParseInt(resp.Trailer.Get("Spawn-Memory-Peak-Bytes"), 10, 64)
	if err != nil || peak < 50<<20 {
		t.Errorf("trailer Spawn-Memory-Peak-Bytes %q: want at least 50 MiB", resp.Trailer.Get("Spawn-Memory-Peak-Bytes"))
	}

	// A warm container: what it used while it waited in the pool is not
	// counted, and without report_usage there are no trailers.
	p.waitPoolFull(t, "burn-warm", 1)
	wresp, err := p.client.Get(p.url("/burn-warm"))
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, wresp.Body)
	wresp.Body.Close()
	if v := wresp.Trailer.Get("Spawn-Cpu-Ms"); v != "" {
		t.Errorf("a route without report_usage sent Spawn-Cpu-Ms %q", v)
	}

	entries := accessEntries(t, accessLog)
	for _, uri := range []string{"/burn", "/burn-warm"} {
		e, ok := entries[uri]
		if !ok {
			t.Fatalf("no access log entry for %s in %s", uri, accessLog)
		}
		ms, _ := e["spawn_cpu_ms"].(float64)
		inRange("access log of "+uri, ms)
		if mem, _ := e["spawn_memory_peak_bytes"].(float64); mem < 50<<20 {
			t.Errorf("access log of %s: spawn_memory_peak_bytes %v, want at least 50 MiB", uri, e["spawn_memory_peak_bytes"])
		}
		// Wall time: at least the CPU time spread over every CPU.
		if run, _ := e["spawn_run_ms"].(float64); run < ms/float64(runtime.NumCPU()) {
			t.Errorf("access log of %s: spawn_run_ms %v, want at least its CPU time %v over %d CPUs", uri, e["spawn_run_ms"], ms, runtime.NumCPU())
		}
		ph, err := strconv.ParseFloat(fmt.Sprint(e["usage_placeholder"]), 64)
		if err != nil || ph != ms {
			t.Errorf("access log of %s: {http.spawn.cpu_ms} placeholder %v, want %v", uri, e["usage_placeholder"], ms)
		}
	}

	mresp, err := p.client.Get("http://" + adminAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(mresp.Body)
	mresp.Body.Close()
	for _, want := range []string{
		`caddy_spawn_cpu_seconds_count{route="burn"} 1`,
		`caddy_spawn_memory_peak_bytes_count{route="burn"} 1`,
		`caddy_spawn_cpu_seconds_count{route="burn-warm"} 1`,
	} {
		if !strings.Contains(string(metrics), want+"\n") {
			t.Errorf("metrics lack %q", want)
		}
	}
}

// accessEntries reads a JSON access log, one entry per request URI (the
// last one).
func accessEntries(t *testing.T, path string) map[string]map[string]any {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string]map[string]any{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var e map[string]any
		if json.Unmarshal(sc.Bytes(), &e) != nil {
			continue
		}
		req, _ := e["request"].(map[string]any)
		if uri, ok := req["uri"].(string); ok {
			out[uri] = e
		}
	}
	return out
}
