package spawner

import (
	"context"
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
	"github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/containers"
	"github.com/containerd/typeurl/v2"

	"github.com/caddy-spawn/caddy-spawn/snapshots"
)

// fakeImage is a client.Image whose layer chain is known; other methods
// are not called by the template code (the embedded nil interface panics
// if they are).
type fakeImage struct {
	client.Image
	diffIDs []digest.Digest
	calls   int
}

func (f *fakeImage) Name() string { return "localhost/fake:latest" }

func (f *fakeImage) RootFS(context.Context) ([]digest.Digest, error) {
	f.calls++
	return f.diffIDs, nil
}

// fakeContainer is a client.Container whose record (with its spec) is known.
type fakeContainer struct {
	client.Container
	rec containers.Container
}

func (f fakeContainer) ID() string { return f.rec.ID }

func (f fakeContainer) Info(context.Context, ...client.InfoOpts) (containers.Container, error) {
	return f.rec, nil
}

func specRecord(t *testing.T, id, cgroup string) containers.Container {
	t.Helper()
	spec := &specs.Spec{
		Version:  "1.2.0",
		Hostname: "fn",
		Process:  &specs.Process{Args: []string{"/.spawn/init", "/hello"}, Env: []string{"A=1"}},
		Linux: &specs.Linux{
			CgroupsPath: cgroup,
			Seccomp:     &specs.LinuxSeccomp{DefaultAction: specs.ActErrno},
		},
	}
	a, err := typeurl.MarshalAny(spec)
	if err != nil {
		t.Fatal(err)
	}
	return containers.Container{ID: id, Spec: &anypb.Any{TypeUrl: a.GetTypeUrl(), Value: a.GetValue()}}
}

// TestTemplateFromFirstContainer: the template taken from a function's first
// container gives every later container the same spec but for its cgroup,
// and the image's layers without asking the content store again.
func TestTemplateFromFirstContainer(t *testing.T) {
	img := &fakeImage{diffIDs: []digest.Digest{"sha256:aa", "sha256:bb"}}
	fn := &Function{Name: "fn", Image: &snapshots.Ready{Image: img}}
	s := &Spawner{}
	if tmpl, known := s.template(fn); tmpl != nil || known {
		t.Fatal("template before the first container")
	}
	first := specRecord(t, "c1", "/ns/c1")
	if err := s.learnTemplate(context.Background(), fn, fakeContainer{rec: first}, "/ns/c1"); err != nil {
		t.Fatal(err)
	}
	tmpl, _ := s.template(fn)
	if tmpl == nil {
		t.Fatal("no template after the first container")
	}

	var c containers.Container
	if err := tmpl.withSpec("/ns/c2")(context.Background(), nil, &c); err != nil {
		t.Fatal(err)
	}
	if c.Spec.GetTypeUrl() != first.Spec.GetTypeUrl() {
		t.Errorf("type URL %q, want %q", c.Spec.GetTypeUrl(), first.Spec.GetTypeUrl())
	}
	var got, want specs.Spec
	if err := json.Unmarshal(c.Spec.GetValue(), &got); err != nil {
		t.Fatalf("templated spec is not JSON: %v\n%s", err, c.Spec.GetValue())
	}
	if err := json.Unmarshal(first.Spec.GetValue(), &want); err != nil {
		t.Fatal(err)
	}
	if got.Linux.CgroupsPath != "/ns/c2" {
		t.Errorf("cgroupsPath %q, want /ns/c2", got.Linux.CgroupsPath)
	}
	got.Linux.CgroupsPath = want.Linux.CgroupsPath
	if !reflect.DeepEqual(got, want) {
		t.Errorf("templated spec differs beyond the cgroup:\n got %+v\nwant %+v", got, want)
	}

	// A cgroup path that needs escaping stays valid JSON.
	if err := tmpl.withSpec(`/ns/"odd"`)(context.Background(), nil, &c); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(c.Spec.GetValue(), &got); err != nil || got.Linux.CgroupsPath != `/ns/"odd"` {
		t.Errorf("escaped cgroup: %v, %q", err, got.Linux.CgroupsPath)
	}

	calls := img.calls
	ids, err := tmpl.image(img).RootFS(context.Background())
	if err != nil || !reflect.DeepEqual(ids, img.diffIDs) {
		t.Errorf("RootFS = %v, %v; want %v", ids, err, img.diffIDs)
	}
	if img.calls != calls {
		t.Error("the template's image asked the real image for its layers again")
	}
	if tmpl.image(img).Name() != img.Name() {
		t.Error("the template's image has another name")
	}
}

// TestTemplateRefusesAmbiguousSpec: a spec whose cgroup path is missing or
// appears more than once can't be templated safely.
func TestTemplateRefusesAmbiguousSpec(t *testing.T) {
	img := &fakeImage{}
	fn := &Function{Name: "fn", Image: &snapshots.Ready{Image: img}}
	for _, tc := range []struct {
		name   string
		rec    containers.Container
		cgroup string
	}{
		{"missing", specRecord(t, "c1", "/ns/c1"), "/ns/other"},
		{"twice", func() containers.Container {
			r := specRecord(t, "c1", "/ns/c1")
			v := strings.Replace(string(r.Spec.GetValue()), `"hostname":"fn"`, `"hostname":"/ns/c1"`, 1)
			r.Spec = &anypb.Any{TypeUrl: r.Spec.GetTypeUrl(), Value: []byte(v)}
			return r
		}(), "/ns/c1"},
		{"no spec", containers.Container{ID: "c1"}, "/ns/c1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := &Spawner{}
			if err := s.learnTemplate(context.Background(), fn, fakeContainer{rec: tc.rec}, tc.cgroup); err == nil {
				t.Fatal("learnTemplate succeeded")
			}
			if tmpl, known := s.template(fn); tmpl != nil || !known {
				t.Fatalf("after a failure: template %v, known %v; want none, known (no retry per container)", tmpl, known)
			}
		})
	}
}
