//go:build integration

package containerd

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/errdefs"

	"github.com/caddy-spawn/caddy-spawn/spawner"
)

// runTimeout bounds one request's round trip in these tests.
const runTimeout = 30 * time.Second

// nsCtx returns a context in the test namespace, cancelled at the end of t.
func nsCtx(t *testing.T) context.Context {
	t.Helper()
	return namespaces.WithNamespace(t.Context(), env.ns)
}

// newSpawner returns a Spawner of owner (env.owner when "") logging to t.
// At the end of t it waits for released instances.
func newSpawner(t *testing.T, owner string) *spawner.Spawner {
	t.Helper()
	if owner == "" {
		owner = env.owner
	}
	s, err := spawner.New(spawner.Config{
		Client:      env.client,
		Namespace:   env.ns,
		Snapshotter: snapshotter,
		InitBinary:  env.initPath,
		FIFODir:     env.fifoDir,
		Owner:       owner,
		FastPath:    env.fastPath,
		Logger:      zaptest.NewLogger(t),
	})
	if err != nil {
		t.Fatalf("spawner.New: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		// As the app does when its backend goes: the fast path's shared
		// layer views live as long as the Spawner.
		s.Close(ctx)
	})
	return s
}

var nonName = regexp.MustCompile(`[^a-z0-9]+`)

// fnName derives a valid function name from t.Name().
func fnName(t *testing.T) string {
	n := strings.Trim(nonName.ReplaceAllString(strings.ToLower(t.Name()), "-"), "-")
	if len(n) > 30 {
		n = strings.TrimRight(n[:30], "-")
	}
	if !spawner.ValidName(n) {
		t.Fatalf("derived function name %q from %q is invalid", n, t.Name())
	}
	return n
}

// testfn returns a Function running the test function with args (the
// image's ENTRYPOINT /testfn stays).
func testfn(t *testing.T, args ...string) *spawner.Function {
	name := fnName(t)
	return &spawner.Function{
		Name:  name,
		Key:   "it-" + name,
		Image: env.testfn,
		Args:  args,
	}
}

// create makes an instance and destroys it at the end of t.
func create(t *testing.T, s *spawner.Spawner, fn *spawner.Function) *spawner.Instance {
	t.Helper()
	inst, err := s.Create(t.Context(), fn)
	if err != nil {
		t.Fatalf("Create(%s): %v", fn.Name, err)
	}
	t.Cleanup(func() {
		inst.Destroy(context.Background())
		assertGone(t, inst.ID)
	})
	// Tests freeze some instances: only once the init waits for its frame,
	// as the pool does — freezing runc's exec of the init can wedge the
	// cgroup v1 freezer in FREEZING.
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if err := inst.WaitReady(ctx); err != nil {
		t.Fatalf("init of %s not ready: %v", inst.ID, err)
	}
	return inst
}

// result is what a program did with one request.
type result struct {
	stdout, stderr []byte
	status         spawner.ExitStatus
}

// serve sends env and body to inst as a request does, closes stdin, and
// collects stdout, stderr and the exit status. Reading and writing run
// concurrently, so large bodies and outputs can't deadlock on the FIFOs.
func serve(t *testing.T, inst *spawner.Instance, env []string, body []byte) result {
	t.Helper()
	if err := inst.Begin(env); err != nil {
		t.Fatalf("Begin: %v", err)
	}
	type read struct {
		b   []byte
		err error
	}
	outc, errc, inc := make(chan read, 1), make(chan read, 1), make(chan error, 1)
	go func() {
		b, err := io.ReadAll(inst.Stdout())
		outc <- read{b, err}
	}()
	go func() {
		b, err := io.ReadAll(inst.Stderr())
		errc <- read{b, err}
	}()
	go func() {
		if len(body) > 0 {
			if _, err := io.Copy(inst.Stdin(), bytes.NewReader(body)); err != nil {
				inc <- err
				return
			}
		}
		inc <- inst.CloseStdin(context.Background())
	}()

	timeout := time.After(runTimeout)
	var res result
	pending := map[string]bool{"stdin": true, "stdout": true, "stderr": true}
	for len(pending) > 0 {
		select {
		case err := <-inc:
			delete(pending, "stdin")
			if err != nil {
				t.Errorf("writing stdin and closing it: %v", err)
			}
		case r := <-outc:
			delete(pending, "stdout")
			if r.err != nil {
				t.Errorf("reading stdout: %v", r.err)
			}
			res.stdout = r.b
		case r := <-errc:
			delete(pending, "stderr")
			if r.err != nil {
				t.Errorf("reading stderr: %v", r.err)
			}
			res.stderr = r.b
		case <-timeout:
			t.Fatalf("request to %s not done after %v; still waiting for %v", inst.ID, runTimeout, pending)
		}
	}
	select {
	case <-inst.Exited():
	case <-timeout:
		t.Fatalf("%s: program did not exit within %v", inst.ID, runTimeout)
	}
	res.status = inst.ExitStatus()
	return res
}

