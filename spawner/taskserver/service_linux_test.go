package taskserver

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	tasktypes "github.com/containerd/containerd/api/types/task"
	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
)

// fakePid is above any pid_max: signalling it reaches no process.
const fakePid = 1 << 30

// native is err as containerd's client sees it: through gRPC status.
func native(err error) error {
	if err == nil {
		return nil
	}
	return errgrpc.ToNative(err)
}

type errKind struct {
	name string
	is   func(error) bool
}

var (
	notFound           = errKind{"NotFound", errdefs.IsNotFound}
	notImplemented     = errKind{"NotImplemented", errdefs.IsNotImplemented}
	failedPrecondition = errKind{"FailedPrecondition", errdefs.IsFailedPrecondition}
	alreadyExists      = errKind{"AlreadyExists", errdefs.IsAlreadyExists}
)

func wantErr(t *testing.T, what string, err error, kind errKind) {
	t.Helper()
	if err == nil {
		t.Errorf("%s: no error, want %s", what, kind.name)
		return
	}
	if n := native(err); !kind.is(n) {
		t.Errorf("%s: error %v, want %s", what, n, kind.name)
	}
}

// addTask puts a task that crun never saw into s, as create would leave it.
func addTask(t *testing.T, s *Server, id string, pid int) *task {
	t.Helper()
	tk := &task{
		id: id, ns: "test", bundle: t.TempDir(), pid: pid,
		stdin: "/in", stdout: "/out", stderr: "/err",
		created: time.Now(), exited: make(chan struct{}),
	}
	s.mu.Lock()
	s.tasks[id] = tk
	s.mu.Unlock()
	return tk
}

// exit records tk's exit as watch does.
func exit(tk *task, code uint32) {
	tk.mu.Lock()
	tk.code, tk.exitAt = code, time.Now()
	close(tk.exited)
	tk.mu.Unlock()
}

// TestServiceExitedTask: what containerd's client sees of a task whose
// init has exited, through its delete.
func TestServiceExitedTask(t *testing.T) {
	s := newTestServer(t)
	v := &service{s: s}
	ctx := context.Background()
	tk := addTask(t, s, "c", fakePid)
	tk.started = true
	exit(tk, 3)

	st, err := v.State(ctx, &taskAPI.StateRequest{ID: "c"})
	if err != nil {
		t.Fatal(err)
	}
	if st.Status != tasktypes.Status_STOPPED || st.ExitStatus != 3 || st.Pid != fakePid ||
		st.ExitedAt.AsTime().IsZero() || st.Stdout != "/out" || st.Bundle != tk.bundle {
		t.Errorf("State = %+v; want STOPPED, exit 3, pid, exit time, stdio, bundle", st)
	}
	w, err := v.Wait(ctx, &taskAPI.WaitRequest{ID: "c"})
	if err != nil {
		t.Fatal(err)
	}
	if w.ExitStatus != 3 || !w.ExitedAt.AsTime().Equal(st.ExitedAt.AsTime()) {
		t.Errorf("Wait = %+v, want exit 3 at %v", w, st.ExitedAt.AsTime())
	}
	_, err = v.Kill(ctx, &taskAPI.KillRequest{ID: "c", Signal: uint32(unix.SIGKILL), All: true})
	wantErr(t, "Kill of an exited task", err, notFound)
	_, err = v.Start(ctx, &taskAPI.StartRequest{ID: "c"})
	wantErr(t, "Start of an exited task", err, failedPrecondition)

	c, err := v.Connect(ctx, &taskAPI.ConnectRequest{ID: "c"})
	if err != nil {
		t.Fatal(err)
	}
	if c.ShimPid != uint32(os.Getpid()) || c.TaskPid != fakePid {
		t.Errorf("Connect = %+v, want shim pid %d, task pid %d", c, os.Getpid(), fakePid)
	}
	p, err := v.Pids(ctx, &taskAPI.PidsRequest{ID: "c"})
	if err != nil || len(p.Processes) != 1 || p.Processes[0].Pid != fakePid {
		t.Errorf("Pids = %v, %v; want the init alone", p, err)
	}
	if _, err := v.CloseIO(ctx, &taskAPI.CloseIORequest{ID: "c", Stdin: true}); err != nil {
		t.Errorf("CloseIO: %v", err)
	}

	d, err := v.Delete(ctx, &taskAPI.DeleteRequest{ID: "c"})
	if err != nil {
		t.Fatal(err)
	}
	if d.ExitStatus != 3 || d.Pid != fakePid || !d.ExitedAt.AsTime().Equal(st.ExitedAt.AsTime()) {
		t.Errorf("Delete = %+v, want exit 3, pid, exit time", d)
	}
	// Deleted: gone for every call, and a second delete is NotFound.
	_, err = v.State(ctx, &taskAPI.StateRequest{ID: "c"})
	wantErr(t, "State after Delete", err, notFound)
	_, err = v.Delete(ctx, &taskAPI.DeleteRequest{ID: "c"})
	wantErr(t, "second Delete", err, notFound)
	c, err = v.Connect(ctx, &taskAPI.ConnectRequest{ID: "c"})
	if err != nil || c.TaskPid != 0 || c.ShimPid != uint32(os.Getpid()) {
		t.Errorf("Connect after Delete = %+v, %v; want our pid, no task pid", c, err)
	}
	if _, err := v.Shutdown(ctx, &taskAPI.ShutdownRequest{ID: "c"}); err != nil {
		t.Errorf("Shutdown: %v", err)
	}
}

