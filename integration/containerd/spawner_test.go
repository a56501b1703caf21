//go:build integration

package containerd

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/opencontainers/runtime-spec/specs-go"

	"github.com/containerd/containerd/v2/pkg/oci"

	"github.com/caddy-spawn/caddy-spawn/internal/imagebuild"
	"github.com/caddy-spawn/caddy-spawn/spawner"
)

func TestRoundTrip(t *testing.T) {
	s := newSpawner(t, "")
	inst := create(t, s, testfn(t, "cat"))

	body := make([]byte, 1<<20)
	_, _ = rand.Read(body)
	res := serve(t, inst, []string{"REQUEST_METHOD=POST"}, body)

	const head = "Content-Type: application/octet-stream\n\n"
	if !bytes.HasPrefix(res.stdout, []byte(head)) {
		t.Fatalf("stdout starts %q, want header %q (stderr %q)", prefix(res.stdout, 80), head, res.stderr)
	}
	if got := res.stdout[len(head):]; !bytes.Equal(got, body) {
		t.Errorf("echoed body: %d bytes, want the %d bytes sent (equal: false)", len(got), len(body))
	}
	if res.status.Code != 0 {
		t.Errorf("exit code = %d, want 0 (stderr %q)", res.status.Code, res.stderr)
	}
	if res.status.ExitedAt.IsZero() {
		t.Error("ExitedAt is zero")
	}
}

func TestEnvMerge(t *testing.T) {
	s := newSpawner(t, "")
	fn := testfn(t, "env")
	fn.Env = []string{"ROUTE_VAR=1"}
	inst := create(t, s, fn)

	res := serve(t, inst, []string{"REQUEST_METHOD=POST", "FN_IMAGE_ENV=overridden-by-frame"}, nil)
	if res.status.Code != 0 {
		t.Fatalf("exit code = %d, stderr %q", res.status.Code, res.stderr)
	}
	head, rest, ok := strings.Cut(string(res.stdout), "\n\n")
	if !ok || head != "Content-Type: text/plain" {
		t.Fatalf("stdout %q: want a text/plain CGI header", res.stdout)
	}
	lines := strings.Split(strings.TrimSuffix(rest, "\n"), "\n")
	for _, want := range []string{
		"REQUEST_METHOD=POST",              // from the frame
		"ROUTE_VAR=1",                      // from the route
		"FN_IMAGE_ENV=overridden-by-frame", // the frame wins over the image
		imagebuild.DefaultPath,             // the image's PATH survives
	} {
		if !slices.Contains(lines, want) {
			t.Errorf("environment lacks %q; got:\n%s", want, rest)
		}
	}
	// One value per key: the frame replaced the image's, not appended.
	if n := countPrefix(lines, "FN_IMAGE_ENV="); n != 1 {
		t.Errorf("FN_IMAGE_ENV appears %d times, want 1:\n%s", n, rest)
	}
}

// TestBeginFrozen: a claimed pooled container is still frozen when its
// request begins. Begin must put the frame in first and then thaw, also
// when the frame is larger than what a frozen reader's pipe is sure to
// take (it writes the rest after the thaw).
func TestBeginFrozen(t *testing.T) {
	s := newSpawner(t, "")
	for _, size := range []int{10, 20 << 10} {
		inst := create(t, s, testfn(t, "env"))
		if err := inst.Pause(); err != nil {
			t.Fatalf("Pause: %v", err)
		}
		big := "BIG=" + strings.Repeat("x", size)
		res := serve(t, inst, []string{"REQUEST_METHOD=GET", big}, nil)
		if res.status.Code != 0 {
			t.Fatalf("frame of %d bytes: exit code %d, stderr %q", size, res.status.Code, res.stderr)
		}
		lines := strings.Split(string(res.stdout), "\n")
		if !slices.Contains(lines, "REQUEST_METHOD=GET") || !slices.Contains(lines, big) {
			t.Errorf("frame of %d bytes: the program's environment lacks the frame's entries; stdout has %d bytes", size, len(res.stdout))
		}
	}
}

func TestExitCode(t *testing.T) {
	s := newSpawner(t, "")
	inst := create(t, s, testfn(t, "exit", "7"))
	res := serve(t, inst, nil, nil)
	if res.status.Code != 7 {
		t.Errorf("exit code = %d, want 7", res.status.Code)
	}
	if !strings.Contains(string(res.stderr), "boom on stderr") {
		t.Errorf("stderr = %q, want it to contain %q", res.stderr, "boom on stderr")
	}
	if len(res.stdout) != 0 {
		t.Errorf("stdout = %q, want nothing", res.stdout)
	}
}

var pidLine = regexp.MustCompile(`pid=([0-9]+)`)

