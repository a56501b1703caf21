//go:build integration

// Package e2e runs the real Caddy binary (built by `make build`) with
// caddy-spawn linked in, against a managed containerd and real runc, and
// talks to it over real HTTP. Each test starts one Caddy from a Caddyfile,
// through the launcher the bench uses too (internal/caddyproc), on a free
// port it picks with freePort; all Caddy processes of one test binary share
// one admin port and one managed containerd root, state and run directory,
// so each one starts (and must stop) the same fresh daemon.
//
// The tests need root, containerd and runc in PATH, SPAWN_CADDY (the Caddy
// binary) and SPAWN_IMAGES (the directory with hello.tar, shell.tar and
// testfn.tar). Without them TestMain fails loudly: the build tag is the
// opt-in, and a skipped end-to-end test would read as green.
//
// SPAWN_E2E_TIMEOUT_SCALE (default 1) multiplies the harness's timeouts
// for a slow host (the emulated VM of integration/vm); SPAWN_E2E_LOGS
// names a directory for the Caddy logs, kept even when all tests pass.
package e2e

import (
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
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/containers"
	ctrsnapshots "github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/pkg/namespaces"

	"github.com/caddy-spawn/caddy-spawn/internal/caddyproc"
	"github.com/caddy-spawn/caddy-spawn/internal/hostprobe"
)

const (
	// namespace and snapshotter are the spawn app's defaults.
	namespace   = "caddy-spawn"
	snapshotter = "overlayfs"
	// labelManaged is on everything caddy-spawn creates in containerd
	// (spawner.LabelManaged; spelled out so this test checks the contract,
	// not the constant).
	labelManaged = "dev.caddy-spawn/managed"
	// labelRoute names the route a container serves.
	labelRoute = "dev.caddy-spawn/route"
	// initPath is where caddy-spawn mounts its init in every container; a
	// container whose first process still is the init has not served yet.
	initPath = "/.spawn/init"
	// managedFilter selects what caddy-spawn created.
	managedFilter = `labels."` + labelManaged + `"==true`

	// Images built by `make images`.
	helloRef  = "localhost/caddy-spawn/hello:latest"
	testfnRef = "localhost/caddy-spawn/testfn:latest"

	// startTimeout bounds a Caddy start: the spawn app starts containerd and
	// imports and unpacks the images before it serves.
	startTimeout = 60 * time.Second
	// goneTimeout bounds the asynchronous removal of a container after its
	// response, or after a kill.
	goneTimeout = 10 * time.Second
)

// Per test binary: one managed containerd root, state and run directory.
var (
	// adminAddr is Caddy's admin endpoint in every test config: a free
	// port picked at start, so two test binaries never talk to each
	// other's Caddy (Caddy binds it with SO_REUSEPORT).
	adminAddr string
	caddyBin  string
	imagesDir string
	ctrdRoot  string // <tmp>/ctrd
	stateDir  string // /run/caddy-spawn-e2e/<hex>
	runDir    string // /run/caddy-spawn-e2e/<hex>-run
	tmpRoot   string
	// logDir keeps each Caddy's output; it is removed only when all tests
	// pass, unless SPAWN_E2E_LOGS named it.
	logDir   string
	keepLogs bool
	// timeScale multiplies every timeout of the harness: SPAWN_E2E_TIMEOUT_SCALE
	// (default 1), for slow hosts such as the software-emulated VM of
	// `make test-vm`. Timeouts bound waits; they never measure speed.
	timeScale = 1.0
)

