package taskserver

import (
	"encoding/base64"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/opencontainers/runtime-spec/specs-go"
	"go.uber.org/zap"
)

// newTestServer is a Server with no crun, no reaper loop and no events:
// enough for what does not exec crun.
func newTestServer(t *testing.T) *Server {
	t.Helper()
	return &Server{
		crun:   &crun{binary: filepath.Join(t.TempDir(), "no-crun"), root: t.TempDir(), reaper: newReaper()},
		reaper: newReaper(),
		logger: zap.NewNop(),
		tasks:  map[string]*task{},
		stop:   make(chan struct{}),
	}
}

func seccompProfile(names ...string) *specs.LinuxSeccomp {
	return &specs.LinuxSeccomp{
		DefaultAction: specs.ActErrno,
		Architectures: []specs.Arch{specs.ArchX86_64},
		Syscalls:      []specs.LinuxSyscall{{Names: names, Action: specs.ActAllow}},
	}
}

// writeBundle makes a bundle directory holding spec as config.json.
func writeBundle(t *testing.T, spec *specs.Spec) string {
	t.Helper()
	dir := t.TempDir()
	b, err := json.Marshal(spec)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "config.json"), b, 0o600); err != nil {
		t.Fatal(err)
	}
	return dir
}

func readBundle(t *testing.T, dir string) *specs.Spec {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	var spec specs.Spec
	if err := json.Unmarshal(b, &spec); err != nil {
		t.Fatal(err)
	}
	return &spec
}

func newSpec(cgroup string, sc *specs.LinuxSeccomp) *specs.Spec {
	return &specs.Spec{
		Version:     "1.2.1",
		Process:     &specs.Process{Args: []string{"/hello"}},
		Annotations: map[string]string{"keep": "me"},
		Linux:       &specs.Linux{CgroupsPath: cgroup, Seccomp: sc},
	}
}

