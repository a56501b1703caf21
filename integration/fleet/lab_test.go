//go:build integration && fleet

package fleet

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"github.com/caddy-spawn/caddy-spawn/internal/hostprobe"
)

// labPrefix starts the name of everything a lab makes on the host:
// network namespaces, links, cgroups and directories are
// "<labPrefix><pid>…", the pid of the test process that made them, so a
// later run can tell (and remove) what a dead run left.
const labPrefix = "csf"

// lab is what one test binary makes on the host for its fleet: a bridge
// in the host's network namespace with the subnet's .1, a network
// namespace per member (nodes, front) joined to it by a veth pair, a CPU
// cgroup per node, and directories. cleanup removes all of it, in
// reverse order, whatever state the tests left.
type lab struct {
	id     string // labPrefix + pid
	subnet string // "198.18.<n>", a /24 of the benchmarking range
	bridge string
	dir    string // /tmp/<id>: roots, logs
	run    string // /run/<id>: containerd state and run dirs (short paths)

	mu   sync.Mutex
	undo []func() error
}

// newLab makes the bridge and directories; cleanup undoes even a
// partial newLab.
func newLab() (*lab, error) {
	pid := os.Getpid()
	l := &lab{
		id:     labPrefix + strconv.Itoa(pid),
		subnet: fmt.Sprintf("198.18.%d", pid%250+1),
	}
	l.bridge = l.id + "br"
	l.dir = filepath.Join(os.TempDir(), l.id)
	l.run = filepath.Join("/run", l.id)
	for _, d := range []string{l.dir, l.run} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return l, err
		}
		l.onCleanup(func() error { return removeDir(d) })
	}
	if err := ip("link", "add", l.bridge, "type", "bridge"); err != nil {
		return l, err
	}
	l.onCleanup(func() error { return ipIgnoreMissing("link", "del", l.bridge) })
	if err := ip("addr", "add", l.gateway()+"/24", "dev", l.bridge); err != nil {
		return l, err
	}
	return l, ip("link", "set", l.bridge, "up")
}

// gateway is the host's address on the bridge, where the registry listens.
func (l *lab) gateway() string { return l.subnet + ".1" }

// onCleanup adds f to what cleanup runs (last added, first run).
func (l *lab) onCleanup(f func() error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.undo = append(l.undo, f)
}

