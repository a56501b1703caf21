//go:build integration && fleet

// Package fleet runs caddy-spawn as a fleet on one machine: three nodes,
// each its own Caddy with its own managed containerd (own root, state,
// run directory and containerd namespace) in its own network namespace and
// CPU-capped cgroup, a front Caddy in another namespace balancing them
// with reverse_proxy, and the function image served to the nodes by a real
// registry (go-containerregistry's) on the host's end of the lab's bridge.
// Load goes only to addresses inside the lab's subnet, in bounded loops.
// TestMain removes every namespace, link, cgroup, process, mount and
// directory the lab made, also when a test fails or the run is
// interrupted (SIGINT, SIGTERM); a run killed outright is swept by the
// next.
//
// It needs root, nsenter and ip (iproute2), SPAWN_CADDY, SPAWN_IMAGES and
// containerd, its shim and runc in PATH; `make test-fleet` provides them.
// Without them TestMain fails loudly.
package fleet

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/namespaces"

	"github.com/caddy-spawn/caddy-spawn/internal/caddyproc"
	"github.com/caddy-spawn/caddy-spawn/internal/hostprobe"
)

const (
	// nodeCPUs is each node's CPU cap.
	nodeCPUs = 0.5
	// startTimeout bounds a node's start: pulling the image from the
	// registry, unpacking it and filling every pool, on half a CPU.
	startTimeout = 3 * time.Minute
	// labelManaged is on everything caddy-spawn creates in containerd.
	labelManaged = "dev.caddy-spawn/managed"
)

// routes are the functions every node serves, and how.
var routes = []struct{ name, args string }{
	{"a", "sleep 50ms"},
	{"b", "sleep 50ms"},
	{"c", "sleep 50ms"},
	{"p", "wc"}, // POSTs: the body's length, read through stdin
}

// routePool is each route's pool size on every node.
const routePool = 2

var (
	caddyBin  string
	imagesDir string
	theLab    *lab
	imageRef  string // the function image on the lab's registry
	// logDir keeps every Caddy's output; removed only when all pass.
	logDir string
)

func TestMain(m *testing.M) {
	if err := checkPrerequisites(); err != nil {
		fmt.Fprintf(os.Stderr, "fleet: FAIL: %v\n", err)
		fmt.Fprintln(os.Stderr, "fleet: run `make test-fleet` as root; these tests are never skipped")
		os.Exit(1)
	}
	sweepDeadLabs()
	logDir = filepath.Join(os.TempDir(), fmt.Sprintf("caddy-spawn-fleet-logs-%d", os.Getpid()))
	if err := os.MkdirAll(logDir, 0o755); err != nil {
		fmt.Fprintf(os.Stderr, "fleet: FAIL: %v\n", err)
		os.Exit(1)
	}
	code := func() int {
		l, err := newLab()
		theLab = l
		// The trap: an interrupted run cleans up too.
		sigs := make(chan os.Signal, 1)
		signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
		go func() {
			s := <-sigs
			fmt.Fprintf(os.Stderr, "fleet: %v: cleaning up\n", s)
			if err := l.cleanup(); err != nil {
				fmt.Fprintf(os.Stderr, "fleet: cleanup: %v\n", err)
			}
			os.Exit(1)
		}()
		defer func() {
			signal.Stop(sigs)
			if err := l.cleanup(); err != nil {
				fmt.Fprintf(os.Stderr, "fleet: FAIL: cleanup: %v\n", err)
			}
		}()
		if err != nil {
			fmt.Fprintf(os.Stderr, "fleet: FAIL: making the lab: %v\n", err)
			return 1
		}
		if err := startRegistry(l); err != nil {
			fmt.Fprintf(os.Stderr, "fleet: FAIL: %v\n", err)
			return 1
		}
		return m.Run()
	}()
	if left := labLeftovers(theLab); len(left) > 0 {
		fmt.Fprintf(os.Stderr, "fleet: FAIL: the lab left %v\n", left)
		code = 1
	}
	if code == 0 {
		_ = os.RemoveAll(logDir)
	} else {
		fmt.Fprintf(os.Stderr, "fleet: Caddy logs kept in %s\n", logDir)
	}
	os.Exit(code)
}

