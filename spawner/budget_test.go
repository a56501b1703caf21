package spawner

import (
	"reflect"
	"testing"
)

func TestShareOut(t *testing.T) {
	for _, tc := range []struct {
		name    string
		total   int64
		wants   []int64
		weights []float64
		want    []int64
	}{
		{"all fit", 100, []int64{30, 50}, []float64{1, 1}, []int64{30, 50}},
		{"by weight", 100, []int64{100, 100}, []float64{3, 1}, []int64{75, 25}},
		// The light route needs less than its share: the rest goes to
		// the busy one.
		{"leftover to others", 100, []int64{100, 10}, []float64{1, 1}, []int64{90, 10}},
		{"idle member last", 100, []int64{100, 100}, []float64{10, 0}, []int64{99, 0}},
		{"nothing wanted", 100, []int64{0, 0}, []float64{1, 1}, []int64{0, 0}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := shareOut(tc.total, tc.wants, tc.weights)
			var sum int64
			for _, g := range got {
				sum += g
			}
			if sum > tc.total {
				t.Fatalf("shared out %d of %d", sum, tc.total)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("shareOut = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestWarmBudgetTakeGive(t *testing.T) {
	var reported int64
	b := NewWarmBudget(100, func(u int64) { reported = u })
	a, c := b.join(), b.join()
	if allow := a.update(80, 1); allow != 80 {
		t.Fatalf("allowance alone = %d, want 80", allow)
	}
	c.update(80, 1) // now both want 80 of 100: 50 each
	if a.allow != 50 || c.allow != 50 {
		t.Fatalf("allowances %d, %d; want 50 each", a.allow, c.allow)
	}
	for range 5 {
		if !a.take(10) {
			t.Fatal("take within allowance refused")
		}
	}
	if a.take(10) {
		t.Error("take beyond allowance granted")
	}
	if b.Used() != 50 || reported != 50 {
		t.Errorf("used %d (reported %d), want 50", b.Used(), reported)
	}
	a.give(20)
	a.leave()
	if b.Used() != 0 {
		t.Errorf("used after leave = %d, want 0", b.Used())
	}
	a.give(10) // after leaving: ignored
	if b.Used() != 0 || a.take(1) {
		t.Errorf("a share that left still counts: used %d", b.Used())
	}
	if c.allow != 80 {
		t.Errorf("c's allowance after a left = %d, want 80", c.allow)
	}
}
