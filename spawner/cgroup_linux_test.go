package spawner

import (
	"os"
	"syscall"
	"testing"
	"time"
)

func processCPU(t *testing.T) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		t.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// TestUsageFiles reads the root cgroup's CPU time through the kept-open
// files twice, around CPU this test burns: the second read must see at
// least that much more (the root counts every process), so a pread that
// returned stale or no data would fail.
func TestUsageFiles(t *testing.T) {
	if os.Getuid() != 0 {
		t.Fatal("needs root (cgroup files); the unit tests run as root")
	}
	u, err := openUsage("/")
	if err != nil {
		t.Fatalf("openUsage(/): %v", err)
	}
	defer u.close()
	before, _, ok := u.read()
	if !ok {
		t.Fatal("first read failed")
	}
	// Burn 50 ms of this process's own CPU time (not wall time: a slow or
	// shared machine only makes the loop longer).
	burn := 50 * time.Millisecond
	start := processCPU(t)
	for processCPU(t)-start < burn {
	}
	after, _, ok := u.read()
	if !ok {
		t.Fatal("second read failed")
	}
	// Both count the scheduler's time; allow for the tick granularity of
	// rusage.
	if got := after - before; got < burn-10*time.Millisecond {
		t.Errorf("root cgroup's CPU time grew by %v while this process used %v, want at least that", got, burn)
	}
	u.close()
	if _, _, ok := u.read(); ok {
		t.Error("read after close succeeded")
	}
}
