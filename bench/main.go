//go:build integration

// Command bench measures caddy-spawn end to end, the fast path against the
// stock path in the same run, and both against baselines, all with the same
// function program (examples/functions/hello).
//
// Two Caddy processes run one after the other, each with a generated
// Caddyfile and a managed containerd of its own (root in a temporary
// directory, state under /run/caddy-spawn-bench/<hex>-f or -s):
//
//   - fast  — `fast_path on`: containers run on the spawn app's task server
//     (one long-lived process driving crun; no shim per container);
//   - stock — `fast_path off`: containerd's runc v2 shim, one
//     containerd-shim-runc-v2 process per container.
//
// The first is stopped and everything it ran is checked gone (no process of
// its containerd, shim or task server, no container, mount, cgroup or task
// state) before the second starts. Through each Caddy:
//
//  1. warm      — a route whose pool never runs dry: requests are paced until
//     the background refill and teardown are done, and every answer's
//     X-Spawn-Start header must say "warm". p50/p90/p99.
//  2. cold      — the same with `pool 0`: a container is created per request.
//     Both again on routes with `userns` (a user namespace, id-mapped image
//     layers), for what the opt-in costs.
//  3. sustained — fresh containers served per second at concurrency 1, 4 and
//     16 (a fixed time per level, pool 8), p50/p99, and the CPU each
//     container costs: all CPU time of the machine from /proc/stat (user,
//     nice, system, irq, softirq, steal: everything but idle and iowait) from
//     the level's first request until the pool is full again and every used
//     container is removed, divided by the containers served. It includes
//     this process's HTTP client and anything else running on the machine;
//     both are reported beside it (the client's CPU, and the machine's CPU
//     rate while idle just before), and so is the same window by cgroup
//     accounting, which other work on the machine does not raise: this
//     process runs in a cpuacct (or v2) cgroup of its own that everything
//     it starts inherits, and the containers' CPU is charged to the cgroup
//     of Caddy's containerd namespace.
//  4. memory    — host memory per idle pooled container: with every pool full
//     and idle (the warm route's 4 and the sustained route's 8), the PSS
//     (/proc/<pid>/smaps_rollup) of every process run for those containers,
//     the function's own processes excluded, divided by their number: for
//     the stock path all its containerd-shim-runc-v2 processes, for the fast
//     path the task server and its children that are not container
//     processes. containerd's and Caddy's PSS are reported beside it, not
//     divided. Measured after the pools first fill and again after the runs.
//
// Once, as baselines (in the stock Caddy's containerd, in namespaces of
// their own, for naive and thaw):
//
//  5. host CGI  — Go's net/http/cgi running the hello binary on the host.
//  6. naive     — a fresh container per request the plain way through the
//     containerd Go client (new snapshot, container, task, wait, delete), as
//     `ctr run` or go-dcgi do, behind an HTTP handler in this process.
//  7. thaw      — a paused container back to running: the cgroup freezer
//     (spawner.Instance.Thaw) against containerd's Task.Resume.
//
// Then, in a fast-path Caddy of its own, pool policies on a bursty trace
// (issue 11): a route getting 5 s at 20 requests/s then 10 s of nothing,
// twice, and a second route at a steady 2/s, run against an adaptive pool
// (pool_min 0 pool_max 8 pool_idle_timeout 3s), a fixed pool holding as many
// idle containers on average as the adaptive one did (reloaded in after it
// ran), and no pool: warm-hit ratio, p50/p99 and idle-container-seconds
// (pool_idle sampled every 100 ms) for each.
//
// The report puts both paths side by side and checks the targets of the fast
// path issue in this run's numbers: fast c16 ≥ 100 fresh/s and ≥ 5× the stock
// path's c16, fast cold p50 ≤ 30 ms, fast warm p50 ≤ 2× host CGI p50; the CPU
// and memory ratios are printed with them. Requests go over loopback HTTP
// with one keep-alive client; any failed request fails the bench. At the end
// of each path Caddy gets SIGTERM (it stops its task server and containerd),
// a throw-away containerd on the same root confirms that no container is
// left, and the path's directories are removed.
//
// Run it as root with containerd, containerd-shim-runc-v2, runc and crun in
// PATH:
//
//	make bench
//	SPAWN_IMAGES=build/images SPAWN_CADDY=build/caddy go run -tags integration ./bench [-quick]
//
// It prints a table and writes bench/results.json: its top-level latency and
// throughput keys are the fast path's (as before: the default path), and
// "paths" holds both paths' figures, "targets" the checks.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/containerd/containerd/v2/client"
)

