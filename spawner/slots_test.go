package spawner

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestSlots(t *testing.T) {
	unlimited := newSlots(0)
	for range 100 {
		if err := unlimited.take(context.Background()); err != nil {
			t.Fatalf("unlimited: %v", err)
		}
	}

	sl := newSlots(2)
	ctx := context.Background()
	for i := range 2 {
		if err := sl.take(ctx); err != nil {
			t.Fatalf("take %d of 2: %v", i+1, err)
		}
	}
	// Full: without a wait (a pool refill) it fails at once.
	start := time.Now()
	if err := sl.take(ctx); !errors.Is(err, ErrAtCapacity) || time.Since(start) > 100*time.Millisecond {
		t.Fatalf("take at the limit without a wait: %v after %v, want ErrAtCapacity at once", err, time.Since(start))
	}
	// With a wait it fails after the wait...
	start = time.Now()
	if err := sl.take(WithSlotWait(ctx, 50*time.Millisecond)); !errors.Is(err, ErrAtCapacity) || time.Since(start) < 50*time.Millisecond {
		t.Fatalf("take at the limit with a 50ms wait: %v after %v", err, time.Since(start))
	}
	// ...or succeeds when a slot is given back in time.
	go func() {
		time.Sleep(20 * time.Millisecond)
		sl.release()
	}()
	if err := sl.take(WithSlotWait(ctx, 5*time.Second)); err != nil {
		t.Fatalf("take while a slot is released: %v", err)
	}
	// A caller that leaves while it waits gets its own error.
	cctx, cancel := context.WithCancel(ctx)
	time.AfterFunc(20*time.Millisecond, cancel)
	if err := sl.take(WithSlotWait(cctx, 5*time.Second)); !errors.Is(err, context.Canceled) {
		t.Fatalf("take by a caller that left: %v, want context.Canceled", err)
	}
}
