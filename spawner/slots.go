package spawner

import (
	"context"
	"fmt"
	"time"

	"golang.org/x/sync/semaphore"
)

// slots bounds the containers a Spawner has at once, pooled and serving
// (Config.MaxContainers). A creation takes a slot before it starts and the
// container gives it back when it is destroyed. Requests wait for one up to
// the wait their context carries (WithSlotWait); pool refills never wait, so
// they always yield to requests.
type slots struct {
	sem *semaphore.Weighted // nil: unlimited
	max int
}

func newSlots(n int) slots {
	if n <= 0 {
		return slots{}
	}
	return slots{sem: semaphore.NewWeighted(int64(n)), max: n}
}

type slotWaitKey struct{}

// WithSlotWait lets a Create made with the returned context wait up to d
// for a free slot when the Spawner is at MaxContainers. Without it, Create
// fails at once with ErrAtCapacity (as pool refills do).
func WithSlotWait(ctx context.Context, d time.Duration) context.Context {
	return context.WithValue(ctx, slotWaitKey{}, d)
}

// take takes a slot for a creation; release gives it back.
func (sl slots) take(ctx context.Context) error {
	if sl.sem == nil {
		return nil
	}
	if sl.sem.TryAcquire(1) {
		return nil
	}
	wait, _ := ctx.Value(slotWaitKey{}).(time.Duration)
	if wait <= 0 {
		return fmt.Errorf("%w (max_containers %d)", ErrAtCapacity, sl.max)
	}
	wctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	if err := sl.sem.Acquire(wctx, 1); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("%w (max_containers %d, waited %v)", ErrAtCapacity, sl.max, wait)
	}
	return nil
}

func (sl slots) release() {
	if sl.sem != nil {
		sl.sem.Release(1)
	}
}