func TestServiceUnknownTask(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name string
		call func(*service) error
	}{
		{"State", func(v *service) error { _, err := v.State(ctx, &taskAPI.StateRequest{ID: "nope"}); return err }},
		{"Wait", func(v *service) error { _, err := v.Wait(ctx, &taskAPI.WaitRequest{ID: "nope"}); return err }},
		{"Kill", func(v *service) error { _, err := v.Kill(ctx, &taskAPI.KillRequest{ID: "nope", Signal: 9}); return err }},
		{"Delete", func(v *service) error { _, err := v.Delete(ctx, &taskAPI.DeleteRequest{ID: "nope"}); return err }},
		{"Start", func(v *service) error { _, err := v.Start(ctx, &taskAPI.StartRequest{ID: "nope"}); return err }},
		{"Pause", func(v *service) error { _, err := v.Pause(ctx, &taskAPI.PauseRequest{ID: "nope"}); return err }},
		{"Resume", func(v *service) error { _, err := v.Resume(ctx, &taskAPI.ResumeRequest{ID: "nope"}); return err }},
		{"Pids", func(v *service) error { _, err := v.Pids(ctx, &taskAPI.PidsRequest{ID: "nope"}); return err }},
		{"CloseIO", func(v *service) error { _, err := v.CloseIO(ctx, &taskAPI.CloseIORequest{ID: "nope"}); return err }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newTestServer(t)
			addTask(t, s, "other", fakePid)
			wantErr(t, tc.name, tc.call(&service{s: s}), notFound)
		})
	}
}