func TestFreshRootfs(t *testing.T) {
	s := newSpawner(t, "")
	fn := testfn(t, "marker")
	ids := map[string]bool{}
	for i := range 2 {
		inst := create(t, s, fn)
		if ids[inst.ID] {
			t.Fatalf("container ID %s reused", inst.ID)
		}
		ids[inst.ID] = true
		if !strings.HasPrefix(inst.ID, "caddy-spawn-"+fn.Name+"-") {
			t.Errorf("container ID %s, want prefix caddy-spawn-%s-", inst.ID, fn.Name)
		}
		res := serve(t, inst, nil, nil)
		// The program runs as a child of our init, which stays PID 1 of
		// the container's own PID namespace: a small PID, never a host one.
		got := pidLine.ReplaceAllString(string(res.stdout), "pid=N")
		want := fmt.Sprintf("Content-Type: text/plain\n\nseen-marker=false\npid=N\nhostname=%s\n", fn.Name)
		if m := pidLine.FindStringSubmatch(string(res.stdout)); m == nil || len(m[1]) > 3 || m[1] == "1" {
			t.Errorf("instance %d: pid line in %q: want a small PID other than 1 (init is 1)", i, res.stdout)
		}
		if got != want || res.status.Code != 0 {
			t.Errorf("instance %d (%s): stdout %q, exit %d; want %q, exit 0 (stderr %q)",
				i, inst.ID, res.stdout, res.status.Code, want, res.stderr)
		}
		// Tear down before the next one, as a request would.
		inst.Destroy(t.Context())
		assertGone(t, inst.ID)
	}
}

