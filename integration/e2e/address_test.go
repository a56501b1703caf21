//go:build integration && address

// The address-mode suite (make integration-address): the spawn app pointed
// at a containerd the host runs, a separate daemon with its release's stock
// configuration, for each release in SPAWN_CONTAINERD_HOSTS; and one too
// old for it (SPAWN_CONTAINERD_REFUSED), which it must refuse. The build
// tag keeps it out of `make integration`, which does not build those
// releases.

package e2e

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/containerd/api/services/tasks/v1"
	"github.com/containerd/containerd/v2/client"
	ctrsnapshots "github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/pkg/namespaces"

	"github.com/caddy-spawn/caddy-spawn/spawner"
)

// hostContainerd is a containerd started the way a host runs one: its own
// process, its release's `containerd config default` with only the paths
// it writes moved into this test's directories.
type hostContainerd struct {
	bin     string // directory of containerd and its runc shim
	root    string
	state   string
	socket  string
	version spawner.ContainerdVersion
	cmd     *exec.Cmd
	exited  chan struct{}
}

// hostContainerdDirs returns the directories of environment variable env:
// paths separated by spaces or colons, each holding containerd and
// containerd-shim-runc-v2. Unset fails the test: make integration-address
// sets it.
func hostContainerdDirs(t *testing.T, env string) []string {
	t.Helper()
	dirs := strings.FieldsFunc(os.Getenv(env), func(r rune) bool { return r == ' ' || r == ':' })
	if len(dirs) == 0 {
		t.Fatalf("%s is not set (directories of containerd releases; run `make integration-address`)", env)
	}
	for _, d := range dirs {
		for _, b := range []string{"containerd", "containerd-shim-runc-v2"} {
			if _, err := os.Stat(filepath.Join(d, b)); err != nil {
				t.Fatalf("%s: %v", env, err)
			}
		}
	}
	return dirs
}

