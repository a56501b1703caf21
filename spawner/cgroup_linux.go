package spawner

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
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

// readUsage reads a cgroup's CPU time (user and system, all its
// processes) and memory peak: cgroup v2's cpu.stat usage_usec and
// memory.peak, or v1's cpuacct.usage and memory.max_usage_in_bytes.
func readUsage(cgroup string) (cpu time.Duration, peak int64, ok bool) {
	if isCgroup2() {
		b, err := os.ReadFile(filepath.Join(cgroupRoot, cgroup, "cpu.stat"))
		if err != nil {
			return 0, 0, false
		}
		for line := range strings.SplitSeq(string(b), "\n") {
			if v, found := strings.CutPrefix(line, "usage_usec "); found {
				us, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
				if err != nil {
					return 0, 0, false
				}
				cpu = time.Duration(us) * time.Microsecond
			}
		}
		peak, _ = readInt(filepath.Join(cgroupRoot, cgroup, "memory.peak"))
		return cpu, peak, true
	}
	ns, err := readInt(filepath.Join(cgroupRoot, "cpuacct", cgroup, "cpuacct.usage"))
	if err != nil {
		return 0, 0, false
	}
	peak, _ = readInt(filepath.Join(cgroupRoot, "memory", cgroup, "memory.max_usage_in_bytes"))
	return time.Duration(ns), peak, true
}

// resetMemoryPeak restarts a v1 memory cgroup's peak (v2's memory.peak
// is reset only for the file descriptor that writes it: left alone).
func resetMemoryPeak(cgroup string) {
	if isCgroup2() {
		return
	}
	_ = os.WriteFile(filepath.Join(cgroupRoot, "memory", cgroup, "memory.max_usage_in_bytes"), []byte("0"), 0)
}

func readInt(path string) (int64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	return strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
}

// isCgroup2 reports whether the host runs the unified hierarchy only.
var isCgroup2 = sync.OnceValue(func() bool {
	_, err := os.Stat(cgroupRoot + "/cgroup.controllers")
	return err == nil
})