func TestSpecHardening(t *testing.T) {
	s := newSpawner(t, "")
	inst := create(t, s, testfn(t, "env"))
	spec := loadSpec(t, inst.ID)

	p := spec.Process
	if p == nil {
		t.Fatal("spec has no process")
	}
	if !p.NoNewPrivileges {
		t.Error("NoNewPrivileges is false")
	}
	if caps := p.Capabilities; caps != nil {
		for set, l := range map[string][]string{
			"bounding": caps.Bounding, "effective": caps.Effective, "permitted": caps.Permitted,
			"inheritable": caps.Inheritable, "ambient": caps.Ambient,
		} {
			if len(l) > 0 {
				t.Errorf("%s capabilities = %v, want none", set, l)
			}
		}
	}
	if want := []string{spawner.InitPath, "/testfn", "env"}; !slices.Equal(p.Args, want) {
		t.Errorf("Process.Args = %q, want %q (our init first)", p.Args, want)
	}
	if p.User.UID != 0 {
		t.Errorf("user %d, want the image's (root)", p.User.UID)
	}
	nofile := slices.IndexFunc(p.Rlimits, func(r specs.POSIXRlimit) bool { return r.Type == "RLIMIT_NOFILE" })
	if nofile < 0 || p.Rlimits[nofile].Soft != spawner.DefaultNofile || p.Rlimits[nofile].Hard != spawner.DefaultNofile {
		t.Errorf("rlimits %+v, want RLIMIT_NOFILE %d/%d", p.Rlimits, spawner.DefaultNofile, spawner.DefaultNofile)
	}
	core := slices.IndexFunc(p.Rlimits, func(r specs.POSIXRlimit) bool { return r.Type == "RLIMIT_CORE" })
	if core < 0 || p.Rlimits[core].Soft != 0 || p.Rlimits[core].Hard != 0 {
		t.Errorf("rlimits %+v, want RLIMIT_CORE 0/0", p.Rlimits)
	}
	if p.OOMScoreAdj == nil || *p.OOMScoreAdj != spawner.OOMScoreAdj {
		t.Errorf("oomScoreAdj %v, want %d", p.OOMScoreAdj, spawner.OOMScoreAdj)
	}

	if spec.Linux == nil || spec.Linux.Resources == nil {
		t.Fatal("spec has no Linux resources")
	}
	if sc := spec.Linux.Seccomp; sc == nil || sc.DefaultAction != specs.ActErrno || len(sc.Syscalls) == 0 {
		t.Errorf("seccomp = %+v, want containerd's default profile", sc)
	}
	for _, want := range []string{"/proc/kcore", "/proc/keys", "/sys/firmware"} {
		if !slices.Contains(spec.Linux.MaskedPaths, want) {
			t.Errorf("masked paths %q lack %s", spec.Linux.MaskedPaths, want)
		}
	}
	if !slices.Contains(spec.Linux.ReadonlyPaths, "/proc/sys") {
		t.Errorf("read-only paths %q lack /proc/sys", spec.Linux.ReadonlyPaths)
	}
	r := spec.Linux.Resources
	if r.Pids == nil || r.Pids.Limit == nil || *r.Pids.Limit != spawner.DefaultPids {
		t.Errorf("pids limit = %+v, want %d", r.Pids, spawner.DefaultPids)
	}
	if r.Memory == nil || r.Memory.Limit == nil || *r.Memory.Limit != spawner.DefaultMemoryBytes {
		t.Errorf("memory limit = %+v, want %d", r.Memory, spawner.DefaultMemoryBytes)
	} else if r.Memory.Swap == nil || *r.Memory.Swap != spawner.DefaultMemoryBytes {
		// This host has swap accounting (cgroup v1 memsw): no swap.
		t.Errorf("memory+swap limit = %v, want %d", r.Memory.Swap, spawner.DefaultMemoryBytes)
	}
	if r.CPU == nil || r.CPU.Quota == nil || r.CPU.Period == nil || *r.CPU.Quota != 100_000 || *r.CPU.Period != spawner.CPUPeriod {
		t.Errorf("cpu = %+v, want a quota of 100000 per 100000 us (1 CPU)", r.CPU)
	}
	if spec.Root == nil || spec.Root.Readonly {
		t.Errorf("root = %+v, want writable by default", spec.Root)
	}

	var initMount *specs.Mount
	for i, m := range spec.Mounts {
		if m.Destination == spawner.InitPath {
			initMount = &spec.Mounts[i]
		}
	}
	if initMount == nil {
		t.Errorf("no mount at %s", spawner.InitPath)
	} else {
		bind := slices.Contains(initMount.Options, "bind") || slices.Contains(initMount.Options, "rbind")
		if initMount.Source != env.initPath || !slices.Contains(initMount.Options, "ro") || !bind {
			t.Errorf("init mount = %+v, want a read-only bind of %s", *initMount, env.initPath)
		}
	}

	netns := false
	for _, ns := range spec.Linux.Namespaces {
		if ns.Type == specs.NetworkNamespace {
			netns = true
			if ns.Path != "" {
				t.Errorf("network namespace joins %s, want a fresh one", ns.Path)
			}
		}
	}
	if !netns {
		t.Error("no network namespace: the container would share the host's network")
	}

	// What runc made of it: the program runs confined.
	res := serve(t, create(t, s, testfn(t, "security")), nil, nil)
	for _, want := range []string{
		"NoNewPrivs: 1", "Seccomp: 2", // 2: filter mode
		"CapEff: 0000000000000000", "CapBnd: 0000000000000000", "CapPrm: 0000000000000000",
	} {
		if !strings.Contains(string(res.stdout), "\n"+want+"\n") {
			t.Errorf("the program's status lacks %q:\n%s (stderr %q)", want, res.stdout, res.stderr)
		}
	}

	t.Run("limits", func(t *testing.T) {
		fn := testfn(t, "rlimit")
		fn.CPUs, fn.Nofile, fn.MemoryBytes, fn.Pids = 0.25, 4096, 32<<20, 16
		inst := create(t, s, fn)
		r := loadSpec(t, inst.ID).Linux.Resources
		if *r.CPU.Quota != 25_000 || *r.Memory.Limit != 32<<20 || *r.Memory.Swap != 32<<20 || *r.Pids.Limit != 16 {
			t.Errorf("cpu quota %d, memory %d, memory+swap %d, pids %d; want 25000, %d, %d, 16",
				*r.CPU.Quota, *r.Memory.Limit, *r.Memory.Swap, *r.Pids.Limit, 32<<20, 32<<20)
		}
		// runc set them on the container's cgroup (read while the init
		// waits for its frame).
		for file, want := range cgroupLimits(env.ns + "/" + inst.ID) {
			b, err := os.ReadFile(file)
			if err != nil {
				t.Errorf("reading %s: %v", file, err)
				continue
			}
			if got := strings.TrimSpace(string(b)); got != want {
				t.Errorf("%s = %q, want %q", file, got, want)
			}
		}
		res := serve(t, inst, nil, nil)
		if !strings.HasSuffix(string(res.stdout), "\n\nnofile=4096/4096\n") {
			t.Errorf("stdout %q, want nofile=4096/4096 (stderr %q)", res.stdout, res.stderr)
		}
	})

	t.Run("read-only root as nobody", func(t *testing.T) {
		fn := testfn(t, "write", "/probe", "/tmp/probe")
		fn.ReadOnly = true
		fn.User = &spawner.User{UID: 65534, GID: 65534}
		inst := create(t, s, fn)
		spec := loadSpec(t, inst.ID)
		if !spec.Root.Readonly {
			t.Error("root is writable")
		}
		if u := spec.Process.User; u.UID != 65534 || u.GID != 65534 {
			t.Errorf("user %d:%d, want 65534:65534", u.UID, u.GID)
		}
		var tmp *specs.Mount
		for i, m := range spec.Mounts {
			if m.Destination == "/tmp" {
				tmp = &spec.Mounts[i]
			}
		}
		if tmp == nil || tmp.Type != "tmpfs" || !slices.Contains(tmp.Options, "size=67108864") {
			t.Errorf("/tmp mount %+v, want a 64 MiB tmpfs", tmp)
		}
		// Our init (read-only bind, mode 0555) still starts the program.
		res := serve(t, inst, nil, nil)
		out := string(res.stdout)
		if !strings.Contains(out, "/probe: error: open /probe: read-only file system") ||
			!strings.Contains(out, "/tmp/probe: ok") || res.status.Code != 0 {
			t.Errorf("stdout %q exit %d (stderr %q): want / read-only and /tmp writable", out, res.status.Code, res.stderr)
		}
		idfn := testfn(t, "id")
		idfn.ReadOnly, idfn.User = true, &spawner.User{UID: 65534, GID: 65534}
		res = serve(t, create(t, s, idfn), nil, nil)
		if want := "uid=65534 gid=65534 groups=[65534]\n"; !strings.HasSuffix(string(res.stdout), want) {
			t.Errorf("id: stdout %q, want it to end %q (stderr %q)", res.stdout, want, res.stderr)
		}
	})

	t.Run("host network", func(t *testing.T) {
		fn := testfn(t, "env")
		fn.HostNetwork = true
		spec := loadSpec(t, create(t, s, fn).ID)
		for _, ns := range spec.Linux.Namespaces {
			if ns.Type == specs.NetworkNamespace {
				t.Errorf("network namespace %+v with host network", ns)
			}
		}
		if spec.Linux.Seccomp == nil || !spec.Process.NoNewPrivileges {
			t.Error("host network dropped seccomp or no_new_privileges")
		}
	})
}

