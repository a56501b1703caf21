package spawner

import (
	"sync"
)

// WarmBudget caps the memory of every pool's idle containers together
// (the app's warm_memory) and shares it between pools by recent demand,
// so the busiest routes stay warm. Each container is counted at its
// memory limit, the most a paused container can hold, from the moment its
// creation starts until it is claimed or destroyed: the cap holds for the
// containers that exist, not only for an estimate.
type WarmBudget struct {
	total int64

	mu      sync.Mutex
	used    int64
	members map[*budgetShare]struct{}
	onUse   func(used int64)
}

// budgetShare is one pool's part of a WarmBudget.
type budgetShare struct {
	b      *WarmBudget
	want   int64   // bytes the pool would keep idle without the cap
	weight float64 // its recent claim rate
	held   int64   // bytes of its containers counted now
	allow  int64   // its allowance at the last reshare
}

// NewWarmBudget returns a budget of total bytes (0: no cap); onUse, when set, is told
// the bytes in use whenever they change.
func NewWarmBudget(total int64, onUse func(used int64)) *WarmBudget {
	return &WarmBudget{total: total, members: map[*budgetShare]struct{}{}, onUse: onUse}
}

// Total is the budget in bytes; 0 means no cap.
func (b *WarmBudget) Total() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.total
}

// SetTotal changes the budget (a config reload); 0 removes the cap. Pools
// above their new allowance shrink at their next resize.
func (b *WarmBudget) SetTotal(total int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.total = max(total, 0)
	b.reshare()
}

// Used is the bytes counted now, across all pools.
func (b *WarmBudget) Used() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.used
}

func (b *WarmBudget) join() *budgetShare {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := &budgetShare{b: b}
	b.members[s] = struct{}{}
	return s
}

// leave gives back what s holds and drops it from the sharing.
func (s *budgetShare) leave() {
	b := s.b
	b.mu.Lock()
	defer b.mu.Unlock()
	b.used -= s.held
	s.held = 0
	delete(b.members, s)
	b.reshare()
	b.report()
}

// update tells the budget what the pool wants and how busy it is, and
// returns its allowance in bytes.
func (s *budgetShare) update(want int64, weight float64) int64 {
	b := s.b
	b.mu.Lock()
	defer b.mu.Unlock()
	s.want, s.weight = want, weight
	b.reshare()
	return s.allow
}

// take counts n more bytes for the pool if that keeps it within its
// allowance and the budget within its total.
func (s *budgetShare) take(n int64) bool {
	b := s.b
	b.mu.Lock()
	defer b.mu.Unlock()
	if _, ok := b.members[s]; !ok || b.total > 0 && (b.used+n > b.total || s.held+n > s.allow) {
		return false
	}
	s.held += n
	b.used += n
	b.report()
	return true
}

// give stops counting n bytes of the pool's (nothing once it left).
func (s *budgetShare) give(n int64) {
	b := s.b
	b.mu.Lock()
	defer b.mu.Unlock()
	if _, ok := b.members[s]; !ok {
		return
	}
	s.held -= n
	b.used -= n
	b.report()
}

func (b *WarmBudget) report() {
	if b.onUse != nil {
		b.onUse(b.used)
	}
}

// reshare sets every member's allowance: what each wants while the total
// covers it; otherwise the total is filled by weight, no member getting
// more than it wants and what one does not need going to the others.
// Call with b.mu held.
func (b *WarmBudget) reshare() {
	members := make([]*budgetShare, 0, len(b.members))
	for s := range b.members {
		members = append(members, s)
	}
	wants := make([]int64, len(members))
	weights := make([]float64, len(members))
	for i, s := range members {
		wants[i], weights[i] = s.want, s.weight
	}
	for i, a := range shareOut(b.total, wants, weights) {
		members[i].allow = a
	}
}

// minWeight keeps a member without recent claims in the sharing, last.
const minWeight = 1e-3

// shareOut divides total (0: no cap) between members wanting wants[i], by weights[i]
// (water-filling): a member never gets more than it wants, and the part of
// a fair share a member leaves goes to the others by weight.
func shareOut(total int64, wants []int64, weights []float64) []int64 {
	out := make([]int64, len(wants))
	open := map[int]bool{}
	var sum int64
	for i, w := range wants {
		if w > 0 {
			open[i] = true
			sum += w
		}
	}
	if total <= 0 || sum <= total {
		copy(out, wants)
		return out
	}
	left := total
	for len(open) > 0 && left > 0 {
		var wsum float64
		for i := range open {
			wsum += max(weights[i], minWeight)
		}
		// Members whose whole want fits in their fair share get it; the
		// rest share what is left in the next round.
		satisfied, round := false, left
		for i := range open {
			fair := float64(round) * max(weights[i], minWeight) / wsum
			if float64(wants[i]) <= fair {
				out[i] = wants[i]
				left -= wants[i]
				delete(open, i)
				satisfied = true
			}
		}
		if !satisfied {
			for i := range open {
				out[i] = int64(float64(left) * max(weights[i], minWeight) / wsum)
			}
			break
		}
	}
	return out
}
