package jobs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
)

func newTestQueue(t *testing.T, dir string, l Limits) *Queue {
	t.Helper()
	q := NewQueue(Config{Store: NewStore(dir), Workers: 2, Limits: l})
	t.Cleanup(q.Close)
	return q
}

func waitFinal(t *testing.T, q *Queue, id string) *Job {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if j, ok := q.Get(id); ok && j.State.Final() {
			return j
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("job %s not final in time", id)
	return nil
}

// TestQueueRetries: an attempt failing until attempt 3 ends succeeded with
// 3 attempts and its output; one that always fails ends failed after
// 1+MaxRetries attempts, its last error kept.
func TestQueueRetries(t *testing.T) {
	q := newTestQueue(t, t.TempDir(), Limits{MaxRetries: 2, Backoff: time.Millisecond, ResultTTL: time.Hour})
	run := func(_ context.Context, a Attempt) Outcome {
		body, _ := io.ReadAll(a.Body)
		if string(body) == "always" || a.Number < 3 {
			return Outcome{Failed: true, Result: Result{Status: 502, Error: fmt.Sprintf("attempt %d", a.Number), Exited: true, ExitCode: 1}}
		}
		fmt.Fprintf(a.Output, "ok %s %d", body, a.Number)
		return Outcome{Result: Result{Status: 200, Exited: true}}
	}
	if err := q.Start(run); err != nil {
		t.Fatal(err)
	}
	ok, err := q.Accept(Job{Method: "POST", URI: "/"}, strings.NewReader("eventually"), 0)
	if err != nil {
		t.Fatal(err)
	}
	bad, err := q.Accept(Job{Method: "POST", URI: "/"}, strings.NewReader("always"), 0)
	if err != nil {
		t.Fatal(err)
	}
	j := waitFinal(t, q, ok.ID)
	if j.State != Succeeded || j.Attempts != 3 {
		t.Errorf("job: state %s attempts %d, want succeeded after 3", j.State, j.Attempts)
	}
	f, err := q.OpenOutput(ok.ID)
	if err != nil {
		t.Fatal(err)
	}
	out, _ := io.ReadAll(f)
	f.Close()
	if string(out) != "ok eventually 3" || j.Result.BodySize != int64(len(out)) {
		t.Errorf("output %q (size %d)", out, j.Result.BodySize)
	}
	j = waitFinal(t, q, bad.ID)
	if j.State != Failed || j.Attempts != 3 || j.Result.Error != "attempt 3" {
		t.Errorf("failing job: state %s attempts %d error %q, want failed after 3 with the last error", j.State, j.Attempts, j.Result.Error)
	}
}

// TestQueueRestart: a job whose attempt was running when the queue stopped
// runs again in a new queue on the same store with the next attempt
// number; a finished one keeps its result and does not run again.
func TestQueueRestart(t *testing.T) {
	dir := t.TempDir()
	q1 := NewQueue(Config{Store: NewStore(dir), Workers: 1, Limits: Limits{ResultTTL: time.Hour}})
	started := make(chan string, 2)
	release := make(chan struct{})
	run1 := func(ctx context.Context, a Attempt) Outcome {
		body, _ := io.ReadAll(a.Body)
		if string(body) == "quick" {
			return Outcome{Result: Result{Status: 200, Exited: true}}
		}
		started <- a.Job.ID
		select {
		case <-ctx.Done():
		case <-release:
		}
		return Outcome{Failed: true}
	}
	quick, _ := q1.Accept(Job{URI: "/"}, strings.NewReader("quick"), 0)
	if err := q1.Start(run1); err != nil {
		t.Fatal(err)
	}
	waitFinal(t, q1, quick.ID)
	slow, _ := q1.Accept(Job{URI: "/"}, strings.NewReader("slow"), 0)
	if id := <-started; id != slow.ID {
		t.Fatalf("started %s, want %s", id, slow.ID)
	}
	q1.Close() // as a crash would leave it: recorded as running

	var mu sync.Mutex
	runs := map[string]int{}
	q2 := newTestQueue(t, dir, Limits{ResultTTL: time.Hour})
	if err := q2.Start(func(_ context.Context, a Attempt) Outcome {
		mu.Lock()
		runs[a.Job.ID] = a.Number
		mu.Unlock()
		return Outcome{Result: Result{Status: 200, Exited: true}}
	}); err != nil {
		t.Fatal(err)
	}
	j := waitFinal(t, q2, slow.ID)
	mu.Lock()
	defer mu.Unlock()
	if j.State != Succeeded || runs[slow.ID] != 2 {
		t.Errorf("interrupted job: state %s, ran again as attempt %d; want succeeded at attempt 2", j.State, runs[slow.ID])
	}
	if n, ran := runs[quick.ID]; ran {
		t.Errorf("finished job ran again (attempt %d)", n)
	}
	if j, ok := q2.Get(quick.ID); !ok || j.State != Succeeded {
		t.Errorf("finished job after restart: %+v, %v", j, ok)
	}
}

// TestQueueMaxQueuedAndCancel: past MaxQueued nothing is stored; a
// cancelled queued job never runs, and its slot frees up.
func TestQueueMaxQueuedAndCancel(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "q")
	q := newTestQueue(t, dir, Limits{MaxQueued: 2, ResultTTL: time.Hour})
	a, err := q.Accept(Job{URI: "/"}, strings.NewReader("a"), 0)
	if err != nil {
		t.Fatal(err)
	}
	b, err := q.Accept(Job{URI: "/"}, strings.NewReader("b"), 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := q.Accept(Job{URI: "/"}, strings.NewReader("c"), 0); !errors.Is(err, ErrFull) {
		t.Fatalf("third accept: %v, want ErrFull", err)
	}
	if loaded, _ := NewStore(dir).Load(zap.NewNop()); len(loaded) != 2 {
		t.Errorf("%d jobs stored, want 2 (the refused one must not be)", len(loaded))
	}
	if found, err := q.Cancel(a.ID); !found || err != nil {
		t.Fatalf("cancel: %v %v", found, err)
	}
	if _, ok := q.Get(a.ID); ok {
		t.Error("cancelled job still found")
	}
	c, err := q.Accept(Job{URI: "/"}, strings.NewReader("c"), 0)
	if err != nil {
		t.Fatalf("accept after cancel: %v", err)
	}
	var mu sync.Mutex
	ran := map[string]bool{}
	if err := q.Start(func(_ context.Context, at Attempt) Outcome {
		mu.Lock()
		ran[at.Job.ID] = true
		mu.Unlock()
		return Outcome{Result: Result{Status: 200, Exited: true}}
	}); err != nil {
		t.Fatal(err)
	}
	waitFinal(t, q, b.ID)
	waitFinal(t, q, c.ID)
	mu.Lock()
	defer mu.Unlock()
	if ran[a.ID] {
		t.Error("the cancelled job ran")
	}
}

func TestBackoff(t *testing.T) {
	for n, want := range map[int]time.Duration{1: time.Second, 2: 2 * time.Second, 3: 4 * time.Second, 30: maxBackoff} {
		if got := backoff(time.Second, n); got != want {
			t.Errorf("backoff(1s, %d) = %s, want %s", n, got, want)
		}
	}
}
