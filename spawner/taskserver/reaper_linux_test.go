package taskserver

import (
	"os"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The reaper waits for every child of the test binary (wait4(-1)), so no
// test of this package runs in parallel or starts children with os/exec:
// the reaper would take their exits.

// spawn starts argv as a child of the test binary, left for a reaper to
// reap, and returns its pid.
func spawn(t *testing.T, argv ...string) int {
	t.Helper()
	null, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer null.Close()
	p, err := os.StartProcess(argv[0], argv, &os.ProcAttr{Files: []*os.File{null, null, null}})
	if err != nil {
		t.Fatalf("starting %v: %v", argv, err)
	}
	pid := p.Pid
	_ = p.Release()
	return pid
}

// runReaper runs r until the test ends.
func runReaper(t *testing.T, r *reaper) {
	t.Helper()
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		r.run(stop)
	}()
	t.Cleanup(func() {
		close(stop)
		<-done
	})
}

// receive waits (bounded) for the status on ch.
func receive(t *testing.T, ch <-chan unix.WaitStatus) unix.WaitStatus {
	t.Helper()
	select {
	case ws := <-ch:
		return ws
	case <-time.After(10 * time.Second):
		t.Fatal("no exit status within 10s")
		return 0
	}
}

// reapUntilUnclaimed calls reapAll, as a SIGCHLD would, until pid's exit
// is recorded with nobody waiting for it.
func reapUntilUnclaimed(t *testing.T, r *reaper, pid int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		r.reapAll()
		r.mu.Lock()
		_, ok := r.unclaimed[pid]
		r.mu.Unlock()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("pid %d was not reaped within 10s", pid)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestReaperDeliversExitsOfRealChildren(t *testing.T) {
	tests := []struct {
		name string
		argv []string
		// kill, when set, is sent to the child after it started.
		kill unix.Signal
		// waitFirst: wait(pid) is called before the exit is reaped;
		// otherwise the exit is reaped first and kept unclaimed.
		waitFirst bool
		want      uint32
	}{
		{name: "exit 3, wait first", argv: []string{"/bin/sh", "-c", "exit 3"}, waitFirst: true, want: 3},
		{name: "exit 3, exit first", argv: []string{"/bin/sh", "-c", "exit 3"}, want: 3},
		{name: "exit 0, exit first", argv: []string{"/bin/sh", "-c", "exit 0"}, want: 0},
		{name: "SIGKILL, wait first", argv: []string{"/bin/sleep", "60"}, kill: unix.SIGKILL, waitFirst: true, want: 128 + 9},
		{name: "SIGTERM, exit first", argv: []string{"/bin/sleep", "60"}, kill: unix.SIGTERM, want: 128 + 15},
		{name: "killed itself", argv: []string{"/bin/sh", "-c", "kill -USR1 $$"}, want: 128 + uint32(unix.SIGUSR1)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := newReaper()
			pid := spawn(t, tc.argv...)
			var ch <-chan unix.WaitStatus
			if tc.waitFirst {
				ch = r.wait(pid)
			}
			if tc.kill != 0 {
				if err := unix.Kill(pid, tc.kill); err != nil {
					t.Fatal(err)
				}
			}
			if tc.waitFirst {
				// The exit goes straight to the waiter.
				deadline := time.Now().Add(10 * time.Second)
				for len(ch) == 0 && time.Now().Before(deadline) {
					r.reapAll()
					time.Sleep(time.Millisecond)
				}
			} else {
				reapUntilUnclaimed(t, r, pid)
				ch = r.wait(pid)
				if len(ch) != 1 {
					t.Fatal("wait after the exit: status not ready at once")
				}
			}
			if got := exitCode(receive(t, ch)); got != tc.want {
				t.Errorf("exit code = %d, want %d", got, tc.want)
			}
			r.mu.Lock()
			defer r.mu.Unlock()
			if len(r.waiters) != 0 || len(r.unclaimed) != 0 {
				t.Errorf("reaper keeps %d waiters, %d unclaimed after delivery; want none", len(r.waiters), len(r.unclaimed))
			}
		})
	}
}

// TestReaperRunReapsOnSIGCHLD checks the running reaper: exits arrive
// through SIGCHLD, well before its one-minute tick.
func TestReaperRunReapsOnSIGCHLD(t *testing.T) {
	r := newReaper()
	runReaper(t, r)
	for i := range 20 {
		pid := spawn(t, "/bin/sh", "-c", "exit 7")
		if got := exitCode(receive(t, r.wait(pid))); got != 7 {
			t.Fatalf("child %d: exit code = %d, want 7", i, got)
		}
	}
}