func TestMain(m *testing.M) {
	if err := checkPrerequisites(); err != nil {
		fmt.Fprintf(os.Stderr, "e2e: FAIL: %v\n", err)
		fmt.Fprintln(os.Stderr, "e2e: run `make integration` as root (it sets SPAWN_CADDY and SPAWN_IMAGES and builds what is missing); these tests are never skipped")
		os.Exit(1)
	}
	adminPort, err := caddyproc.FreePort()
	if err != nil {
		fmt.Fprintf(os.Stderr, "e2e: FAIL: finding a free admin port: %v\n", err)
		os.Exit(1)
	}
	adminAddr = fmt.Sprintf("localhost:%d", adminPort)
	tmpRoot, err = os.MkdirTemp("", "caddy-spawn-e2e-")
	if err != nil {
		fmt.Fprintf(os.Stderr, "e2e: FAIL: creating temp dir: %v\n", err)
		os.Exit(1)
	}
	id := randHex(8)
	logDir = filepath.Join(os.TempDir(), "caddy-spawn-e2e-logs-"+id)
	if dir := os.Getenv("SPAWN_E2E_LOGS"); dir != "" {
		logDir, keepLogs = dir, true
	}
	if err := os.MkdirAll(logDir, 0o755); err != nil {
		fmt.Fprintf(os.Stderr, "e2e: FAIL: creating log dir: %v\n", err)
		os.Exit(1)
	}
	ctrdRoot = filepath.Join(tmpRoot, "ctrd")
	stateDir = filepath.Join("/run/caddy-spawn-e2e", id)
	runDir = stateDir + "-run"
	if n := len(filepath.Join(stateDir, "containerd.sock")); n >= 100 {
		fmt.Fprintf(os.Stderr, "e2e: FAIL: socket path too long (%d chars)\n", n)
		os.Exit(1)
	}

	code := m.Run()

	// Whatever the tests did, nothing of the managed containerd may survive
	// the last Caddy.
	if procs := processesMentioning(stateDir); len(procs) > 0 {
		fmt.Fprintf(os.Stderr, "e2e: FAIL: processes of the managed containerd still running after all tests: %v\n", procs)
		code = 1
	}
	if mounts := mountsUnder(ctrdRoot, stateDir, runDir); len(mounts) > 0 {
		fmt.Fprintf(os.Stderr, "e2e: FAIL: mounts left under the managed containerd's directories: %v\n", mounts)
		code = 1
	}
	rescue(func(format string, args ...any) { fmt.Fprintf(os.Stderr, "e2e: "+format+"\n", args...) })
	if mounts := mountsUnder(ctrdRoot, stateDir, runDir); len(mounts) > 0 {
		fmt.Fprintf(os.Stderr, "e2e: could not clean up mounts %v; leaving %s and %s\n", mounts, tmpRoot, stateDir)
	} else {
		for _, dir := range []string{tmpRoot, stateDir, runDir} {
			if err := os.RemoveAll(dir); err != nil {
				fmt.Fprintf(os.Stderr, "e2e: removing %s: %v\n", dir, err)
			}
		}
	}
	_ = os.Remove("/run/caddy-spawn-e2e") // only if empty: other runs may use it
	if code == 0 && !keepLogs {
		_ = os.RemoveAll(logDir)
	} else {
		fmt.Fprintf(os.Stderr, "e2e: Caddy logs kept in %s\n", logDir)
	}
	os.Exit(code)
}

func checkPrerequisites() error {
	if os.Geteuid() != 0 {
		return errors.New("end-to-end tests need root (they run containers)")
	}
	if v := os.Getenv("SPAWN_E2E_TIMEOUT_SCALE"); v != "" {
		f, err := strconv.ParseFloat(v, 64)
		if err != nil || f < 1 {
			return fmt.Errorf("SPAWN_E2E_TIMEOUT_SCALE=%q: want a number >= 1", v)
		}
		timeScale = f
	}
	caddyBin = os.Getenv("SPAWN_CADDY")
	if caddyBin == "" {
		return errors.New("SPAWN_CADDY is not set (the Caddy binary, e.g. build/caddy from `make build`)")
	}
	if st, err := os.Stat(caddyBin); err != nil || st.IsDir() || st.Mode()&0o111 == 0 {
		return fmt.Errorf("SPAWN_CADDY=%s is not an executable file (err: %v)", caddyBin, err)
	}
	imagesDir = os.Getenv("SPAWN_IMAGES")
	if imagesDir == "" {
		return errors.New("SPAWN_IMAGES is not set (the directory `make images` writes, e.g. build/images)")
	}
	for _, f := range []string{"hello.tar", "shell.tar", "testfn.tar"} {
		if _, err := os.Stat(filepath.Join(imagesDir, f)); err != nil {
			return fmt.Errorf("SPAWN_IMAGES: missing image archive: %w", err)
		}
	}
	for _, bin := range []string{"containerd", "containerd-shim-runc-v2", "runc"} {
		if _, err := exec.LookPath(bin); err != nil {
			return fmt.Errorf("%s is not in PATH (add .tools/bin after `make tools`): %w", bin, err)
		}
	}
	return nil
}