func TestServiceNotImplemented(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name string
		call func(*service) error
	}{
		{"Exec", func(v *service) error {
			_, err := v.Exec(ctx, &taskAPI.ExecProcessRequest{ID: "c", ExecID: "e"})
			return err
		}},
		{"ResizePty", func(v *service) error {
			_, err := v.ResizePty(ctx, &taskAPI.ResizePtyRequest{ID: "c", Width: 80, Height: 24})
			return err
		}},
		{"Checkpoint", func(v *service) error {
			_, err := v.Checkpoint(ctx, &taskAPI.CheckpointTaskRequest{ID: "c", Path: "/x"})
			return err
		}},
		{"Update", func(v *service) error { _, err := v.Update(ctx, &taskAPI.UpdateTaskRequest{ID: "c"}); return err }},
		{"Stats", func(v *service) error { _, err := v.Stats(ctx, &taskAPI.StatsRequest{ID: "c"}); return err }},
		// Calls on an exec process of a known task.
		{"State of an exec", func(v *service) error {
			_, err := v.State(ctx, &taskAPI.StateRequest{ID: "c", ExecID: "e"})
			return err
		}},
		{"Kill of an exec", func(v *service) error {
			_, err := v.Kill(ctx, &taskAPI.KillRequest{ID: "c", ExecID: "e", Signal: 9})
			return err
		}},
		{"Wait of an exec", func(v *service) error {
			_, err := v.Wait(ctx, &taskAPI.WaitRequest{ID: "c", ExecID: "e"})
			return err
		}},
		{"Delete of an exec", func(v *service) error {
			_, err := v.Delete(ctx, &taskAPI.DeleteRequest{ID: "c", ExecID: "e"})
			return err
		}},
		{"Create with a terminal", func(v *service) error {
			_, err := v.Create(ctx, &taskAPI.CreateTaskRequest{ID: "new", Bundle: "/nonexistent", Terminal: true})
			return err
		}},
		{"Create from a checkpoint", func(v *service) error {
			_, err := v.Create(ctx, &taskAPI.CreateTaskRequest{ID: "new", Bundle: "/nonexistent", Checkpoint: "/cp"})
			return err
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newTestServer(t)
			addTask(t, s, "c", fakePid)
			wantErr(t, tc.name, tc.call(&service{s: s}), notImplemented)
			if _, ok := s.get("new"); ok {
				t.Error("a refused Create left a task behind")
			}
		})
	}
}

func TestServiceCreateFailures(t *testing.T) {
	ctx := context.Background()
	s := newTestServer(t)
	v := &service{s: s}
	existing := addTask(t, s, "dup", fakePid)

	_, err := v.Create(ctx, &taskAPI.CreateTaskRequest{ID: "dup", Bundle: t.TempDir()})
	wantErr(t, "Create of an existing ID", err, alreadyExists)
	if got, _ := s.get("dup"); got != existing {
		t.Error("a duplicate Create replaced the existing task")
	}

	// No config.json: the create fails before crun, and leaves no task.
	_, err = v.Create(ctx, &taskAPI.CreateTaskRequest{ID: "bad", Bundle: t.TempDir()})
	if err == nil {
		t.Fatal("Create without a spec succeeded")
	}
	if _, ok := s.get("bad"); ok {
		t.Error("a failed Create left its task in the map")
	}
	// Nothing of it stands in the way of a new attempt.
	_, err = v.Create(ctx, &taskAPI.CreateTaskRequest{ID: "bad", Bundle: t.TempDir()})
	if err == nil || errdefs.IsAlreadyExists(native(err)) {
		t.Errorf("second Create after a failure: %v, want the same failure", native(err))
	}
}

func TestServiceWaitCanceled(t *testing.T) {
	s := newTestServer(t)
	addTask(t, s, "c", fakePid)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	_, err := (&service{s: s}).Wait(ctx, &taskAPI.WaitRequest{ID: "c"})
	if err == nil {
		t.Fatal("Wait of a live task returned before its exit")
	}
	if n := native(err); !errdefs.IsDeadlineExceeded(n) && !errdefs.IsCanceled(n) {
		t.Errorf("Wait error = %v, want the context's", n)
	}
}

// withInit starts a real process as tk's init, watched as create does.
func withInit(t *testing.T, s *Server, id string, started bool) *task {
	t.Helper()
	pid := spawn(t, "/bin/sleep", "60")
	t.Cleanup(func() {
		// Only if the test left it alive (its exit not yet seen).
		if tk, ok := s.get(id); ok {
			if _, _, done := tk.exitStatus(); !done {
				_ = unix.Kill(pid, unix.SIGKILL)
				<-tk.exited
			}
		}
	})
	tk := addTask(t, s, id, pid)
	tk.started = started
	go s.watch(tk, s.reaper.wait(pid))
	return tk
}

