//go:build integration

package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/containerd/containerd/v2/pkg/namespaces"

	"github.com/caddy-spawn/caddy-spawn/internal/hostprobe"
)

const (
	// userHZ is the unit of /proc/stat: USER_HZ, 100 on every Linux
	// architecture Go runs on.
	userHZ = 100
	// idleSample is how long the machine's CPU rate is sampled with the
	// path idle, before its sustained run.
	idleSample = 2 * time.Second
)

// cpuSample is the machine's CPU time and this process's at one instant.
type cpuSample struct {
	at    time.Time
	ticks uint64        // /proc/stat "cpu": user+nice+system+irq+softirq
	steal uint64        // /proc/stat "cpu": steal (the hypervisor ran someone else)
	self  time.Duration // this process: user + system (getrusage)
	// ours is the CPU of the bench's cgroup (this process and everything it
	// started: Caddy, containerd, shims, task server, crun) plus the
	// containers' (the cgroup of Caddy's containerd namespace); 0 without
	// cgroup accounting.
	ours time.Duration
}

// cpuUsed is the CPU time spent between two samples, in milliseconds.
type cpuUsed struct {
	wall   time.Duration
	allMs  float64 // all CPUs, every process, steal excluded
	steal  float64 // CPU ms stolen by the hypervisor in the window
	selfMs float64 // the bench process (its HTTP client and polls)
	oursMs float64 // our processes and containers, this process excluded; -1 without cgroup accounting
}

func (s cpuSample) sub(earlier cpuSample) cpuUsed {
	u := cpuUsed{
		wall:   s.at.Sub(earlier.at),
		allMs:  float64(s.ticks-earlier.ticks) * 1000 / userHZ,
		steal:  float64(s.steal-earlier.steal) * 1000 / userHZ,
		selfMs: float64(s.self-earlier.self) / float64(time.Millisecond),
		oursMs: -1,
	}
	if s.ours > 0 && earlier.ours > 0 {
		u.oursMs = max(0, float64(s.ours-earlier.ours)/float64(time.Millisecond)-u.selfMs)
	}
	return u
}

// readCPU samples /proc/stat's first line, this process's rusage and the
// cgroup accounting (if set up). Idle and iowait are left out, and steal
// is kept apart: time the hypervisor gave another guest is not ours (this
// machine kind measured 20–30 % steal under load); guest time is already
// in user.
func (b *bench) readCPU() (cpuSample, error) {
	s, err := readCPU()
	if err != nil || b.cg == nil {
		return s, err
	}
	s.ours, err = b.cg.usage()
	if err != nil {
		progress("cgroup CPU accounting: %v; reporting /proc/stat only", err)
		b.cg.close()
		b.cg = nil
		s.ours, err = 0, nil
	}
	return s, err
}

func readCPU() (cpuSample, error) {
	var s cpuSample
	s.at = time.Now()
	data, err := os.ReadFile("/proc/stat")
	if err != nil {
		return s, err
	}
	line, _, _ := strings.Cut(string(data), "\n")
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return s, fmt.Errorf("/proc/stat: unexpected first line %q", line)
	}
	// cpu user nice system idle iowait irq softirq steal [guest guest_nice]
	for _, i := range []int{1, 2, 3, 6, 7, 8} {
		v, err := strconv.ParseUint(f[i], 10, 64)
		if err != nil {
			return s, fmt.Errorf("/proc/stat: %q: %w", line, err)
		}
		if i == 8 {
			s.steal = v
			continue
		}
		s.ticks += v
	}
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return s, err
	}
	s.self = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	return s, nil
}

