//go:build integration

package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/containerd/containerd/v2/pkg/namespaces"

	"github.com/caddy-spawn/caddy-spawn/internal/caddyproc"
)

// prerequisites are the inputs the bench checks before it starts anything.
type prerequisites struct {
	repo     string // repository root (go.mod of this module)
	caddyBin string // SPAWN_CADDY, absolute
	images   string // SPAWN_IMAGES, absolute
	helloTar string // <images>/hello.tar
}

func checkPrerequisites() (prerequisites, error) {
	var p prerequisites
	if os.Geteuid() != 0 {
		return p, errors.New("the bench runs containers and needs root")
	}
	var err error
	if p.repo, err = repoRoot(); err != nil {
		return p, err
	}
	caddy := os.Getenv("SPAWN_CADDY")
	if caddy == "" {
		return p, errors.New("SPAWN_CADDY is not set (the Caddy binary with caddy-spawn, e.g. build/caddy from `make build`)")
	}
	if p.caddyBin, err = filepath.Abs(caddy); err != nil {
		return p, err
	}
	if st, err := os.Stat(p.caddyBin); err != nil || st.IsDir() || st.Mode()&0o111 == 0 {
		return p, fmt.Errorf("SPAWN_CADDY=%s is not an executable file (%v); run `make build`", caddy, err)
	}
	images := os.Getenv("SPAWN_IMAGES")
	if images == "" {
		return p, errors.New("SPAWN_IMAGES is not set (the directory `make images` writes, e.g. build/images)")
	}
	if p.images, err = filepath.Abs(images); err != nil {
		return p, err
	}
	p.helloTar = filepath.Join(p.images, "hello.tar")
	if _, err := os.Stat(p.helloTar); err != nil {
		return p, fmt.Errorf("SPAWN_IMAGES: the hello image archive is missing (%v); run `make images`", err)
	}
	for _, bin := range []string{"containerd", "containerd-shim-runc-v2", "runc", "crun", "go"} {
		if _, err := exec.LookPath(bin); err != nil {
			return p, fmt.Errorf("%s is not in PATH (add .tools/bin after `make tools`): %w", bin, err)
		}
	}
	_, v1 := os.Stat("/sys/fs/cgroup/freezer")
	_, v2 := os.Stat("/sys/fs/cgroup/cgroup.controllers")
	if v1 != nil && v2 != nil {
		return p, errors.New("no cgroup freezer: neither /sys/fs/cgroup/freezer (v1) nor cgroup v2 is mounted")
	}
	if n := len(filepath.Join(runParent, "0123456789abcdef", "containerd.sock.ttrpc")); n >= 100 {
		return p, fmt.Errorf("socket path too long (%d)", n)
	}
	return p, nil
}

// repoRoot finds the directory of this module's go.mod from the working
// directory upwards.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && bytes.Contains(b, []byte("module github.com/caddy-spawn/caddy-spawn\n")) {
			if _, err := os.Stat(filepath.Join(dir, "examples", "functions", "hello")); err != nil {
				return "", fmt.Errorf("repository at %s has no examples/functions/hello: %w", dir, err)
			}
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("run the bench from inside the caddy-spawn repository (no go.mod of github.com/caddy-spawn/caddy-spawn found)")
		}
		dir = parent
	}
}

// buildHello builds examples/functions/hello for the host into dir.
func buildHello(ctx context.Context, repo, dir string) (string, error) {
	out := filepath.Join(dir, "hello")
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-o", out, "./examples/functions/hello")
	cmd.Dir = repo
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("building the hello function for host CGI: %v\n%s", err, b)
	}
	return out, nil
}

// caddyProc is a path's Caddy: the subprocess and its addresses.
type caddyProc struct {
	proc      *caddyproc.Process
	base      string // http://127.0.0.1:<port>
	admin     string // http://127.0.0.1:<port>
	started   bool   // it served its configuration
	daemonLog string
	logTail   string // containerd's log, its tail, kept when the path stops
}