func TestServiceKillRunningTask(t *testing.T) {
	s := newTestServer(t)
	runReaper(t, s.reaper)
	v := &service{s: s}
	ctx := context.Background()
	withInit(t, s, "c", true)

	st, err := v.State(ctx, &taskAPI.StateRequest{ID: "c"})
	if err != nil || st.Status != tasktypes.Status_RUNNING {
		t.Fatalf("State = %v, %v; want RUNNING", st, err)
	}
	_, err = v.Delete(ctx, &taskAPI.DeleteRequest{ID: "c"})
	wantErr(t, "Delete of a running task", err, failedPrecondition)
	_, err = v.Start(ctx, &taskAPI.StartRequest{ID: "c"})
	wantErr(t, "Start of a running task", err, failedPrecondition)

	if _, err := v.Kill(ctx, &taskAPI.KillRequest{ID: "c", Signal: uint32(unix.SIGTERM)}); err != nil {
		t.Fatalf("Kill: %v", err)
	}
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	w, err := v.Wait(wctx, &taskAPI.WaitRequest{ID: "c"})
	if err != nil {
		t.Fatal(err)
	}
	if w.ExitStatus != 128+uint32(unix.SIGTERM) {
		t.Errorf("Wait exit status = %d, want %d", w.ExitStatus, 128+unix.SIGTERM)
	}
	st, err = v.State(ctx, &taskAPI.StateRequest{ID: "c"})
	if err != nil || st.Status != tasktypes.Status_STOPPED || st.ExitStatus != w.ExitStatus {
		t.Errorf("State after exit = %v, %v; want STOPPED with the Wait status", st, err)
	}
	_, err = v.Kill(ctx, &taskAPI.KillRequest{ID: "c", Signal: uint32(unix.SIGKILL)})
	wantErr(t, "second Kill", err, notFound)
	d, err := v.Delete(ctx, &taskAPI.DeleteRequest{ID: "c"})
	if err != nil || d.ExitStatus != w.ExitStatus {
		t.Errorf("Delete = %v, %v; want the exit status %d", d, err, w.ExitStatus)
	}
}

// TestServiceDeleteCreatedTask: a task created but never started is
// killed by Delete, as runc's shim does, and reported with its status.
func TestServiceDeleteCreatedTask(t *testing.T) {
	s := newTestServer(t)
	runReaper(t, s.reaper)
	v := &service{s: s}
	withInit(t, s, "c", false)
	st, err := v.State(context.Background(), &taskAPI.StateRequest{ID: "c"})
	if err != nil || st.Status != tasktypes.Status_CREATED {
		t.Fatalf("State = %v, %v; want CREATED", st, err)
	}
	done := make(chan struct{})
	var d *taskAPI.DeleteResponse
	go func() {
		defer close(done)
		d, err = v.Delete(context.Background(), &taskAPI.DeleteRequest{ID: "c"})
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Delete of a created task hung")
	}
	if err != nil {
		t.Fatal(err)
	}
	if d.ExitStatus != 128+uint32(unix.SIGKILL) || d.ExitedAt.AsTime().IsZero() {
		t.Errorf("Delete = %+v, want exit %d and its time", d, 128+unix.SIGKILL)
	}
	if _, ok := s.get("c"); ok {
		t.Error("deleted task still listed")
	}
}

