//go:build vm

// Package vm runs the end-to-end smoke cases on a pure cgroup v2 host: a
// Debian cloud kernel booted under qemu (KVM when it boots, software
// emulation otherwise) on an initramfs made of our built binaries —
// Caddy, the pinned containerd, its runc shim and runc, Debian's crun and
// busybox — and the e2e test binary, compiled static. The guest's init
// (testdata/init) mounts only the cgroup2 hierarchy, runs the cases once
// per path (the default fast path, then the stock path) and reports on a
// second serial port; this test asserts that every case ran and passed,
// and from Caddy's own logs that each ran on the path it was meant to.
//
// `make test-vm` runs it (build tag vm) with SPAWN_CADDY, SPAWN_IMAGES,
// SPAWN_VM_KERNEL (the unpacked kernel package: boot/vmlinuz-*,
// lib/modules/*) and SPAWN_VM_WORK (where the image, the console log and
// the results are written; kept for inspection), with containerd,
// containerd-shim-runc-v2, ctr, runc, crun, busybox and qemu-system-x86_64
// in PATH. Missing pieces fail the test: it is never skipped.
package vm

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

// smokeCases are the e2e tests run in the guest: hello; a chunked 20 MiB
// echo; pool single use through the v2 freezer; timeout → 504 with the
// container gone; OOM under the memory controller; SIGKILL of Caddy, then
// a restart that sweeps everything.
var smokeCases = []string{
	"TestHello",
	"TestChunkedRoundTrip",
	"TestPoolSingleUse",
	"TestTimeout",
	"TestMemoryLimit",
	"TestCrashRecovery",
}

const (
	// bootMarker is the init's first console line: the kernel booted and
	// ran our init.
	bootMarker = "caddy-spawn-vm: init started"
	// kvmProbe bounds the wait for bootMarker under KVM; where KVM hangs
	// at boot the test falls back to software emulation after it.
	kvmProbe = 20 * time.Second
	// vmTimeout bounds the whole guest run, after which qemu is killed.
	vmTimeout = 25 * time.Minute
	// memoryMiB and cpus size the guest.
	memoryMiB = 3072
	cpus      = 2
)

func TestVMSmoke(t *testing.T) {
	in := prerequisites(t)
	start := time.Now()

	e2e := filepath.Join(in.work, "e2e.test")
	build := exec.Command("go", "test", "-c", "-tags", "integration", "-o", e2e, "../e2e")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building the e2e test binary: %v\n%s", err, out)
	}
	image := filepath.Join(in.work, "initramfs.cpio")
	modes := strings.Fields(envOr("SPAWN_VM_MODES", "fast"))
	if err := buildImage(in, e2e, image, modes); err != nil {
		t.Fatalf("building the guest image: %v", err)
	}
	t.Logf("guest image %s built in %s", image, time.Since(start).Round(time.Second))

	results := filepath.Join(in.work, "results.txt")
	console := filepath.Join(in.work, "console.log")
	accel, err := boot(t, in, image, results, console)
	if err != nil {
		t.Fatalf("%v (console: %s)\n%s", err, console, tail(console, 8<<10))
	}
	t.Logf("guest (%s) finished; whole run %s; console %s, results %s",
		accel, time.Since(start).Round(time.Second), console, results)

	b, err := os.ReadFile(results)
	if err != nil {
		t.Fatal(err)
	}
	// The serial line ends lines with CR LF.
	b = bytes.ReplaceAll(b, []byte("\r\n"), []byte("\n"))
	checkHost(t, string(b))
	for _, mode := range modes {
		checkMode(t, string(b), mode)
	}
	if t.Failed() {
		t.Logf("results:\n%s\nconsole tail:\n%s", b, tail(console, 16<<10))
	}
}

// inputs are the host files the guest is made of.
type inputs struct {
	work, caddy, images, kernel, modules string
	bins                                 map[string]string // name → host path
}

func prerequisites(t *testing.T) inputs {
	t.Helper()
	in := inputs{bins: map[string]string{}}
	for _, v := range []struct {
		dst  *string
		name string
	}{{&in.caddy, "SPAWN_CADDY"}, {&in.images, "SPAWN_IMAGES"}, {&in.work, "SPAWN_VM_WORK"}} {
		if *v.dst = os.Getenv(v.name); *v.dst == "" {
			t.Fatalf("%s is not set: run `make test-vm` (this test is never skipped)", v.name)
		}
	}
	dir := os.Getenv("SPAWN_VM_KERNEL")
	kernels, _ := filepath.Glob(filepath.Join(dir, "boot", "vmlinuz-*"))
	modules, _ := filepath.Glob(filepath.Join(dir, "lib", "modules", "*", "kernel", "fs", "overlayfs", "overlay.ko"))
	if len(kernels) != 1 || len(modules) != 1 {
		t.Fatalf("SPAWN_VM_KERNEL=%q: want one unpacked kernel package (boot/vmlinuz-*, overlay.ko); found %v %v", dir, kernels, modules)
	}
	in.kernel, in.modules = kernels[0], modules[0]
	for _, name := range []string{"containerd", "containerd-shim-runc-v2", "ctr", "runc", "crun", "busybox", "qemu-system-x86_64", "go", "ldd"} {
		p, err := exec.LookPath(name)
		if err != nil {
			t.Fatalf("%s is not in PATH (`make test-vm` installs or builds it): %v", name, err)
		}
		in.bins[name] = p
	}
	if err := os.MkdirAll(in.work, 0o755); err != nil {
		t.Fatal(err)
	}
	abs, err := filepath.Abs(in.work)
	if err != nil {
		t.Fatal(err)
	}
	in.work = abs
	return in
}

