//go:build integration

package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/containerd/containerd/v2/pkg/namespaces"
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
	for _, bin := range []string{"containerd", "containerd-shim-runc-v2", "runc", "go"} {
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

// caddyProc is the Caddy subprocess.
type caddyProc struct {
	cmd       *exec.Cmd
	dir       string
	logPath   string
	base      string // http://127.0.0.1:<port>
	admin     string // http://127.0.0.1:<port>
	exited    chan struct{}
	waitErr   error
	started   bool // it served its configuration
	stopDone  bool
	logFile   *os.File
	daemonLog string
}

// freePorts returns n distinct free TCP ports on loopback.
func freePorts(n int) ([]int, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("finding a free port: %w", err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// caddyfile is the bench's configuration: three routes of the hello image.
func (b *bench) caddyfile(httpPort, adminPort int) string {
	route := func(name string, pool int) string {
		return fmt.Sprintf(`	handle /%[1]s {
		header >X-Spawn-Start {http.spawn.start_type}
		spawn %[2]s {
			name %[1]s
			image_archive %[3]s
			pool %[4]d
			timeout 30s
		}
	}
`, name, helloRef, b.pre.helloTar, pool)
	}
	return fmt.Sprintf(`{
	admin 127.0.0.1:%d
	persist_config off
	spawn {
		namespace %s
		run_dir %s
		managed {
			root %s
			state %s
		}
	}
}

http://127.0.0.1:%d {
	bind 127.0.0.1
%s%s%s	handle {
		respond "no such route" 404
	}
}
`, adminPort, nsCaddy, b.runDir, b.ctrdRoot, b.state, httpPort,
		route("warm", warmPool), route("cold", 0), route("sustained", sustainedPool))
}

// startCaddy starts Caddy and waits until it serves its configuration (the
// spawn app has started containerd and readied the images by then).
func (b *bench) startCaddy(ctx context.Context) error {
	ports, err := freePorts(2)
	if err != nil {
		return err
	}
	dir := filepath.Join(b.tmp, "caddy")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	cfgPath := filepath.Join(dir, "Caddyfile")
	if err := os.WriteFile(cfgPath, []byte(b.caddyfile(ports[0], ports[1])), 0o600); err != nil {
		return err
	}
	p := &caddyProc{
		dir:       dir,
		logPath:   filepath.Join(dir, "caddy.log"),
		base:      fmt.Sprintf("http://127.0.0.1:%d", ports[0]),
		admin:     fmt.Sprintf("http://127.0.0.1:%d", ports[1]),
		exited:    make(chan struct{}),
		daemonLog: filepath.Join(b.state, "containerd.log"),
	}
	p.logFile, err = os.Create(p.logPath)
	if err != nil {
		return err
	}
	cmd := exec.Command(b.pre.caddyBin, "run", "--config", cfgPath, "--adapter", "caddyfile")
	cmd.Dir = dir
	cmd.Stdout = p.logFile
	cmd.Stderr = p.logFile
	// Caddy's data dir (where the spawn app installs its init) and config
	// dir stay in the run's temporary directory.
	cmd.Env = append(os.Environ(),
		"XDG_DATA_HOME="+filepath.Join(dir, "data"),
		"XDG_CONFIG_HOME="+filepath.Join(dir, "config"),
	)
	// Own process group; if the bench dies, Caddy dies too (and its
	// managed containerd with it).
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		p.logFile.Close()
		return fmt.Errorf("starting %s: %w", b.pre.caddyBin, err)
	}
	p.cmd = cmd
	b.caddy = p
	go func() {
		p.waitErr = cmd.Wait()
		close(p.exited)
	}()

	deadline := time.Now().Add(3 * time.Minute)
	for {
		select {
		case <-p.exited:
			return fmt.Errorf("caddy exited during start-up: %v (log %s)", p.waitErr, p.logPath)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if logHas(p.logPath, "serving initial configuration") {
			if c, err := net.DialTimeout("tcp", strings.TrimPrefix(p.base, "http://"), time.Second); err == nil {
				c.Close()
				p.started = true
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("caddy did not serve within 3 minutes (log %s)", p.logPath)
		}
	}
}

func logHas(path, s string) bool {
	b, err := os.ReadFile(path)
	return err == nil && bytes.Contains(b, []byte(s))
}

// stop sends SIGTERM and waits for Caddy to exit; past timeout it kills
// Caddy's process group.
func (p *caddyProc) stop(timeout time.Duration) error {
	if p.stopDone || p.cmd == nil {
		return nil
	}
	p.stopDone = true
	defer p.logFile.Close()
	select {
	case <-p.exited:
		return fmt.Errorf("caddy had exited before the end: %v", p.waitErr)
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
		if p.waitErr != nil {
			return fmt.Errorf("caddy exited with %v after SIGTERM", p.waitErr)
		}
		return nil
	case <-time.After(timeout):
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.exited
		return fmt.Errorf("caddy did not exit within %s of SIGTERM; killed its process group", timeout)
	}
}

// dumpLogs prints the tails of Caddy's and containerd's logs.
func (b *bench) dumpLogs() {
	if b.caddy == nil {
		return
	}
	for _, f := range []string{b.caddy.logPath, b.caddy.daemonLog} {
		data, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		const max = 8 << 10
		if len(data) > max {
			data = data[len(data)-max:]
		}
		fmt.Fprintf(os.Stderr, "---- tail of %s ----\n%s\n", f, data)
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
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// checkOnlyPooled checks, before Caddy stops, that the routes hold exactly
// their pools: every container a request used has been removed.
func (b *bench) checkOnlyPooled(ctx context.Context) error {
	want := map[string]int{"warm": warmPool, "cold": 0, "sustained": sustainedPool}
	for route, n := range want {
		if err := b.quiesce(ctx, route, n, time.Minute); err != nil {
			return fmt.Errorf("after the runs: %w", err)
		}
	}
	cs, err := b.ctrd.Containers(namespaces.WithNamespace(ctx, nsCaddy))
	if err != nil {
		return err
	}
	if len(cs) != warmPool+sustainedPool {
		return fmt.Errorf("after the runs: %d containers in %s, want only the %d pooled ones", len(cs), nsCaddy, warmPool+sustainedPool)
	}
	b.res.ContainersBeforeStop = len(cs)
	return nil
}

func randHex(n int) string {
	buf := make([]byte, n/2)
	if _, err := rand.Read(buf); err != nil {
		panic(err)
	}
	return hex.EncodeToString(buf)
}

// countLogs counts the JSON log entries of Caddy whose msg is msg and
// returns the first one's error.
func countLogs(path, msg string) (int, string) {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0, ""
	}
	n, first := 0, ""
	for _, line := range strings.Split(string(data), "\n") {
		var e struct {
			Msg   string `json:"msg"`
			Error string `json:"error"`
		}
		if !strings.HasPrefix(line, "{") || json.Unmarshal([]byte(line), &e) != nil || e.Msg != msg {
			continue
		}
		if n == 0 {
			first = e.Error
		}
		n++
	}
	return n, first
}