// assertGone checks that container id and its rootfs snapshot no longer
// exist in containerd.
func assertGone(t *testing.T, id string) {
	t.Helper()
	// Not t.Context(): this also runs in t.Cleanup, after it is cancelled.
	ctx, cancel := context.WithTimeout(namespaces.WithNamespace(context.Background(), env.ns), 10*time.Second)
	defer cancel()
	if _, err := env.client.LoadContainer(ctx, id); !errdefs.IsNotFound(err) {
		t.Errorf("container %s: LoadContainer err = %v, want not found", id, err)
	}
	if _, err := env.client.SnapshotService(snapshotter).Stat(ctx, id+"-rootfs"); !errdefs.IsNotFound(err) {
		t.Errorf("snapshot %s-rootfs: Stat err = %v, want not found", id, err)
	}
}

// assertPresent checks that container id and its rootfs snapshot exist.
func assertPresent(t *testing.T, id string) client.Container {
	t.Helper()
	ctx := nsCtx(t)
	c, err := env.client.LoadContainer(ctx, id)
	if err != nil {
		t.Fatalf("container %s: %v", id, err)
	}
	if _, err := env.client.SnapshotService(snapshotter).Stat(ctx, id+"-rootfs"); err != nil {
		t.Errorf("snapshot %s-rootfs: %v", id, err)
	}
	return c
}

// pause freezes inst's task through the containerd client, as the pool
// does, and checks that it is paused.
func pause(t *testing.T, id string) {
	t.Helper()
	ctx := nsCtx(t)
	c, err := env.client.LoadContainer(ctx, id)
	if err != nil {
		t.Fatalf("loading %s: %v", id, err)
	}
	task, err := c.Task(ctx, nil)
	if err != nil {
		t.Fatalf("loading task of %s: %v", id, err)
	}
	if err := task.Pause(ctx); err != nil {
		t.Fatalf("pausing %s: %v", id, err)
	}
	st, err := task.Status(ctx)
	if err != nil {
		t.Fatalf("status of %s: %v", id, err)
	}
	if st.Status != client.Paused {
		t.Fatalf("status of %s after Pause = %q, want %q", id, st.Status, client.Paused)
	}
}

// freeze freezes id's cgroup directly, as the pool does to keep idle
// containers (the shim still thinks the task is running), and waits until
// it is frozen.
func freeze(t *testing.T, id string) {
	t.Helper()
	ctx := nsCtx(t)
	c, err := env.client.LoadContainer(ctx, id)
	if err != nil {
		t.Fatalf("loading %s: %v", id, err)
	}
	spec, err := c.Spec(ctx)
	if err != nil {
		t.Fatalf("spec of %s: %v", id, err)
	}
	cg := spec.Linux.CgroupsPath
	if cg == "" {
		cg = "/" + env.ns + "/" + id // containerd's default
	}
	file, val, done := filepath.Join("/sys/fs/cgroup/freezer", cg, "freezer.state"), "FROZEN", "FROZEN"
	events := file
	if _, err := os.Stat(file); err != nil {
		dir := filepath.Join("/sys/fs/cgroup", cg)
		file, val, events, done = filepath.Join(dir, "cgroup.freeze"), "1", filepath.Join(dir, "cgroup.events"), "frozen 1"
	}
	if err := os.WriteFile(file, []byte(val), 0); err != nil {
		t.Fatalf("freezing %s: %v", id, err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		b, err := os.ReadFile(events)
		if err == nil && strings.Contains(string(b), done) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: cgroup not frozen after 5s (%s: %q, %v)", id, events, b, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
	task, err := c.Task(ctx, nil)
	if err != nil {
		t.Fatalf("loading task of %s: %v", id, err)
	}
	// containerd's status comes from the shim's own state machine, which
	// never saw a Pause: it still reads "running".
	if st, err := task.Status(ctx); err == nil {
		t.Logf("%s frozen through its cgroup; containerd status %q", id, st.Status)
	}
}

// waitClosed reports whether ch closes within d.
func waitClosed(ch <-chan struct{}, d time.Duration) bool {
	select {
	case <-ch:
		return true
	case <-time.After(d):
		return false
	}
}