// buildImage writes the guest's initramfs.
func buildImage(in inputs, e2e, image string, modes []string) error {
	r := newInitramfs()
	for _, d := range []string{"/proc", "/sys", "/dev", "/run", "/tmp", "/root", "/var/log", "/etc"} {
		r.dir(d)
	}
	init := filepath.Join("testdata", "init")
	b, err := os.ReadFile(init)
	if err != nil {
		return err
	}
	r.content("/init", 0o755, b)
	if err := r.busybox(in.bins["busybox"]); err != nil {
		return err
	}
	for _, name := range []string{"containerd", "containerd-shim-runc-v2", "ctr", "runc"} {
		if err := r.binary("/usr/local/bin/"+name, in.bins[name]); err != nil {
			return err
		}
	}
	if err := r.binary("/usr/bin/crun", in.bins["crun"]); err != nil {
		return err
	}
	if err := r.binary("/opt/caddy-spawn/caddy", in.caddy); err != nil {
		return err
	}
	if err := r.file("/opt/caddy-spawn/e2e.test", e2e); err != nil {
		return err
	}
	tars, _ := filepath.Glob(filepath.Join(in.images, "*.tar"))
	if len(tars) == 0 {
		return fmt.Errorf("no image archives in SPAWN_IMAGES=%s", in.images)
	}
	for _, tar := range tars {
		if err := r.file("/opt/caddy-spawn/images/"+filepath.Base(tar), tar); err != nil {
			return err
		}
	}
	_, rel, _ := strings.Cut(filepath.ToSlash(in.modules), "/lib/modules/")
	if err := r.file("/lib/modules/"+rel, in.modules); err != nil {
		return err
	}
	r.content("/etc/hosts", 0o644, []byte("127.0.0.1\tlocalhost\n::1\tlocalhost\n"))
	r.content("/etc/passwd", 0o644, []byte("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"))
	r.content("/etc/group", 0o644, []byte("root:x:0:\nnogroup:x:65534:\n"))
	r.content("/etc/caddy-spawn-vm.conf", 0o644, []byte(fmt.Sprintf(
		"VM_MODES='%s'\nVM_RUN='^(%s)$'\nVM_TIMEOUT_SCALE=%s\nVM_TEST_TIMEOUT=%s\n",
		strings.Join(modes, " "), strings.Join(smokeCases, "|"), envOr("SPAWN_VM_TIMEOUT_SCALE", "8"), "20m")))

	f, err := os.Create(image)
	if err != nil {
		return err
	}
	if err := r.write(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// boot runs the guest to its end: under KVM if it boots within kvmProbe,
// else under TCG. It returns the accelerator used.
func boot(t *testing.T, in inputs, image, results, console string) (string, error) {
	t.Helper()
	if f, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0); err == nil {
		f.Close()
		err := runQEMU(t, in, image, results, console, "kvm", kvmProbe)
		if err == nil {
			return "kvm", nil
		}
		if !errors.Is(err, errNoBoot) {
			return "kvm", err
		}
		t.Logf("KVM: %v; falling back to software emulation (TCG)", err)
	}
	return "tcg", runQEMU(t, in, image, results, console, "tcg", 0)
}

var errNoBoot = errors.New("the guest did not boot")

// runQEMU runs qemu until the guest powers off. With probe > 0, a guest
// that has not printed bootMarker by then is killed and errNoBoot returned.
func runQEMU(t *testing.T, in inputs, image, results, console, accel string, probe time.Duration) error {
	t.Helper()
	cpu := "max"
	if accel == "kvm" {
		cpu = "host"
	}
	_ = os.Remove(results)
	ctx, cancel := context.WithTimeout(context.Background(), vmTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, in.bins["qemu-system-x86_64"],
		"-accel", accel, "-cpu", cpu, "-smp", fmt.Sprint(cpus), "-m", fmt.Sprint(memoryMiB),
		"-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
		"-serial", "stdio", "-serial", "file:"+results,
		"-kernel", in.kernel, "-initrd", image,
		"-append", "console=ttyS0 quiet panic=-1 oops=panic")
	cmd.Stdin = nil
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	cmd.Stderr = cmd.Stdout
	log, err := os.Create(console)
	if err != nil {
		return err
	}
	defer log.Close()
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting qemu: %w", err)
	}
	booted := make(chan struct{})
	var once sync.Once
	var lines sync.WaitGroup
	lines.Go(func() {
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			fmt.Fprintln(log, line)
			if strings.Contains(line, bootMarker) {
				once.Do(func() { close(booted) })
			}
			if msg, ok := strings.CutPrefix(line, "caddy-spawn-vm: "); ok {
				t.Logf("guest: %s", msg)
			}
		}
		_, _ = io.Copy(log, stdout)
	})
	if probe > 0 {
		select {
		case <-booted:
		case <-time.After(probe):
			_ = cmd.Process.Kill()
			lines.Wait()
			_ = cmd.Wait()
			return fmt.Errorf("%w under %s within %s", errNoBoot, accel, probe)
		}
	}
	lines.Wait()
	err = cmd.Wait()
	if ctx.Err() != nil {
		return fmt.Errorf("the guest did not finish within %s under %s: killed", vmTimeout, accel)
	}
	if err != nil {
		return fmt.Errorf("qemu: %w", err)
	}
	return nil
}

