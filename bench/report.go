//go:build integration

package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// stats summarizes a latency series in milliseconds.
type stats struct {
	n                   int
	errors              int
	p50, p90, p99, mean float64
	min, max            float64
}

func summarize(d []time.Duration) stats {
	st := stats{n: len(d)}
	if len(d) == 0 {
		return st
	}
	s := slices.Clone(d)
	slices.Sort(s)
	ms := func(x time.Duration) float64 { return round(float64(x) / float64(time.Millisecond)) }
	// Nearest rank: the smallest value with at least p% of the samples at
	// or below it.
	pct := func(p float64) float64 {
		i := int(math.Ceil(p/100*float64(len(s)))) - 1
		return ms(s[max(0, min(i, len(s)-1))])
	}
	var sum time.Duration
	for _, x := range s {
		sum += x
	}
	st.p50, st.p90, st.p99 = pct(50), pct(90), pct(99)
	st.mean = ms(sum / time.Duration(len(s)))
	st.min, st.max = ms(s[0]), ms(s[len(s)-1])
	return st
}

func round(x float64) float64 { return math.Round(x*1000) / 1000 }

// sustainedLevel is one concurrency level of the sustained run.
type sustainedLevel struct {
	Concurrency int     `json:"concurrency"`
	Requests    int     `json:"requests"`
	OK          int     `json:"ok"`
	Errors      int     `json:"errors"`
	Warm        int     `json:"warm_hits"`
	Seconds     float64 `json:"seconds"`
	PerSecond   float64 `json:"per_s"`
	P50         float64 `json:"p50_ms"`
	P99         float64 `json:"p99_ms"`
	// StealPercent is the share of the machine's CPU time the hypervisor
	// gave to other guests over the level's window (/proc/stat steal):
	// high steal slows every figure of the run.
	StealPercent float64 `json:"steal_percent"`
	// CPU: all CPUs (/proc/stat, everything but idle, iowait and steal) from the
	// first request until the pool was full again and the used containers
	// removed (CPUSeconds of wall time), and per container served; the bench
	// process's own share (its HTTP client and polls) beside it.
	CPUSeconds              float64 `json:"cpu_window_seconds"`
	CPUMs                   float64 `json:"cpu_ms"`
	CPUMsPerContainer       float64 `json:"cpu_ms_per_container"`
	ClientCPUMs             float64 `json:"bench_client_cpu_ms"`
	ClientCPUMsPerContainer float64 `json:"bench_client_cpu_ms_per_container"`
	// NetCPUMsPerContainer is CPUMsPerContainer less the machine's idle
	// CPU rate (pathResults.IdleCPUMsPerS) over the window: an estimate
	// without what else ran on the machine.
	NetCPUMsPerContainer float64 `json:"cpu_ms_per_container_net_of_idle"`
	// OursCPUMs is the CPU of the processes the bench started (Caddy,
	// containerd, shims, task server, crun) and of the containers, by cgroup
	// accounting, the bench process itself excluded: unlike CPUMs, not
	// raised by other work on the machine, but without kernel threads
	// working for us. 0 without cgroup accounting.
	OursCPUMs             float64 `json:"ours_cpu_ms"`
	OursCPUMsPerContainer float64 `json:"ours_cpu_ms_per_container"`
}

// target is one goal of the issue, and whether this run met it.
type target struct {
	Name   string  `json:"name"`
	Value  float64 `json:"value"`
	Limit  float64 `json:"limit"`
	Met    bool    `json:"met"`
	Detail string  `json:"detail"`
}