// TestServiceStartOpensExecFIFO: Start releases the init by writing one
// byte into crun's exec FIFO, with no crun process, and removes the FIFO
// (crun's sign that the container runs).
func TestServiceStartOpensExecFIFO(t *testing.T) {
	s := newTestServer(t)
	v := &service{s: s}
	ctx := context.Background()
	addTask(t, s, "c", fakePid)
	dir := filepath.Join(s.crun.root, "c")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	fifo := filepath.Join(dir, "exec.fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	// The waiting init's end.
	fd, err := unix.Open(fifo, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	initEnd := os.NewFile(uintptr(fd), fifo)
	defer initEnd.Close()

	r, err := v.Start(ctx, &taskAPI.StartRequest{ID: "c"})
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	if r.Pid != fakePid {
		t.Errorf("Start pid = %d, want %d", r.Pid, fakePid)
	}
	b := make([]byte, 4)
	if n, err := initEnd.Read(b); err != nil || n != 1 || b[0] != 0 {
		t.Errorf("init read %v, %v; want one zero byte", b[:n], err)
	}
	if _, err := os.Lstat(fifo); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("exec FIFO still there after Start: %v", err)
	}
	st, err := v.State(ctx, &taskAPI.StateRequest{ID: "c"})
	if err != nil || st.Status != tasktypes.Status_RUNNING {
		t.Errorf("State = %v, %v; want RUNNING", st, err)
	}
	_, err = v.Start(ctx, &taskAPI.StartRequest{ID: "c"})
	wantErr(t, "second Start", err, failedPrecondition)
}

// TestServiceStartFailure: with no FIFO to open, Start falls back to
// crun (absent here) and fails; the task stays CREATED.
func TestServiceStartFailure(t *testing.T) {
	s := newTestServer(t)
	v := &service{s: s}
	addTask(t, s, "c", fakePid)
	if _, err := v.Start(context.Background(), &taskAPI.StartRequest{ID: "c"}); err == nil {
		t.Fatal("Start succeeded with neither exec FIFO nor crun")
	}
	st, err := v.State(context.Background(), &taskAPI.StateRequest{ID: "c"})
	if err != nil || st.Status != tasktypes.Status_CREATED {
		t.Errorf("State = %v, %v; want CREATED", st, err)
	}
}

// TestRemoveExited: an exited container's cgroup (in every hierarchy) and
// crun state are removed without crun when its cgroupsPath is absolute;
// otherwise nothing is touched and crun is left to do it.
func TestRemoveExited(t *testing.T) {
	tests := []struct {
		name    string
		cgroup  string
		exited  bool
		busy    bool // a hierarchy's cgroup directory can't be removed
		want    bool
		removed bool
	}{
		{name: "exited, absolute path", cgroup: "/spawn/c", exited: true, want: true, removed: true},
		{name: "exited, cgroup already gone", cgroup: "/spawn/gone", exited: true, want: true, removed: true},
		{name: "running", cgroup: "/spawn/c", exited: false},
		{name: "systemd slice notation", cgroup: "spawn.slice:spawn:c", exited: true},
		{name: "no cgroupsPath", cgroup: "", exited: true},
		{name: "root cgroup", cgroup: "/", exited: true},
		{name: "cgroup not removable", cgroup: "/spawn/c", exited: true, busy: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newTestServer(t)
			s.cgroupRoots = []string{t.TempDir(), t.TempDir()}
			var dirs []string
			if tc.cgroup != "" && tc.cgroup != "/" && tc.cgroup != "/spawn/gone" {
				for _, root := range s.cgroupRoots {
					d := filepath.Join(root, tc.cgroup)
					if err := os.MkdirAll(d, 0o700); err != nil {
						t.Fatal(err)
					}
					dirs = append(dirs, d)
				}
			}
			if tc.busy {
				// A non-empty directory: rmdir fails with ENOTEMPTY.
				if err := os.WriteFile(filepath.Join(dirs[1], "tasks"), nil, 0o600); err != nil {
					t.Fatal(err)
				}
			}
			state := filepath.Join(s.crun.root, "c")
			if err := os.MkdirAll(state, 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(state, "status"), []byte("{}"), 0o600); err != nil {
				t.Fatal(err)
			}
			tk := &task{id: "c", cgroup: tc.cgroup, pid: fakePid, exited: make(chan struct{})}
			if tc.exited {
				exit(tk, 0)
			}
			if got := s.removeExited(tk); got != tc.want {
				t.Errorf("removeExited = %v, want %v", got, tc.want)
			}
			_, err := os.Stat(state)
			if gone := errors.Is(err, os.ErrNotExist); gone != tc.removed {
				t.Errorf("crun state removed: %v, want %v", gone, tc.removed)
			}
			for _, d := range dirs {
				_, err := os.Stat(d)
				if gone := errors.Is(err, os.ErrNotExist); tc.removed && !gone {
					t.Errorf("cgroup %s still there", d)
				}
			}
			if tc.cgroup == "/" {
				for _, root := range s.cgroupRoots {
					if _, err := os.Stat(root); err != nil {
						t.Errorf("hierarchy root %s touched: %v", root, err)
					}
				}
			}
		})
	}
}