// memoryResult is the host memory of a path's processes with every pool
// full and idle; PSS in KiB.
type memoryResult struct {
	// IdleContainers is the number of idle pooled containers (every route's).
	IdleContainers int `json:"idle_containers"`
	// Counted says which processes are summed: the shims, or the task
	// server and its children that are not container processes.
	Counted   string `json:"counted"`
	Processes int    `json:"processes"`
	// Inits are the container processes, counted apart: in an idle pool
	// each container runs only our init, which waits for its request (the
	// function starts with the request).
	Inits int `json:"inits"`
	// InitKiB is the PSS of those inits, included in PerContainerKiB.
	InitKiB         int64   `json:"init_pss_kib"`
	PSSKiB          int64   `json:"pss_kib"`
	PerContainerKiB float64 `json:"per_container_pss_kib"`
	PerContainerMiB float64 `json:"per_container_pss_mib"`
	ContainerdKiB   int64   `json:"containerd_pss_kib"`
	CaddyKiB        int64   `json:"caddy_pss_kib"`
}

// measureMemory sums the PSS of every process the path runs for its idle
// pooled containers: the stock path's containerd-shim-runc-v2 processes
// (one per container, found by the namespace, containerd address and
// container ID on their command lines), or the fast path's task server and
// its children that are not container processes; and on both, each
// container's init, the one process in an idle pooled container (the
// function starts with its request, and is not counted). The pools must be
// full and idle.
func (b *bench) measureMemory(ctx context.Context, p *pathRun) (memoryResult, error) {
	var m memoryResult
	cs, err := p.ctrd.Containers(namespaces.WithNamespace(ctx, nsCaddy))
	if err != nil {
		return m, err
	}
	ids := make([]string, 0, len(cs))
	for _, c := range cs {
		ids = append(ids, c.ID())
	}
	m.IdleContainers = len(ids)
	if m.IdleContainers != pooled {
		return m, fmt.Errorf("%d containers in %s, want the %d pooled ones", m.IdleContainers, nsCaddy, pooled)
	}
	addr := filepath.Join(p.state, "containerd.sock")
	for _, proc := range hostprobe.Processes(p.state + "/") {
		if len(proc.Args) > 0 && filepath.Base(proc.Args[0]) == "containerd" {
			m.ContainerdKiB += pss(proc.PID)
		}
	}
	m.CaddyKiB = pss(p.caddy.proc.Pid())

	var pids, inits []int
	if p.fastPath == "on" {
		m.Counted = "task server and its children that are not container processes, plus each container's init"
		pids, inits, err = taskServerProcesses(p)
	} else {
		m.Counted = "containerd-shim-runc-v2 processes of the pooled containers, plus each container's init"
		pids, err = shimProcesses(addr, ids)
		for _, pid := range pids {
			inits = append(inits, descendants(pid)...)
		}
	}
	if err != nil {
		return m, err
	}
	m.Inits = len(inits)
	for _, pid := range inits {
		// Idle, every container process is our init (comm "init", from
		// /.spawn/init): anything else would be a function's, not ours.
		if comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid)); strings.TrimSpace(string(comm)) != "init" {
			return m, fmt.Errorf("container process %d (%q) in an idle pool is not our init", pid, strings.TrimSpace(string(comm)))
		}
		m.InitKiB += pss(pid)
	}
	m.Processes = len(pids)
	for _, pid := range pids {
		kib := pss(pid)
		if kib <= 0 {
			return m, fmt.Errorf("no PSS for pid %d (gone?)", pid)
		}
		m.PSSKiB += kib
	}
	m.PerContainerKiB = round(float64(m.PSSKiB+m.InitKiB) / float64(m.IdleContainers))
	m.PerContainerMiB = round(m.PerContainerKiB / 1024)
	return m, nil
}