// TestPrepareSpecSeccompCache follows one profile through its first
// container (compiled by crun, learned from crun's state) and the next
// ones (given the compiled filter).
func TestPrepareSpecSeccompCache(t *testing.T) {
	t.Setenv("TS_NOCACHE", "")
	s := newTestServer(t)
	profile := seccompProfile("read", "write", "exit_group")

	// First container: nothing cached yet.
	t1 := &task{id: "c1"}
	b1 := writeBundle(t, newSpec("/spawn/c1", profile))
	key1, cached, ok, err := s.prepareSpec(t1, b1)
	if err != nil {
		t.Fatal(err)
	}
	if !ok || cached {
		t.Fatalf("first container: ok=%v cached=%v, want ok, not cached", ok, cached)
	}
	spec := readBundle(t, b1)
	if spec.Version != "1.0.2" {
		t.Errorf("ociVersion = %q, want 1.0.2", spec.Version)
	}
	if _, has := spec.Annotations[annotationSeccompBPF]; has {
		t.Error("first container got a compiled filter it can't have")
	}
	if spec.Annotations["keep"] != "me" || len(spec.Process.Args) != 1 || spec.Linux.Seccomp == nil {
		t.Errorf("spec rewritten lossily: %+v", spec)
	}
	if t1.cgroup != "/spawn/c1" {
		t.Errorf("task cgroup = %q, want /spawn/c1", t1.cgroup)
	}

	// crun compiled it: its state holds seccomp.bpf.
	bpf := []byte{0x20, 0, 0, 0, 4, 0, 0, 0, 0x15, 0, 1, 0}
	if err := os.MkdirAll(filepath.Join(s.crun.root, "c1"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(s.crun.root, "c1", "seccomp.bpf"), bpf, 0o600); err != nil {
		t.Fatal(err)
	}
	s.learnSeccomp(key1, "c1")

	// Same profile: the compiled filter is handed to crun.
	t2 := &task{id: "c2"}
	b2 := writeBundle(t, newSpec("/spawn/c2", seccompProfile("read", "write", "exit_group")))
	key2, cached, ok, err := s.prepareSpec(t2, b2)
	if err != nil {
		t.Fatal(err)
	}
	if key2 != key1 || !ok || !cached {
		t.Fatalf("same profile: same key %v, ok=%v cached=%v; want same key, ok, cached", key2 == key1, ok, cached)
	}
	spec = readBundle(t, b2)
	if got, want := spec.Annotations[annotationSeccompBPF], base64.StdEncoding.EncodeToString(bpf); got != want {
		t.Errorf("%s = %q, want %q", annotationSeccompBPF, got, want)
	}
	if spec.Annotations["keep"] != "me" {
		t.Error("the spec's own annotations were lost")
	}
	if t2.cgroup != "/spawn/c2" {
		t.Errorf("task cgroup = %q, want /spawn/c2", t2.cgroup)
	}

	// Another profile is another key, not cached.
	t3 := &task{id: "c3"}
	b3 := writeBundle(t, newSpec("/spawn/c3", seccompProfile("read")))
	key3, cached, ok, err := s.prepareSpec(t3, b3)
	if err != nil {
		t.Fatal(err)
	}
	if key3 == key1 || !ok || cached {
		t.Errorf("other profile: same key %v, ok=%v cached=%v; want other key, ok, not cached", key3 == key1, ok, cached)
	}
	if _, has := readBundle(t, b3).Annotations[annotationSeccompBPF]; has {
		t.Error("other profile got the first profile's filter")
	}
}

func TestPrepareSpecWithoutSeccomp(t *testing.T) {
	tests := []struct {
		name       string
		spec       *specs.Spec
		wantCgroup string
	}{
		{name: "linux, no seccomp", spec: newSpec("/spawn/x", nil), wantCgroup: "/spawn/x"},
		{name: "no linux section", spec: &specs.Spec{Version: "1.2.1", Process: &specs.Process{Args: []string{"/x"}}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newTestServer(t)
			// Even with a filter cached, a spec without seccomp gets none.
			s.seccomp.put([32]byte{}, "AAAA")
			s.seccomp.put([32]byte{1}, "AAAA")
			tk := &task{id: "x"}
			dir := writeBundle(t, tc.spec)
			_, cached, ok, err := s.prepareSpec(tk, dir)
			if err != nil {
				t.Fatal(err)
			}
			if ok || cached {
				t.Errorf("ok=%v cached=%v, want neither", ok, cached)
			}
			spec := readBundle(t, dir)
			if _, has := spec.Annotations[annotationSeccompBPF]; has {
				t.Error("a spec without seccomp got a filter")
			}
			if spec.Version != "1.0.2" {
				t.Errorf("ociVersion = %q, want 1.0.2", spec.Version)
			}
			if tk.cgroup != tc.wantCgroup {
				t.Errorf("task cgroup = %q, want %q", tk.cgroup, tc.wantCgroup)
			}
		})
	}
}

func TestPrepareSpecErrors(t *testing.T) {
	tests := []struct {
		name   string
		config []byte // nil: no config.json
	}{
		{name: "no config.json"},
		{name: "not JSON", config: []byte("{")},
		{name: "wrong type", config: []byte(`{"ociVersion": 1}`)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if tc.config != nil {
				if err := os.WriteFile(filepath.Join(dir, "config.json"), tc.config, 0o600); err != nil {
					t.Fatal(err)
				}
			}
			if _, _, _, err := newTestServer(t).prepareSpec(&task{}, dir); err == nil {
				t.Error("no error")
			}
			if tc.config != nil {
				// A spec that can't be read is left as it was.
				if b, _ := os.ReadFile(filepath.Join(dir, "config.json")); string(b) != string(tc.config) {
					t.Errorf("config.json changed to %q", b)
				}
			}
		})
	}
}

func TestLearnSeccompIgnoresMissingOrEmptyFilter(t *testing.T) {
	s := newTestServer(t)
	if err := os.MkdirAll(filepath.Join(s.crun.root, "empty"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(s.crun.root, "empty", "seccomp.bpf"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	s.learnSeccomp([32]byte{1}, "missing")
	s.learnSeccomp([32]byte{2}, "empty")
	for _, k := range [][32]byte{{1}, {2}} {
		if b, ok := s.seccomp.get(k); ok {
			t.Errorf("key %x cached %q from no filter", k[0], b)
		}
	}
}