// scaled is timeout d on this host: d times SPAWN_E2E_TIMEOUT_SCALE.
func scaled(d time.Duration) time.Duration { return time.Duration(float64(d) * timeScale) }

func randHex(n int) string {
	b := make([]byte, n/2)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}

// freePort returns a free loopback port for one test's Caddy site. A test
// that restarts Caddy keeps its port for the next process.
func freePort(t *testing.T) int {
	t.Helper()
	port, err := caddyproc.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	return port
}

// archive is the path of an image archive built by `make images`.
func archive(name string) string { return filepath.Join(imagesDir, name+".tar") }

// caddyfile returns a whole Caddyfile: the global options every test needs
// (admin endpoint, managed containerd in this binary's directories), then
// sites.
func caddyfile(sites string) string { return caddyfileWith(sites, "") }

// caddyfileWith is caddyfile with more lines in the spawn global option.
func caddyfileWith(sites, spawnExtra string) string {
	return caddyfileAdmin(adminAddr, sites, spawnExtra)
}

// caddyfileAdmin is caddyfileWith with the admin endpoint at admin (e.g.
// "unix//path/admin.sock") instead of this binary's TCP port.
func caddyfileAdmin(admin, sites, spawnExtra string) string {
	return fmt.Sprintf(`{
	admin %s
	servers {
		protocols h1 h2 h2c
	}
	spawn {
		managed {
			root %s
			state %s
		}
		run_dir %s
		fast_path %s
		%s
	}
}

%s
`, admin, ctrdRoot, stateDir, runDir, fastPathMode(), spawnExtra, strings.TrimRight(sites, "\n"))
}

// fastPathMode is the spawn app's fast_path for the suite: "on" (it must
// run: a host that can't run it fails the suite) unless SPAWN_FAST_PATH
// says otherwise, as the stock-path run (`make integration-stock`) does.
func fastPathMode() string {
	if m := os.Getenv("SPAWN_FAST_PATH"); m != "" {
		return m
	}
	return "on"
}

// testfnRoute returns a handle block serving testfn in mode args at
// matcher, with extra subdirectives (one per line) in the spawn block.
func testfnRoute(matcher, name string, args string, extra ...string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "\thandle %s {\n\t\tspawn %s {\n", matcher, testfnRef)
	fmt.Fprintf(&b, "\t\t\tname %s\n\t\t\timage_archive %s\n\t\t\targs %s\n", name, archive("testfn"), args)
	for _, e := range extra {
		fmt.Fprintf(&b, "\t\t\t%s\n", e)
	}
	b.WriteString("\t\t}\n\t}\n")
	return b.String()
}

// site wraps handle blocks into a plain-HTTP site on port, with a 404
// fallback, so a route that is gone is told from one that serves.
func site(port int, routes ...string) string {
	return fmt.Sprintf("http://:%d {\n%s\thandle {\n\t\trespond \"no such route\" 404\n\t}\n}\n", port, strings.Join(routes, ""))
}

// caddyProc is one running Caddy process of a test, with what the tests
// need around it: an HTTP client, a containerd client, Stop at cleanup.
type caddyProc struct {
	t    *testing.T
	port int
	proc *caddyproc.Process
	logs *caddyproc.Log // proc.Log

	client *http.Client
	// socket, when set, is the containerd the app uses (address mode);
	// default: the managed one.
	socket   string
	ctrdOnce sync.Once
	ctrd     *client.Client
	ctrdErr  error

	stopOnce sync.Once
}

// startCaddy starts Caddy with the Caddyfile sites (plus the global options
// of caddyfile) and waits until it serves on port. Stop runs at cleanup, if
// the test does not call it first.
func startCaddy(t *testing.T, port int, sites string) *caddyProc {
	t.Helper()
	return startCaddyConfig(t, port, caddyfile(sites))
}

// startCaddyConfig is startCaddy with a whole Caddyfile.
func startCaddyConfig(t *testing.T, port int, config string) *caddyProc {
	t.Helper()
	return startCaddyOn(t, port, "", config)
}

