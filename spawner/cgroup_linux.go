package spawner

import (
	"os"
	"path/filepath"
	"strings"
	"sync"
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
	if _, err := os.Stat(cgroupRoot + "/cgroup.controllers"); err == nil {
		return true
	}
	_, err := os.Stat(cgroupRoot + "/memory/memory.memsw.limit_in_bytes")
	return err == nil
})
