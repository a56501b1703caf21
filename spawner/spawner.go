package spawner

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/namespaces"
)

// Spawner makes containers for functions in one containerd namespace.
type Spawner struct {
	cfg Config
	log *zap.Logger
	wg  sync.WaitGroup // background releases

	mu       sync.Mutex
	closed   bool
	creating sync.WaitGroup
	live     map[*Instance]struct{}
	ids      map[string]int // IDs of live instances and creations in flight

	sandboxReady atomic.Bool // our sandbox record exists (fast path)
	tmpl         templates
	views        layerViews  // fast path: shared read-only image layers
	viewsWarned  atomic.Bool // said once that the snapshotter's views can't be shared
	slots        slots

	reapKick    chan struct{}
	stop        chan struct{}
	janitorDone chan struct{}
}

// ErrClosed is returned by Create after Close.
var ErrClosed = errors.New("spawner closed")

// Close stops new creations, waits for those in flight, and destroys every
// container this Spawner still has (pooled or serving). Destroying an
// instance afterwards is a no-op.
func (s *Spawner) Close(ctx context.Context) {
	s.mu.Lock()
	wasClosed := s.closed
	s.closed = true
	s.mu.Unlock()
	if !wasClosed {
		close(s.stop)
		<-s.janitorDone
	}
	s.creating.Wait()
	s.mu.Lock()
	live := make([]*Instance, 0, len(s.live))
	for i := range s.live {
		live = append(live, i)
	}
	s.mu.Unlock()
	var wg sync.WaitGroup
	for _, i := range live {
		wg.Go(func() {
			i.Destroy(ctx)
		})
	}
	wg.Wait()
	s.Drain(ctx)
	s.removeViews(ctx)
}

// begin registers a creation in flight; false after Close.
func (s *Spawner) begin() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.creating.Add(1)
	return true
}

func (s *Spawner) track(i *Instance) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.live[i] = struct{}{}
}

func (s *Spawner) untrack(i *Instance) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.live, i)
}

// hold and unhold mark an ID as ours while it is being created or is live,
// so the janitor leaves it alone.
func (s *Spawner) hold(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ids[id]++
}

func (s *Spawner) unhold(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ids[id]--; s.ids[id] <= 0 {
		delete(s.ids, id)
	}
}

func (s *Spawner) known(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ids[id] > 0
}

// Live returns how many containers this Spawner has (pooled or serving).
func (s *Spawner) Live() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.live)
}

// New returns a Spawner. It does no I/O besides creating FIFODir.
func New(cfg Config) (*Spawner, error) {
	if err := requireLinux(); err != nil {
		return nil, fmt.Errorf("spawner: %w", err)
	}
	if cfg.Client == nil {
		return nil, errors.New("spawner: no containerd client")
	}
	if cfg.Namespace == "" || cfg.Owner == "" || cfg.InitBinary == "" || cfg.FIFODir == "" {
		return nil, errors.New("spawner: namespace, owner, init binary and FIFO directory are required")
	}
	if cfg.Runtime == "" {
		cfg.Runtime = DefaultRuntime
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	if err := os.MkdirAll(cfg.FIFODir, 0o700); err != nil {
		return nil, fmt.Errorf("creating FIFO directory: %w", err)
	}
	s := &Spawner{
		cfg: cfg, log: cfg.Logger,
		live: map[*Instance]struct{}{}, ids: map[string]int{},
		reapKick: make(chan struct{}, 1), stop: make(chan struct{}), janitorDone: make(chan struct{}),
		slots: newSlots(cfg.MaxContainers),
	}
	go s.janitor()
	return s, nil
}

// Client returns the containerd client.
func (s *Spawner) Client() *client.Client { return s.cfg.Client }

// Namespace returns the containerd namespace.
func (s *Spawner) Namespace() string { return s.cfg.Namespace }

// Owner returns the owner ID put on everything this Spawner creates.
func (s *Spawner) Owner() string { return s.cfg.Owner }

func (s *Spawner) ctx(ctx context.Context) context.Context {
	return namespaces.WithNamespace(ctx, s.cfg.Namespace)
}

// Healthy reports whether containerd answers.
func (s *Spawner) Healthy(ctx context.Context) error {
	// IsServing waits for the connection without a deadline of its own:
	// a containerd that is down must not hang the caller.
	ctx, cancel := context.WithTimeout(ctx, healthTimeout)
	defer cancel()
	ok, err := s.cfg.Client.IsServing(s.ctx(ctx))
	if err != nil || !ok {
		return fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	return nil
}

// healthTimeout bounds one Healthy check.
const healthTimeout = 5 * time.Second

// EnsureNamespace creates our namespace if needed and labels it as ours.
func EnsureNamespace(ctx context.Context, c *client.Client, ns string) error {
	store := c.NamespaceService()
	err := store.Create(ctx, ns, map[string]string{LabelManaged: "true"})
	if err == nil {
		return nil
	}
	labels, lerr := store.Labels(ctx, ns)
	if lerr != nil {
		return fmt.Errorf("creating namespace %s: %w", ns, err)
	}
	if labels[LabelManaged] != "true" {
		if err := store.SetLabel(ctx, ns, LabelManaged, "true"); err != nil {
			return fmt.Errorf("labelling namespace %s: %w", ns, err)
		}
	}
	return nil
}