// startCaddyOn is startCaddyConfig for a config whose spawn app uses the
// containerd at socket (address mode); "" is the managed one.
func startCaddyOn(t *testing.T, port int, socket, config string) *caddyProc {
	t.Helper()
	p := launchCaddy(t, port, config)
	p.socket = socket
	t.Cleanup(p.Stop)
	if err := p.waitServing(startTimeout); err != nil {
		p.dumpLogs()
		t.Fatalf("caddy did not start: %v", err)
	}
	return p
}

// launchCaddy starts the Caddy process and returns at once.
func launchCaddy(t *testing.T, port int, config string) *caddyProc {
	t.Helper()
	return launchCaddyIn(t, port, config, t.TempDir())
}

// launches numbers the Caddy processes of the test binary, so two started
// in one directory keep separate logs.
var launches atomic.Int64

// launchCaddyIn is launchCaddy in dir, which holds Caddy's data directory:
// a Caddy started again in the same dir finds its predecessor's data (the
// async jobs' spool).
func launchCaddyIn(t *testing.T, port int, config, dir string) *caddyProc {
	t.Helper()
	logName := fmt.Sprintf("%s-%s-%d.log", strings.NewReplacer("/", "_", " ", "_").Replace(t.Name()), filepath.Base(dir), launches.Add(1))
	proc, err := caddyproc.Start(caddyproc.Options{
		Bin:       caddyBin,
		Dir:       dir,
		Caddyfile: config,
		LogPath:   filepath.Join(logDir, logName),
	})
	if err != nil {
		t.Fatal(err)
	}
	p := &caddyProc{
		t:    t,
		port: port,
		proc: proc,
		logs: proc.Log,
		client: &http.Client{
			Transport: &http.Transport{Proxy: nil, DisableCompression: true},
			CheckRedirect: func(*http.Request, []*http.Request) error {
				return http.ErrUseLastResponse
			},
		},
	}
	t.Logf("caddy pid %d, config %s, log %s", proc.Pid(), proc.ConfigPath, proc.Log.Path())
	return p
}

// waitServing waits until Caddy has started all apps (its "serving initial
// configuration" log line) and its HTTP port accepts connections.
func (p *caddyProc) waitServing(timeout time.Duration) error {
	return p.proc.WaitServing(context.Background(), p.hostPort(), scaled(timeout))
}

func (p *caddyProc) hostPort() string { return "127.0.0.1:" + strconv.Itoa(p.port) }

// url returns the URL of path on this Caddy's site.
func (p *caddyProc) url(path string) string { return "http://" + p.hostPort() + path }

// okBody sends GET path and returns its body, failing t unless it is 200.
func (p *caddyProc) okBody(t *testing.T, path string) string {
	t.Helper()
	resp, body := p.get(t, path)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: status %d, want 200; body %q", path, resp.StatusCode, body)
	}
	return string(body)
}

// get sends GET path and returns the response with its whole body.
func (p *caddyProc) get(t *testing.T, path string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, p.url(path), nil)
	if err != nil {
		t.Fatal(err)
	}
	return p.do(t, req)
}

// do sends req and reads the whole body; a body read error fails the test.
func (p *caddyProc) do(t *testing.T, req *http.Request) (*http.Response, []byte) {
	t.Helper()
	resp, err := p.client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading body: %v (got %d bytes: %.200q)", req.Method, req.URL, err, len(body), body)
	}
	return resp, body
}

// daemonPID returns the managed containerd's pid from the most recent
// "managed containerd started" log line.
func (p *caddyProc) daemonPID() (int, bool) {
	entries := p.logs.FindAll("managed containerd started", nil)
	if len(entries) == 0 {
		return 0, false
	}
	pid, ok := entries[len(entries)-1]["pid"].(float64)
	return int(pid), ok
}

// containerd returns a client of the managed containerd, in our namespace.
func (p *caddyProc) containerd() (*client.Client, error) {
	p.ctrdOnce.Do(func() {
		// The socket the app's managed containerd listens on.
		sock := filepath.Join(stateDir, "containerd.sock")
		if p.socket != "" {
			sock = p.socket
		}
		p.ctrd, p.ctrdErr = client.New(sock,
			client.WithDefaultNamespace(namespace), client.WithTimeout(scaled(5*time.Second)))
	})
	if p.ctrdErr != nil {
		return nil, fmt.Errorf("connecting to the managed containerd: %w", p.ctrdErr)
	}
	return p.ctrd, nil
}

