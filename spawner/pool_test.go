package spawner

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sync/semaphore"
)

type fakeInst struct {
	id        int
	paused    atomic.Bool
	thawed    atomic.Bool
	destroyed atomic.Bool
	exited    chan struct{}
}

func (f *fakeInst) WaitReady(context.Context) error { return nil }
func (f *fakeInst) Pause() error                    { f.paused.Store(true); return nil }
func (f *fakeInst) Thaw() error                     { f.thawed.Store(true); return nil }
func (f *fakeInst) Exited() <-chan struct{}         { return f.exited }
func (f *fakeInst) Destroy(ctx context.Context)     { f.destroyed.Store(true) }

type fakeFactory struct {
	mu        sync.Mutex
	made      []*fakeInst
	inFlight  atomic.Int32
	maxFlight atomic.Int32
	fail      atomic.Bool
	delay     time.Duration
}

func (ff *fakeFactory) create(ctx context.Context) (*fakeInst, error) {
	n := ff.inFlight.Add(1)
	defer ff.inFlight.Add(-1)
	for {
		m := ff.maxFlight.Load()
		if n <= m || ff.maxFlight.CompareAndSwap(m, n) {
			break
		}
	}
	if ff.delay > 0 {
		time.Sleep(ff.delay)
	}
	if ff.fail.Load() {
		return nil, errors.New("containerd says no")
	}
	ff.mu.Lock()
	defer ff.mu.Unlock()
	f := &fakeInst{id: len(ff.made), exited: make(chan struct{})}
	ff.made = append(ff.made, f)
	return f, nil
}

