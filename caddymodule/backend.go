package caddymodule

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/namespaces"

	"github.com/caddyserver/caddy/v2"

	"github.com/caddy-spawn/caddy-spawn/spawner"
)

// backends shares containerd connections (and managed daemons) across config
// reloads, keyed by socket address or managed root.
var backends = caddy.NewUsagePool()

// backend is a containerd connection, plus the daemon when it is managed.
type backend struct {
	address string
	client  *client.Client
	daemon  *spawner.Daemon
	fast    *spawner.FastPath // nil: containers run on the runc shim
	logger  *zap.Logger

	tmpfs []*stateMount // the state tmpfs mounts, unmounted at the end

	mu       sync.Mutex
	used     map[string]string // namespace → snapshotter, swept at the end
	spawners map[spawner.Config]*spawner.Spawner
}

// spawner returns the Spawner for cfg, shared by every config that uses
// the same settings, so that routes kept across reloads and the app agree.
func (b *backend) spawner(cfg spawner.Config) (*spawner.Spawner, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	key := cfg
	key.Logger = nil
	if s, ok := b.spawners[key]; ok {
		return s, nil
	}
	s, err := spawner.New(cfg)
	if err != nil {
		return nil, err
	}
	b.spawners[key] = s
	return s, nil
}

// use records a namespace and snapshotter to sweep when the backend goes.
func (b *backend) use(ns, snapshotter string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.used[ns] = snapshotter
}

// Destruct closes the connection and stops a managed daemon. Containers of
// live routes have been torn down by then.
func (b *backend) Destruct() error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// The last config using this containerd is gone: remove our containers
	// (pooled and any still serving), then sweep, so nothing of ours is left.
	b.mu.Lock()
	for _, s := range b.spawners {
		s.Close(ctx)
	}
	for ns, sn := range b.used {
		if _, err := spawner.Sweep(ctx, b.client, ns, sn, "", b.logger); err != nil {
			b.logger.Warn("sweeping at shutdown", zap.String("namespace", ns), zap.Error(err))
		}
		if b.fast != nil {
			if err := spawner.RemoveSandbox(namespaces.WithNamespace(ctx, ns), b.client); err != nil {
				b.logger.Warn("removing sandbox record", zap.String("namespace", ns), zap.Error(err))
			}
		}
	}
	b.mu.Unlock()
	if b.fast != nil {
		b.fast.Stop(ctx)
	}
	err := b.client.Close()
	if b.daemon != nil {
		_ = b.daemon.Stop(ctx)
	}
	b.unmountState()
	return err
}

// acquireBackend takes (or makes) the shared backend of the app's address
// or managed root and returns it with its key in backends.
func (a *App) acquireBackend() (*backend, string, error) {
	key := "address:" + a.Address
	if a.Address == "" {
		key = "managed:" + a.Managed.Root
	}
	val, _, err := backends.LoadOrNew(key, func() (caddy.Destructor, error) { return newBackend(a) })
	if err != nil {
		return nil, "", err
	}
	b := val.(*backend)
	b.use(a.Namespace, a.Snapshotter)
	return b, key, nil
}