const (
	// helloRef is the image `make images` builds from examples/functions/hello.
	helloRef = "localhost/caddy-spawn/hello:latest"
	// greeting is in every answer of the hello program.
	greeting = "Hello from a fresh container!"
	// snapshotter is the spawn app's default.
	snapshotter = "overlayfs"

	// Namespaces in the managed containerd: Caddy's spawn app, and the
	// in-process baselines.
	nsCaddy = "caddy-spawn-bench"
	nsNaive = "caddy-spawn-bench-naive"
	nsThaw  = "caddy-spawn-bench-thaw"

	// runParent holds the managed containerds' state (and so their sockets,
	// whose paths must stay short) and FIFOs; it is on /run like the spawn
	// app's default run_dir.
	runParent = "/run/caddy-spawn-bench"

	// Pool sizes of the Caddy routes.
	warmPool      = 4
	sustainedPool = 8
	// usernsPool is the pool of the userns warm route: one is enough, as
	// warm requests are paced until the pool is full again.
	usernsPool = 1
	// pooled is every route's pool together: the idle containers.
	pooled = warmPool + sustainedPool + usernsPool
)

// config is what the flags choose.
type config struct {
	quick     bool
	out       string
	warmup    int           // unmeasured requests before each latency series
	requests  int           // measured requests per latency series
	sustained time.Duration // time per concurrency level of the sustained run
	levels    []int         // concurrency levels of the sustained run
	thaw      int           // samples per thaw method
	only      string        // "": every step; "paths" or "pools": that part alone
}

func main() {
	os.Exit(run())
}

func run() int {
	quick := flag.Bool("quick", false, "smoke run: ~30 requests per latency series and 2 s per sustained level instead of 200 and 8 s")
	out := flag.String("out", "", "where to write the results (default: bench/results.json in the repository)")
	only := flag.String("only", "", "run one part: paths (host CGI, fast and stock paths) or pools (the bursty pool comparison)")
	flag.Parse()
	if *only != "" && *only != "paths" && *only != "pools" {
		fmt.Fprintf(os.Stderr, "bench: -only %q: want paths or pools\n", *only)
		return 2
	}

	cfg := config{quick: *quick, out: *out, warmup: 10, requests: 200, sustained: 8 * time.Second, levels: []int{1, 4, 16}, thaw: 50, only: *only}
	if cfg.quick {
		cfg.warmup, cfg.requests, cfg.sustained, cfg.thaw = 3, 30, 2*time.Second, 30
	}

	pre, err := checkPrerequisites()
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench: FAIL: %v\n", err)
		fmt.Fprintln(os.Stderr, "bench: run `make bench` as root (it installs the tools and builds the images and Caddy first)")
		return 1
	}
	if cfg.out == "" {
		cfg.out = filepath.Join(pre.repo, "bench", "results.json")
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	b := &bench{cfg: cfg, pre: pre, log: newLogger()}
	b.res.Quick = cfg.quick
	b.res.Requests = cfg.requests
	b.res.Warmup = cfg.warmup
	b.res.SustainedSeconds = cfg.sustained.Seconds()
	b.res.ThawSamples = cfg.thaw
	b.res.LeftoverContainers = -1 // unknown until checked

	start := time.Now()
	runErr := b.runAll(ctx)
	cleanErr := b.cleanup()
	b.res.WallSeconds = round(time.Since(start).Seconds())
	b.res.LoadAvgEnd = loadAvg()

	if runErr != nil {
		fmt.Fprintf(os.Stderr, "bench: FAIL: %v\n", runErr)
		b.dumpLogs()
	}
	if cleanErr != nil {
		fmt.Fprintf(os.Stderr, "bench: FAIL: cleaning up: %v\n", cleanErr)
	}
	if runErr != nil {
		return 1
	}
	b.finish()
	b.printReport(os.Stdout)
	if err := b.writeResults(); err != nil {
		fmt.Fprintf(os.Stderr, "bench: FAIL: %v\n", err)
		return 1
	}
	fmt.Printf("\nresults: %s (wall time %.0f s)\n", cfg.out, b.res.WallSeconds)
	if cleanErr != nil {
		return 1
	}
	if b.res.Errors > 0 {
		fmt.Fprintf(os.Stderr, "bench: FAIL: %d requests failed (see above)\n", b.res.Errors)
		return 1
	}
	return 0
}

// bench is one run's state.
type bench struct {
	cfg config
	pre prerequisites
	log *zap.Logger

	id       string       // random, names the run's directories
	tmp      string       // temporary root: the paths' containerd roots, Caddy's dirs, hello binary
	benchRun string       // FIFOs of the in-process baselines: <runParent>/<id>-b
	helloBin string       // hello built for the host
	http     *http.Client // one keep-alive transport for every request
	paths    []*pathRun   // the paths run so far, in order
	cg       *cgroupCPU   // CPU accounting of what the bench runs; nil without

	// The path being measured: its Caddy and a client of its containerd.
	cur   *pathRun
	caddy *caddyProc
	// fixedPools are the pools run's fixed pool sizes by route kind, set
	// from the adaptive policy's average idle containers.
	fixedPools map[string]int
	ctrd       *client.Client

	res       results
	loadOrder []string // the steps, in the order of res.LoadAvgs
	errSample []string // first few request errors, for the report
	pauseErrs []string // first few failed pauses (thaw step)
}