// queryCtx is the context for one query of Caddy's containerd: our
// namespace, and a bound.
func queryCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(namespaces.WithNamespace(context.Background(), namespace), scaled(10*time.Second))
}

// ctrState is what the tests need to know of one managed container.
type ctrState struct {
	ID    string
	Route string // its route label
	// Cmdline is the command line of what the container runs: "" when it
	// has no task or its process is gone; our init's while a pooled
	// container waits for a request; the function's program once a request
	// claimed it (exec'd by the init, or its child when the init stays PID 1
	// to supervise it).
	Cmdline string
}

// programOf returns the command line of pid's first child if it has one,
// else of pid itself; "" when pid is gone.
func programOf(pid int) string {
	tasks, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	for _, task := range tasks {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/children", pid, task.Name()))
		if err != nil {
			continue
		}
		if kids := strings.Fields(string(b)); len(kids) > 0 {
			if child, err := strconv.Atoi(kids[0]); err == nil {
				if cmd := cmdline(child); cmd != "" {
					return cmd
				}
			}
		}
	}
	return cmdline(pid)
}

// cmdline returns pid's command line, arguments joined by spaces.
func cmdline(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return ""
	}
	return string(bytes.ReplaceAll(bytes.TrimRight(b, "\x00"), []byte{0}, []byte{' '}))
}

// claimed reports whether a request took the container (or it is broken):
// anything but a live init waiting for its request.
func (c ctrState) claimed() bool {
	switch {
	case c.Cmdline == initPath, strings.HasPrefix(c.Cmdline, initPath+" "):
		return false // our init, waiting for a request
	case c.Cmdline == "runc init":
		return false // created, not yet running the init (or frozen just before)
	}
	return true
}