// caddyfile is a path's configuration: three routes of the hello image.
func (b *bench) caddyfile(p *pathRun, httpPort, adminPort int) string {
	route := func(name string, pool int, extra ...string) string {
		poolLine := fmt.Sprintf("pool %d", pool)
		if pool < 0 { // an adaptive pool: its lines are in extra
			poolLine = "# adaptive pool"
		}
		var more strings.Builder
		for _, e := range extra {
			more.WriteString("\t\t\t" + e + "\n")
		}
		return fmt.Sprintf(`	handle /%[1]s {
		header >X-Spawn-Start {http.spawn.start_type}
		spawn %[2]s {
			name %[1]s
			image_archive %[3]s
			%[4]s
			timeout 30s
%[5]s		}
	}
`, name, helloRef, b.pre.helloTar, poolLine, more.String())
	}
	routes := route("warm", warmPool) + route("cold", 0) + route("sustained", sustainedPool) +
		route("warm-userns", usernsPool, "userns") + route("cold-userns", 0, "userns")
	if p.name == poolsPath {
		routes = b.poolRoutes(route)
	}
	return fmt.Sprintf(`{
	admin 127.0.0.1:%d
	persist_config off
	spawn {
		namespace %s
		run_dir %s
		fast_path %s
		managed {
			root %s
			state %s
		}
	}
}

http://127.0.0.1:%d {
	bind 127.0.0.1
%s	handle {
		respond "no such route" 404
	}
}
`, adminPort, nsCaddy, p.runDir, p.fastPath, p.ctrdRoot, p.state, httpPort, routes)
}

// startCaddy starts a path's Caddy and waits until it serves its
// configuration (the spawn app has started containerd and its task server
// and readied the images by then).
func (b *bench) startCaddy(ctx context.Context, p *pathRun) error {
	ports, err := caddyproc.FreePorts(2)
	if err != nil {
		return err
	}
	p.httpPort, p.adminPort = ports[0], ports[1]
	dir := filepath.Join(b.tmp, p.name, "caddy")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	proc, err := caddyproc.Start(caddyproc.Options{
		Bin:       b.pre.caddyBin,
		Dir:       dir,
		Caddyfile: b.caddyfile(p, ports[0], ports[1]),
		LogPath:   filepath.Join(dir, "caddy.log"),
	})
	if err != nil {
		return err
	}
	p.caddy = &caddyProc{
		proc:      proc,
		base:      fmt.Sprintf("http://127.0.0.1:%d", ports[0]),
		admin:     fmt.Sprintf("http://127.0.0.1:%d", ports[1]),
		daemonLog: filepath.Join(p.state, "containerd.log"),
	}
	addr := strings.TrimPrefix(p.caddy.base, "http://")
	if err := proc.WaitServing(ctx, addr, 3*time.Minute); err != nil {
		return fmt.Errorf("starting caddy: %w (log %s)", err, proc.Log.Path())
	}
	p.caddy.started = true
	return nil
}

// stop stops Caddy with SIGTERM (see caddyproc.Process.Stop); a Caddy that
// exited before the end is an error here. containerd's log is kept in
// memory first: the path's directories go right after.
func (p *caddyProc) stop(timeout time.Duration) error {
	defer p.keepLogTail()
	select {
	case <-p.proc.Exited():
		return fmt.Errorf("caddy had exited before the end: %v", p.proc.Err())
	default:
	}
	return p.proc.Stop(timeout)
}

func (p *caddyProc) keepLogTail() {
	data, err := os.ReadFile(p.daemonLog)
	if err != nil {
		return
	}
	const tail = 8 << 10
	if len(data) > tail {
		data = data[len(data)-tail:]
	}
	p.logTail = string(data)
}

// dumpLogs prints the tails of the paths' Caddy and containerd logs.
func (b *bench) dumpLogs() {
	for _, p := range b.paths {
		if p.caddy == nil {
			continue
		}
		fmt.Fprintf(os.Stderr, "---- %s path: tail of %s ----\n%s\n", p.name, p.caddy.proc.Log.Path(), p.caddy.proc.Log.Tail(8<<10))
		if p.caddy.logTail == "" {
			p.caddy.keepLogTail()
		}
		if p.caddy.logTail != "" {
			fmt.Fprintf(os.Stderr, "---- %s path: tail of %s ----\n%s\n", p.name, p.caddy.daemonLog, p.caddy.logTail)
		}
	}
}

