//go:build integration && fleet

package fleet

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptrace"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// shot is one request of a load.
type shot struct {
	method, path string
	body         int  // POST body bytes
	expect       bool // send Expect: 100-continue
}

// outcome is what one shot got.
type outcome struct {
	shot
	status int
	err    error
	took   time.Duration
	node   string // Spawn-Node of the response
	sent   time.Time
	// head is when the response head arrived (zero if none did), and
	// continued when the front asked for the body (100 Continue).
	head, continued time.Time
}

// midBody reports whether the shot failed while reading a 200 response's
// body, that is after a node had begun to answer it: no proxy can retry
// that, the client has the head already.
func (o outcome) midBody() bool {
	return o.err != nil && o.status == http.StatusOK && !o.head.IsZero()
}

// where tells how far the shot got, for failure messages.
func (o outcome) where() string {
	var parts []string
	if !o.continued.IsZero() {
		parts = append(parts, fmt.Sprintf("100 Continue at %s", o.continued.Sub(o.sent).Round(time.Millisecond)))
	}
	if o.head.IsZero() {
		parts = append(parts, "no response head")
	} else {
		parts = append(parts, fmt.Sprintf("head %d from %q at %s", o.status, o.node, o.head.Sub(o.sent).Round(time.Millisecond)))
	}
	return strings.Join(parts, ", ")
}

// failed reports whether the shot did not get its function's answer.
func (o outcome) failed() bool { return o.err != nil || o.status != http.StatusOK }

// load sends shots from next to base with workers at once, until ctx is
// done or limit shots were sent (load is always bounded), and returns
// every outcome.
func load(ctx context.Context, base string, workers, limit int, next func(i int) shot) []outcome {
	cl := &http.Client{
		Timeout: 60 * time.Second,
		Transport: &http.Transport{
			Proxy: nil, MaxIdleConnsPerHost: workers, DisableCompression: true,
			// As real clients wait (curl and Go's DefaultTransport: 1 s).
			// A front that answers an Expect request without reading its
			// body can hold that answer until the client gives up waiting
			// for 100 Continue and sends the body: seen here as a 502 the
			// front logged after 17 ms reaching a client that waited 30 s.
			ExpectContinueTimeout: time.Second,
		},
	}
	defer cl.CloseIdleConnections()
	var (
		n   atomic.Int64
		mu  sync.Mutex
		out []outcome
		wg  sync.WaitGroup
	)
	for range workers {
		wg.Go(func() {
			for ctx.Err() == nil {
				i := int(n.Add(1)) - 1
				if i >= limit {
					return
				}
				o := fire(cl, base, next(i))
				mu.Lock()
				out = append(out, o)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return out
}

// fire sends one shot and checks its answer: "slept" for a GET, the
// body's length for a POST.
func fire(cl *http.Client, base string, s shot) (o outcome) {
	o = outcome{shot: s, sent: time.Now()}
	var body io.Reader
	if s.body > 0 {
		body = strings.NewReader(strings.Repeat("x", s.body))
	}
	req, err := http.NewRequest(s.method, base+s.path, body)
	if err != nil {
		o.err = err
		return o
	}
	if s.expect {
		req.Header.Set("Expect", "100-continue")
	}
	var continued atomic.Int64
	req = req.WithContext(httptrace.WithClientTrace(req.Context(), &httptrace.ClientTrace{
		Got100Continue: func() { continued.Store(time.Now().UnixNano()) },
	}))
	defer func() {
		if ns := continued.Load(); ns != 0 {
			o.continued = time.Unix(0, ns)
		}
	}()
	resp, err := cl.Do(req)
	if err != nil {
		o.err, o.took = err, time.Since(o.sent)
		return o
	}
	o.head = time.Now()
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	o.took, o.status, o.node = time.Since(o.sent), resp.StatusCode, resp.Header.Get("Spawn-Node")
	want := "slept\n"
	if s.method == http.MethodPost {
		want = fmt.Sprintf("%d bytes\n", s.body)
	}
	switch {
	case err != nil:
		o.err = err
	case o.status == http.StatusOK && string(b) != want:
		o.err = fmt.Errorf("body %q, want %q", b, want)
	case o.status != http.StatusOK:
		o.err = fmt.Errorf("status %d: %.200s", o.status, b)
	}
	return o
}

// tally counts an outcome list.
type tally struct {
	gets, posts, failedGets, failedPosts int
	slowestFailure                       time.Duration
	byNode                               map[string]int
	failures                             []string
}

func count(out []outcome) tally {
	t := tally{byNode: map[string]int{}}
	for _, o := range out {
		get := o.method == http.MethodGet
		if get {
			t.gets++
		} else {
			t.posts++
		}
		t.byNode[o.node]++
		if !o.failed() {
			continue
		}
		if get {
			t.failedGets++
		} else {
			t.failedPosts++
		}
		t.slowestFailure = max(t.slowestFailure, o.took)
		if len(t.failures) < 10 {
			t.failures = append(t.failures, fmt.Sprintf("%s %s after %s (%s): %v", o.method, o.path, o.took.Round(time.Millisecond), o.where(), o.err))
		}
	}
	return t
}

// p99 is the 99th percentile latency of the outcomes.
func p99(out []outcome) time.Duration {
	if len(out) == 0 {
		return 0
	}
	d := make([]time.Duration, len(out))
	for i, o := range out {
		d[i] = o.took
	}
	slices.Sort(d)
	return d[min(len(d)-1, len(d)*99/100)]
}

// mixed is the load of the failure cases: GETs over a, b and c, and every
// fourth shot a POST of 64 KiB with Expect: 100-continue.
func mixed(i int) shot {
	if i%4 == 3 {
		return shot{method: http.MethodPost, path: "/p/fn", body: 64 << 10, expect: true}
	}
	return shot{method: http.MethodGet, path: "/" + string(rune('a'+i%3)) + "/fn"}
}

// skewed is the load of the policy comparison: 70% a, 20% b, 10% c, one
// URI per route (as a client calling three functions would).
func skewed(i int) shot {
	r := "a"
	switch i % 10 {
	case 7, 8:
		r = "b"
	case 9:
		r = "c"
	}
	return shot{method: http.MethodGet, path: "/" + r + "/fn"}
}
