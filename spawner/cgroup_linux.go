package spawner

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// cgroupRoot is where the cgroup hierarchies are mounted: the v2 unified
// one, or on v1 one directory per controller.
const cgroupRoot = "/sys/fs/cgroup"

// oomKilled reports whether the kernel's OOM killer killed a process of
// the cgroup (its memory cgroup's oom_kill counter).
func oomKilled(cgroup string) bool {
	for _, f := range []string{
		filepath.Join(cgroupRoot, "memory", cgroup, "memory.oom_control"), // v1
		filepath.Join(cgroupRoot, cgroup, "memory.events"),                // v2
	} {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for line := range strings.SplitSeq(string(b), "\n") {
			if n, ok := strings.CutPrefix(line, "oom_kill "); ok {
				return strings.TrimSpace(n) != "0"
			}
		}
	}
	return false
}

// swapLimitSupported reports whether runc can limit swap here: always on
// cgroup v2 (runc ignores the limit when the kernel has no swap), on v1
// only with swap accounting, where runc otherwise fails to create the
// container.
var swapLimitSupported = sync.OnceValue(func() bool {
	if isCgroup2() {
		return true
	}
	_, err := os.Stat(cgroupRoot + "/memory/memory.memsw.limit_in_bytes")
	return err == nil
})

// usageFiles are a cgroup's CPU time and memory peak files, opened once
// and read with pread: cgroup v2's cpu.stat (usage_usec) and memory.peak,
// or v1's cpuacct.usage and memory.max_usage_in_bytes. Kept open from the
// usage mark to the container's end, they cost a pread each at the end of
// a request instead of an open, a read and a close (~35 µs a file here).
type usageFiles struct {
	cpu, peak int // -1: not open
	v2        bool
}

// openUsage opens a cgroup's usage files. The CPU file must open; without
// a peak file the peak reads 0.
func openUsage(cgroup string) (*usageFiles, error) {
	u := &usageFiles{cpu: -1, peak: -1, v2: isCgroup2()}
	cpu, peak := filepath.Join(cgroupRoot, "cpuacct", cgroup, "cpuacct.usage"), filepath.Join(cgroupRoot, "memory", cgroup, "memory.max_usage_in_bytes")
	if u.v2 {
		cpu, peak = filepath.Join(cgroupRoot, cgroup, "cpu.stat"), filepath.Join(cgroupRoot, cgroup, "memory.peak")
	}
	fd, err := unix.Open(cpu, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: cpu, Err: err}
	}
	u.cpu = fd
	mode := unix.O_RDWR // v1 resets the peak by a write
	if u.v2 {
		mode = unix.O_RDONLY
	}
	if fd, err := unix.Open(peak, mode|unix.O_CLOEXEC, 0); err == nil {
		u.peak = fd
	}
	return u, nil
}

// read returns the CPU time (user and system, all the cgroup's processes)
// and the memory peak.
func (u *usageFiles) read() (cpu time.Duration, peak int64, ok bool) {
	var buf [512]byte
	b, err := pread(u.cpu, buf[:])
	if err != nil {
		return 0, 0, false
	}
	if u.v2 {
		found := false
		for line := range strings.SplitSeq(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "usage_usec "); ok {
				us, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
				if err != nil {
					return 0, 0, false
				}
				cpu, found = time.Duration(us)*time.Microsecond, true
			}
		}
		if !found {
			return 0, 0, false
		}
	} else {
		ns, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
		if err != nil {
			return 0, 0, false
		}
		cpu = time.Duration(ns)
	}
	if u.peak >= 0 {
		if b, err := pread(u.peak, buf[:]); err == nil {
			peak, _ = strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
		}
	}
	return cpu, peak, true
}

// resetPeak restarts the memory peak where we can: cgroup v1 takes a
// write to memory.max_usage_in_bytes. On v2 memory.peak counts from the
// cgroup's creation (kernels from 6.12 could reset it per descriptor; not
// used).
func (u *usageFiles) resetPeak() {
	if !u.v2 && u.peak >= 0 {
		_, _ = unix.Pwrite(u.peak, []byte("0"), 0)
	}
}

func (u *usageFiles) close() {
	for _, fd := range []*int{&u.cpu, &u.peak} {
		if *fd >= 0 {
			_ = unix.Close(*fd)
			*fd = -1
		}
	}
}

// pread reads a cgroup file from its start; the files are small.
func pread(fd int, buf []byte) ([]byte, error) {
	for {
		n, err := unix.Pread(fd, buf, 0)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, err
		}
		return buf[:n], nil
	}
}

// isCgroup2 reports whether the host runs the unified hierarchy only.
var isCgroup2 = sync.OnceValue(func() bool {
	_, err := os.Stat(cgroupRoot + "/cgroup.controllers")
	return err == nil
})