// pathResults are one path's figures (fast or stock); times in ms, rates
// per second, memory in KiB.
type pathResults struct {
	FastPath              string  `json:"fast_path"`
	Runtime               string  `json:"runtime"`
	WarmP50               float64 `json:"warm_p50_ms"`
	WarmP90               float64 `json:"warm_p90_ms"`
	WarmP99               float64 `json:"warm_p99_ms"`
	WarmMisses            int     `json:"warm_misses"`
	WarmTTFBP50           float64 `json:"warm_ttfb_p50_ms"`
	WarmServerStartMean   float64 `json:"warm_server_start_mean_ms"`
	WarmServerHandlerMean float64 `json:"warm_server_handler_mean_ms"`
	ColdP50               float64 `json:"cold_p50_ms"`
	ColdP90               float64 `json:"cold_p90_ms"`
	ColdP99               float64 `json:"cold_p99_ms"`
	// Userns*: warm and cold again on routes with `userns`.
	UsernsWarmP50 float64 `json:"userns_warm_p50_ms"`
	UsernsWarmP90 float64 `json:"userns_warm_p90_ms"`
	UsernsColdP50 float64 `json:"userns_cold_p50_ms"`
	UsernsColdP90 float64 `json:"userns_cold_p90_ms"`
	FreshPerSC1   float64 `json:"fresh_per_s_c1"`
	FreshPerSC4   float64 `json:"fresh_per_s_c4"`
	FreshPerSC16  float64 `json:"fresh_per_s_c16"`

	Sustained []sustainedLevel `json:"sustained"`
	// CPUMsPerContainer is over every level: all CPU ÷ all containers.
	CPUMsPerContainer       float64 `json:"cpu_ms_per_container"`
	ClientCPUMsPerContainer float64 `json:"bench_client_cpu_ms_per_container"`
	NetCPUMsPerContainer    float64 `json:"cpu_ms_per_container_net_of_idle"`
	OursCPUMsPerContainer   float64 `json:"ours_cpu_ms_per_container"`
	// IdleCPUMsPerS is the machine's CPU rate (ms per second, all CPUs)
	// with the path idle, sampled just before the sustained run: what else
	// runs on the machine.
	IdleCPUMsPerS float64 `json:"idle_cpu_ms_per_s"`

	// Memory is measured with every pool full and idle after the runs;
	// MemoryAtStart after the pools first filled, before any request.
	Memory        memoryResult `json:"memory_idle_pool"`
	MemoryAtStart memoryResult `json:"memory_idle_pool_at_start"`

	TaskServerPids         []int `json:"task_server_pids,omitempty"`
	CaddyRefillFailureLogs int   `json:"caddy_refill_failure_logs"`
	ContainersBeforeStop   int   `json:"containers_before_stop"`
	LeftoverContainers     int   `json:"leftover_containers_after_stop"`

	warm, cold stats
}