// runAll sets up and runs every measurement: host CGI, then each path with
// its Caddy started, measured, stopped and checked in turn. cleanup is
// separate so that it runs whatever happened here.
func (b *bench) runAll(ctx context.Context) error {
	b.id = randHex(8)
	var err error
	b.tmp, err = os.MkdirTemp("", "caddy-spawn-bench-")
	if err != nil {
		return fmt.Errorf("creating temporary directory: %w", err)
	}
	b.cg = startCgroupCPU(b.id)
	b.benchRun = filepath.Join(runParent, b.id+"-b")
	if err := os.MkdirAll(b.benchRun, 0o711); err != nil {
		return fmt.Errorf("creating %s: %w", b.benchRun, err)
	}
	b.res.machineInfo()
	b.http = &http.Client{
		Transport: &http.Transport{
			Proxy:               nil,
			DisableCompression:  true,
			MaxIdleConns:        64,
			MaxIdleConnsPerHost: 64,
			IdleConnTimeout:     90 * time.Second,
		},
		Timeout: 60 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}

	if b.cfg.only != "pools" {
		if err := b.runPaths(ctx); err != nil {
			return err
		}
	}
	if b.cfg.only == "paths" {
		return nil
	}
	// Pool policies on a bursty trace, in a Caddy of their own.
	p := b.newPath(poolsPath, "on", "task server (crun): adaptive vs fixed vs no pool")
	b.paths = append(b.paths, p)
	runErr := b.step(ctx, "pools", func(ctx context.Context) error { return b.runPools(ctx, p) })
	if err := errors.Join(runErr, b.stopPath(p)); err != nil {
		return fmt.Errorf("pools: %w", err)
	}
	return nil
}

// runPaths measures host CGI, then the fast and the stock path.
func (b *bench) runPaths(ctx context.Context) error {
	progress("building the hello function for the host")
	var err error
	if b.helloBin, err = buildHello(ctx, b.pre.repo, b.tmp); err != nil {
		return err
	}
	if err := b.step(ctx, "host CGI", b.runHostCGI); err != nil {
		return err
	}
	for _, p := range []*pathRun{
		b.newPath("fast", "on", "task server (crun), no shim per container"),
		b.newPath("stock", "off", "containerd-shim-runc-v2 per container (runc)"),
	} {
		b.paths = append(b.paths, p)
		runErr := b.runPath(ctx, p)
		stopErr := b.stopPath(p)
		if err := errors.Join(runErr, stopErr); err != nil {
			return fmt.Errorf("%s path: %w", p.name, err)
		}
	}
	return nil
}

// step runs one measurement and reports how long it took.
func (b *bench) step(ctx context.Context, name string, fn func(context.Context) error) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("interrupted before %s: %w", name, err)
	}
	t0 := time.Now()
	if err := fn(ctx); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	la := loadAvg()
	progress("%s done in %.1f s (load avg %s)", name, time.Since(t0).Seconds(), la)
	if b.res.LoadAvgs == nil {
		b.res.LoadAvgs = map[string]string{}
	}
	b.res.LoadAvgs[name] = la
	b.loadOrder = append(b.loadOrder, name)
	return nil
}

// cleanup stops a Caddy still running (after an error or an interrupt),
// checks what it left, and removes every directory of the run.
func (b *bench) cleanup() error {
	var errs []error
	if b.http != nil {
		b.http.CloseIdleConnections()
	}
	for _, p := range b.paths {
		if err := b.stopPath(p); err != nil {
			errs = append(errs, fmt.Errorf("%s path: %w", p.name, err))
		}
	}
	if err := b.removeDirs(); err != nil {
		errs = append(errs, err)
	}
	b.cg.close()
	b.res.LeftoverContainers = 0
	for _, p := range b.paths {
		if p.res.LeftoverContainers < 0 {
			b.res.LeftoverContainers = -1
			break
		}
		b.res.LeftoverContainers += p.res.LeftoverContainers
	}
	return errors.Join(errs...)
}

// progress reports on stderr what the bench is doing.
func progress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "bench: %s %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
}

func newLogger() *zap.Logger {
	enc := zap.NewDevelopmentEncoderConfig()
	core := zapcore.NewCore(zapcore.NewConsoleEncoder(enc), zapcore.Lock(os.Stderr), zapcore.WarnLevel)
	return zap.New(core)
}
