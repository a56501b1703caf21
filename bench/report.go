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
}

// target is one goal of the issue, and whether this run met it.
type target struct {
	Name   string  `json:"name"`
	Value  float64 `json:"value"`
	Limit  float64 `json:"limit"`
	Met    bool    `json:"met"`
	Detail string  `json:"detail"`
}

// results is what bench/results.json holds; times in ms, rates per second.
type results struct {
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

	Sustained []sustainedLevel `json:"sustained"`
	Targets   []target         `json:"targets"`

	Errors               int      `json:"errors"`
	ErrorSamples         []string `json:"error_samples,omitempty"`
	ContainersBeforeStop int      `json:"containers_before_stop"`
	LeftoverContainers   int      `json:"leftover_containers_after_stop"`

	Quick             bool    `json:"quick"`
	Requests          int     `json:"requests"`
	Warmup            int     `json:"warmup"`
	SustainedRequests int     `json:"sustained_requests"`
	ThawSamples       int     `json:"thaw_samples"`
	WallSeconds       float64 `json:"wall_seconds"`

	NProc             int    `json:"nproc"`
	Kernel            string `json:"kernel"`
	Date              string `json:"date"`
	CPU               string `json:"cpu"`
	MemTotal          string `json:"mem_total"`
	GoVersion         string `json:"go_version"`
	ContainerdVersion string `json:"containerd_version"`
	RuncVersion       string `json:"runc_version"`
	LoadAvgStart      string `json:"loadavg_start"`
	LoadAvgEnd        string `json:"loadavg_end"`

	warm, cold, hostCGI, naive, thawFreezer, thawResume stats
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

// finish computes the ratios and checks the targets of the issue.
func (b *bench) finish() {
	r := &b.res
	if r.HostCGIP50 > 0 {
		r.RatioWarmHostCGI = round(r.WarmP50 / r.HostCGIP50)
	}
	if r.ColdP50 > 0 {
		r.RatioNaiveCold = round(r.NaiveP50 / r.ColdP50)
	}
	best, bestC := 0.0, 0
	for _, lv := range r.Sustained {
		if lv.PerSecond > best {
			best, bestC = lv.PerSecond, lv.Concurrency
		}
	}
	r.Targets = []target{
		{
			Name: "warm p50 ≤ 2× host CGI p50", Value: r.RatioWarmHostCGI, Limit: 2, Met: r.RatioWarmHostCGI > 0 && r.RatioWarmHostCGI <= 2,
			Detail: fmt.Sprintf("%.2f ms vs 2 × %.2f ms = %.2f ms", r.WarmP50, r.HostCGIP50, 2*r.HostCGIP50),
		},
		{
			Name: "cold p50 ≤ 30 ms", Value: r.ColdP50, Limit: 30, Met: r.ColdP50 > 0 && r.ColdP50 <= 30,
			Detail: fmt.Sprintf("%.2f ms", r.ColdP50),
		},
		{
			Name: "naive p50 / cold p50 ≥ 4", Value: r.RatioNaiveCold, Limit: 4, Met: r.RatioNaiveCold >= 4,
			Detail: fmt.Sprintf("%.2f ms / %.2f ms", r.NaiveP50, r.ColdP50),
		},
		{
			Name: "sustained ≥ 100 fresh containers/s", Value: best, Limit: 100, Met: best >= 100,
			Detail: fmt.Sprintf("best %.1f/s at concurrency %d", best, bestC),
		},
	}
	r.ErrorSamples = b.errSample
	r.InprocPauseErrors = b.pauseErrs
}

func (b *bench) printReport(w io.Writer) {
	r := &b.res
	fmt.Fprintf(w, "\ncaddy-spawn bench — %d CPUs, %s, kernel %s, %s\n", r.NProc, r.CPU, r.Kernel, r.Date)
	fmt.Fprintf(w, "containerd %s, %s, %s; load avg at start %s, at end %s", r.ContainerdVersion, r.RuncVersion, r.GoVersion, r.LoadAvgStart, r.LoadAvgEnd)
	if r.Quick {
		fmt.Fprint(w, "; QUICK smoke run")
	}
	fmt.Fprint(w, "\n\n")

	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "mode\tn\tp50 ms\tp90 ms\tp99 ms\tmin ms\tmax ms\terrors\t")
	row := func(name string, st stats) {
		fmt.Fprintf(tw, "%s\t%d\t%.2f\t%.2f\t%.2f\t%.2f\t%.2f\t%d\t\n", name, st.n, st.p50, st.p90, st.p99, st.min, st.max, st.errors)
	}
	row("warm (pool, via Caddy)", r.warm)
	row("cold (pool 0, via Caddy)", r.cold)
	row("host CGI (net/http/cgi)", r.hostCGI)
	row("naive (containerd client)", r.naive)
	row("thaw: freezer (Instance.Thaw)", r.thawFreezer)
	row("thaw: containerd Task.Resume", r.thawResume)
	tw.Flush()

	fmt.Fprintf(w, "\nwarm: %d of %d measured answers not warm (misses); time to response header p50 %.2f ms;\n", r.WarmMisses, r.warm.n+r.warm.errors, r.WarmTTFBP50)
	fmt.Fprintf(w, "      in Caddy (metrics, mean): acquire+thaw %.2f ms, whole handler %.2f ms\n", r.WarmServerStartMean, r.WarmServerHandlerMean)
	fmt.Fprintf(w, "warm path in process, p50 from thaw start: thaw %.3f ms, first stdout byte %.2f ms, stdout EOF %.2f ms,\n      exit code from the init %.2f ms, containerd exit event %.2f ms\n",
		r.InprocThawP50, r.InprocFirstByteP50, r.InprocStdoutEOFP50, r.InprocDoneP50, r.InprocExitP50)

	fmt.Fprintf(w, "pool fill in process: Pause after start (after WaitReady when the spawner has it) p50 %.2f ms, p99 %.2f ms, max %.2f ms; %d pauses failed",
		r.InprocPauseP50, r.InprocPauseP99, r.InprocPauseMax, r.InprocPauseFailures)
	if len(b.pauseErrs) > 0 {
		fmt.Fprintf(w, " (%s)", b.pauseErrs[0])
	}
	fmt.Fprintf(w, "\nCaddy's log: %d \"refilling pool\" warnings (a failed pool fill; logged at the 1st and every 20th failure in a row)", r.CaddyRefillFailureLogs)
	if b.refillErr != "" {
		fmt.Fprintf(w, ", first: %s", b.refillErr)
	}
	fmt.Fprintln(w)

	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "sustained (pool 8)\trequests\tok\terrors\twarm hits\tseconds\tfresh/s\tp50 ms\tp99 ms\t")
	for _, lv := range r.Sustained {
		fmt.Fprintf(tw, "concurrency %d\t%d\t%d\t%d\t%d\t%.1f\t%.1f\t%.1f\t%.1f\t\n",
			lv.Concurrency, lv.Requests, lv.OK, lv.Errors, lv.Warm, lv.Seconds, lv.PerSecond, lv.P50, lv.P99)
	}
	tw.Flush()

	fmt.Fprintf(w, "\nratios: warm/host CGI p50 %.2f×, naive/cold p50 %.2f×\n\ntargets:\n", r.RatioWarmHostCGI, r.RatioNaiveCold)
	for _, t := range r.Targets {
		mark := "missed"
		if t.Met {
			mark = "met"
		}
		fmt.Fprintf(w, "  %-38s %-6s (%s)\n", t.Name, mark, t.Detail)
	}
	fmt.Fprintf(w, "\ncleanup: %d pooled containers before stop; %d containers left after stop\n", r.ContainersBeforeStop, r.LeftoverContainers)
	if r.Errors > 0 {
		fmt.Fprintf(w, "errors: %d requests failed; first: %s\n", r.Errors, strings.Join(b.errSample, "; "))
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
