// Package hostprobe looks at the host the way the tests and the benchmark
// check that nothing was left behind: processes by command line, and mount
// points. Linux only (it reads /proc).
package hostprobe

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Process is a running process and its arguments.
type Process struct {
	PID  int
	Args []string
}

// String renders "pid: arg0 arg1 ...".
func (p Process) String() string {
	return strconv.Itoa(p.PID) + ": " + strings.Join(p.Args, " ")
}

// Processes returns the processes (other than this one) whose command line
// contains marker.
func Processes(marker string) []Process {
	entries, _ := os.ReadDir("/proc")
	var out []Process
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || !bytes.Contains(b, []byte(marker)) {
			continue
		}
		out = append(out, Process{pid, strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")})
	}
	return out
}

// MountsUnder returns the mount points in this process's mount namespace
// that are any of dirs or below one of them.
func MountsUnder(dirs ...string) []string {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return []string{"reading mountinfo: " + err.Error()}
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		mp := fields[4]
		for _, d := range dirs {
			if d != "" && (mp == d || strings.HasPrefix(mp, strings.TrimSuffix(d, "/")+"/")) {
				out = append(out, mp)
			}
		}
	}
	return out
}

// RemoveNamespaceCgroups checks that no container cgroup is left under a
// containerd namespace's parent cgroup ("/<namespace>" in every hierarchy,
// containerd's default layout), then removes the empty parents, which
// containerd and runc leave on the host.
func RemoveNamespaceCgroups(ns string) error {
	dirs, _ := filepath.Glob(filepath.Join("/sys/fs/cgroup", ns))
	more, _ := filepath.Glob(filepath.Join("/sys/fs/cgroup", "*", ns))
	var errs []error
	for _, d := range append(dirs, more...) {
		entries, err := os.ReadDir(d)
		if err != nil {
			continue
		}
		var left []string
		for _, e := range entries {
			if e.IsDir() {
				left = append(left, e.Name())
			}
		}
		if len(left) > 0 {
			errs = append(errs, fmt.Errorf("container cgroups left in %s: %v", d, left))
			continue
		}
		if err := os.Remove(d); err != nil && !os.IsNotExist(err) {
			errs = append(errs, fmt.Errorf("removing cgroup %s: %w", d, err))
		}
	}
	return errors.Join(errs...)
}