// Fake PIDs above the kernel's largest pid_max (2^22): no process has them,
// so wait trusts a kept exit of theirs (a real PID may be a live process's).
const (
	fakePID     = 1 << 30
	fakePIDTwo  = fakePID + 1
	fakePIDKept = fakePID + 2
)

func TestReaperDeliverDoesNotBlock(t *testing.T) {
	r := newReaper()
	ch := r.wait(fakePID)
	done := make(chan struct{})
	go func() {
		// Nobody receives yet: the waiter's buffer must take it.
		r.deliver(fakePID, unix.WaitStatus(5<<8))
		// A second exit of the same pid (a reused pid) is not sent to
		// the channel already used; it is kept unclaimed.
		r.deliver(fakePID, unix.WaitStatus(6<<8))
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("deliver blocked with the waiter not receiving")
	}
	if got := exitCode(<-ch); got != 5 {
		t.Errorf("first exit = %d, want 5", got)
	}
	if got := exitCode(<-r.wait(fakePID)); got != 6 {
		t.Errorf("second exit = %d, want 6", got)
	}
}

func TestReaperExpire(t *testing.T) {
	r := newReaper()
	now := time.Now()
	r.unclaimed[fakePIDTwo] = exitRecord{status: unix.WaitStatus(1 << 8), at: now.Add(-unclaimedTTL - time.Second)}
	r.unclaimed[fakePIDKept] = exitRecord{status: unix.WaitStatus(2 << 8), at: now}
	r.expire()
	if _, ok := r.unclaimed[fakePIDTwo]; ok {
		t.Error("an exit older than unclaimedTTL was kept")
	}
	if _, ok := r.unclaimed[fakePIDKept]; !ok {
		t.Error("a fresh exit was dropped")
	}
	// The dropped exit is gone for good: a waiter now waits.
	if ch := r.wait(fakePIDTwo); len(ch) != 0 {
		t.Error("wait for an expired pid returned a status")
	}
	if got := exitCode(<-r.wait(fakePIDKept)); got != 2 {
		t.Errorf("kept exit = %d, want 2", got)
	}
}

func TestExitCode(t *testing.T) {
	// Linux wait statuses: exit code in bits 8–15, terminating signal
	// in bits 0–6 (0x80: core dumped).
	tests := []struct {
		name string
		ws   unix.WaitStatus
		want uint32
		desc string
	}{
		{name: "exit 0", ws: 0, want: 0, desc: "exit status 0"},
		{name: "exit 3", ws: 3 << 8, want: 3, desc: "exit status 3"},
		{name: "exit 255", ws: 255 << 8, want: 255, desc: "exit status 255"},
		{name: "SIGKILL", ws: unix.WaitStatus(unix.SIGKILL), want: 137, desc: "killed by SIGKILL"},
		{name: "SIGTERM", ws: unix.WaitStatus(unix.SIGTERM), want: 143, desc: "killed by SIGTERM"},
		{name: "SIGSEGV with core", ws: unix.WaitStatus(unix.SIGSEGV) | 0x80, want: 139, desc: "killed by SIGSEGV"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := exitCode(tc.ws); got != tc.want {
				t.Errorf("exitCode = %d, want %d", got, tc.want)
			}
			if got := describe(tc.ws); got != tc.desc {
				t.Errorf("describe = %q, want %q", got, tc.desc)
			}
		})
	}
}

// TestReaperTracedChildStop checks that a traced child's stop (as the
// user namespace's process of newUserns has, at its execve) is not taken
// for its exit: only its death is delivered.
func TestReaperTracedChildStop(t *testing.T) {
	r := newReaper()
	runReaper(t, r)
	pid, ch, err := r.start("/proc/self/exe", []string{"reaper-traced-child"}, &os.ProcAttr{
		Sys: &syscall.SysProcAttr{Ptrace: true},
	})
	if err != nil {
		t.Fatal(err)
	}
	// The stop at its execve arrives as a SIGCHLD; give the reaper time.
	r.reapAll()
	select {
	case ws := <-ch:
		t.Fatalf("delivered %v (stopped %v) while the child is only stopped", ws, ws.Stopped())
	case <-time.After(300 * time.Millisecond):
	}
	if err := unix.Kill(pid, unix.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if ws := receive(t, ch); !ws.Signaled() || ws.Signal() != unix.SIGKILL {
		t.Errorf("status %v, want killed by SIGKILL", ws)
	}
}
