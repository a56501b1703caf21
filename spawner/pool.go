package spawner

import (
	"context"
	"sync"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sync/semaphore"
)

// Pooled is what a Pool holds: a started, single-use container that can be
// frozen while it waits, and thawed once its request begins. *Instance
// implements it.
type Pooled interface {
	WaitReady(ctx context.Context) error
	Pause() error
	// Claim readies a frozen container for its request. It may leave it
	// frozen: an *Instance thaws in Begin, after the request frame is in
	// its stdin, so the init wakes with its request already there.
	Claim() error
	Exited() <-chan struct{}
	Destroy(ctx context.Context)
}

// PoolConfig configures a Pool.
type PoolConfig[T Pooled] struct {
	// Min and Max bound how many paused containers the pool keeps ready.
	// Min == Max is a fixed pool of that size; between the two the pool
	// follows demand: enough containers to cover the claims that arrive
	// during one refill, with headroom, growing at once on a burst or a
	// miss and shrinking by one a second after it. Max 0 disables the
	// pool: every Acquire creates (cold).
	Min, Max int
	// IdleTimeout is how long after its last claim an adaptive pool keeps
	// at least one container; then it shrinks to Min at once. Zero: it
	// never does.
	IdleTimeout time.Duration
	// Budget, when set, caps the idle containers of every pool sharing it,
	// each counted at MemoryBytes.
	Budget      *WarmBudget
	MemoryBytes int64
	// Create makes a started container (the cold path).
	Create func(ctx context.Context) (T, error)
	// Refill bounds concurrent background creations, shared by all pools so
	// refilling never starves the machine. Nil means one at a time.
	Refill *semaphore.Weighted
	Logger *zap.Logger
	// OnIdle, when set, is told the idle count whenever it changes.
	OnIdle func(n int)
	// OnTarget, when set, is told the target idle count whenever it
	// changes, with the previous one.
	OnTarget func(n, was int)
}

