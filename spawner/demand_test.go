package spawner

import (
	"testing"
	"time"
)

func TestDemandRateAndWant(t *testing.T) {
	t0 := time.Unix(1000, 0)
	d := newDemand(t0)
	if got := d.want(t0, 100*time.Millisecond, time.Minute); got != 0 {
		t.Fatalf("want before any claim = %d, want 0", got)
	}
	// 20 claims/s for two seconds.
	for i := range 40 {
		d.arrive(t0.Add(time.Duration(i) * 50 * time.Millisecond))
	}
	now := t0.Add(2 * time.Second)
	if r := d.rate(now, time.Second); r < 18 || r > 22 {
		t.Errorf("1 s rate = %.1f, want ~20", r)
	}
	if r := d.rate(now, longWindow); r < 1.2 || r > 1.4 {
		t.Errorf("30 s rate = %.2f, want 40/30", r)
	}
	// 20/s × 0.5 s refill × headroom 2 = 20.
	if got := d.want(now, 500*time.Millisecond, time.Minute); got != 20 {
		t.Errorf("want = %d, want 20", got)
	}
	// A low rate still keeps one: 20/s × 10 ms × 2 = 0.4.
	if got := d.want(now, 10*time.Millisecond, time.Minute); got != 1 {
		t.Errorf("want at a low rate = %d, want 1", got)
	}
	// The burst is over: the long window still remembers it, so the pool
	// shrinks slowly.
	later := now.Add(10 * time.Second)
	if r := d.recent(later); r < 1.2 || r > 1.4 {
		t.Errorf("recent after 10 s idle = %.2f, want the 30 s rate", r)
	}
	// Past the idle timeout: nothing wanted.
	if got := d.want(now.Add(3*time.Second), 500*time.Millisecond, 2*time.Second); got != 0 {
		t.Errorf("want past idle timeout = %d, want 0", got)
	}
	// Without an idle timeout, a route that had claims keeps one.
	if got := d.want(now.Add(time.Hour), 500*time.Millisecond, 0); got != 1 {
		t.Errorf("want an hour later without idle timeout = %d, want 1", got)
	}
	// Old buckets are forgotten, not counted again after the ring wraps.
	if r := d.rate(now.Add(time.Hour), longWindow); r != 0 {
		t.Errorf("rate an hour later = %.2f, want 0", r)
	}
}

// TestDemandQuiet: claims have stopped after four of their usual gaps,
// within one resize tick and one second.
func TestDemandQuiet(t *testing.T) {
	t0 := time.Unix(1000, 0)
	if !newDemand(t0).quiet(t0) {
		t.Error("a pool without claims is not quiet")
	}
	burst, steady := newDemand(t0), newDemand(t0)
	var last time.Time
	for i := range 100 { // 20/s for 5 s
		last = t0.Add(time.Duration(i) * 50 * time.Millisecond)
		burst.arrive(last)
	}
	for _, c := range []struct {
		after time.Duration
		quiet bool
	}{{100 * time.Millisecond, false}, {200 * time.Millisecond, false}, {400 * time.Millisecond, true}} {
		if got := burst.quiet(last.Add(c.after)); got != c.quiet {
			t.Errorf("20/s, %v after the last claim: quiet %t, want %t", c.after, got, c.quiet)
		}
	}
	for i := range 20 { // 2/s for 10 s
		last = t0.Add(time.Duration(i) * 500 * time.Millisecond)
		steady.arrive(last)
		if steady.quiet(last.Add(490 * time.Millisecond)) {
			t.Fatalf("2/s: quiet within a gap, at claim %d", i)
		}
	}
	if !steady.quiet(last.Add(1100 * time.Millisecond)) {
		t.Error("2/s: not quiet a second after the last claim")
	}
}