func (ff *fakeFactory) count() int {
	ff.mu.Lock()
	defer ff.mu.Unlock()
	return len(ff.made)
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestPoolFillsClaimsAndRefills(t *testing.T) {
	ff := &fakeFactory{}
	p := NewPool(PoolConfig[*fakeInst]{Size: 3, Create: ff.create, Refill: semaphore.NewWeighted(2)})
	p.Start()
	defer p.Close(context.Background())

	eventually(t, "pool to fill", func() bool { return p.Idle() == 3 })
	for _, f := range ff.made {
		if !f.paused.Load() {
			t.Errorf("pooled instance %d not paused", f.id)
		}
	}
	seen := map[int]bool{}
	for range 10 {
		inst, warm, err := p.Acquire(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if seen[inst.id] {
			t.Fatalf("instance %d handed out twice: containers must be single-use", inst.id)
		}
		seen[inst.id] = true
		if warm && !inst.thawed.Load() {
			t.Errorf("warm instance %d was not thawed", inst.id)
		}
		if !warm && inst.paused.Load() {
			t.Errorf("cold instance %d came from the pool", inst.id)
		}
	}
	eventually(t, "pool to refill", func() bool { return p.Idle() == 3 })
	if got := ff.maxFlight.Load(); got > 2 {
		t.Errorf("refill ran %d creations at once, bound is 2", got)
	}
}

func TestPoolEmptyFallsBackToCold(t *testing.T) {
	ff := &fakeFactory{}
	p := NewPool(PoolConfig[*fakeInst]{Size: 0, Create: ff.create})
	p.Start()
	defer p.Close(context.Background())
	inst, warm, err := p.Acquire(context.Background())
	if err != nil || warm || inst == nil {
		t.Fatalf("Acquire on a disabled pool = %v, warm %v, err %v; want a cold instance", inst, warm, err)
	}
	time.Sleep(20 * time.Millisecond)
	if ff.count() != 1 {
		t.Errorf("a size-0 pool created %d instances, want only the cold one", ff.count())
	}
}

func TestPoolSkipsDeadInstances(t *testing.T) {
	ff := &fakeFactory{}
	p := NewPool(PoolConfig[*fakeInst]{Size: 2, Create: ff.create})
	p.Start()
	defer p.Close(context.Background())
	eventually(t, "pool to fill", func() bool { return p.Idle() == 2 })
	ff.mu.Lock()
	dead := ff.made[0]
	ff.mu.Unlock()
	close(dead.exited)
	inst, _, err := p.Acquire(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if inst == dead {
		t.Fatal("Acquire handed out an instance that had exited")
	}
	eventually(t, "dead instance destroyed", dead.destroyed.Load)
}

func TestPoolCloseDestroysIdle(t *testing.T) {
	ff := &fakeFactory{}
	p := NewPool(PoolConfig[*fakeInst]{Size: 4, Create: ff.create, Refill: semaphore.NewWeighted(4)})
	p.Start()
	eventually(t, "pool to fill", func() bool { return p.Idle() == 4 })
	p.Close(context.Background())
	for _, f := range ff.made {
		if !f.destroyed.Load() {
			t.Errorf("instance %d survived Close", f.id)
		}
	}
	if p.Idle() != 0 {
		t.Errorf("Idle after Close = %d", p.Idle())
	}
}

func TestPoolBacksOffOnFailure(t *testing.T) {
	ff := &fakeFactory{}
	ff.fail.Store(true)
	var attempts atomic.Int32
	create := func(ctx context.Context) (*fakeInst, error) {
		attempts.Add(1)
		return ff.create(ctx)
	}
	p := NewPool(PoolConfig[*fakeInst]{Size: 2, Create: create})
	p.Start()
	time.Sleep(300 * time.Millisecond)
	if n := attempts.Load(); n > 10 {
		t.Errorf("%d creation attempts in 300ms while failing: refill does not back off", n)
	}
	ff.fail.Store(false)
	eventually(t, "pool to fill after recovery", func() bool { return p.Idle() == 2 })
	p.Close(context.Background())
}

// TestPoolDropsDeadIdle: a pooled container that dies while it waits is
// taken out of the pool, destroyed and replaced, without any claim.
func TestPoolDropsDeadIdle(t *testing.T) {
	ff := &fakeFactory{}
	p := NewPool(PoolConfig[*fakeInst]{Size: 2, Create: ff.create})
	p.Start()
	defer p.Close(context.Background())
	eventually(t, "pool full", func() bool { return p.Idle() == 2 })
	ff.mu.Lock()
	dead := ff.made[0]
	ff.mu.Unlock()
	close(dead.exited)
	eventually(t, "dead container destroyed", dead.destroyed.Load)
	eventually(t, "replacement made", func() bool { return ff.count() == 3 && p.Idle() == 2 })
	for range 2 {
		got, warm, err := p.Acquire(context.Background())
		if err != nil || !warm {
			t.Fatalf("Acquire: warm=%v err=%v", warm, err)
		}
		if got == dead {
			t.Fatal("the dead container was served")
		}
	}
}

// TestPoolOffer: a container made for a request whose client left is taken
// when the pool has room (frozen, then served to the next request) and
// refused when it is full or closed.
func TestPoolOffer(t *testing.T) {
	ff := &fakeFactory{}
	ff.fail.Store(true) // the pool can't fill itself: only offers fill it
	p := NewPool(PoolConfig[*fakeInst]{Size: 2, Create: ff.create})
	p.Start()
	orphan := &fakeInst{id: 100, exited: make(chan struct{})}
	if !p.Offer(orphan) {
		t.Fatal("an empty pool refused an offer")
	}
	eventually(t, "offered container idle", func() bool { return p.Idle() == 1 })
	if !orphan.paused.Load() {
		t.Error("the offered container was not frozen")
	}
	ff.fail.Store(false)
	p.Kick()
	eventually(t, "pool full", func() bool { return p.Idle() == 2 })
	if p.Offer(&fakeInst{id: 101, exited: make(chan struct{})}) {
		t.Error("a full pool took an offer")
	}
	got, warm, err := p.Acquire(context.Background())
	if err != nil || !warm || got != orphan {
		t.Fatalf("Acquire = %v, warm %v, %v; want the offered container, warm", got, warm, err)
	}
	p.Close(context.Background())
	if p.Offer(&fakeInst{id: 102, exited: make(chan struct{})}) {
		t.Error("a closed pool took an offer")
	}
}
