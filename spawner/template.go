package spawner

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"sync"

	"github.com/opencontainers/go-digest"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/containers"
	"github.com/containerd/errdefs"
)

// maxTemplates bounds the template cache; reloads make new Functions.
const maxTemplates = 256

// specTemplate is what every container of one Function shares, taken from
// its first container instead of worked out again for each: the spec is the
// same but for the cgroup path, and the encoded OCI spec (reading the image's
// config from containerd's content store, building the seccomp profile and
// encoding ~30 KB of JSON each time cost both us and containerd several
// round trips) and the image's layer chain (its diff IDs) the writable
// snapshot is prepared on.
type specTemplate struct {
	typeURL       string
	before, after []byte // the JSON spec around the quoted cgroup path
	diffIDs       []digest.Digest
}

// templates caches the specTemplate of each Function in use. A Function is
// immutable once in use, so its pointer is its identity.
type templates struct {
	mu sync.Mutex
	m  map[*Function]*specTemplate
}

// template returns fn's template, or nil before its first container or if
// its spec could not be templated (then known is true).
func (s *Spawner) template(fn *Function) (t *specTemplate, known bool) {
	s.tmpl.mu.Lock()
	defer s.tmpl.mu.Unlock()
	t, known = s.tmpl.m[fn]
	return t, known
}

func (s *Spawner) keepTemplate(fn *Function, t *specTemplate) {
	s.tmpl.mu.Lock()
	defer s.tmpl.mu.Unlock()
	if s.tmpl.m == nil || len(s.tmpl.m) >= maxTemplates {
		// Functions of old configs are not used again: start afresh
		// rather than keep them forever.
		s.tmpl.m = map[*Function]*specTemplate{}
	}
	s.tmpl.m[fn] = t
}

// learnTemplate makes fn's template from its first container, whose spec
// was generated in full, with cgroup as its cgroup path. When that fails,
// fn is remembered as having none: its specs are generated per container.
func (s *Spawner) learnTemplate(ctx context.Context, fn *Function, c client.Container, cgroup string) error {
	t, err := makeTemplate(ctx, fn, c, cgroup)
	if err != nil && (errdefs.IsUnavailable(err) || isUnavailable(err)) {
		return err // try again with the next container
	}
	s.keepTemplate(fn, t)
	return err
}

func makeTemplate(ctx context.Context, fn *Function, c client.Container, cgroup string) (*specTemplate, error) {
	info, err := c.Info(ctx, client.WithoutRefreshedMetadata)
	if err != nil {
		return nil, err
	}
	if info.Spec == nil {
		return nil, fmt.Errorf("container %s has no spec", c.ID())
	}
	quoted, err := json.Marshal(cgroup)
	if err != nil {
		return nil, err
	}
	before, after, ok := bytes.Cut(info.Spec.GetValue(), quoted)
	if !ok || bytes.Contains(after, quoted) {
		return nil, fmt.Errorf("spec of %s: its cgroup path is not there exactly once", c.ID())
	}
	diffIDs, err := fn.Image.Image.RootFS(ctx)
	if err != nil {
		return nil, fmt.Errorf("reading layers of %s: %w", fn.Image.Image.Name(), err)
	}
	t := &specTemplate{
		typeURL: info.Spec.GetTypeUrl(), diffIDs: diffIDs,
		before: bytes.Clone(before), after: bytes.Clone(after),
	}
	return t, nil
}

// withSpec gives a new container the template's spec with its own cgroup.
func (t *specTemplate) withSpec(cgroup string) client.NewContainerOpts {
	return func(_ context.Context, _ *client.Client, c *containers.Container) error {
		q, err := json.Marshal(cgroup)
		if err != nil {
			return err
		}
		v := make([]byte, 0, len(t.before)+len(q)+len(t.after))
		v = append(append(append(v, t.before...), q...), t.after...)
		c.Spec = &anypb.Any{TypeUrl: t.typeURL, Value: v}
		return nil
	}
}

// image is the function's image with its layer chain already known, so
// preparing a writable snapshot does not read it from the content store.
func (t *specTemplate) image(img client.Image) client.Image {
	return rootfsImage{Image: img, diffIDs: t.diffIDs}
}

type rootfsImage struct {
	client.Image
	diffIDs []digest.Digest
}

func (i rootfsImage) RootFS(context.Context) ([]digest.Digest, error) { return i.diffIDs, nil }
