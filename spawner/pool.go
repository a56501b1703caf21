package spawner

import (
	"context"
	"sync"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sync/semaphore"
)

// Pooled is what a Pool holds: a started, single-use container that can be
// frozen while it waits and thawed when claimed. *Instance implements it.
type Pooled interface {
	WaitReady(ctx context.Context) error
	Pause() error
	Thaw() error
	Exited() <-chan struct{}
	Destroy(ctx context.Context)
}

// PoolConfig configures a Pool.
type PoolConfig[T Pooled] struct {
	// Size is how many paused containers to keep ready. Zero disables the
	// pool: every Acquire creates (cold).
	Size int
	// Create makes a started container (the cold path).
	Create func(ctx context.Context) (T, error)
	// Refill bounds concurrent background creations, shared by all pools so
	// refilling never starves the machine. Nil means one at a time.
	Refill *semaphore.Weighted
	Logger *zap.Logger
	// OnIdle, when set, is told the idle count whenever it changes.
	OnIdle func(n int)
}

// Pool keeps Size single-use containers created, started and frozen ahead
// of requests. A claim takes one and thaws it; it is never returned — the
// caller destroys it after its one request — and the pool refills in the
// background. An empty pool falls back to creating one on the spot.
type Pool[T Pooled] struct {
	cfg     PoolConfig[T]
	log     *zap.Logger
	kick    chan struct{}
	results chan fillResult[T]

	mu       sync.Mutex
	idle     []T
	creating int
	closed   bool

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// NewPool returns a pool; Start begins filling it.
func NewPool[T Pooled](cfg PoolConfig[T]) *Pool[T] {
	if cfg.Refill == nil {
		cfg.Refill = semaphore.NewWeighted(1)
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Pool[T]{
		cfg: cfg, log: cfg.Logger, kick: make(chan struct{}, 1),
		results: make(chan fillResult[T], max(cfg.Size, 1)),
		ctx:     ctx, cancel: cancel,
	}
}

// Start begins filling the pool in the background.
func (p *Pool[T]) Start() {
	if p.cfg.Size <= 0 {
		return
	}
	p.wg.Add(1)
	go p.refillLoop()
	p.signal()
}

// Acquire returns a running container for one request: a pooled one,
// thawed (warm = true), or a new one (warm = false).
func (p *Pool[T]) Acquire(ctx context.Context) (inst T, warm bool, err error) {
	for {
		t, ok := p.take()
		if !ok {
			break
		}
		// Refill once the claimed container's request is done (Kick), or
		// after refillDelay for long requests: creating a container costs
		// far more CPU than serving a short request, so refilling right away
		// would slow down the very request that emptied the slot.
		time.AfterFunc(refillDelay, p.signal)
		select {
		case <-t.Exited():
			// Died while waiting (OOM, killed from outside): never serve it.
			go t.Destroy(context.Background())
			continue
		default:
		}
		if err := t.Thaw(); err != nil {
			p.log.Warn("thawing pooled container", zap.Error(err))
			go t.Destroy(context.Background())
			continue
		}
		return t, true, nil
	}
	inst, err = p.cfg.Create(ctx)
	return inst, false, err
}

// refillDelay is how long a claim waits for Kick before refilling anyway.
const refillDelay = 50 * time.Millisecond

// Kick tells the pool that a claimed container's request has finished, so
// refilling can start now.
func (p *Pool[T]) Kick() { p.signal() }

// Idle returns how many containers wait in the pool.
func (p *Pool[T]) Idle() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.idle)
}

// Close stops refilling and destroys the idle containers.
func (p *Pool[T]) Close(ctx context.Context) {
	p.mu.Lock()
	p.closed = true
	idle := p.idle
	p.idle = nil
	p.notify()
	p.mu.Unlock()
	p.cancel()
	p.wg.Wait()
	// Creations that finished after the loop stopped.
	for len(p.results) > 0 {
		if res := <-p.results; res.err == nil {
			idle = append(idle, res.t)
		}
	}
	var wg sync.WaitGroup
	for _, t := range idle {
		wg.Go(func() {
			t.Destroy(ctx)
		})
	}
	wg.Wait()
}