// containerInfo is the record of container id in Caddy's containerd.
func (p *caddyProc) containerInfo(t *testing.T, id string) containers.Container {
	t.Helper()
	c, err := p.containerd()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := queryCtx()
	defer cancel()
	ctr, err := c.LoadContainer(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	info, err := ctr.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return info
}

// containerStates lists the managed containers with their first process,
// and the managed snapshots but the shared layer views (layerViews).
func (p *caddyProc) containerStates() ([]ctrState, []string, error) {
	c, err := p.containerd()
	if err != nil {
		return nil, nil, err
	}
	ctx, cancel := queryCtx()
	defer cancel()
	cs, err := c.Containers(ctx, managedFilter)
	if err != nil {
		return nil, nil, fmt.Errorf("listing containers: %w", err)
	}
	var out []ctrState
	for _, ctr := range cs {
		st := ctrState{ID: ctr.ID()}
		if labels, err := ctr.Labels(ctx); err == nil {
			st.Route = labels[labelRoute]
		}
		if task, err := ctr.Task(ctx, nil); err == nil {
			st.Cmdline = programOf(int(task.Pid()))
		}
		out = append(out, st)
	}
	var snaps []string
	err = c.SnapshotService(snapshotter).Walk(ctx, func(_ context.Context, info ctrsnapshots.Info) error {
		// The fast path's shared views of image layers belong to no one
		// container (see layerViews, TestSharedLayers).
		if info.Labels[labelLayers] != "true" {
			snaps = append(snaps, info.Name)
		}
		return nil
	}, managedFilter)
	if err != nil {
		return nil, nil, fmt.Errorf("listing snapshots: %w", err)
	}
	return out, snaps, nil
}

// managedLeases lists the IDs of leases carrying the managed label.
func (p *caddyProc) managedLeases() ([]string, error) {
	ctx, cancel := queryCtx()
	defer cancel()
	c, err := p.containerd()
	if err != nil {
		return nil, err
	}
	ls, err := c.LeasesService().List(ctx, managedFilter)
	if err != nil {
		return nil, fmt.Errorf("listing leases: %w", err)
	}
	var ids []string
	for _, l := range ls {
		ids = append(ids, l.ID)
	}
	return ids, nil
}

// waitClaimed waits for a container whose program (not our init) runs with
// a command line starting with prefix, i.e. the one serving a request, and
// returns its ID.
func (p *caddyProc) waitClaimed(t *testing.T, timeout time.Duration, prefix string) string {
	t.Helper()
	var id string
	eventually(t, timeout, func() (bool, string) {
		cs, _, err := p.containerStates()
		if err != nil {
			return false, err.Error()
		}
		for _, c := range cs {
			if strings.HasPrefix(c.Cmdline, prefix) {
				id = c.ID
				return true, ""
			}
		}
		return false, fmt.Sprintf("no container runs %q; containers: %+v", prefix, cs)
	})
	return id
}

// waitGone waits until container id and its snapshot are removed.
func (p *caddyProc) waitGone(t *testing.T, id string) {
	t.Helper()
	eventually(t, goneTimeout, func() (bool, string) {
		cs, snaps, err := p.containerStates()
		if err != nil {
			return false, err.Error()
		}
		for _, c := range cs {
			if c.ID == id {
				return false, fmt.Sprintf("container %s still there: %+v", id, c)
			}
		}
		for _, s := range snaps {
			if strings.HasPrefix(s, id) {
				return false, fmt.Sprintf("snapshot %s of container %s still there", s, id)
			}
		}
		return true, ""
	})
}

// waitOnlyPooled waits until every container a request used is removed:
// what may remain are pooled containers whose init still waits for a
// request, and their snapshots. Containers are removed asynchronously,
// after their response.
func (p *caddyProc) waitOnlyPooled(t *testing.T) {
	t.Helper()
	eventually(t, goneTimeout, func() (bool, string) {
		cs, snaps, err := p.containerStates()
		if err != nil {
			return false, err.Error()
		}
		var bad []string
		own := map[string]bool{}
		for _, c := range cs {
			own[c.ID+"-rootfs"] = true
			if c.claimed() {
				bad = append(bad, fmt.Sprintf("container %s (route %s, process %q)", c.ID, c.Route, c.Cmdline))
			}
		}
		for _, s := range snaps {
			if !own[s] {
				bad = append(bad, "snapshot "+s+" of no container")
			}
		}
		return len(bad) == 0, fmt.Sprintf("left after their requests: %v", bad)
	})
}

// Stop ends Caddy with SIGTERM, as an operator would, and checks that it
// exits in time and takes its managed containerd (and the shims) along,
// leaving no mounts. It is idempotent.
func (p *caddyProc) Stop() {
	p.stopOnce.Do(p.stop)
}

func (p *caddyProc) stop() {
	t := p.t
	t.Helper()
	p.client.CloseIdleConnections()
	select {
	case <-p.proc.Exited():
	default:
		// What the requests created must be gone before shutdown sweeps.
		p.waitOnlyPooled(t)
	}
	if p.ctrd != nil {
		_ = p.ctrd.Close()
	}
	if err := p.proc.Stop(scaled(30 * time.Second)); err != nil {
		t.Error(err)
	}
	if pid, ok := p.daemonPID(); ok {
		eventually(t, 15*time.Second, func() (bool, string) {
			return !processAlive(pid, stateDir), fmt.Sprintf("managed containerd (pid %d) still running after caddy exited", pid)
		})
	}
	eventually(t, 15*time.Second, func() (bool, string) {
		procs := processesMentioning(stateDir)
		return len(procs) == 0, fmt.Sprintf("processes of the managed containerd still running: %v", procs)
	})
	if mounts := mountsUnder(ctrdRoot, stateDir, runDir); len(mounts) > 0 {
		t.Errorf("mounts left under the managed containerd's directories: %v", mounts)
	}
	if t.Failed() {
		p.dumpLogs()
		// Don't let this test's leftovers fail the next ones.
		rescue(t.Logf)
	}
}

// dumpLogs writes Caddy's output into the test log.
func (p *caddyProc) dumpLogs() {
	p.t.Helper()
	p.t.Logf("caddy output (%s):\n%s", p.logs.Path(), p.logs.Tail(64<<10))
}

// processAlive reports whether pid runs and its command line mentions
// marker (so a recycled pid doesn't count). A zombie has an empty command
// line and counts as gone.
func processAlive(pid int, marker string) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	return err == nil && bytes.Contains(b, []byte(marker))
}

// processesMentioning returns "pid: cmdline" for every process whose
// command line contains marker (the managed containerd and its shims name
// the state directory).
func processesMentioning(marker string) []string {
	var out []string
	for _, pr := range processArgs(marker) {
		out = append(out, fmt.Sprintf("%d: %s", pr.PID, strings.Join(pr.Args, " ")))
	}
	return out
}

