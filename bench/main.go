//go:build integration

// Command bench measures caddy-spawn end to end and against baselines, all
// with the same function program (examples/functions/hello):
//
//  1. warm      — a real Caddy (SPAWN_CADDY) route whose pool never runs dry:
//     requests are paced until the background refill and teardown are done,
//     and every answer's X-Spawn-Start header must say "warm".
//  2. cold      — the same with `pool 0`: a container is created per request.
//  3. host CGI  — Go's net/http/cgi running the hello binary on the host.
//  4. naive     — a fresh container per request the plain way through the
//     containerd Go client (new snapshot, container, task, wait, delete), as
//     `ctr run` or go-dcgi do, behind an HTTP handler in this process.
//  5. sustained — fresh containers served per second through Caddy at
//     concurrency 1, 4 and 16.
//  6. thaw      — a paused container back to running: the cgroup freezer
//     (spawner.Instance.Thaw) against containerd's Task.Resume.
//
// Everything is real: Caddy runs as a subprocess with a generated Caddyfile
// and its own managed containerd (root in a temporary directory, state under
// /run/caddy-spawn-bench/<hex>); baselines 4 and 6 use that same containerd
// in namespaces of their own. Requests go over loopback HTTP with one
// keep-alive client. At the end Caddy gets SIGTERM (it stops its
// containerd), a throw-away containerd on the same root confirms that no
// container is left, and all temporary directories are removed.
//
// Run it as root with containerd, containerd-shim-runc-v2 and runc in PATH:
//
//	make bench
//	SPAWN_IMAGES=build/images SPAWN_CADDY=build/caddy go run -tags integration ./bench [-quick]
//
// It prints a table and writes bench/results.json.
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

	// runParent holds the managed containerd's state (and so its socket,
	// whose path must stay short) and FIFOs; it is on /run like the spawn
	// app's default run_dir.
	runParent = "/run/caddy-spawn-bench"

	// Pool sizes of the Caddy routes.
	warmPool      = 4
	sustainedPool = 8
)

// config is what the flags choose.
type config struct {
	quick     bool
	out       string
	warmup    int   // unmeasured requests before each latency series
	requests  int   // measured requests per latency series
	sustained int   // requests per concurrency level
	levels    []int // concurrency levels of the sustained run
	thaw      int   // samples per thaw method
}

func main() {
	os.Exit(run())
}

func run() int {
	quick := flag.Bool("quick", false, "smoke run: ~30 requests per measurement instead of ≥200")
	out := flag.String("out", "", "where to write the results (default: bench/results.json in the repository)")
	flag.Parse()

	cfg := config{quick: *quick, out: *out, warmup: 10, requests: 200, sustained: 150, levels: []int{1, 4, 16}, thaw: 50}
	if cfg.quick {
		cfg.warmup, cfg.requests, cfg.sustained, cfg.thaw = 3, 30, 30, 30
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
	b.res.SustainedRequests = cfg.sustained
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

	id        string // random, names the run's directories
	tmp       string // temporary root: containerd root, Caddy's dirs, hello binary
	ctrdRoot  string // managed containerd root
	state     string // managed containerd state: <runParent>/<id>
	runDir    string // spawn app run_dir: <runParent>/<id>-run
	benchRun  string // FIFOs of the in-process baselines: <runParent>/<id>-b
	helloBin  string // hello built for the host
	caddy     *caddyProc
	ctrd      *client.Client // client of the managed containerd
	http      *http.Client   // one keep-alive transport for every request
	namespace []string       // namespaces used (cgroup and runc dirs to check)

	res       results
	errSample []string // first few request errors, for the report
	pauseErrs []string // first few failed pauses (thaw step)
	refillErr string   // first "refilling pool" warning in Caddy's log
}

// runAll sets up and runs every measurement; cleanup is separate so that it
// runs whatever happened here.
func (b *bench) runAll(ctx context.Context) error {
	b.id = randHex(8)
	var err error
	b.tmp, err = os.MkdirTemp("", "caddy-spawn-bench-")
	if err != nil {
		return fmt.Errorf("creating temporary directory: %w", err)
	}
	b.ctrdRoot = filepath.Join(b.tmp, "containerd")
	b.state = filepath.Join(runParent, b.id)
	b.runDir = b.state + "-run"
	b.benchRun = b.state + "-b"
	for _, d := range []string{b.state, b.runDir, b.benchRun} {
		if err := os.MkdirAll(d, 0o711); err != nil {
			return fmt.Errorf("creating %s: %w", d, err)
		}
	}
	b.namespace = []string{nsCaddy, nsNaive, nsThaw}
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

	progress("building the hello function for the host")
	if b.helloBin, err = buildHello(ctx, b.pre.repo, b.tmp); err != nil {
		return err
	}

	progress("starting Caddy %s (managed containerd, state %s)", b.pre.caddyBin, b.state)
	if err := b.startCaddy(ctx); err != nil {
		return err
	}
	b.ctrd, err = client.New(filepath.Join(b.state, "containerd.sock"),
		client.WithDefaultNamespace(nsCaddy), client.WithTimeout(10*time.Second))
	if err != nil {
		return fmt.Errorf("connecting to the managed containerd: %w", err)
	}
	if v, err := b.ctrd.Version(ctx); err == nil {
		b.res.ContainerdVersion = v.Version
	}
	// The pools fill in the background after the start.
	for _, r := range []struct {
		name string
		size int
	}{{"warm", warmPool}, {"cold", 0}, {"sustained", sustainedPool}} {
		if err := b.quiesce(ctx, r.name, r.size, 2*time.Minute); err != nil {
			return fmt.Errorf("waiting for the pools to fill: %w", err)
		}
	}

	steps := []struct {
		name string
		fn   func(context.Context) error
	}{
		{"host CGI", b.runHostCGI},
		{"warm", b.runWarm},
		{"cold", b.runCold},
		{"naive", b.runNaive},
		{"thaw", b.runThaw},
		{"sustained", b.runSustained},
	}
	for _, s := range steps {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("interrupted before %s: %w", s.name, err)
		}
		t0 := time.Now()
		if err := s.fn(ctx); err != nil {
			return fmt.Errorf("%s: %w", s.name, err)
		}
		progress("%s done in %.1f s", s.name, time.Since(t0).Seconds())
	}

	// Only the pools may be left: every container a request used is gone.
	if err := b.checkOnlyPooled(ctx); err != nil {
		return err
	}
	return nil
}

// cleanup stops Caddy (which stops its containerd), verifies that nothing
// is left, and removes every directory of the run.
func (b *bench) cleanup() error {
	var errs []error
	if b.http != nil {
		b.http.CloseIdleConnections()
	}
	if b.ctrd != nil {
		_ = b.ctrd.Close()
	}
	if b.caddy != nil {
		progress("stopping Caddy (SIGTERM)")
		if err := b.caddy.stop(60 * time.Second); err != nil {
			errs = append(errs, err)
		}
	}
	if b.caddy != nil {
		b.res.CaddyRefillFailureLogs, b.refillErr = countLogs(b.caddy.proc.Log, "refilling pool")
	}
	if b.state != "" {
		if err := waitNoProcesses(b.state+"/", 20*time.Second); err != nil {
			errs = append(errs, err)
		}
	}
	if b.caddy != nil && b.caddy.started {
		if err := b.verifyNothingLeft(); err != nil {
			errs = append(errs, err)
		}
	}
	if err := b.removeDirs(); err != nil {
		errs = append(errs, err)
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