// metrics fetches Caddy's Prometheus metrics from the admin endpoint: series
// (name with its labels, as exposed) → value.
func (b *bench) metrics(ctx context.Context) (map[string]float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, b.caddy.admin+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	resp, err := b.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("fetching metrics: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return nil, fmt.Errorf("fetching metrics: status %d: %s", resp.StatusCode, body)
	}
	m := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "caddy_spawn_") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			continue
		}
		m[line[:i]] = v
	}
	return m, sc.Err()
}

// routeContainers counts the containers of a route in Caddy's namespace.
func (b *bench) routeContainers(ctx context.Context, route string) (int, error) {
	ctx = namespaces.WithNamespace(ctx, nsCaddy)
	cs, err := b.ctrd.Containers(ctx, fmt.Sprintf(`labels."dev.caddy-spawn/route"==%s`, route))
	if err != nil {
		return 0, fmt.Errorf("listing containers of route %s: %w", route, err)
	}
	return len(cs), nil
}

// quiesce waits until a route's pool is full again (its pool_idle gauge is
// back to size) and every container a request used is removed (the route
// has exactly size containers): nothing of the previous request runs in the
// background any more.
func (b *bench) quiesce(ctx context.Context, route string, size int, timeout time.Duration) error {
	return b.quiesceEvery(ctx, route, size, timeout, 10*time.Millisecond)
}

// quiesceEvery is quiesce looking every interval.
func (b *bench) quiesceEvery(ctx context.Context, route string, size int, timeout, interval time.Duration) error {
	deadline := time.Now().Add(timeout)
	series := `caddy_spawn_pool_idle{route="` + route + `"}`
	for {
		m, err := b.metrics(ctx)
		if err != nil {
			return err
		}
		idle := int(m[series]) // absent (pool 0) reads 0
		n, err := b.routeContainers(ctx, route)
		if err != nil {
			return err
		}
		if idle == size && n == size {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("route %s did not settle within %s: pool_idle %d, containers %d, want %d", route, timeout, idle, n, size)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(interval):
		}
	}
}

// quiesceAll waits until every route holds exactly its pool.
func (b *bench) quiesceAll(ctx context.Context, timeout time.Duration) error {
	for _, r := range []struct {
		name string
		size int
	}{{"warm", warmPool}, {"cold", 0}, {"sustained", sustainedPool}, {"warm-userns", usernsPool}, {"cold-userns", 0}} {
		if err := b.quiesce(ctx, r.name, r.size, timeout); err != nil {
			return err
		}
	}
	return nil
}

// checkOnlyPooled checks, before Caddy stops, that the routes hold exactly
// their pools: every container a request used has been removed.
func (b *bench) checkOnlyPooled(ctx context.Context) error {
	if err := b.quiesceAll(ctx, time.Minute); err != nil {
		return fmt.Errorf("after the runs: %w", err)
	}
	cs, err := b.ctrd.Containers(namespaces.WithNamespace(ctx, nsCaddy))
	if err != nil {
		return err
	}
	if len(cs) != pooled {
		return fmt.Errorf("after the runs: %d containers in %s, want only the %d pooled ones", len(cs), nsCaddy, pooled)
	}
	b.cur.res.ContainersBeforeStop = len(cs)
	return nil
}

func randHex(n int) string {
	buf := make([]byte, n/2)
	if _, err := rand.Read(buf); err != nil {
		panic(err)
	}
	return hex.EncodeToString(buf)
}

// countLogs counts Caddy's JSON log entries whose msg is msg and returns
// the first one's error.
func countLogs(l *caddyproc.Log, msg string) (int, string) {
	entries := l.FindAll(msg, nil)
	if len(entries) == 0 {
		return 0, ""
	}
	first, _ := entries[0]["error"].(string)
	return len(entries), first
}