// results is what bench/results.json holds; times in ms, rates per second.
// The top-level warm, cold and sustained keys are the fast path's (the
// default path); "paths" has both.
type results struct {
	TopLevelPath           string   `json:"top_level_path"`
	WarmP50                float64  `json:"warm_p50_ms"`
	WarmP90                float64  `json:"warm_p90_ms"`
	WarmP99                float64  `json:"warm_p99_ms"`
	WarmMisses             int      `json:"warm_misses"`
	WarmTTFBP50            float64  `json:"warm_ttfb_p50_ms"`
	WarmServerStartMean    float64  `json:"warm_server_start_mean_ms"`
	WarmServerHandlerMean  float64  `json:"warm_server_handler_mean_ms"`
	ColdP50                float64  `json:"cold_p50_ms"`
	ColdP90                float64  `json:"cold_p90_ms"`
	ColdP99                float64  `json:"cold_p99_ms"`
	HostCGIP50             float64  `json:"host_cgi_p50_ms"`
	HostCGIP90             float64  `json:"host_cgi_p90_ms"`
	HostCGIP99             float64  `json:"host_cgi_p99_ms"`
	NaiveP50               float64  `json:"naive_p50_ms"`
	NaiveP90               float64  `json:"naive_p90_ms"`
	NaiveP99               float64  `json:"naive_p99_ms"`
	FreshPerSC1            float64  `json:"fresh_per_s_c1"`
	FreshPerSC4            float64  `json:"fresh_per_s_c4"`
	FreshPerSC16           float64  `json:"fresh_per_s_c16"`
	ThawFreezerP50         float64  `json:"thaw_freezer_p50_ms"`
	ThawFreezerP99         float64  `json:"thaw_freezer_p99_ms"`
	ThawResumeP50          float64  `json:"thaw_resume_p50_ms"`
	ThawResumeP99          float64  `json:"thaw_resume_p99_ms"`
	InprocThawP50          float64  `json:"inproc_warm_thaw_p50_ms"`
	InprocFirstByteP50     float64  `json:"inproc_warm_first_byte_p50_ms"`
	InprocStdoutEOFP50     float64  `json:"inproc_warm_stdout_eof_p50_ms"`
	InprocExitP50          float64  `json:"inproc_warm_exit_p50_ms"`
	InprocDoneP50          float64  `json:"inproc_warm_exit_code_known_p50_ms"`
	InprocPauseP50         float64  `json:"inproc_pause_after_start_p50_ms"`
	InprocPauseP99         float64  `json:"inproc_pause_after_start_p99_ms"`
	InprocPauseMax         float64  `json:"inproc_pause_after_start_max_ms"`
	InprocPauseFailures    int      `json:"inproc_pause_failures"`
	InprocPauseErrors      []string `json:"inproc_pause_errors,omitempty"`
	CaddyRefillFailureLogs int      `json:"caddy_refill_failure_logs"`
	RatioWarmHostCGI       float64  `json:"ratio_warm_host_cgi"`
	RatioNaiveCold         float64  `json:"ratio_naive_cold"`
	// Fast path ÷ stock path, this run.
	RatioFastStockC16    float64 `json:"ratio_fast_stock_c16"`
	RatioFastStockCPU    float64 `json:"ratio_fast_stock_cpu_per_container"`
	RatioFastStockMemory float64 `json:"ratio_fast_stock_memory_per_idle_container"`

	Sustained []sustainedLevel        `json:"sustained"`
	Paths     map[string]*pathResults `json:"paths"`
	Targets   []target                `json:"targets"`

	Errors               int      `json:"errors"`
	ErrorSamples         []string `json:"error_samples,omitempty"`
	ContainersBeforeStop int      `json:"containers_before_stop"`
	LeftoverContainers   int      `json:"leftover_containers_after_stop"`

	Quick bool `json:"quick"`
	// Bursty compares pool policies on a bursty trace (fast path).
	Bursty []burstyResult `json:"bursty_pools,omitempty"`
	// PoolsVerdict compares adaptive with the fixed pools of equal idle
	// memory on the trace.
	PoolsVerdict string `json:"pools_verdict,omitempty"`

	Requests         int     `json:"requests"`
	Warmup           int     `json:"warmup"`
	SustainedSeconds float64 `json:"sustained_seconds_per_level"`
	ThawSamples      int     `json:"thaw_samples"`
	WallSeconds      float64 `json:"wall_seconds"`

	NProc             int    `json:"nproc"`
	Kernel            string `json:"kernel"`
	Date              string `json:"date"`
	CPU               string `json:"cpu"`
	MemTotal          string `json:"mem_total"`
	GoVersion         string `json:"go_version"`
	ContainerdVersion string `json:"containerd_version"`
	RuncVersion       string `json:"runc_version"`
	CrunVersion       string `json:"crun_version"`
	LoadAvgStart      string `json:"loadavg_start"`
	LoadAvgEnd        string `json:"loadavg_end"`
	// LoadAvgs are /proc/loadavg's 1, 5 and 15 minute figures after each step.
	LoadAvgs map[string]string `json:"loadavg_by_step"`

	hostCGI, naive, thawFreezer, thawResume stats
}