// cgroupLimits maps the cgroup files of container cgroup cg (relative to
// the hierarchy roots) to the values TestSpecHardening's "limits" case must
// leave there: a quarter CPU, 32 MiB without swap, 16 pids.
func cgroupLimits(cg string) map[string]string {
	const root = "/sys/fs/cgroup/"
	if _, err := os.Stat(root + "cgroup.controllers"); err == nil { // v2
		return map[string]string{
			root + cg + "/cpu.max":         "25000 100000",
			root + cg + "/memory.max":      "33554432",
			root + cg + "/memory.swap.max": "0",
			root + cg + "/pids.max":        "16",
		}
	}
	return map[string]string{
		root + "cpu/" + cg + "/cpu.cfs_quota_us":               "25000",
		root + "cpu/" + cg + "/cpu.cfs_period_us":              "100000",
		root + "memory/" + cg + "/memory.limit_in_bytes":       "33554432",
		root + "memory/" + cg + "/memory.memsw.limit_in_bytes": "33554432",
		root + "pids/" + cg + "/pids.max":                      "16",
	}
}

// loadSpec returns the OCI spec containerd stored for container id.
func loadSpec(t *testing.T, id string) *oci.Spec {
	t.Helper()
	ctx := nsCtx(t)
	c, err := env.client.LoadContainer(ctx, id)
	if err != nil {
		t.Fatalf("LoadContainer(%s): %v", id, err)
	}
	spec, err := c.Spec(ctx)
	if err != nil {
		t.Fatalf("Spec(%s): %v", id, err)
	}
	return spec
}

func TestLabels(t *testing.T) {
	s := newSpawner(t, "")
	fn := testfn(t, "env")
	inst := create(t, s, fn)
	ctx := nsCtx(t)
	c := assertPresent(t, inst.ID)
	want := map[string]string{
		spawner.LabelManaged: "true",
		spawner.LabelOwner:   env.owner,
		spawner.LabelRoute:   fn.Name,
		spawner.LabelImage:   env.testfn.Digest,
		spawner.LabelPool:    fn.Key,
	}
	labels, err := c.Labels(ctx)
	if err != nil {
		t.Fatalf("labels of %s: %v", inst.ID, err)
	}
	info, err := env.client.SnapshotService(snapshotter).Stat(ctx, inst.ID+"-rootfs")
	if err != nil {
		t.Fatalf("snapshot of %s: %v", inst.ID, err)
	}
	for what, got := range map[string]map[string]string{"container": labels, "snapshot": info.Labels} {
		for k, v := range want {
			if got[k] != v {
				t.Errorf("%s label %s = %q, want %q", what, k, got[k], v)
			}
		}
		if got[spawner.LabelCreated] == "" {
			t.Errorf("%s has no %s label", what, spawner.LabelCreated)
		}
	}
}

func prefix(b []byte, n int) []byte {
	if len(b) > n {
		return b[:n]
	}
	return b
}

func countPrefix(lines []string, p string) int {
	n := 0
	for _, l := range lines {
		if strings.HasPrefix(l, p) {
			n++
		}
	}
	return n
}