// shimProcesses finds the runc v2 shim of each container: the process whose
// command line is containerd-shim-runc-v2 with -namespace nsCaddy, -address
// addr and -id <container>. It waits a little for shims of containers
// removed just before to exit; every container must have exactly one.
func shimProcesses(addr string, ids []string) ([]int, error) {
	deadline := time.Now().Add(5 * time.Second)
	for {
		byID := map[string][]int{}
		for _, proc := range hostprobe.Processes(addr) {
			if len(proc.Args) == 0 || filepath.Base(proc.Args[0]) != "containerd-shim-runc-v2" ||
				flagValue(proc.Args, "-namespace") != nsCaddy || flagValue(proc.Args, "-address") != addr {
				continue
			}
			id := flagValue(proc.Args, "-id")
			byID[id] = append(byID[id], proc.PID)
		}
		var pids []int
		var problems []string
		for _, id := range ids {
			if n := len(byID[id]); n != 1 {
				problems = append(problems, fmt.Sprintf("%d shims for container %s", n, id))
			}
			pids = append(pids, byID[id]...)
			delete(byID, id)
		}
		for id, ps := range byID {
			problems = append(problems, fmt.Sprintf("shim %v for %q, not a pooled container", ps, id))
		}
		if len(problems) == 0 {
			return pids, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("shims of the idle pool: %s", strings.Join(problems, "; "))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// flagValue returns the argument after name in args ("" when absent).
func flagValue(args []string, name string) string {
	i := slices.Index(args, name)
	if i < 0 || i+1 >= len(args) {
		return ""
	}
	return args[i+1]
}

// taskServerProcesses returns the task server's pid and its descendants
// that are not container processes, and apart from them the container
// processes: those in another PID namespace than the server's or in a
// cgroup of Caddy's containerd namespace.
func taskServerProcesses(p *pathRun) (pids, containerPids []int, err error) {
	p.taskServers = taskServerPids(p.caddy)
	if len(p.taskServers) == 0 {
		return nil, nil, errors.New("no task server pid in Caddy's log")
	}
	server := p.taskServers[len(p.taskServers)-1]
	if n := taskServersOf(p.state + "/"); !slices.Contains(n, server) {
		return nil, nil, fmt.Errorf("task server pid %d from Caddy's log is not running (task servers of this path: %v)", server, n)
	}
	serverNS, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", server))
	if err != nil {
		return nil, nil, err
	}
	pids = []int{server}
	for _, pid := range descendants(server) {
		ns, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", pid))
		cg, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
		if ns != serverNS || bytes.Contains(cg, []byte("/"+nsCaddy+"/")) {
			containerPids = append(containerPids, pid)
			continue
		}
		pids = append(pids, pid)
	}
	return pids, containerPids, nil
}

// descendants lists every process below pid in the process tree.
func descendants(pid int) []int {
	children := map[int][]int{}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		data, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid …; comm may hold spaces and parentheses.
		i := bytes.LastIndexByte(data, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(data[i+1:]))
		if len(f) < 2 {
			continue
		}
		if ppid, err := strconv.Atoi(f[1]); err == nil {
			children[ppid] = append(children[ppid], p)
		}
	}
	var out []int
	queue := []int{pid}
	for len(queue) > 0 {
		next := queue[0]
		queue = queue[1:]
		for _, c := range children[next] {
			out = append(out, c)
			queue = append(queue, c)
		}
	}
	return out
}

// pss returns a process's proportional set size in KiB (0 if unknown).
func pss(pid int) int64 {
	f, err := os.Open(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), "Pss:")
		if !ok {
			continue
		}
		v, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
		if err != nil {
			return 0
		}
		return v
	}
	return 0
}

// cgroupCPU accounts the CPU of everything the bench runs: this process
// moves into a cgroup of its own (v1 cpuacct, or v2), so Caddy, containerd,
// the shims, the task server and crun inherit it; the containers' CPU is in
// the cgroup of Caddy's containerd namespace ("/<namespace>/<id>", charged to
// the namespace's cgroup, where it stays after the container's is removed).
// Kernel threads working for us (network namespace cleanup, writeback) are
// not in it: /proc/stat is.
type cgroupCPU struct {
	root   string // the hierarchy's mount point
	dir    string // our cgroup
	origin string // where this process was, to go back to
	v2     bool
}