// mountsUnder returns the mount points in /proc/self/mountinfo under any of
// dirs.
func mountsUnder(dirs ...string) []string { return hostprobe.MountsUnder(dirs...) }

// mountAt returns the source and type of the mount whose mount point is
// dir itself (the last one, if several), or "" when none is.
func mountAt(dir string) (source, fstype string) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return "", ""
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		pre, post, ok := strings.Cut(line, " - ")
		f, g := strings.Fields(pre), strings.Fields(post)
		if ok && len(f) >= 5 && len(g) >= 2 && f[4] == dir {
			source, fstype = g[1], g[0]
		}
	}
	return source, fstype
}

// eventually polls cond until it holds or timeout (scaled) passes; then it
// fails the test with cond's last message.
func eventually(t *testing.T, timeout time.Duration, cond func() (bool, string)) {
	t.Helper()
	timeout = scaled(timeout)
	deadline := time.Now().Add(timeout)
	for {
		ok, msg := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("still not true after %s: %s", timeout, msg)
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// waitLog waits for a log entry like Log.Find's and fails the test without one.
func (p *caddyProc) waitLog(t *testing.T, timeout time.Duration, msg string, fields map[string]string) map[string]any {
	t.Helper()
	timeout = scaled(timeout)
	deadline := time.Now().Add(timeout)
	for {
		if e, ok := p.logs.Find(msg, fields); ok {
			return e
		}
		if time.Now().After(deadline) {
			t.Errorf("no log entry with msg %q and fields %v within %s", msg, fields, timeout)
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// rescue cleans up after a Caddy that failed to: for every surviving
// process of the managed containerd (daemon or shim) it thaws the frozen
// cgroup of the shim's container, kills the container's processes and the
// shim, then unmounts what is left under our directories. The test that
// left them has already failed; this keeps the next ones meaningful.
func rescue(logf func(format string, args ...any)) {
	var pids []int
	var ids []string
	for _, pr := range processArgs(stateDir) {
		pids = append(pids, pr.PID)
		id := argAfter(pr.Args, "-id")
		if id == "" {
			continue
		}
		ids = append(ids, id)
		cg := "/" + namespace + "/" + id
		v1 := filepath.Join("/sys/fs/cgroup/freezer", cg)
		v2 := filepath.Join("/sys/fs/cgroup", cg)
		if err := os.WriteFile(filepath.Join(v1, "freezer.state"), []byte("THAWED"), 0); err != nil {
			_ = os.WriteFile(filepath.Join(v2, "cgroup.freeze"), []byte("0"), 0)
		}
		for _, dir := range []string{v1, v2} {
			b, err := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
			if err != nil {
				continue
			}
			for f := range strings.FieldsSeq(string(b)) {
				if pid, err := strconv.Atoi(f); err == nil {
					logf("rescue: killing process %d of container %s", pid, id)
					_ = syscall.Kill(pid, syscall.SIGKILL)
				}
			}
		}
	}
	for _, pid := range pids {
		logf("rescue: killing leftover process %d of the managed containerd", pid)
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	deadline := time.Now().Add(5 * time.Second)
	for len(processArgs(stateDir)) > 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	for _, id := range ids {
		dirs, _ := filepath.Glob(filepath.Join("/sys/fs/cgroup/*", namespace, id))
		for _, d := range append(dirs, filepath.Join("/sys/fs/cgroup", namespace, id)) {
			_ = syscall.Rmdir(d)
		}
	}
	mounts := mountsUnder(ctrdRoot, stateDir, runDir)
	for _, mount := range slices.Backward(mounts) { // nested mounts come later
		logf("rescue: unmounting %s", mount)
		if err := syscall.Unmount(mount, syscall.MNT_DETACH); err != nil {
			logf("rescue: unmounting %s: %v", mount, err)
		}
	}
}

// procArgs is a process and its arguments.
type procArgs = hostprobe.Process

// processArgs returns the processes whose command line mentions marker.
func processArgs(marker string) []procArgs { return hostprobe.Processes(marker) }

func argAfter(args []string, flag string) string {
	for i, a := range args {
		if a == flag && i+1 < len(args) {
			return args[i+1]
		}
	}
	return ""
}
