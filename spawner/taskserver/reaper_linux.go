package taskserver

import (
	"os"
	"os/signal"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// unclaimedTTL bounds how long the exit of a process nobody waits for is
// kept: orphans of a container's PID namespace are reparented to us too.
// PIDs come round quickly at hundreds of containers a second, so wait also
// checks that a kept exit is not of an earlier process with the same PID.
const unclaimedTTL = 10 * time.Second

// reaper waits for every child of this process, including container inits
// that crun leaves to us (we are a child subreaper), and hands each exit to
// whoever waits for that PID. A process may exit before anybody asks for
// it; its exit is kept for a while.
type reaper struct {
	mu        sync.Mutex
	waiters   map[int]chan unix.WaitStatus
	unclaimed map[int]exitRecord
}

type exitRecord struct {
	status unix.WaitStatus
	at     time.Time
}

func newReaper() *reaper {
	return &reaper{waiters: map[int]chan unix.WaitStatus{}, unclaimed: map[int]exitRecord{}}
}

// run reaps on every SIGCHLD until stop is closed.
func (r *reaper) run(stop <-chan struct{}) {
	ch := make(chan os.Signal, 128)
	signal.Notify(ch, unix.SIGCHLD)
	defer signal.Stop(ch)
	tick := time.NewTicker(unclaimedTTL)
	defer tick.Stop()
	r.reapAll()
	for {
		select {
		case <-stop:
			return
		case <-ch:
			r.reapAll()
		case <-tick.C:
			// A missed SIGCHLD costs at most a minute; and old exits
			// nobody claimed are dropped.
			r.reapAll()
			r.expire()
		}
	}
}

func (r *reaper) reapAll() {
	for {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
		if err == unix.EINTR {
			continue
		}
		if pid <= 0 || err != nil {
			return
		}
		if ws.Stopped() || ws.Continued() {
			// A traced child's stop (see newUserns) is no exit.
			continue
		}
		r.deliver(pid, ws)
	}
}

func (r *reaper) deliver(pid int, ws unix.WaitStatus) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if ch, ok := r.waiters[pid]; ok {
		delete(r.waiters, pid)
		ch <- ws
		return
	}
	r.unclaimed[pid] = exitRecord{status: ws, at: time.Now()}
}

func (r *reaper) expire() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for pid, e := range r.unclaimed {
		if time.Since(e.at) > unclaimedTTL {
			delete(r.unclaimed, pid)
		}
	}
}

// wait returns a channel that receives pid's exit status once. pid must
// be a child of ours (or reparented to us) that we have not waited for.
func (r *reaper) wait(pid int) <-chan unix.WaitStatus {
	ch := make(chan unix.WaitStatus, 1)
	r.mu.Lock()
	defer r.mu.Unlock()
	if e, ok := r.unclaimed[pid]; ok {
		delete(r.unclaimed, pid)
		// A process with this PID exists (running, or a zombie not yet
		// reaped): the kept exit is of an earlier process that had it.
		if unix.Kill(pid, 0) != nil {
			ch <- e.status
			return ch
		}
	}
	r.waiters[pid] = ch
	return ch
}

// start starts a child (os.StartProcess of name, argv, attr) and registers
// its waiter before any exit can be reaped, so its exit can't be taken for
// an earlier process's.
func (r *reaper) start(name string, argv []string, attr *os.ProcAttr) (int, <-chan unix.WaitStatus, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	p, err := os.StartProcess(name, argv, attr)
	if err != nil {
		return 0, nil, err
	}
	pid := p.Pid
	_ = p.Release()          // the reaper waits for it, not os.Process
	delete(r.unclaimed, pid) // an earlier process's
	ch := make(chan unix.WaitStatus, 1)
	r.waiters[pid] = ch
	return pid, ch, nil
}

// exitCode is the status a shim reports: the exit code, or 128+signal.
func exitCode(ws unix.WaitStatus) uint32 {
	if ws.Signaled() {
		return 128 + uint32(ws.Signal())
	}
	return uint32(ws.ExitStatus())
}