func checkPrerequisites() error {
	if os.Geteuid() != 0 {
		return errors.New("the fleet tests need root (network namespaces, cgroups, containers)")
	}
	caddyBin, imagesDir = os.Getenv("SPAWN_CADDY"), os.Getenv("SPAWN_IMAGES")
	if caddyBin == "" || imagesDir == "" {
		return errors.New("SPAWN_CADDY and SPAWN_IMAGES must be set (build/caddy and build/images)")
	}
	if _, err := os.Stat(filepath.Join(imagesDir, "testfn.tar")); err != nil {
		return fmt.Errorf("SPAWN_IMAGES: %w", err)
	}
	for _, bin := range []string{"ip", "nsenter", "containerd", "containerd-shim-runc-v2", "runc"} {
		if _, err := exec.LookPath(bin); err != nil {
			return fmt.Errorf("%s is not in PATH: %w", bin, err)
		}
	}
	return nil
}

// startRegistry serves an in-memory registry on the bridge's host address
// and pushes testfn.tar to it.
func startRegistry(l *lab) error {
	ln, err := net.Listen("tcp", net.JoinHostPort(l.gateway(), "0"))
	if err != nil {
		return fmt.Errorf("listening for the registry: %w", err)
	}
	srv := &http.Server{Handler: registry.New(registry.Logger(log.New(io.Discard, "", 0))), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	l.onCleanup(func() error { return srv.Close() })
	imageRef = ln.Addr().String() + "/caddy-spawn/testfn:latest"
	img, err := tarball.ImageFromPath(filepath.Join(imagesDir, "testfn.tar"), nil)
	if err != nil {
		return fmt.Errorf("reading testfn.tar: %w", err)
	}
	tag, err := name.NewTag(imageRef, name.Insecure)
	if err != nil {
		return err
	}
	if err := remote.Write(tag, img); err != nil {
		return fmt.Errorf("pushing %s: %w", imageRef, err)
	}
	return nil
}

// labLeftovers lists what of the lab is still on the host after cleanup.
func labLeftovers(l *lab) []string {
	if l == nil {
		return nil
	}
	var left []string
	if out, err := exec.Command("ip", "netns", "list").Output(); err == nil && strings.Contains(string(out), l.id) {
		left = append(left, "network namespaces: "+strings.TrimSpace(string(out)))
	}
	if out, err := exec.Command("ip", "-o", "link", "show").Output(); err == nil && strings.Contains(string(out), l.id) {
		left = append(left, "links named "+l.id+"*")
	}
	if p := hostprobe.Processes(l.id); len(p) > 0 {
		left = append(left, fmt.Sprintf("processes %v", p))
	}
	if m := hostprobe.MountsUnder(l.dir, l.run); len(m) > 0 {
		left = append(left, fmt.Sprintf("mounts %v", m))
	}
	for _, pattern := range []string{l.dir, l.run, "/sys/fs/cgroup/cpu/" + l.id + "*", "/sys/fs/cgroup/*/" + l.id + "*", "/sys/fs/cgroup/" + l.id + "*"} {
		if m, _ := filepath.Glob(pattern); len(m) > 0 {
			left = append(left, fmt.Sprintf("%v", m))
		}
	}
	return left
}

// member is one Caddy of the fleet: a node or the front.
type member struct {
	name   string
	addr   string // its address in the lab's subnet
	netns  string // path of its network namespace
	procs  string // cgroup.procs of its CPU cap; "" for none
	dir    string
	config string
	proc   *caddyproc.Process
	// nodes only
	namespace string // its containerd namespace
	socket    string // its managed containerd's socket
}

// newMember makes the namespace (and, with cpus > 0, the CPU cgroup) of
// a member at <subnet>.<host>.
func newMember(t testing.TB, l *lab, name string, host int, cpus float64) *member {
	t.Helper()
	ns, err := l.addNetns(name, host)
	if err != nil {
		t.Fatal(err)
	}
	m := &member{name: name, addr: fmt.Sprintf("%s.%d", l.subnet, host), netns: ns, dir: filepath.Join(l.dir, name)}
	if err := os.MkdirAll(m.dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if cpus > 0 {
		if m.procs, err = l.cpuCgroup(name, cpus); err != nil {
			t.Fatal(err)
		}
	}
	return m
}

// newNode is a member with the node Caddyfile: the routes on :8080 (each
// response names the node in Spawn-Node), spawn_status and metrics on
// :9180, a managed containerd of its own.
func newNode(t testing.TB, l *lab, name string, host int) *member {
	t.Helper()
	return newCappedNode(t, l, name, host, nodeCPUs)
}

// newCappedNode is newNode with a CPU cap of cpus.
func newCappedNode(t testing.TB, l *lab, name string, host int, cpus float64) *member {
	t.Helper()
	m := newMember(t, l, name, host, cpus)
	m.namespace = l.id + "-" + name
	// After its Caddy stopped (cleanup runs newest first): the parent
	// cgroups containerd leaves, which must hold no container cgroup.
	l.onCleanup(func() error { return hostprobe.RemoveNamespaceCgroups(m.namespace) })
	state := filepath.Join(l.run, name)
	m.socket = filepath.Join(state, "containerd.sock")
	fastPath := os.Getenv("SPAWN_FAST_PATH")
	if fastPath == "" {
		fastPath = "on"
	}
	var b strings.Builder
	fmt.Fprintf(&b, `{
	admin unix/%s
	spawn {
		namespace %s
		managed {
			root %s
			state %s
		}
		run_dir %s
		fast_path %s
		insecure_registries %s
	}
}

:9180 {
	spawn_status
	metrics /metrics
}

:8080 {
	header Spawn-Node %s
`, filepath.Join(m.dir, "admin.sock"), m.namespace, filepath.Join(m.dir, "root"), state,
		filepath.Join(l.run, name+"-run"), fastPath, strings.SplitN(imageRef, "/", 2)[0], name)
	for _, r := range routes {
		fmt.Fprintf(&b, "\thandle /%s/* {\n\t\tspawn %s {\n\t\t\tname %s\n\t\t\targs %s\n\t\t\tpool %d\n\t\t\ttimeout 30s\n\t\t}\n\t}\n",
			r.name, imageRef, r.name, r.args, routePool)
	}
	b.WriteString("}\n")
	m.config = b.String()
	return m
}

// start starts the member's Caddy inside its namespace (and cgroup).
func (m *member) start(t testing.TB) {
	t.Helper()
	wrapper := []string{"nsenter", "--net=" + m.netns, "--"}
	if m.procs != "" {
		// Join the cgroup first, so Caddy and all it starts share the cap.
		wrapper = append(wrapper, "/bin/sh", "-c", `echo $$ > "$0" && exec "$@"`, m.procs)
	}
	proc, err := caddyproc.Start(caddyproc.Options{
		Bin: caddyBin, Dir: m.dir, Caddyfile: m.config, Wrapper: wrapper,
		LogPath: filepath.Join(logDir, fmt.Sprintf("%s-%d.log", m.name, time.Now().UnixNano())),
	})
	if err != nil {
		t.Fatal(err)
	}
	m.proc = proc
	t.Logf("%s: caddy pid %d at %s, log %s", m.name, proc.Pid(), m.addr, proc.Log.Path())
	// Stop at the end whatever happened; the lab's cgroup removal kills
	// whatever would still be in there.
	theLab.onCleanup(func() error {
		if err := proc.Stop(30 * time.Second); err != nil {
			return fmt.Errorf("%s: %w", m.name, err)
		}
		return nil
	})
}

// waitServing waits until the member's Caddy serves on port.
func (m *member) waitServing(t testing.TB, port int) {
	t.Helper()
	if err := m.proc.WaitServing(context.Background(), net.JoinHostPort(m.addr, strconv.Itoa(port)), startTimeout); err != nil {
		t.Fatalf("%s: %v\n%s", m.name, err, m.proc.Log.Tail(16<<10))
	}
}

// nodeStatus is what a node's GET /status answers.
type nodeStatus struct {
	Ready    bool  `json:"ready"`
	Draining bool  `json:"draining"`
	Inflight int64 `json:"inflight"`
	Routes   map[string]struct {
		Idle   int  `json:"idle"`
		Target int  `json:"target"`
		Ready  bool `json:"ready"`
	} `json:"routes"`
}

var probe = &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{Proxy: nil}}

func (m *member) status() (nodeStatus, error) {
	var st nodeStatus
	resp, err := probe.Get("http://" + m.addr + ":9180/status")
	if err != nil {
		return st, err
	}
	defer resp.Body.Close()
	return st, json.NewDecoder(resp.Body).Decode(&st)
}

// waitReady waits until the node reports ready with every pool full.
func (m *member) waitReady(t testing.TB) {
	t.Helper()
	eventually(t, startTimeout, func() (bool, string) {
		st, err := m.status()
		if err != nil {
			return false, fmt.Sprintf("%s: %v", m.name, err)
		}
		return st.Ready, fmt.Sprintf("%s: %+v", m.name, st)
	})
}

// waitPoolsFull waits until every pool of the node holds its target and
// nothing is in flight: the state between phases.
func (m *member) waitPoolsFull(t testing.TB) {
	t.Helper()
	eventually(t, 2*time.Minute, func() (bool, string) {
		st, err := m.status()
		if err != nil {
			return false, err.Error()
		}
		for _, r := range st.Routes {
			if r.Idle < r.Target {
				return false, fmt.Sprintf("%s: %+v", m.name, st)
			}
		}
		return st.Inflight == 0, fmt.Sprintf("%s: %+v", m.name, st)
	})
}

// counters are a node's claims (hits: warm, from the pool; misses: cold)
// and served requests, summed over routes, from its own metrics.
type counters struct{ hits, misses, served float64 }

func (m *member) counters() (counters, error) {
	var c counters
	resp, err := probe.Get("http://" + m.addr + ":9180/metrics")
	if err != nil {
		return c, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		i := strings.LastIndexByte(line, ' ')
		if i < 0 || strings.HasPrefix(line, "#") {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			continue
		}
		switch {
		case strings.HasPrefix(line, "caddy_spawn_claims_total{") && strings.Contains(line, `result="hit"`):
			c.hits += v
		case strings.HasPrefix(line, "caddy_spawn_claims_total{") && strings.Contains(line, `result="miss"`):
			c.misses += v
		case strings.HasPrefix(line, "caddy_spawn_request_duration_seconds_count{"):
			c.served += v
		}
	}
	return c, sc.Err()
}

// containers lists the IDs of the containers in the node's containerd.
func (m *member) containers() ([]string, error) {
	cl, err := client.New(m.socket, client.WithDefaultNamespace(m.namespace), client.WithTimeout(5*time.Second))
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(namespaces.WithNamespace(context.Background(), m.namespace), 10*time.Second)
	defer cancel()
	cs, err := cl.Containers(ctx, `labels."`+labelManaged+`"==true`)
	if err != nil {
		return nil, err
	}
	ids := make([]string, len(cs))
	for i, c := range cs {
		ids[i] = c.ID()
	}
	return ids, nil
}

// waitOnlyPooled waits until the node has exactly its pools' containers:
// nothing a request used is left.
func (m *member) waitOnlyPooled(t testing.TB) {
	t.Helper()
	want := len(routes) * routePool
	eventually(t, time.Minute, func() (bool, string) {
		ids, err := m.containers()
		if err != nil {
			return false, err.Error()
		}
		st, err := m.status()
		if err != nil {
			return false, err.Error()
		}
		idle := 0
		for _, r := range st.Routes {
			idle += r.Idle
		}
		return len(ids) == want && idle == want && st.Inflight == 0,
			fmt.Sprintf("%s: %d containers, %d idle, %d in flight; want %d pooled only", m.name, len(ids), idle, st.Inflight, want)
	})
}

// eventually polls cond every 50ms until it holds or timeout passes.
func eventually(t testing.TB, timeout time.Duration, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, msg := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %s: %s", timeout, msg)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func sleepBriefly() { time.Sleep(20 * time.Millisecond) }