// newBackend connects to the app's containerd, starting it first when it
// is managed.
func newBackend(a *App) (*backend, error) {
	b := &backend{
		address: a.Address, logger: a.logger,
		used: map[string]string{}, spawners: map[spawner.Config]*spawner.Spawner{},
	}
	mounts, err := a.mountStateTmpfs()
	if err != nil {
		return nil, err
	}
	b.tmpfs = mounts
	if a.Address == "" {
		d, err := spawner.StartDaemon(context.Background(), spawner.DaemonConfig{
			Binary:       a.Managed.Binary,
			Root:         a.Managed.Root,
			State:        a.Managed.State,
			LogLevel:     a.Managed.LogLevel,
			SyncMetadata: a.Managed.SyncMetadata,
		}, a.logger)
		if err != nil {
			b.unmountState()
			return nil, err
		}
		b.daemon = d
		b.address = d.Address()
	}
	c, err := client.New(b.address, client.WithDefaultNamespace(a.Namespace), client.WithTimeout(5*time.Second))
	if err != nil {
		if b.daemon != nil {
			_ = b.daemon.Stop(context.Background())
		}
		b.unmountState()
		return nil, fmt.Errorf("connecting to containerd at %s: %w", b.address, err)
	}
	b.client = c
	// Ask containerd what it is: one too old is refused now. One that is
	// down is asked again once it answers (prepare calls checkVersion).
	vctx, vcancel := context.WithTimeout(context.Background(), 5*time.Second)
	v, verr := spawner.QueryContainerdVersion(vctx, c)
	vcancel()
	switch {
	case verr == nil:
		if err := v.Supported(); err != nil {
			b.close()
			return nil, fmt.Errorf("containerd at %s: %w", b.address, err)
		}
		a.logger.Info("containerd connected", zap.String("address", b.address), zap.String("version", v.Raw))
	case !errors.Is(verr, spawner.ErrUnavailable):
		a.logger.Warn("containerd version not understood; assuming a supported release",
			zap.String("address", b.address), zap.Error(verr))
	}
	if a.FastPath != fastPathOff {
		if verr == nil && v.FastPathSupported() != nil {
			a.logger.Warn("fast path not available; containers run on containerd's runc shim",
				zap.String("runtime", a.Runtime), zap.Error(v.FastPathSupported()))
		} else {
			b.fast = a.startFastPath(b.address)
		}
	}
	return b, nil
}

// checkVersion asks containerd for its version again, as it may have been
// down when the backend connected, or replaced since: one too old, or one
// that cannot serve a running fast path, is an error that retrying does
// not mend.
func (b *backend) checkVersion(ctx context.Context) error {
	v, err := spawner.QueryContainerdVersion(ctx, b.client)
	if errors.Is(err, spawner.ErrUnavailable) {
		return err
	}
	if err != nil {
		return nil // not understood: assumed supported, as at connection
	}
	if err := v.Supported(); err != nil {
		return fmt.Errorf("containerd at %s: %w", b.address, err)
	}
	if b.fast != nil {
		if err := v.FastPathSupported(); err != nil {
			return fmt.Errorf("containerd at %s: %w; restart Caddy to run containers on the runc shim", b.address, err)
		}
	}
	return nil
}

// close closes the connection and stops a managed daemon, for a backend
// that never served.
func (b *backend) close() {
	_ = b.client.Close()
	if b.daemon != nil {
		_ = b.daemon.Stop(context.Background())
	}
	b.unmountState()
}

// startFastPath starts the task server for the containerd at address, or
// says why it can't and returns nil: containers then run on the runc shim.
func (a *App) startFastPath(address string) *spawner.FastPath {
	state := filepath.Join(a.RunDir, "task-server-"+shortHash(address))
	if a.Managed != nil {
		state = filepath.Join(a.Managed.State, "task-server")
	}
	// As long as the task server may take to serve (spawner's readyTimeout).
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	fp, err := spawner.StartFastPath(ctx, spawner.FastPathConfig{
		StateDir: state, Crun: a.CrunBinary, Containerd: address,
		BinDir: filepath.Join(caddy.AppDataDir(), "spawn", "bin"),
	}, a.logger)
	if err != nil {
		a.logger.Warn("fast path not available; containers run on containerd's runc shim",
			zap.String("runtime", a.Runtime), zap.Error(err))
		return nil
	}
	return fp
}

func shortHash(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:4])
}

// releaseBackend gives the app's backend back; the last user closes it.
func (a *App) releaseBackend() error {
	if a.bkey == "" {
		return nil
	}
	key := a.bkey
	a.bkey = ""
	if _, err := backends.Delete(key); err != nil {
		return fmt.Errorf("releasing containerd backend: %w", err)
	}
	return nil
}

// Interface guards
var _ caddy.Destructor = (*backend)(nil)