// cleanup runs every undo step, newest first, and joins their errors.
func (l *lab) cleanup() error {
	l.mu.Lock()
	undo := l.undo
	l.undo = nil
	l.mu.Unlock()
	var errs []error
	for _, f := range slices.Backward(undo) {
		if err := f(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// addNetns makes a network namespace for member name with address
// <subnet>.<host>, joined to the bridge; it returns the namespace's path.
func (l *lab) addNetns(name string, host int) (string, error) {
	ns := l.id + name
	if err := ip("netns", "add", ns); err != nil {
		return "", err
	}
	l.onCleanup(func() error { return ipIgnoreMissing("netns", "del", ns) })
	hostEnd, nsEnd := fmt.Sprintf("%sh%d", l.id, host), fmt.Sprintf("%sp%d", l.id, host)
	steps := [][]string{
		{"link", "add", hostEnd, "type", "veth", "peer", "name", nsEnd},
		{"link", "set", nsEnd, "netns", ns},
		{"link", "set", hostEnd, "master", l.bridge},
		{"link", "set", hostEnd, "up"},
		{"-n", ns, "addr", "add", fmt.Sprintf("%s.%d/24", l.subnet, host), "dev", nsEnd},
		{"-n", ns, "link", "set", nsEnd, "up"},
		{"-n", ns, "link", "set", "lo", "up"},
	}
	for i, s := range steps {
		if err := ip(s...); err != nil {
			return "", err
		}
		if i == 0 {
			// The veth pair goes with the namespace; this is for a
			// failure before it moved there.
			l.onCleanup(func() error { return ipIgnoreMissing("link", "del", hostEnd) })
		}
	}
	return filepath.Join("/var/run/netns", ns), nil
}

// cpuCgroup makes a cgroup capped at cpus CPUs for member name and returns
// its cgroup.procs file: a process written there, and everything it
// starts, shares the cap.
func (l *lab) cpuCgroup(name string, cpus float64) (string, error) {
	period := 100000
	quota := int(cpus * float64(period))
	if _, err := os.Stat("/sys/fs/cgroup/cgroup.controllers"); err == nil {
		// cgroup v2
		dir := filepath.Join("/sys/fs/cgroup", l.id+name)
		if err := os.Mkdir(dir, 0o755); err != nil {
			return "", err
		}
		l.onCleanup(func() error { return removeCgroup(dir) })
		if err := os.WriteFile(filepath.Join(dir, "cpu.max"), fmt.Appendf(nil, "%d %d", quota, period), 0o644); err != nil {
			return "", err
		}
		return filepath.Join(dir, "cgroup.procs"), nil
	}
	dir := filepath.Join("/sys/fs/cgroup/cpu", l.id+name)
	if err := os.Mkdir(dir, 0o755); err != nil {
		return "", err
	}
	l.onCleanup(func() error { return removeCgroup(dir) })
	if err := os.WriteFile(filepath.Join(dir, "cpu.cfs_period_us"), []byte(strconv.Itoa(period)), 0o644); err != nil {
		return "", err
	}
	if err := os.WriteFile(filepath.Join(dir, "cpu.cfs_quota_us"), []byte(strconv.Itoa(quota)), 0o644); err != nil {
		return "", err
	}
	return filepath.Join(dir, "cgroup.procs"), nil
}

// removeCgroup kills what is left in a lab cgroup (only processes this
// lab started can be there) and removes it.
func removeCgroup(dir string) error {
	if b, err := os.ReadFile(filepath.Join(dir, "cgroup.procs")); err == nil {
		for f := range strings.FieldsSeq(string(b)) {
			if pid, err := strconv.Atoi(f); err == nil {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	}
	var err error
	for range 50 {
		if err = os.Remove(dir); err == nil || os.IsNotExist(err) {
			return nil
		}
		sleepBriefly()
	}
	return fmt.Errorf("removing cgroup %s: %w", dir, err)
}

// removeDir unmounts whatever is still mounted under dir, then removes it.
func removeDir(dir string) error {
	for _, m := range hostprobe.MountsUnder(dir) {
		_ = syscall.Unmount(m, syscall.MNT_DETACH)
	}
	if m := hostprobe.MountsUnder(dir); len(m) > 0 {
		return fmt.Errorf("mounts left under %s: %v", dir, m)
	}
	return os.RemoveAll(dir)
}

// sweepDeadLabs removes what labs of test processes that no longer run
// left behind (a run killed by SIGKILL cannot clean up after itself).
func sweepDeadLabs() {
	re := regexp.MustCompile("^" + labPrefix + `(\d+)`)
	dead := func(name string) bool {
		m := re.FindStringSubmatch(name)
		if m == nil {
			return false
		}
		pid, _ := strconv.Atoi(m[1])
		return pid != os.Getpid() && syscall.Kill(pid, 0) != nil
	}
	if out, err := exec.Command("ip", "netns", "list").Output(); err == nil {
		for line := range strings.SplitSeq(string(out), "\n") {
			if f := strings.Fields(line); len(f) > 0 && dead(f[0]) {
				_ = ipIgnoreMissing("netns", "del", f[0])
			}
		}
	}
	if out, err := exec.Command("ip", "-o", "link", "show").Output(); err == nil {
		for line := range strings.SplitSeq(string(out), "\n") {
			f := strings.Fields(line)
			if len(f) > 1 {
				name, _, _ := strings.Cut(strings.TrimSuffix(f[1], ":"), "@")
				if dead(name) {
					_ = ipIgnoreMissing("link", "del", name)
				}
			}
		}
	}
	for _, pattern := range []string{"/sys/fs/cgroup/cpu/" + labPrefix + "*", "/sys/fs/cgroup/" + labPrefix + "*", "/run/" + labPrefix + "*", filepath.Join(os.TempDir(), labPrefix+"*")} {
		matches, _ := filepath.Glob(pattern)
		for _, m := range matches {
			if !dead(filepath.Base(m)) {
				continue
			}
			if strings.HasPrefix(m, "/sys/fs/cgroup") {
				_ = removeCgroup(m)
			} else {
				_ = removeDir(m)
			}
		}
	}
}

func ip(args ...string) error {
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

// ipIgnoreMissing is ip for removals: a thing already gone is success.
func ipIgnoreMissing(args ...string) error {
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil && !bytes.Contains(out, []byte("Cannot find")) && !bytes.Contains(out, []byte("No such")) &&
		!bytes.Contains(out, []byte("does not exist")) {
		return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}