func (p *Pool[T]) take() (T, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	var zero T
	if len(p.idle) == 0 {
		return zero, false
	}
	t := p.idle[0]
	p.idle[0] = zero
	p.idle = p.idle[1:]
	p.notify()
	return t, true
}

// notify reports the idle count; call with p.mu held.
func (p *Pool[T]) notify() {
	if p.cfg.OnIdle != nil {
		p.cfg.OnIdle(len(p.idle))
	}
}

func (p *Pool[T]) signal() {
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

// refillLoop creates containers until idle+creating reaches Size, with the
// shared concurrency bound; failures back off exponentially. Only this loop
// changes p.creating and adds to p.idle, when a creation's result arrives.
func (p *Pool[T]) refillLoop() {
	defer p.wg.Done()
	backoff := time.Duration(0)
	failures := 0
	for {
		for backoff == 0 {
			p.mu.Lock()
			need := !p.closed && len(p.idle)+p.creating < p.cfg.Size
			if need {
				p.creating++
			}
			p.mu.Unlock()
			if !need {
				break
			}
			if err := p.cfg.Refill.Acquire(p.ctx, 1); err != nil {
				return
			}
			p.wg.Go(func() {
				t, err := p.fillOne()
				p.cfg.Refill.Release(1)
				p.results <- fillResult[T]{t, err}
			})
		}
		var retry <-chan time.Time
		if backoff > 0 {
			retry = time.After(backoff)
		}
		select {
		case <-p.ctx.Done():
			return
		case <-p.kick:
		case <-retry:
			backoff = 0
		case res := <-p.results:
			p.mu.Lock()
			p.creating--
			if res.err == nil {
				p.idle = append(p.idle, res.t)
				p.notify()
				go p.watchIdle(res.t)
			}
			p.mu.Unlock()
			if res.err == nil {
				failures = 0
				continue
			}
			failures++
			backoff = min(time.Duration(1<<min(failures, 7))*50*time.Millisecond, 5*time.Second)
			if failures == 1 || failures%20 == 0 {
				p.log.Warn("refilling pool", zap.Int("failures", failures), zap.Duration("retry_in", backoff), zap.Error(res.err))
			}
		}
	}
}

// watchIdle takes t out of the pool and destroys it if it dies while it
// waits — its task server or containerd lost it, or it was killed from
// outside — so the pool refills instead of holding a dead container until
// a request claims it.
func (p *Pool[T]) watchIdle(t T) {
	select {
	case <-t.Exited():
	case <-p.ctx.Done():
		return
	}
	p.mu.Lock()
	found := false
	for i, x := range p.idle {
		if any(x) == any(t) {
			p.idle = append(p.idle[:i], p.idle[i+1:]...)
			found = true
			p.notify()
			break
		}
	}
	p.mu.Unlock()
	if found {
		p.log.Warn("pooled container died while idle; replacing it")
		t.Destroy(context.Background())
		p.signal()
	}
}

// Offer gives the pool a started container nobody claimed (its request's
// client left while it was made). The pool takes it if it has room — it is
// then frozen like the pool's own — and reports whether it did; the caller
// destroys a refused one.
func (p *Pool[T]) Offer(t T) bool {
	p.mu.Lock()
	if p.closed || len(p.idle)+p.creating >= p.cfg.Size {
		p.mu.Unlock()
		return false
	}
	p.creating++ // a slot, until it is ready
	p.mu.Unlock()
	p.wg.Go(func() {
		ctx, cancel := context.WithTimeout(p.ctx, 10*time.Second)
		err := t.WaitReady(ctx)
		cancel()
		if err == nil {
			err = t.Pause()
		}
		if err != nil {
			t.Destroy(context.Background())
			var zero T
			t = zero
		}
		p.results <- fillResult[T]{t: t, err: err}
	})
	return true
}

type fillResult[T Pooled] struct {
	t   T
	err error
}

// fillOne makes one paused container.
func (p *Pool[T]) fillOne() (T, error) {
	t, err := p.cfg.Create(p.ctx)
	if err != nil {
		return t, err
	}
	ctx, cancel := context.WithTimeout(p.ctx, 10*time.Second)
	err = t.WaitReady(ctx)
	cancel()
	if err == nil {
		err = t.Pause()
	}
	if err != nil {
		t.Destroy(context.Background())
		var zero T
		return zero, err
	}
	return t, nil
}
