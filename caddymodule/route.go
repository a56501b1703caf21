package caddymodule

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sync/semaphore"

	"github.com/caddyserver/caddy/v2"

	"github.com/caddy-spawn/caddy-spawn/snapshots"
	"github.com/caddy-spawn/caddy-spawn/spawner"
)

// routes shares routes — and so their pools of paused containers — across
// config reloads. The key hashes everything that changes the container
// (see routeKey), so an unchanged route keeps its containers and a changed
// one gets a new pool while the old one drains.
var routes = caddy.NewUsagePool()

// routeIdentity is everything that makes a route's containers what they
// are: the route key is a hash of it. Timeouts, output mode, body limits
// and registry credentials are not in it: changing them keeps the pool and
// its pinned image.
type routeIdentity struct {
	// Function is the spawner.Function itself, so a field added to it
	// changes the key unless it is listed in routeKeyExcluded.
	Function      spawner.Function
	Source        sourceIdentity
	Pool          poolSpec
	MaxConcurrent int
	Backend       backendIdentity
	// Reload is new at every load with pull_policy always.
	Reload string
}

// poolSpec is a route's pool: Min == Max for a fixed one.
type poolSpec struct {
	Min, Max    int
	IdleTimeout time.Duration
}

// sourceIdentity is where the image comes from, without credentials.
type sourceIdentity struct {
	Ref, Archive, Pull string
}

// backendIdentity is the app settings containers are made with.
type backendIdentity struct {
	Address, Namespace, Snapshotter, Runtime, RuncBinary string
	Managed                                              *ManagedContainerd
}

// routeKeyExcluded lists the fields of spawner.Function that routeKey
// leaves out, and why. Every other field changes the key (a test checks
// both, field by field).
var routeKeyExcluded = map[string]string{
	"Key":   "it is the route key itself, derived from the rest",
	"Image": "a runtime handle, set once the image is ready; the key holds the image's source instead",
}

// routeKey is a stable hash of id: a short hex string.
func routeKey(id routeIdentity) (string, error) {
	id.Function.Key = ""
	id.Function.Image = nil
	b, err := json.Marshal(id)
	if err != nil {
		return "", fmt.Errorf("encoding route %s: %w", id.Function.Name, err)
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:8]), nil
}

// route is one function as the app sees it: its image source and, once the
// image is ready, the spawner.Function and its pool.
type route struct {
	key   string
	name  string
	image string
	src   snapshots.Source // Ref, Archive, Pull and Auth
	base  spawner.Function // everything but the image
	pool  poolSpec
	limit *semaphore.Weighted // MaxConcurrent; nil when unbounded
	waits *waitEstimate       // the route's expected waits, for early 503s

	mu    sync.Mutex
	ready chan struct{}
	fn    *spawner.Function
	sp    *spawner.Spawner
	warm  *spawner.Pool[*spawner.Instance]
	// warmed is set once the pool first held pool_min (or its fixed
	// size): status.go.
	warmed atomic.Bool
}

func newRoute(key, name string, src snapshots.Source, base spawner.Function, pool poolSpec) *route {
	return &route{
		key: key, name: name, image: src.Ref, src: src, base: base,
		pool: pool, ready: make(chan struct{}), waits: newWaitEstimate(),
	}
}

// setReady pins the image, and starts the pool.
func (r *route) setReady(img *snapshots.Ready, sp *spawner.Spawner, refill *semaphore.Weighted, logger *zap.Logger) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.fn != nil {
		return
	}
	fn := r.base
	fn.Image = img
	r.fn = &fn
	r.sp = sp
	up, down := spawnMetrics.poolScale.WithLabelValues(r.name, "up"), spawnMetrics.poolScale.WithLabelValues(r.name, "down")
	mem := fn.MemoryBytes
	if mem == 0 {
		mem = spawner.DefaultMemoryBytes
	}
	r.warm = spawner.NewPool(spawner.PoolConfig[*spawner.Instance]{
		Min: r.pool.Min, Max: r.pool.Max, IdleTimeout: r.pool.IdleTimeout,
		Budget: warmBudget, MemoryBytes: mem,
		Create: func(ctx context.Context) (*spawner.Instance, error) {
			// A container made for a request whose client left goes to
			// the pool if it has room.
			return sp.Create(spawner.WithHandOff(ctx, r.offer), &fn)
		},
		Refill: refill,
		Logger: logger.With(zap.String("route", r.name)),
		OnIdle: func(n int) {
			poolGauges.update(r, func(c *poolCounts) { c.idle = n })
			r.noteIdle(n)
		},
		OnTarget: func(n, was int) {
			poolGauges.update(r, func(c *poolCounts) { c.target = n })
			switch {
			case n > was:
				up.Inc()
			case n < was:
				down.Inc()
			}
		},
	})
	r.warm.Start()
	r.noteIdle(0)
	close(r.ready)
}

// offer gives the pool a container whose request's client left.
func (r *route) offer(inst *spawner.Instance) bool {
	r.mu.Lock()
	pool := r.warm
	r.mu.Unlock()
	return pool != nil && pool.Offer(inst)
}

func (r *route) isReady() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.fn != nil
}

// acquire waits up to wait for the route's image, then returns a running
// container: warm from the pool, or cold. It fails with errImageNotReady
// if the image is still not ready.
func (r *route) acquire(ctx context.Context, wait time.Duration) (inst *spawner.Instance, warm bool, err error) {
	select {
	case <-r.ready:
	default:
		t := time.NewTimer(wait)
		defer t.Stop()
		select {
		case <-r.ready:
		case <-t.C:
			return nil, false, errImageNotReady
		case <-ctx.Done():
			return nil, false, ctx.Err()
		}
	}
	return r.warm.Acquire(ctx)
}

// idle is how many warm containers wait in the pool (0 before the image is
// ready).
func (r *route) idle() int {
	r.mu.Lock()
	pool := r.warm
	r.mu.Unlock()
	if pool == nil {
		return 0
	}
	return pool.Idle()
}

// release tears a used container down in the background and lets the pool
// refill, both releaseDelay after the handler is done with it.
func (r *route) release(sp *spawner.Spawner, inst *spawner.Instance) {
	sp.Release(inst, releaseDelay)
	r.mu.Lock()
	pool := r.warm
	r.mu.Unlock()
	if pool != nil {
		time.AfterFunc(releaseDelay, pool.Kick)
	}
}

// releaseDelay holds back a used container's teardown and the refill it
// lets start. The handler releases the container before it returns, and
// what is left of the response comes after: net/http writes the last chunk
// and the trailers once the handler has returned, and the client has to
// read them. Teardown and a refill take milliseconds of CPU across Caddy,
// containerd, the task server and crun; started at once on a 2-CPU node,
// they delayed the end of a warm response by ~0.17 ms (perf, per request:
// from the exit record to the client's last byte, 0.50 vs 0.33 ms). A
// millisecond later they cost the response nothing, and the pool hardly
// notices.
const releaseDelay = time.Millisecond

// Destruct drains the pool when the last config using the route is gone.
func (r *route) Destruct() error {
	r.mu.Lock()
	pool := r.warm
	r.mu.Unlock()
	if pool != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		pool.Close(ctx)
	}
	poolGauges.remove(r)
	return nil
}

// Interface guards
var _ caddy.Destructor = (*route)(nil)
