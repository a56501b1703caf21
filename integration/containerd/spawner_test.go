//go:build integration

package containerd

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/opencontainers/runtime-spec/specs-go"

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
	ctx := nsCtx(t)
	c, err := env.client.LoadContainer(ctx, inst.ID)
	if err != nil {
		t.Fatalf("LoadContainer(%s): %v", inst.ID, err)
	}
	spec, err := c.Spec(ctx)
	if err != nil {
		t.Fatalf("Spec(%s): %v", inst.ID, err)
	}

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

	if spec.Linux == nil || spec.Linux.Resources == nil {
		t.Fatal("spec has no Linux resources")
	}
	r := spec.Linux.Resources
	if r.Pids == nil || r.Pids.Limit == nil || *r.Pids.Limit != spawner.DefaultPids {
		t.Errorf("pids limit = %+v, want %d", r.Pids, spawner.DefaultPids)
	}
	if r.Memory == nil || r.Memory.Limit == nil || *r.Memory.Limit != spawner.DefaultMemoryBytes {
		t.Errorf("memory limit = %+v, want %d", r.Memory, spawner.DefaultMemoryBytes)
	}

	var initMount *specs.Mount
	for i, m := range spec.Mounts {
		if m.Destination == spawner.InitPath {
			initMount = &spec.Mounts[i]
		}
	}
	switch {
	case initMount == nil:
		t.Errorf("no mount at %s", spawner.InitPath)
	default:
		if initMount.Source != env.initPath || !slices.Contains(initMount.Options, "ro") ||
			!(slices.Contains(initMount.Options, "bind") || slices.Contains(initMount.Options, "rbind")) {
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