// checkHost asserts what kind of host the guest was: cgroup2 mounted at
// /sys/fs/cgroup and no cgroup v1 hierarchy, with the controllers the
// tests need.
func checkHost(t *testing.T, results string) {
	t.Helper()
	mounts := lineAfter(results, "caddy-spawn-vm: cgroup mounts: ")
	var v2 int
	for m := range strings.SplitSeq(mounts, ";") {
		f := strings.Fields(m)
		if len(f) < 3 {
			continue
		}
		switch f[2] {
		case "cgroup2":
			v2++
			if f[1] != "/sys/fs/cgroup" {
				t.Errorf("cgroup2 mounted at %s, want /sys/fs/cgroup only", f[1])
			}
		case "cgroup":
			t.Errorf("a cgroup v1 hierarchy is mounted in the guest: %q", m)
		}
	}
	if v2 != 1 {
		t.Errorf("guest cgroup mounts %q: want exactly one cgroup2", mounts)
	}
	ctrls := strings.Fields(lineAfter(results, "caddy-spawn-vm: cgroup2 controllers: "))
	for _, c := range []string{"cpu", "memory", "pids"} {
		if !strings.Contains(" "+strings.Join(ctrls, " ")+" ", " "+c+" ") {
			t.Errorf("guest cgroup2 controllers %v lack %s", ctrls, c)
		}
	}
	t.Logf("guest: kernel %s; cgroup2 controllers %v", lineAfter(results, "caddy-spawn-vm: kernel "), ctrls)
}

// checkMode asserts that the run of mode ("fast" or "stock") exited 0,
// that every smoke case ran and passed (no skip, no failure), and that each
// case's Caddy logs show the path: the task server started on every one
// (fast) or on none (stock).
func checkMode(t *testing.T, results, mode string) {
	t.Helper()
	begin := "caddy-spawn-vm: begin " + mode + "\n"
	_, section, found := strings.Cut(results, begin)
	if !found {
		t.Errorf("%s path: the guest never started its run", mode)
		return
	}
	end := regexp.MustCompile(`caddy-spawn-vm: end ` + mode + ` exit (\d+)\n`).FindStringSubmatchIndex(section)
	if end == nil {
		t.Errorf("%s path: the run did not finish (no end marker)", mode)
		return
	}
	out, code := section[:end[0]], section[end[2]:end[3]]
	if code != "0" {
		t.Errorf("%s path: the e2e binary exited %s", mode, code)
	}
	for _, bad := range []string{"--- FAIL", "--- SKIP", "panic:"} {
		if strings.Contains(out, bad) {
			t.Errorf("%s path: the output has %q", mode, bad)
		}
	}
	for _, name := range smokeCases {
		m := regexp.MustCompile(`(?m)^--- PASS: ` + name + ` \(([0-9.]+s)\)$`).FindStringSubmatch(out)
		if m == nil {
			t.Errorf("%s path: %s did not pass (or did not run)", mode, name)
			continue
		}
		t.Logf("%s path: %s passed in %s", mode, name, m[1])
		logs := regexp.MustCompile(`(?m)^caddy-spawn-vm: log `+mode+` `+name+`-\S+ task_server=(\d+)$`).FindAllStringSubmatch(section, -1)
		if len(logs) == 0 {
			t.Errorf("%s path: no Caddy log of %s", mode, name)
		}
		for _, l := range logs {
			started := l[1] != "0"
			if started != (mode == "fast") {
				t.Errorf("%s path: a Caddy log of %s says the task server started %s times: %s", mode, name, l[1], l[0])
			}
		}
	}
}

// lineAfter returns the rest of the first line starting with prefix.
func lineAfter(s, prefix string) string {
	for line := range strings.SplitSeq(s, "\n") {
		if rest, ok := strings.CutPrefix(line, prefix); ok {
			return rest
		}
	}
	return ""
}

// tail returns the last n bytes of file.
func tail(file string, n int64) string {
	f, err := os.Open(file)
	if err != nil {
		return err.Error()
	}
	defer f.Close()
	if st, err := f.Stat(); err == nil && st.Size() > n {
		_, _ = f.Seek(-n, io.SeekEnd)
	}
	b, _ := io.ReadAll(f)
	return string(b)
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}