// startCgroupCPU moves this process into a new cgroup; nil if it can't.
func startCgroupCPU(id string) *cgroupCPU {
	c := &cgroupCPU{root: "/sys/fs/cgroup/cpuacct"}
	if _, err := os.Stat(filepath.Join(c.root, "cpuacct.usage")); err != nil {
		c.root, c.v2 = "/sys/fs/cgroup", true
		if _, err := os.Stat(filepath.Join(c.root, "cgroup.controllers")); err != nil {
			progress("no cpuacct (v1) or cgroup v2 hierarchy: CPU from /proc/stat only")
			return nil
		}
	}
	c.origin = c.root
	if data, err := os.ReadFile("/proc/self/cgroup"); err == nil {
		for line := range strings.SplitSeq(strings.TrimSpace(string(data)), "\n") {
			f := strings.SplitN(line, ":", 3)
			if len(f) == 3 && ((c.v2 && f[0] == "0") || (!c.v2 && slices.Contains(strings.Split(f[1], ","), "cpuacct"))) {
				c.origin = filepath.Join(c.root, f[2])
			}
		}
	}
	c.dir = filepath.Join(c.root, "caddy-spawn-bench-"+id)
	if err := os.Mkdir(c.dir, 0o755); err != nil {
		progress("cgroup CPU accounting: %v; CPU from /proc/stat only", err)
		return nil
	}
	if err := os.WriteFile(filepath.Join(c.dir, "cgroup.procs"), []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil { //nolint:gosec // G306: a cgroup file
		_ = os.Remove(c.dir)
		progress("cgroup CPU accounting: %v; CPU from /proc/stat only", err)
		return nil
	}
	return c
}

// usage is the CPU time of our cgroup and of the containers' namespace
// cgroup (absent: 0).
func (c *cgroupCPU) usage() (time.Duration, error) {
	ours, err := c.read(c.dir)
	if err != nil {
		return 0, err
	}
	ns, err := c.read(filepath.Join(c.root, nsCaddy))
	if errors.Is(err, os.ErrNotExist) {
		err = nil
	}
	return ours + ns, err
}

func (c *cgroupCPU) read(dir string) (time.Duration, error) {
	if !c.v2 {
		data, err := os.ReadFile(filepath.Join(dir, "cpuacct.usage"))
		if err != nil {
			return 0, err
		}
		ns, err := strconv.ParseInt(strings.TrimSpace(string(data)), 10, 64)
		return time.Duration(ns), err
	}
	data, err := os.ReadFile(filepath.Join(dir, "cpu.stat"))
	if err != nil {
		return 0, err
	}
	for line := range strings.SplitSeq(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "usage_usec "); ok {
			us, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			return time.Duration(us) * time.Microsecond, err
		}
	}
	return 0, fmt.Errorf("no usage_usec in %s/cpu.stat", dir)
}

// close moves this process back and removes our cgroup (every process the
// bench started has exited by then).
func (c *cgroupCPU) close() {
	if c == nil {
		return
	}
	_ = os.WriteFile(filepath.Join(c.origin, "cgroup.procs"), []byte(strconv.Itoa(os.Getpid())), 0o644) //nolint:gosec // G306: a cgroup file
	deadline := time.Now().Add(5 * time.Second)
	for os.Remove(c.dir) != nil && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if _, err := os.Stat(c.dir); err == nil {
		data, _ := os.ReadFile(filepath.Join(c.dir, "cgroup.procs"))
		progress("could not remove %s; processes in it: %q", c.dir, data)
	}
}

// stealPercent is the share of all CPUs' time over u's window that the
// hypervisor stole.
func stealPercent(u cpuUsed) float64 {
	total := u.wall.Seconds() * 1000 * float64(runtime.NumCPU())
	if total <= 0 {
		return 0
	}
	return round(100 * u.steal / total)
}
