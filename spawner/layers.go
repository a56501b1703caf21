package spawner

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/identity"
	"go.uber.org/zap"

	"github.com/containerd/containerd/v2/core/mount"
	ctrsnapshots "github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/errdefs"

	"github.com/caddy-spawn/caddy-spawn/spawner/taskserver"
)

// maxLayerViews bounds the views kept: past it, views no container uses
// are removed (a reload that replaced an image leaves its view unused).
const maxLayerViews = 32

// On the fast path, containers do not get a writable snapshot each: they
// share one read-only View of their image's unpacked layers, and the task
// server puts a fresh writable layer (a size-capped tmpfs) over it for each
// task. That saves containerd a snapshot Prepare and Remove, and the garbage
// collection that follows, for every request: the overlay snapshotter's
// directories and database writes, ~6 % of all CPU under load (measured).
// containerd still owns the view: it is a snapshot like any other, labelled
// as ours (LabelLayers), kept from garbage collection by a gc.root label,
// removed when the Spawner closes and swept after a crash like every
// snapshot of a stale owner.

// layerViews are the Spawner's shared views, one per image layer chain.
type layerViews struct {
	mu          sync.Mutex
	m           map[string]*layerView // by chain ID
	nonce       string                // in the keys: this Spawner's views are its own
	unsupported bool                  // the snapshotter's views are not layers we can write over
}

// layerView is one View snapshot and its mounts.
type layerView struct {
	key    string
	mounts []mount.Mount
	users  int // live instances on it
}

// acquireLayers returns the shared view of the layer chain diffIDs,
// making it on first use, and counts one more user of it.
func (s *Spawner) acquireLayers(ctx context.Context, diffIDs []digest.Digest) (*layerView, error) {
	chainID := identity.ChainID(diffIDs)
	chain := chainID.String()
	s.views.mu.Lock()
	defer s.views.mu.Unlock()
	if v, ok := s.views.m[chain]; ok {
		v.users++
		return v, nil
	}
	if s.views.m == nil {
		s.views.m = map[string]*layerView{}
	}
	if s.views.unsupported {
		return nil, errViewsUnsupported
	}
	if len(s.views.m) >= maxLayerViews {
		s.removeViewsLocked(ctx, false)
	}
	if s.views.nonce == "" {
		s.views.nonce = randHex(8)
	}
	// One key per Spawner and chain: another Spawner of the process (a
	// reload with other settings) or a restarted process makes its own.
	key := fmt.Sprintf("caddy-spawn-layers-%s-%s-%s", s.cfg.Owner, s.views.nonce, chainID.Encoded()[:16])
	now := time.Now().UTC().Format(time.RFC3339)
	sn := s.cfg.Client.SnapshotService(s.cfg.Snapshotter)
	mounts, err := sn.View(ctx, key, chain, ctrsnapshots.WithLabels(map[string]string{
		LabelManaged: "true", LabelOwner: s.cfg.Owner, LabelLayers: "true", LabelCreated: now,
		"containerd.io/gc.root": now,
	}))
	if errdefs.IsAlreadyExists(err) {
		mounts, err = sn.Mounts(ctx, key)
	}
	if err != nil {
		return nil, fmt.Errorf("viewing layers %s: %w", chain, err)
	}
	v := &layerView{key: key, mounts: mounts, users: 1}
	if !taskserver.IsLayerView(mounts) {
		// Not what the task server puts a writable layer over (another
		// snapshotter than overlayfs): containers keep their snapshots.
		_ = s.removeView(ctx, v)
		s.views.unsupported = true
		return nil, fmt.Errorf("%w: %s gives %+v", errViewsUnsupported, s.cfg.Snapshotter, mounts)
	}
	s.views.m[chain] = v
	return v, nil
}

// errViewsUnsupported: the snapshotter's views can't be shared this way.
var errViewsUnsupported = errors.New("layer views of this snapshotter can't be shared")

// releaseLayers counts one user less of v.
func (s *Spawner) releaseLayers(v *layerView) {
	s.views.mu.Lock()
	defer s.views.mu.Unlock()
	v.users--
}

// removeViewsLocked removes the views no live instance uses, or all of
// them (Close, once no container is left).
func (s *Spawner) removeViewsLocked(ctx context.Context, all bool) {
	for chain, v := range s.views.m {
		if v.users > 0 && !all {
			continue
		}
		if err := s.removeView(ctx, v); err == nil {
			delete(s.views.m, chain)
		}
	}
}

// removeViews removes every view, once no container is left (Close).
func (s *Spawner) removeViews(ctx context.Context) {
	s.views.mu.Lock()
	defer s.views.mu.Unlock()
	s.removeViewsLocked(ctx, true)
}

func (s *Spawner) removeView(ctx context.Context, v *layerView) error {
	err := s.cfg.Client.SnapshotService(s.cfg.Snapshotter).Remove(s.ctx(ctx), v.key)
	if err != nil && !errdefs.IsNotFound(err) {
		s.log.Warn("removing layer view; the next start sweeps it", zap.String("snapshot", v.key), zap.Error(err))
		return err
	}
	return nil
}