// newHostContainerd lays out a host containerd of the release in bin
// (paths and stock config), not started yet.
func newHostContainerd(t *testing.T, bin string) *hostContainerd {
	t.Helper()
	state := filepath.Join("/run/caddy-spawn-e2e-host", randHex(8))
	d := &hostContainerd{
		bin:    bin,
		root:   t.TempDir(),
		state:  state,
		socket: filepath.Join(state, "containerd.sock"),
	}
	t.Cleanup(func() { d.stop(t); _ = os.RemoveAll(d.state) })
	out, err := exec.Command(filepath.Join(bin, "containerd"), "config", "default").Output()
	if err != nil {
		t.Fatalf("%s/containerd config default: %v", bin, err)
	}
	// Only what would collide with another containerd on this machine
	// moves: root, state, the sockets; everything else is the release's
	// default. The socket goes first: it lies under the default state.
	config := string(out)
	for _, r := range []struct {
		from, to string
		must     bool
	}{
		{"/run/containerd/containerd.sock", d.socket, true}, // grpc (and ttrpc in 2.x)
		{"/var/lib/containerd", filepath.Join(d.root, "lib"), true},
		{"/run/containerd", filepath.Join(d.state, "run"), true},
		{"/var/run/nri/nri.sock", filepath.Join(d.state, "nri.sock"), false}, // 1.7+
		{"/opt/containerd", filepath.Join(d.root, "opt"), false},
	} {
		if r.must && !strings.Contains(config, r.from) {
			t.Fatalf("%s/containerd config default has no %s: the stock config changed; adapt this test\n%s", bin, r.from, config)
		}
		config = strings.ReplaceAll(config, `"`+r.from, `"`+r.to)
		config = strings.ReplaceAll(config, `'`+r.from, `'`+r.to)
	}
	if strings.Contains(config, "/run/containerd") || strings.Contains(config, "/var/lib/containerd") {
		t.Fatalf("config still names a default path:\n%s", config)
	}
	if err := os.WriteFile(filepath.Join(d.root, "config.toml"), []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	return d
}

// start starts the daemon and waits until it answers; it learns its
// version from the Version API.
func (d *hostContainerd) start(t *testing.T) {
	t.Helper()
	if err := os.MkdirAll(d.state, 0o700); err != nil {
		t.Fatal(err)
	}
	logf, err := os.OpenFile(filepath.Join(logDir, "containerd-"+filepath.Base(d.state)+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd := exec.Command(filepath.Join(d.bin, "containerd"), "--config", filepath.Join(d.root, "config.toml"))
	// Its own shim first; runc from the test's PATH (.tools/bin).
	cmd.Env = append(os.Environ(), "PATH="+d.bin+":"+os.Getenv("PATH"))
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	d.cmd, d.exited = cmd, make(chan struct{})
	go func() { _ = cmd.Wait(); close(d.exited) }()

	c, err := client.New(d.socket, client.WithTimeout(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	deadline := time.Now().Add(60 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		v, err := c.Version(ctx)
		cancel()
		if err == nil {
			d.version, err = spawner.ParseContainerdVersion(v.Version)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("host containerd %s (revision %s) from %s, pid %d, socket %s, log %s", v.Version, v.Revision, d.bin, cmd.Process.Pid, d.socket, logf.Name())
			return
		}
		select {
		case <-d.exited:
			t.Fatalf("containerd from %s exited during start-up; see %s", d.bin, logf.Name())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("containerd from %s not answering on %s after 60s: %v", d.bin, d.socket, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// stop ends the daemon with SIGTERM (SIGKILL after 15s) and checks nothing
// of it is left: no shim, no mount under its directories.
func (d *hostContainerd) stop(t *testing.T) {
	t.Helper()
	if d.cmd == nil {
		return
	}
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.exited:
	case <-time.After(15 * time.Second):
		t.Errorf("containerd from %s did not exit within 15s of SIGTERM; killing it", d.bin)
		_ = d.cmd.Process.Kill()
		<-d.exited
	}
	d.cmd = nil
	if procs := processesMentioning(d.state); len(procs) > 0 {
		t.Errorf("processes of the host containerd left (shims): %v", procs)
		for _, pr := range processArgs(d.state) {
			_ = syscall.Kill(pr.PID, syscall.SIGKILL)
		}
	}
	mounts := mountsUnder(d.root, d.state)
	if len(mounts) > 0 {
		t.Errorf("mounts left under the host containerd's directories: %v", mounts)
	}
	for _, m := range slices.Backward(mounts) {
		_ = syscall.Unmount(m, syscall.MNT_DETACH)
	}
}

// name is the release as a subtest name: "containerd-1.7.35".
func (d *hostContainerd) name() string {
	return fmt.Sprintf("containerd-%d.%d.%d", d.version.Major, d.version.Minor, d.version.Patch)
}

// fastPath is what fast_path auto must choose on this release: the fast
// path from containerd 2.0 on (a task API endpoint per task), the runc
// shim on 1.7.
func (d *hostContainerd) fastPath() bool { return d.version.Major >= 2 }

// addressConfig is a whole Caddyfile whose spawn app uses the containerd at
// socket with fast_path mode, its FIFOs and task server under run.
func addressConfig(socket, run, fastPath, sites string) string {
	return fmt.Sprintf(`{
	admin %s
	spawn {
		address %s
		run_dir %s
		fast_path %s
	}
}

%s
`, adminAddr, socket, run, fastPath, strings.TrimRight(sites, "\n"))
}

// TestAddressMode: against each host containerd, with its stock config and
// fast_path auto, the core path works — hello, a warm single-use pool, a
// crash of Caddy swept by the next start — on the path the release allows
// (asserted from the container records, not just the log), and Caddy's
// shutdown leaves nothing of ours in that containerd.
func TestAddressMode(t *testing.T) {
	for _, bin := range hostContainerdDirs(t, "SPAWN_CONTAINERD_HOSTS") {
		d := newHostContainerd(t, bin)
		d.start(t)
		if err := d.version.Supported(); err != nil {
			t.Fatalf("%s: %v: not a release this suite is for", bin, err)
		}
		t.Run(d.name(), func(t *testing.T) {
			run := filepath.Join(runDir+"-addr", filepath.Base(d.state))
			t.Cleanup(func() { _ = os.RemoveAll(run) })
			t.Run("core", func(t *testing.T) { testAddressCore(t, d, run) })
			t.Run("crash sweep", func(t *testing.T) { testAddressCrash(t, d, run) })
			if !d.fastPath() {
				t.Run("fast_path on refused", func(t *testing.T) { testAddressFastPathOn(t, d, run) })
			}
			checkNothingLeft(t, d)
		})
		d.stop(t)
	}
	_ = os.Remove(runDir + "-addr")
}

// testAddressCore: the path chosen, hello, and a warm single-use pool.
func testAddressCore(t *testing.T, d *hostContainerd, run string) {
	port := freePort(t)
	p := startCaddyOn(t, port, d.socket, addressConfig(d.socket, run, "auto", site(port,
		fmt.Sprintf("\thandle /hello {\n\t\tspawn %s {\n\t\t\timage_archive %s\n\t\t\tpool 0\n\t\t}\n\t}\n", helloRef, archive("hello")),
		pooledRoute("/marker", "marker", "marker", 2))))

	if _, ok := p.logs.Find("containerd connected", map[string]string{"address": d.socket, "version": d.version.Raw}); !ok {
		t.Errorf("no \"containerd connected\" log line with address %s and version %s", d.socket, d.version.Raw)
	}
	checkPath(t, p, d, p.waitPoolFull(t, "marker", 2))

	if body := p.okBody(t, "/hello"); !strings.Contains(body, "Hello from a fresh container!") {
		t.Errorf("GET /hello: body %q lacks the greeting", body)
	}

	seen := map[string]bool{}
	const requests = 8
	for i := range requests {
		p.waitPoolFull(t, "marker", 2)
		p.markerWarmSingleUse(t, i, seen)
	}
	p.Stop()
}

// checkPath asserts which path fast_path auto took on d, from the records
// of the pooled containers ids and from the processes: the fast path names
// our sandbox record and a runtime that is no shim, and starts no shim
// process; the stock path runs io.containerd.runc.v2 shims.
func checkPath(t *testing.T, p *caddyProc, d *hostContainerd, ids []string) {
	t.Helper()
	for _, id := range ids {
		info := p.containerInfo(t, id)
		if d.fastPath() {
			if info.SandboxID != "caddy-spawn-task-server" || info.Runtime.Name == "io.containerd.runc.v2" {
				t.Errorf("containerd %s: container %s has sandbox %q, runtime %q: want the fast path (sandbox caddy-spawn-task-server)", d.version, id, info.SandboxID, info.Runtime.Name)
			}
			if procs := processesMentioning(id); len(procs) > 0 {
				t.Errorf("containerd %s: processes naming container %s on the fast path (a shim?): %v", d.version, id, procs)
			}
		} else {
			if info.SandboxID != "" || info.Runtime.Name != "io.containerd.runc.v2" {
				t.Errorf("containerd %s: container %s has sandbox %q, runtime %q: want the stock runc shim", d.version, id, info.SandboxID, info.Runtime.Name)
			}
			if !slices.ContainsFunc(processArgs(id), func(pr procArgs) bool {
				return len(pr.Args) > 0 && filepath.Base(pr.Args[0]) == "containerd-shim-runc-v2"
			}) {
				t.Errorf("containerd %s: no runc shim process for container %s", d.version, id)
			}
		}
	}
	_, started := p.logs.Find("fast path: task server started", nil)
	refusal, refused := p.logs.Find("fast path not available; containers run on containerd's runc shim", nil)
	switch {
	case d.fastPath() && (!started || refused):
		t.Errorf("containerd %s: want the fast path; task server started %v, refused: %v", d.version, started, refusal)
	case !d.fastPath() && (started || !refused):
		t.Errorf("containerd %s: want the stock path, said why at start-up; task server started %v, refusal logged %v", d.version, started, refused)
	case !d.fastPath():
		// It says why: the release and what the fast path needs.
		if msg := fmt.Sprint(refusal["error"]); !strings.Contains(msg, "containerd "+d.version.Raw) || !strings.Contains(msg, "2.0.0 or later") {
			t.Errorf("the fast path refusal %q does not name containerd %s and the 2.0.0 minimum", msg, d.version)
		}
	}
}

// testAddressCrash: SIGKILL of Caddy mid-request leaves its containers in
// the host containerd (which lives on); the next start sweeps all of them.
func testAddressCrash(t *testing.T, d *hostContainerd, run string) {
	port := freePort(t)
	config := addressConfig(d.socket, run, "auto", site(port, testfnRoute("/crash", "crash", "sleep 1h", "pool 2", "timeout 10m")))
	first := startCaddyOn(t, port, d.socket, config)
	go func() {
		resp, err := first.client.Get(first.url("/crash"))
		if err == nil {
			resp.Body.Close()
		}
	}()
	serving := first.waitClaimed(t, 30*time.Second, "/testfn sleep 1h")
	first.waitPoolFull(t, "crash", 2)
	cs, _, err := first.containerStates()
	if err != nil {
		t.Fatal(err)
	}
	var old []string
	for _, c := range cs {
		old = append(old, c.ID)
	}
	if !slices.Contains(old, serving) || len(old) < 3 {
		t.Fatalf("before the crash: containers %v, want the serving one %s and 2 pooled", old, serving)
	}

	if err := syscall.Kill(first.proc.Pid(), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-first.proc.Exited()
	// The host containerd still has every container, and each still has
	// processes (the stock path's shims outlive Caddy; on the fast path the
	// task server dies with Caddy, the containers' processes do not).
	eventually(t, 10*time.Second, func() (bool, string) {
		cs, _, err := first.containerStates()
		if err != nil {
			return false, err.Error()
		}
		var alive []string
		for _, c := range cs {
			if slices.Contains(old, c.ID) && cgroupPopulated(c.ID) {
				alive = append(alive, c.ID)
			}
		}
		return len(alive) == len(old), fmt.Sprintf("containers with processes after the crash: %v of %v", alive, old)
	})

	second := startCaddyOn(t, port, d.socket, config)
	second.waitPoolFull(t, "crash", 2)
	eventually(t, 30*time.Second, func() (bool, string) { return noRemainsIn(second, d, old) })
	if _, ok := second.logs.Find("swept leftovers", nil); !ok {
		t.Error(`no "swept leftovers" log line after restart`)
	}
	second.Stop()
}

// testAddressFastPathOn: fast_path on against a release that can't run the
// fast path fails the start, saying why.
func testAddressFastPathOn(t *testing.T, d *hostContainerd, run string) {
	port := freePort(t)
	p := launchCaddy(t, port, addressConfig(d.socket, run, "on", site(port, testfnRoute("/x", "x", "status 200", "pool 0"))))
	p.socket = d.socket
	t.Cleanup(p.Stop)
	select {
	case <-p.proc.Exited():
	case <-time.After(startTimeout):
		t.Fatalf("caddy still running %s after a start with fast_path on against containerd %s; want it to fail", startTimeout, d.version)
	}
	if p.proc.Err() == nil {
		t.Error("caddy exited with status 0; want non-zero")
	}
	out := p.logs.String()
	for _, want := range []string{"fast_path on: the fast path is not running", "containerd " + d.version.Raw + " cannot attach tasks"} {
		if !strings.Contains(out, want) {
			t.Errorf("caddy's output lacks %q:\n%s", want, out)
		}
	}
}

// noRemainsIn reports whether nothing of the containers ids is left in the
// host containerd d or on the host.
func noRemainsIn(p *caddyProc, d *hostContainerd, ids []string) (bool, string) {
	cs, snaps, err := p.containerStates()
	if err != nil {
		return false, err.Error()
	}
	taskIDs, err := p.taskIDs()
	if err != nil {
		return false, err.Error()
	}
	var left []string
	for _, id := range ids {
		if slices.ContainsFunc(cs, func(c ctrState) bool { return c.ID == id }) {
			left = append(left, "container "+id)
		}
		if slices.Contains(taskIDs, id) {
			left = append(left, "task "+id)
		}
		for _, s := range snaps {
			if strings.HasPrefix(s, id) {
				left = append(left, "snapshot "+s)
			}
		}
		if cgroupPopulated(id) {
			left = append(left, "processes in the cgroup of "+id)
		}
		if m := mountsMentioning(id); len(m) > 0 {
			left = append(left, fmt.Sprint("mounts ", m))
		}
		if procs := processesMentioning(id); len(procs) > 0 {
			left = append(left, fmt.Sprint("processes ", procs))
		}
		// containerd's bundle: <state>/run/io.containerd.runtime.v2.task/<ns>/<id>.
		if m, _ := filepath.Glob(filepath.Join(d.state, "run", "*", "*", id)); len(m) > 0 {
			left = append(left, fmt.Sprint("bundles ", m))
		}
	}
	return len(left) == 0, fmt.Sprintf("left of the old containers: %v", left)
}

// taskIDs lists the tasks in our namespace.
func (p *caddyProc) taskIDs() ([]string, error) {
	c, err := p.containerd()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(namespaces.WithNamespace(context.Background(), namespace), 10*time.Second)
	defer cancel()
	resp, err := c.TaskService().List(ctx, &tasks.ListTasksRequest{})
	if err != nil {
		return nil, fmt.Errorf("listing tasks: %w", err)
	}
	var ids []string
	for _, tk := range resp.Tasks {
		ids = append(ids, tk.ID)
	}
	return ids, nil
}

// checkNothingLeft: after the last Caddy stopped, our namespace in d holds
// no container, task, container snapshot or lease of ours, and no
// container mount is left under d's directories.
func checkNothingLeft(t *testing.T, d *hostContainerd) {
	t.Helper()
	c, err := client.New(d.socket, client.WithTimeout(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(namespaces.WithNamespace(context.Background(), namespace), 20*time.Second)
	defer cancel()
	var left []string
	cs, err := c.Containers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, ctr := range cs {
		left = append(left, "container "+ctr.ID())
	}
	ts, err := c.TaskService().List(ctx, &tasks.ListTasksRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, tk := range ts.Tasks {
		left = append(left, "task "+tk.ID)
	}
	err = c.SnapshotService(snapshotter).Walk(ctx, func(_ context.Context, info ctrsnapshots.Info) error {
		left = append(left, "snapshot "+info.Name)
		return nil
	}, managedFilter)
	if err != nil {
		t.Fatal(err)
	}
	ls, err := c.LeasesService().List(ctx, managedFilter)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range ls {
		left = append(left, "lease "+l.ID)
	}
	if d.fastPath() {
		sbs, err := c.SandboxStore().List(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, sb := range sbs {
			left = append(left, "sandbox record "+sb.ID)
		}
	}
	// The image's own snapshots stay mounted nowhere; containers' rootfs
	// mounts live under the state directory (1.7) or the root (2.x).
	for _, m := range mountsUnder(d.root, d.state) {
		left = append(left, "mount "+m)
	}
	if len(left) > 0 {
		t.Errorf("containerd %s: left after the last Caddy stopped: %v", d.version, left)
	}
}

// TestAddressModeRefusesOldContainerd: a containerd older than the app
// supports (SPAWN_CONTAINERD_REFUSED: 1.6) is refused. Found at start, it
// fails Caddy's start with a message naming the version found and the
// minimum, before anything is created in it. Down at start and too old
// once it comes up, Caddy (which had to start: containerd might merely be
// late) says so at every retry and keeps answering 503.
func TestAddressModeRefusesOldContainerd(t *testing.T) {
	bin := hostContainerdDirs(t, "SPAWN_CONTAINERD_REFUSED")[0]
	d := newHostContainerd(t, bin)
	run := filepath.Join(runDir+"-addr", filepath.Base(d.state))
	t.Cleanup(func() { _ = os.RemoveAll(run); _ = os.Remove(runDir + "-addr") })
	port := freePort(t)
	sites := site(port, testfnRoute("/ok", "old", "status 200", "pool 1"))
	const tooOld = "containerd too old: found containerd "

	t.Run("down at start", func(t *testing.T) {
		p := startCaddyOn(t, port, d.socket, addressConfig(d.socket, run, "auto", sites))
		resp, body := p.get(t, "/ok")
		if resp.StatusCode != http.StatusServiceUnavailable {
			t.Errorf("containerd down: status %d body %q, want 503", resp.StatusCode, body)
		}
		d.start(t)
		if !d.version.Less(spawner.ContainerdVersion{Major: 1, Minor: 7}) {
			t.Fatalf("SPAWN_CONTAINERD_REFUSED is containerd %s: want one older than 1.7", d.version)
		}
		e := p.waitLog(t, 30*time.Second, "preparing routes", nil)
		msg := fmt.Sprint(e["error"])
		for _, want := range []string{"containerd at " + d.socket, tooOld + d.version.Raw, "caddy-spawn needs 1.7.0 or later"} {
			if !strings.Contains(msg, want) {
				t.Errorf("the retry's error %q lacks %q", msg, want)
			}
		}
		if resp, body := p.get(t, "/ok"); resp.StatusCode != http.StatusServiceUnavailable {
			t.Errorf("containerd too old: status %d body %q, want 503", resp.StatusCode, body)
		}
		p.Stop()
	})

	t.Run("up at start", func(t *testing.T) {
		p := launchCaddy(t, port, addressConfig(d.socket, run, "auto", sites))
		p.socket = d.socket
		t.Cleanup(p.Stop)
		select {
		case <-p.proc.Exited():
		case <-time.After(startTimeout):
			t.Fatalf("caddy still running %s after a start against containerd %s; want it refused", startTimeout, d.version)
		}
		if p.proc.Err() == nil {
			t.Error("caddy exited with status 0; want non-zero")
		}
		out := p.logs.String()
		for _, want := range []string{"containerd at " + d.socket, tooOld + d.version.Raw + ", caddy-spawn needs 1.7.0 or later"} {
			if !strings.Contains(out, want) {
				t.Errorf("caddy's output lacks %q:\n%s", want, out)
			}
		}
	})

	// Refused before it created anything: no container of ours in it.
	c, err := client.New(d.socket, client.WithTimeout(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	cs, err := c.Containers(namespaces.WithNamespace(context.Background(), namespace))
	if err != nil {
		t.Fatal(err)
	}
	if len(cs) > 0 {
		t.Errorf("%d containers in the refused containerd", len(cs))
	}
}