// Pool keeps between Min and Max single-use containers created, started
// and frozen ahead of requests. A claim takes one (it is thawed when its
// request begins); it is never
// returned — the caller destroys it after its one request — and the pool
// refills in the background. An empty pool falls back to creating one on
// the spot.
type Pool[T Pooled] struct {
	cfg      PoolConfig[T]
	log      *zap.Logger
	kick     chan struct{}
	results  chan fillResult[T]
	adaptive bool         // Min < Max or a budget: resized by a ticker
	share    *budgetShare // nil without a budget

	mu         sync.Mutex
	idle       []T
	creating   int
	closed     bool
	demand     *demand
	desired    int           // what demand asks for, within Min and Max
	target     int           // desired, within the budget's allowance
	refillTime time.Duration // moving average of one creation
	lastShrink time.Time

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

const (
	// initialRefillTime is the refill time assumed until one is measured.
	initialRefillTime = 100 * time.Millisecond
	// resizeEvery is how often an adaptive pool recomputes its target.
	resizeEvery = 250 * time.Millisecond
	// shrinkStep is how often an adaptive pool shrinks, short of its idle
	// timeout: by one while claims go on, by half once they have stopped
	// (at once, then every shrinkStep).
	shrinkStep = time.Second
)

// NewPool returns a pool; Start begins filling it.
func NewPool[T Pooled](cfg PoolConfig[T]) *Pool[T] {
	if cfg.Refill == nil {
		cfg.Refill = semaphore.NewWeighted(1)
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	cfg.Max = max(cfg.Max, 0)
	cfg.Min = min(max(cfg.Min, 0), cfg.Max)
	ctx, cancel := context.WithCancel(context.Background())
	p := &Pool[T]{
		cfg: cfg, log: cfg.Logger, kick: make(chan struct{}, 1),
		results:    make(chan fillResult[T], max(cfg.Max, 1)),
		adaptive:   cfg.Max > 0 && (cfg.Min < cfg.Max || cfg.Budget != nil),
		demand:     newDemand(time.Now()),
		desired:    cfg.Max,
		target:     cfg.Max,
		refillTime: initialRefillTime,
		ctx:        ctx, cancel: cancel,
	}
	if cfg.Min < cfg.Max {
		p.desired, p.target = cfg.Min, cfg.Min
	}
	if cfg.Budget != nil && cfg.Max > 0 {
		p.share = cfg.Budget.join()
		p.target = 0 // until the budget gives an allowance
	}
	return p
}

// Start begins filling the pool in the background.
func (p *Pool[T]) Start() {
	if p.cfg.Max <= 0 {
		return
	}
	if p.cfg.OnTarget != nil {
		p.cfg.OnTarget(p.target, 0)
	}
	p.wg.Add(1)
	go p.refillLoop()
	if p.adaptive {
		p.resize(time.Now())
	}
	p.signal()
}

// Acquire returns a container for one request: a pooled one, claimed
// (warm = true), or a new one, running (warm = false).
func (p *Pool[T]) Acquire(ctx context.Context) (inst T, warm bool, err error) {
	p.arrive()
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
			go p.discard(t)
			continue
		default:
		}
		if err := t.Claim(); err != nil {
			p.log.Warn("claiming pooled container", zap.Error(err))
			go p.discard(t)
			continue
		}
		// Counted in the budget while pooled; from here it is the
		// request's (it is thawed when the request begins; a thaw that
		// fails then fails that request, where a failed thaw at claim
		// used to try the next container).
		p.uncharge(1)
		return t, true, nil
	}
	p.missed()
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

// Target returns how many idle containers the pool aims to keep now.
func (p *Pool[T]) Target() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.target
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
	if p.share != nil {
		p.share.leave()
	}
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

// discard destroys a container that left the pool unused, then stops
// counting it in the budget.
func (p *Pool[T]) discard(t T) {
	t.Destroy(context.Background())
	p.uncharge(1)
}

// charge counts one more container of the pool's in the budget, if the
// budget has room; uncharge stops counting n.
func (p *Pool[T]) charge() bool {
	return p.share == nil || p.share.take(p.cfg.MemoryBytes)
}

func (p *Pool[T]) uncharge(n int) {
	if p.share != nil && n > 0 {
		p.share.give(int64(n) * p.cfg.MemoryBytes)
	}
}

// arrive records a claim for sizing.
func (p *Pool[T]) arrive() {
	if !p.adaptive {
		return
	}
	p.mu.Lock()
	p.demand.arrive(time.Now())
	p.mu.Unlock()
}

// missed grows an adaptive pool at once when a claim found it empty: to
// twice its target (at least one more), within Max — or, while refills
// are on their way, by one but to no more than one over the demand
// estimate, as then the pool is not too small but filling: doubling on
// every miss of a burst's first second overshot to pool_max, one more per
// miss still to twice what the burst needed (the bench's bursty trace),
// and the containers made late sat idle once the burst was over.
func (p *Pool[T]) missed() {
	if !p.adaptive || p.cfg.Min == p.cfg.Max {
		return
	}
	p.mu.Lock()
	if p.creating > 0 {
		p.desired = min(p.cfg.Max, max(p.desired, min(p.desired+1, p.estimate(time.Now())+1)))
	} else {
		p.desired = min(p.cfg.Max, max(p.desired+1, 2*p.desired))
	}
	p.setTarget(p.allowance())
	p.mu.Unlock()
	p.signal()
}

// resize recomputes an adaptive pool's target from demand and the budget,
// and destroys idle containers above it.
func (p *Pool[T]) resize(now time.Time) {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	want := min(max(p.estimate(now), p.cfg.Min), p.cfg.Max)
	expired := p.cfg.IdleTimeout > 0 && !p.demand.last.IsZero() && now.Sub(p.demand.last) > p.cfg.IdleTimeout
	quiet := p.demand.quiet(now)
	switch {
	case want >= p.desired, expired:
		p.desired = want
	case quiet && (p.lastShrink.Before(p.demand.last) || now.Sub(p.lastShrink) >= shrinkStep):
		// Claims have stopped: halve at once and then every shrinkStep,
		// so what a burst made does not wait idle for the whole idle
		// timeout (the bench's bursty trace: refills that landed after
		// its bursts were most of the adaptive pool's idle time).
		p.desired = max(want, p.desired/2)
		p.lastShrink = now
	case !quiet && now.Sub(p.lastShrink) >= shrinkStep:
		p.desired--
		p.lastShrink = now
	}
	allow := p.desired
	if p.share != nil {
		bytes := p.share.update(int64(p.desired)*p.cfg.MemoryBytes, p.demand.recent(now))
		allow = int(bytes / max(p.cfg.MemoryBytes, 1))
	}
	p.setTarget(allow)
	var trim []T
	if excess := len(p.idle) + p.creating - p.target; excess > 0 {
		n := min(excess, len(p.idle))
		trim = append(trim, p.idle[:n]...)
		clear(p.idle[:n])
		p.idle = p.idle[n:]
		p.notify()
	}
	p.mu.Unlock()
	for _, t := range trim {
		p.wg.Go(func() { p.discard(t) })
	}
	p.signal()
}

// estimate is how many containers demand asks for (before Min and Max);
// call with p.mu held.
func (p *Pool[T]) estimate(now time.Time) int {
	return p.demand.want(now, p.leadTime(), p.cfg.IdleTimeout)
}

// leadTime is how long a claimed container takes to be replaced: the
// refill waits for the request to end (at most refillDelay) and then takes
// the measured creation time. Sizing by the creation time alone asks for
// too few when requests are about as long as creations (TestAdaptivePool's
// set-up tried at 20/s: 2 where 4 were needed, 14–37 of 100 requests
// warm). Measuring the wait instead overstocked under load: when creations
// queue for their slots the wait grows, the target with it, and the queue
// again (the bench's bursty trace held 8 through its bursts and the late
// ones idle after). Call with p.mu held.
func (p *Pool[T]) leadTime() time.Duration { return refillDelay + p.refillTime }

// allowance is the budget's last allowance in containers; call with p.mu
// held.
func (p *Pool[T]) allowance() int {
	if p.share == nil {
		return p.desired
	}
	p.share.b.mu.Lock()
	defer p.share.b.mu.Unlock()
	return int(p.share.allow / max(p.cfg.MemoryBytes, 1))
}

// setTarget sets the target to desired within allow; call with p.mu held.
func (p *Pool[T]) setTarget(allow int) {
	t := max(min(p.desired, allow), 0)
	if t == p.target {
		return
	}
	was := p.target
	p.target = t
	if p.cfg.OnTarget != nil {
		p.cfg.OnTarget(t, was)
	}
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

// refillLoop creates containers until idle+creating reaches the target,
// with the shared concurrency bound and within the budget; failures back
// off exponentially. Only this loop changes p.creating for refills and
// adds to p.idle, when a creation's result arrives.
func (p *Pool[T]) refillLoop() {
	defer p.wg.Done()
	backoff := time.Duration(0)
	var retryAt time.Time // when backing off ends: ticks and kicks must not push it back
	failures := 0
	var tick <-chan time.Time
	if p.adaptive {
		t := time.NewTicker(resizeEvery)
		defer t.Stop()
		tick = t.C
	}
	for {
		for backoff == 0 {
			p.mu.Lock()
			need := !p.closed && len(p.idle)+p.creating < p.target && p.charge()
			if need {
				p.creating++
			}
			p.mu.Unlock()
			if !need {
				break
			}
			if err := p.cfg.Refill.Acquire(p.ctx, 1); err != nil {
				p.uncharge(1)
				return
			}
			p.wg.Go(func() {
				began := time.Now()
				t, err := p.fillOne()
				p.cfg.Refill.Release(1)
				p.results <- fillResult[T]{t: t, err: err, took: time.Since(began)}
			})
		}
		var retry <-chan time.Time
		if backoff > 0 {
			retry = time.After(time.Until(retryAt))
		}
		select {
		case <-p.ctx.Done():
			return
		case <-p.kick:
		case now := <-tick:
			p.resize(now)
		case <-retry:
			backoff = 0
		case res := <-p.results:
			p.mu.Lock()
			p.creating--
			if res.err == nil {
				p.idle = append(p.idle, res.t)
				p.notify()
				go p.watchIdle(res.t)
				if res.took > 0 {
					// A moving average: the pool's size follows it.
					p.refillTime = (p.refillTime*7 + res.took*3) / 10
				}
			}
			p.mu.Unlock()
			if res.err == nil {
				failures = 0
				continue
			}
			p.uncharge(1)
			failures++
			backoff = min(time.Duration(1<<min(failures, 7))*50*time.Millisecond, 5*time.Second)
			retryAt = time.Now().Add(backoff)
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
		p.discard(t)
		p.signal()
	}
}

// Offer gives the pool a started container nobody claimed (its request's
// client left while it was made). The pool takes it if it has room — it is
// then frozen like the pool's own — and reports whether it did; the caller
// destroys a refused one.
func (p *Pool[T]) Offer(t T) bool {
	p.mu.Lock()
	if p.closed || len(p.idle)+p.creating >= p.target || !p.charge() {
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
	t    T
	err  error
	took time.Duration // a refill's creation time; 0 for an offered one
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