// TestDeleteRemovesExitedContainer: Delete of an exited task removes its
// cgroups and crun state itself (no crun exec: the crun here is absent).
func TestDeleteRemovesExitedContainer(t *testing.T) {
	s := newTestServer(t)
	s.cgroupRoots = []string{t.TempDir(), t.TempDir()}
	tk := addTask(t, s, "c", fakePid)
	tk.cgroup = "/spawn/c"
	for _, root := range s.cgroupRoots {
		if err := os.MkdirAll(filepath.Join(root, tk.cgroup), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	state := filepath.Join(s.crun.root, "c")
	if err := os.MkdirAll(state, 0o700); err != nil {
		t.Fatal(err)
	}
	exit(tk, 0)
	if _, err := (&service{s: s}).Delete(context.Background(), &taskAPI.DeleteRequest{ID: "c"}); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{state, filepath.Join(s.cgroupRoots[0], tk.cgroup), filepath.Join(s.cgroupRoots[1], tk.cgroup)} {
		if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s left after Delete (%v)", p, err)
		}
	}
}

// TestServiceKillThaws: SIGKILL thaws the container's cgroup (v1 freezer
// and v2 cgroup.freeze), whoever froze it, so the kill takes effect; other
// signals leave it frozen.
func TestServiceKillThaws(t *testing.T) {
	tests := []struct {
		name      string
		signal    unix.Signal
		wantThaw  bool
		wantState tasktypes.Status
	}{
		{name: "SIGKILL", signal: unix.SIGKILL, wantThaw: true, wantState: tasktypes.Status_STOPPED},
		{name: "SIGWINCH (ignored)", signal: unix.SIGWINCH, wantThaw: false, wantState: tasktypes.Status_PAUSED},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newTestServer(t)
			runReaper(t, s.reaper)
			v1, v2 := t.TempDir(), t.TempDir()
			s.cgroupRoots = []string{v1, v2}
			tk := withInit(t, s, "c", true)
			tk.cgroup = "/spawn/c"
			tk.paused = true
			v1File := filepath.Join(v1, tk.cgroup, "freezer.state")
			v2File := filepath.Join(v2, tk.cgroup, "cgroup.freeze")
			for file, frozen := range map[string]string{v1File: "FROZEN", v2File: "1"} {
				if err := os.MkdirAll(filepath.Dir(file), 0o700); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(file, []byte(frozen), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			v := &service{s: s}
			if _, err := v.Kill(context.Background(), &taskAPI.KillRequest{ID: "c", Signal: uint32(tc.signal)}); err != nil {
				t.Fatalf("Kill: %v", err)
			}
			want := map[string]string{v1File: "FROZEN", v2File: "1"}
			if tc.wantThaw {
				want = map[string]string{v1File: "THAWED", v2File: "0"}
			}
			for file, w := range want {
				if b, _ := os.ReadFile(file); string(b) != w {
					t.Errorf("%s = %q, want %q", file, b, w)
				}
			}
			if tc.wantState == tasktypes.Status_STOPPED {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				if _, err := v.Wait(ctx, &taskAPI.WaitRequest{ID: "c"}); err != nil {
					t.Fatal(err)
				}
			}
			if st, err := v.State(context.Background(), &taskAPI.StateRequest{ID: "c"}); err != nil || st.Status != tc.wantState {
				t.Errorf("State = %v, %v; want %v", st, err, tc.wantState)
			}
		})
	}
}