func (r *results) machineInfo() {
	r.NProc = runtime.NumCPU()
	r.Kernel = strings.TrimSpace(readFile("/proc/sys/kernel/osrelease"))
	r.Date = time.Now().UTC().Format(time.RFC3339)
	r.CPU = procField("/proc/cpuinfo", "model name")
	r.MemTotal = procField("/proc/meminfo", "MemTotal")
	r.GoVersion = runtime.Version()
	if out, err := exec.Command("runc", "--version").Output(); err == nil {
		r.RuncVersion = strings.TrimSpace(strings.SplitN(string(out), "\n", 2)[0])
	}
	if out, err := exec.Command("crun", "--version").Output(); err == nil {
		r.CrunVersion = strings.TrimSpace(strings.SplitN(string(out), "\n", 2)[0])
	}
	r.LoadAvgStart = loadAvg()
}

func readFile(p string) string {
	b, _ := os.ReadFile(p)
	return string(b)
}

func procField(path, key string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == key {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

func loadAvg() string {
	f := strings.Fields(readFile("/proc/loadavg"))
	if len(f) < 3 {
		return ""
	}
	return strings.Join(f[:3], " ")
}

// ratio is a / b rounded, 0 when b is 0.
func ratio(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return round(a / b)
}

// finish copies the fast path's figures to the top-level keys, computes the
// ratios and checks the targets of the fast path issue.
func (b *bench) finish() {
	r := &b.res
	r.Paths = map[string]*pathResults{}
	for _, p := range b.paths {
		if p.name == poolsPath {
			continue
		}
		p.res.TaskServerPids = p.taskServers
		r.Paths[p.name] = &p.res
	}
	r.ErrorSamples = b.errSample
	r.InprocPauseErrors = b.pauseErrs
	fast, stock := r.Paths["fast"], r.Paths["stock"]
	if fast == nil || stock == nil {
		return
	}
	r.TopLevelPath = "fast"
	r.WarmP50, r.WarmP90, r.WarmP99 = fast.WarmP50, fast.WarmP90, fast.WarmP99
	r.WarmMisses, r.WarmTTFBP50 = fast.WarmMisses, fast.WarmTTFBP50
	r.WarmServerStartMean, r.WarmServerHandlerMean = fast.WarmServerStartMean, fast.WarmServerHandlerMean
	r.ColdP50, r.ColdP90, r.ColdP99 = fast.ColdP50, fast.ColdP90, fast.ColdP99
	r.FreshPerSC1, r.FreshPerSC4, r.FreshPerSC16 = fast.FreshPerSC1, fast.FreshPerSC4, fast.FreshPerSC16
	r.Sustained = fast.Sustained
	r.CaddyRefillFailureLogs = fast.CaddyRefillFailureLogs + stock.CaddyRefillFailureLogs
	r.ContainersBeforeStop = fast.ContainersBeforeStop + stock.ContainersBeforeStop

	r.RatioWarmHostCGI = ratio(fast.WarmP50, r.HostCGIP50)
	r.RatioNaiveCold = ratio(r.NaiveP50, fast.ColdP50)
	r.RatioFastStockC16 = ratio(fast.FreshPerSC16, stock.FreshPerSC16)
	r.RatioFastStockCPU = ratio(fast.CPUMsPerContainer, stock.CPUMsPerContainer)
	r.RatioFastStockMemory = ratio(fast.Memory.PerContainerKiB, stock.Memory.PerContainerKiB)

	// CPU budget: every container is single-use, so 100/s on this
	// machine's cores leaves cores × 1000 / 100 ms of CPU per container.
	budget := float64(r.NProc) * 1000 / 100
	r.Targets = []target{
		{
			Name: "fast c16 ≥ 100 fresh/s", Value: fast.FreshPerSC16, Limit: 100, Met: fast.FreshPerSC16 >= 100,
			Detail: fmt.Sprintf("%.1f/s (stock %.1f/s)", fast.FreshPerSC16, stock.FreshPerSC16),
		},
		{
			Name: "fast c16 ≥ 5× stock c16", Value: r.RatioFastStockC16, Limit: 5, Met: r.RatioFastStockC16 >= 5,
			Detail: fmt.Sprintf("%.1f/s ÷ %.1f/s = %.2f×", fast.FreshPerSC16, stock.FreshPerSC16, r.RatioFastStockC16),
		},
		{
			Name: "fast cold p50 ≤ 30 ms", Value: fast.ColdP50, Limit: 30, Met: fast.ColdP50 > 0 && fast.ColdP50 <= 30,
			Detail: fmt.Sprintf("%.2f ms (stock %.2f ms)", fast.ColdP50, stock.ColdP50),
		},
		{
			Name: "fast warm p50 ≤ 2× host CGI p50", Value: r.RatioWarmHostCGI, Limit: 2, Met: r.RatioWarmHostCGI > 0 && r.RatioWarmHostCGI <= 2,
			Detail: fmt.Sprintf("%.2f ms vs 2 × %.2f ms = %.2f ms (%.2f×)", fast.WarmP50, r.HostCGIP50, 2*r.HostCGIP50, r.RatioWarmHostCGI),
		},
		{
			Name:  fmt.Sprintf("fast CPU ≤ %.0f ms/container", budget),
			Value: fast.CPUMsPerContainer, Limit: budget, Met: fast.CPUMsPerContainer > 0 && fast.CPUMsPerContainer <= budget,
			Detail: fmt.Sprintf("%.1f ms vs stock %.1f ms (%.2f×); the budget for 100/s on %d cores", fast.CPUMsPerContainer, stock.CPUMsPerContainer, r.RatioFastStockCPU, r.NProc),
		},
		{
			Name: "naive p50 / fast cold p50 ≥ 4", Value: r.RatioNaiveCold, Limit: 4, Met: r.RatioNaiveCold >= 4,
			Detail: fmt.Sprintf("%.2f ms / %.2f ms (an earlier goal)", r.NaiveP50, fast.ColdP50),
		},
	}
}

func (b *bench) printReport(w io.Writer) {
	r := &b.res
	fmt.Fprintf(w, "\ncaddy-spawn bench — %d CPUs, %s, kernel %s, %s\n", r.NProc, r.CPU, r.Kernel, r.Date)
	fmt.Fprintf(w, "containerd %s, %s, %s, %s; load avg at start %s, at end %s", r.ContainerdVersion, r.RuncVersion, r.CrunVersion, r.GoVersion, r.LoadAvgStart, r.LoadAvgEnd)
	if r.Quick {
		fmt.Fprint(w, "; QUICK smoke run")
	}
	fmt.Fprint(w, "\n\n")
	fast, stock := r.Paths["fast"], r.Paths["stock"]
	if fast != nil && stock != nil {
		b.printPaths(w, fast, stock)
	} else if b.cfg.only != "pools" {
		fmt.Fprintln(w, "(a path is missing: no comparison)")
	}
	b.printBursty(w)
	fmt.Fprintf(w, "\nload average (1, 5, 15 min) after each step:")
	for _, k := range b.loadOrder {
		fmt.Fprintf(w, " %s %s;", k, r.LoadAvgs[k])
	}
	fmt.Fprintf(w, "\ncleanup: %d pooled containers before the stops; %d containers left after them; each path's Caddy, containerd, shims or task server, mounts, cgroups and directories checked gone before the next\n",
		r.ContainersBeforeStop, r.LeftoverContainers)
	if r.Errors > 0 {
		fmt.Fprintf(w, "errors: %d requests failed; first: %s\n", r.Errors, strings.Join(b.errSample, "; "))
	}
}

// printPaths prints the fast path against the stock path, and the targets.
func (b *bench) printPaths(w io.Writer, fast, stock *pathResults) {
	r := &b.res
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "same run, same machine\tfast path\tstock path\tfast/stock\t")
	fmt.Fprintf(tw, "runs containers on\t%s\t%s\t\t\n", "task server + crun", "runc v2 shim + runc")
	lat3 := func(p *pathResults) string { return fmt.Sprintf("%.2f / %.2f / %.2f", p.WarmP50, p.WarmP90, p.WarmP99) }
	fmt.Fprintf(tw, "warm p50 / p90 / p99 ms\t%s\t%s\t%.2f×\t\n", lat3(fast), lat3(stock), ratio(fast.WarmP50, stock.WarmP50))
	fmt.Fprintf(tw, "cold p50 / p90 ms\t%.2f / %.2f\t%.2f / %.2f\t%.2f×\t\n", fast.ColdP50, fast.ColdP90, stock.ColdP50, stock.ColdP90, ratio(fast.ColdP50, stock.ColdP50))
	fmt.Fprintf(tw, "userns warm p50 / p90 ms (× without)\t%.2f / %.2f (%.2f×)\t%.2f / %.2f (%.2f×)\t\t\n",
		fast.UsernsWarmP50, fast.UsernsWarmP90, ratio(fast.UsernsWarmP50, fast.WarmP50),
		stock.UsernsWarmP50, stock.UsernsWarmP90, ratio(stock.UsernsWarmP50, stock.WarmP50))
	fmt.Fprintf(tw, "userns cold p50 / p90 ms (× without)\t%.2f / %.2f (%.2f×)\t%.2f / %.2f (%.2f×)\t\t\n",
		fast.UsernsColdP50, fast.UsernsColdP90, ratio(fast.UsernsColdP50, fast.ColdP50),
		stock.UsernsColdP50, stock.UsernsColdP90, ratio(stock.UsernsColdP50, stock.ColdP50))
	for i := range fast.Sustained {
		if i >= len(stock.Sustained) {
			break
		}
		f, s := fast.Sustained[i], stock.Sustained[i]
		fmt.Fprintf(tw, "c%d fresh/s (p50 / p99 ms)\t%.1f (%.0f / %.0f)\t%.1f (%.0f / %.0f)\t%.2f×\t\n",
			f.Concurrency, f.PerSecond, f.P50, f.P99, s.PerSecond, s.P50, s.P99, ratio(f.PerSecond, s.PerSecond))
	}
	for i := range fast.Sustained {
		if i >= len(stock.Sustained) {
			break
		}
		f, s := fast.Sustained[i], stock.Sustained[i]
		fmt.Fprintf(tw, "c%d CPU ms/container (n)\t%.1f (%d)\t%.1f (%d)\t%.2f×\t\n",
			f.Concurrency, f.CPUMsPerContainer, f.Requests, s.CPUMsPerContainer, s.Requests, ratio(f.CPUMsPerContainer, s.CPUMsPerContainer))
	}
	fmt.Fprintf(tw, "CPU ms/container, all levels\t%.1f\t%.1f\t%.2f×\t\n", fast.CPUMsPerContainer, stock.CPUMsPerContainer, r.RatioFastStockCPU)
	fmt.Fprintf(tw, "  of which the bench client\t%.1f\t%.1f\t\t\n", fast.ClientCPUMsPerContainer, stock.ClientCPUMsPerContainer)
	fmt.Fprintf(tw, "  machine idle before, CPU ms/s\t%.0f\t%.0f\t\t\n", fast.IdleCPUMsPerS, stock.IdleCPUMsPerS)
	fmt.Fprintf(tw, "  less that idle rate (estimate)\t%.1f\t%.1f\t%.2f×\t\n", fast.NetCPUMsPerContainer, stock.NetCPUMsPerContainer, ratio(fast.NetCPUMsPerContainer, stock.NetCPUMsPerContainer))
	fmt.Fprintf(tw, "CPU ms/container, our processes (cgroups)\t%.1f\t%.1f\t%.2f×\t\n", fast.OursCPUMsPerContainer, stock.OursCPUMsPerContainer, ratio(fast.OursCPUMsPerContainer, stock.OursCPUMsPerContainer))
	mib := func(kib int64) float64 { return float64(kib) / 1024 }
	fmt.Fprintf(tw, "memory / idle pooled container MiB\t%.2f\t%.2f\t%.3f×\t\n", fast.Memory.PerContainerMiB, stock.Memory.PerContainerMiB, r.RatioFastStockMemory)
	fmt.Fprintf(tw, "  PSS counted MiB (processes / containers)\t%.1f (%d / %d)\t%.1f (%d / %d)\t\t\n",
		mib(fast.Memory.PSSKiB), fast.Memory.Processes, fast.Memory.IdleContainers, mib(stock.Memory.PSSKiB), stock.Memory.Processes, stock.Memory.IdleContainers)
	fmt.Fprintf(tw, "  and the containers' inits KiB (inits)\t%d (%d)\t%d (%d)\t\t\n",
		fast.Memory.InitKiB, fast.Memory.Inits, stock.Memory.InitKiB, stock.Memory.Inits)
	fmt.Fprintf(tw, "  same, before any request MiB/container\t%.2f\t%.2f\t\t\n", fast.MemoryAtStart.PerContainerMiB, stock.MemoryAtStart.PerContainerMiB)
	fmt.Fprintf(tw, "containerd PSS MiB (not divided)\t%.1f\t%.1f\t\t\n", mib(fast.Memory.ContainerdKiB), mib(stock.Memory.ContainerdKiB))
	fmt.Fprintf(tw, "Caddy PSS MiB (not divided)\t%.1f\t%.1f\t\t\n", mib(fast.Memory.CaddyKiB), mib(stock.Memory.CaddyKiB))
	tw.Flush()
	fmt.Fprintf(w, "(sustained: %.0f s per level, pool 8; CPU = all CPUs from /proc/stat, first request until the pool is full again and the used containers removed, ÷ containers served; \"our processes\" = the same window by cgroup accounting: Caddy, containerd, shims or task server and crun, and the containers, not the bench client nor kernel threads; memory = PSS of the task server (fast) or the shims (stock), and of each container's init, with every pool full and idle ÷ idle containers)\n",
		r.SustainedSeconds)

	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "latency\tn\tp50 ms\tp90 ms\tp99 ms\tmin ms\tmax ms\terrors\t")
	row := func(name string, st stats) {
		fmt.Fprintf(tw, "%s\t%d\t%.2f\t%.2f\t%.2f\t%.2f\t%.2f\t%d\t\n", name, st.n, st.p50, st.p90, st.p99, st.min, st.max, st.errors)
	}
	row("fast warm (pool, via Caddy)", fast.warm)
	row("fast cold (pool 0, via Caddy)", fast.cold)
	row("stock warm (pool, via Caddy)", stock.warm)
	row("stock cold (pool 0, via Caddy)", stock.cold)
	row("host CGI (net/http/cgi)", r.hostCGI)
	row("naive (containerd client, runc shim)", r.naive)
	row("thaw: freezer (Instance.Thaw)", r.thawFreezer)
	row("thaw: containerd Task.Resume", r.thawResume)
	tw.Flush()

	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "sustained (pool 8)\trequests\tok\terrors\twarm hits\tseconds\tfresh/s\tp50 ms\tp99 ms\tCPU ms\tCPU ms/ctr\tclient ms/ctr\tours ms/ctr\tsteal %\t")
	for _, p := range b.paths {
		for _, lv := range p.res.Sustained {
			fmt.Fprintf(tw, "%s c%d\t%d\t%d\t%d\t%d\t%.1f\t%.1f\t%.1f\t%.1f\t%.0f\t%.1f\t%.1f\t%.1f\t%.0f\t\n",
				p.name, lv.Concurrency, lv.Requests, lv.OK, lv.Errors, lv.Warm, lv.Seconds, lv.PerSecond, lv.P50, lv.P99,
				lv.CPUMs, lv.CPUMsPerContainer, lv.ClientCPUMsPerContainer, lv.OursCPUMsPerContainer, lv.StealPercent)
		}
	}
	tw.Flush()

	fmt.Fprintln(w)
	for _, p := range b.paths {
		pr := &p.res
		fmt.Fprintf(w, "%s warm: %d of %d measured answers not warm (misses); time to response header p50 %.2f ms; in Caddy (metrics, mean): acquire+thaw %.2f ms, whole handler %.2f ms\n",
			p.name, pr.WarmMisses, pr.warm.n+pr.warm.errors, pr.WarmTTFBP50, pr.WarmServerStartMean, pr.WarmServerHandlerMean)
		fmt.Fprintf(w, "%s Caddy's log: %d \"refilling pool\" warnings (a failed pool fill; logged at the 1st and every 20th failure in a row)", p.name, pr.CaddyRefillFailureLogs)
		if p.refillErr != "" {
			fmt.Fprintf(w, ", first: %s", p.refillErr)
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintf(w, "warm path in process (runc shim), p50 from thaw start: thaw %.3f ms, first stdout byte %.2f ms, stdout EOF %.2f ms,\n      exit code from the init %.2f ms, containerd exit event %.2f ms\n",
		r.InprocThawP50, r.InprocFirstByteP50, r.InprocStdoutEOFP50, r.InprocDoneP50, r.InprocExitP50)
	fmt.Fprintf(w, "pool fill in process: Pause after start (after WaitReady when the spawner has it) p50 %.2f ms, p99 %.2f ms, max %.2f ms; %d pauses failed",
		r.InprocPauseP50, r.InprocPauseP99, r.InprocPauseMax, r.InprocPauseFailures)
	if len(b.pauseErrs) > 0 {
		fmt.Fprintf(w, " (%s)", b.pauseErrs[0])
	}
	fmt.Fprintln(w)

	fmt.Fprintf(w, "\nratios (this run): fast/stock c16 fresh/s %.2f×, CPU/container %.2f×, memory/idle container %.3f×; fast warm/host CGI p50 %.2f×; naive/fast cold p50 %.2f×\n\ntargets:\n",
		r.RatioFastStockC16, r.RatioFastStockCPU, r.RatioFastStockMemory, r.RatioWarmHostCGI, r.RatioNaiveCold)
	for _, t := range r.Targets {
		mark := "MISSED"
		if t.Met {
			mark = "met"
		}
		fmt.Fprintf(w, "  %-34s %-6s (%s)\n", t.Name, mark, t.Detail)
	}
}

// printBursty prints the pool policies' figures on the bursty trace.
func (b *bench) printBursty(w io.Writer) {
	r := &b.res
	if len(r.Bursty) > 0 {
		fmt.Fprintf(w, "\npool policies on a bursty trace (fast path; burst route %d s at %.0f/s then %d s idle, steady route %.0f/s):\n", burstSeconds, burstRate, idleSeconds, steadyRate)
		fmt.Fprintf(w, "  %-9s %-36s %8s %8s %8s %9s %9s %12s %7s\n", "policy", "pool", "warm", "burst", "steady", "p50 ms", "p99 ms", "idle ctr·s", "steal")
		for _, x := range r.Bursty {
			fmt.Fprintf(w, "  %-9s %-36s %7.0f%% %7.0f%% %7.0f%% %9.1f %9.1f %12.1f %6.0f%%\n",
				x.Policy, x.Pool, 100*x.WarmRatio, 100*x.BurstRatio, 100*x.SteadyRatio, x.P50, x.P99, x.IdleContainerSeconds, x.StealPercent)
		}
		fmt.Fprintln(w, "  (fixed pools start at the adaptive ones' average idle per route and step by one until two of them bracket its idle-container-seconds)")
		if r.PoolsVerdict != "" {
			fmt.Fprintf(w, "  %s\n", r.PoolsVerdict)
		}
	}
}

func (b *bench) writeResults() error {
	data, err := json.MarshalIndent(&b.res, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(b.cfg.out), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(b.cfg.out, append(data, '\n'), 0o644); err != nil { //nolint:gosec // G306: results are for anyone to read
		return fmt.Errorf("writing results: %w", err)
	}
	return nil
}
