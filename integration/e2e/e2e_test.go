//go:build integration

package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestHello(t *testing.T) {
	port := freePort(t)
	p := startCaddy(t, port, site(port, fmt.Sprintf(`	handle /hello {
		spawn %s {
			image_archive %s
		}
	}
`, helloRef, archive("hello"))))

	resp, body := p.get(t, "/hello")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /hello: status %d, want 200; body %q", resp.StatusCode, body)
	}
	if !bytes.Contains(body, []byte("Hello from a fresh container!")) {
		t.Errorf("GET /hello: body %q lacks the greeting", body)
	}
}

// parseEnv reads testfn env's output: KEY=VALUE per line.
func parseEnv(body []byte) map[string]string {
	env := map[string]string{}
	for line := range strings.SplitSeq(string(body), "\n") {
		if k, v, ok := strings.Cut(line, "="); ok {
			env[k] = v
		}
	}
	return env
}

// TestCGIEnvironment checks the RFC 3875 meta-variables the program sees,
// with the image's and the route's environment.
func TestCGIEnvironment(t *testing.T) {
	port := freePort(t)
	p := startCaddy(t, port, site(port,
		testfnRoute("/env/*", "env", "env", "script_name /env", "env FOO bar")))

	t.Run("post with length", func(t *testing.T) {
		body := "0123456789abcdef" // 16 bytes
		req, err := http.NewRequest(http.MethodPost, p.url("/env/a/b?x=1&y=2"), strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("X-Custom", "v")
		req.Header.Set("Content-Type", "text/plain")
		req.Header.Set("Proxy", "http://evil.example:3128") // httpoxy
		resp, out := p.do(t, req)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("status %d, want 200; body %q", resp.StatusCode, out)
		}
		env := parseEnv(out)
		want := map[string]string{
			"REQUEST_METHOD":    "POST",
			"QUERY_STRING":      "x=1&y=2",
			"SCRIPT_NAME":       "/env",
			"PATH_INFO":         "/a/b",
			"CONTENT_LENGTH":    "16",
			"CONTENT_TYPE":      "text/plain",
			"GATEWAY_INTERFACE": "CGI/1.1",
			"SERVER_PROTOCOL":   "HTTP/1.1",
			"SERVER_NAME":       "127.0.0.1",
			"SERVER_PORT":       fmt.Sprint(port),
			"REMOTE_ADDR":       "127.0.0.1",
			"REQUEST_URI":       "/env/a/b?x=1&y=2",
			"HTTP_X_CUSTOM":     "v",
			"FN_IMAGE_ENV":      "from-image", // the image's ENV survives
			"FOO":               "bar",        // the route's env
		}
		for k, v := range want {
			if got, ok := env[k]; !ok || got != v {
				t.Errorf("%s = %q (set: %t), want %q", k, got, ok, v)
			}
		}
		if env["SERVER_SOFTWARE"] == "" {
			t.Errorf("SERVER_SOFTWARE is empty or unset")
		}
		if v, ok := env["HTTP_PROXY"]; ok {
			t.Errorf("HTTP_PROXY=%q reached the program from a Proxy header (httpoxy)", v)
		}
		if t.Failed() {
			t.Logf("environment:\n%s", out)
		}
	})

	t.Run("chunked has no CONTENT_LENGTH", func(t *testing.T) {
		req, err := http.NewRequest(http.MethodPost, p.url("/env/chunked"), io.MultiReader(strings.NewReader("abc")))
		if err != nil {
			t.Fatal(err)
		}
		req.ContentLength = -1
		req.TransferEncoding = []string{"chunked"}
		resp, out := p.do(t, req)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("status %d, want 200; body %q", resp.StatusCode, out)
		}
		env := parseEnv(out)
		if v, ok := env["CONTENT_LENGTH"]; ok {
			t.Errorf("CONTENT_LENGTH=%q for a chunked request; want it unset", v)
		}
		if env["REQUEST_METHOD"] != "POST" || env["PATH_INFO"] != "/chunked" {
			t.Errorf("REQUEST_METHOD=%q PATH_INFO=%q, want POST and /chunked", env["REQUEST_METHOD"], env["PATH_INFO"])
		}
	})
}

// TestCGIHeaders checks how the program's CGI header block becomes the
// response: Status, other headers, Location, a malformed block, and the
// exit-code trailer.
func TestCGIHeaders(t *testing.T) {
	port := freePort(t)
	p := startCaddy(t, port, site(port,
		testfnRoute("/status", "status", "status 201"),
		testfnRoute("/location", "location", "location http://example.com/x"),
		testfnRoute("/bad", "badheader", "badheader"),
	))

	t.Run("status and headers", func(t *testing.T) {
		resp, body := p.get(t, "/status")
		if resp.StatusCode != http.StatusCreated {
			t.Errorf("status %d, want 201", resp.StatusCode)
		}
		if got := resp.Header.Get("X-Fn"); got != "yes" {
			t.Errorf("X-Fn = %q, want yes", got)
		}
		if got := resp.Header.Get("Content-Type"); got != "text/plain" {
			t.Errorf("Content-Type = %q, want text/plain", got)
		}
		if string(body) != "status 201\n" {
			t.Errorf("body %q, want %q", body, "status 201\n")
		}
		// The body has been read to EOF: the trailer is in.
		if got := resp.Trailer.Get("Spawn-Exit-Code"); got != "0" {
			t.Errorf("trailer Spawn-Exit-Code = %q, want 0 (trailers: %v)", got, resp.Trailer)
		}
	})

	t.Run("client redirect", func(t *testing.T) {
		resp, _ := p.get(t, "/location")
		if resp.StatusCode != http.StatusFound {
			t.Errorf("status %d, want 302", resp.StatusCode)
		}
		if got := resp.Header.Get("Location"); got != "http://example.com/x" {
			t.Errorf("Location = %q, want http://example.com/x", got)
		}
	})

	t.Run("malformed header block", func(t *testing.T) {
		resp, body := p.get(t, "/bad")
		if resp.StatusCode != http.StatusBadGateway {
			t.Errorf("status %d, want 502; body %q", resp.StatusCode, body)
		}
		if bytes.Contains(body, []byte("this is not a header line")) {
			t.Errorf("the program's malformed output leaked to the client: %q", body)
		}
		eventually(t, 5*time.Second, func() (bool, string) {
			_, ok := p.logs.ErrorMentioning("badheader")
			return ok, "no error log entry mentions route badheader"
		})
	})
}

// rawRoute is testfn cat-raw in raw output mode at /raw: stdout is the body.
func rawRoute() string {
	return testfnRoute("/raw", "rawcat", "cat-raw", "output raw", "timeout 2m")
}

func TestRawOutput(t *testing.T) {
	port := freePort(t)
	p := startCaddy(t, port, site(port, rawRoute()))

	// Looks like a CGI header block, with binary bytes: raw mode must not
	// parse any of it.
	in := []byte("Status: 500 Nope\r\nX-Evil: 1\r\n\r\nbody\x00\x01\xfe\xff after NUL\n")
	req, err := http.NewRequest(http.MethodPost, p.url("/raw"), bytes.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	resp, out := p.do(t, req)
	if resp.StatusCode != http.StatusOK {
		t.Errorf("status %d, want 200", resp.StatusCode)
	}
	if resp.Header.Get("X-Evil") != "" {
		t.Errorf("raw output was parsed as CGI headers: X-Evil=%q", resp.Header.Get("X-Evil"))
	}
	if !bytes.Equal(out, in) {
		t.Errorf("body %q, want exactly %q", out, in)
	}
}

// TestChunkedRoundTrip streams 20 MiB of unknown length (chunked) through a
// container's stdin and stdout and back.
func TestChunkedRoundTrip(t *testing.T) {
	port := freePort(t)
	p := startCaddy(t, port, site(port, rawRoute()))

	const size = 20 << 20
	data := make([]byte, size)
	if _, err := rand.Read(data); err != nil {
		t.Fatal(err)
	}
	want := sha256.Sum256(data)

	pr, pw := io.Pipe()
	go func() {
		// Small irregular writes, so the body really is streamed.
		rest := data
		for len(rest) > 0 {
			n := min(len(rest), 100_000)
			if _, err := pw.Write(rest[:n]); err != nil {
				pw.CloseWithError(err)
				return
			}
			rest = rest[n:]
		}
		pw.Close()
	}()
	req, err := http.NewRequest(http.MethodPost, p.url("/raw"), pr)
	if err != nil {
		t.Fatal(err)
	}
	req.ContentLength = -1 // unknown: Transfer-Encoding: chunked
	resp, err := p.client.Do(req)
	if err != nil {
		t.Fatalf("POST /raw: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d, want 200", resp.StatusCode)
	}
	h := sha256.New()
	n, err := io.Copy(h, resp.Body)
	if err != nil {
		t.Fatalf("reading response after %d bytes: %v", n, err)
	}
	if n != size {
		t.Errorf("got %d bytes back, want %d", n, size)
	}
	if got := h.Sum(nil); !bytes.Equal(got, want[:]) {
		t.Errorf("sha256 of the echoed body %x, want %x", got, want)
	}
}

// TestStreamingOrder checks that output reaches the client as the program
// writes it, not at its exit: the first line arrives well before the end.
func TestStreamingOrder(t *testing.T) {
	port := freePort(t)
	p := startCaddy(t, port, site(port,
		testfnRoute("/stream", "stream", "stream 3 700ms")))

	resp, err := p.client.Get(p.url("/stream"))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d, want 200", resp.StatusCode)
	}
	br := bufio.NewReader(resp.Body)
	first, err := br.ReadString('\n')
	if err != nil {
		t.Fatalf("reading the first line: %v", err)
	}
	firstAt := time.Now()
	rest, err := io.ReadAll(br)
	if err != nil {
		t.Fatalf("reading the rest: %v", err)
	}
	endAt := time.Now()
	if got := first + string(rest); got != "line 1\nline 2\nline 3\n" {
		t.Errorf("body %q", got)
	}
	// The program sleeps 700ms after each of 3 lines: the first line is
	// out at least 1.4s before the end, unless it was held back.
	if !firstAt.Before(endAt.Add(-time.Second)) {
		t.Errorf("first line arrived %s before the end of the response; want more than 1s (output is buffered, not streamed)", endAt.Sub(firstAt))
	}
}

// TestTimeout checks both timeout cases: before any output (504) and while
// streaming (response cut short); either way the request's container goes.
func TestTimeout(t *testing.T) {
	port := freePort(t)
	// The route's timeout is scaled too: the test must see the program
	// run before the timeout ends it.
	timeout := "timeout " + scaled(2*time.Second).String()
	p := startCaddy(t, port, site(port,
		testfnRoute("/sleep", "sleeper", "sleep 1h", timeout),
		testfnRoute("/spin", "spinner", "spin", timeout),
	))

	t.Run("before the header", func(t *testing.T) {
		type result struct {
			status int
			body   []byte
			err    error
		}
		done := make(chan result, 1)
		go func() {
			resp, err := p.client.Get(p.url("/sleep"))
			if err != nil {
				done <- result{err: err}
				return
			}
			defer resp.Body.Close()
			body, err := io.ReadAll(resp.Body)
			done <- result{resp.StatusCode, body, err}
		}()
		id := p.waitClaimed(t, 30*time.Second, "/testfn sleep 1h")
		res := <-done
		if res.err != nil {
			t.Fatalf("GET /sleep: %v", res.err)
		}
		if res.status != http.StatusGatewayTimeout {
			t.Errorf("status %d, want 504; body %q", res.status, res.body)
		}
		if id != "" {
			p.waitGone(t, id)
		}
	})

	t.Run("while streaming", func(t *testing.T) {
		resp, err := p.client.Get(p.url("/spin"))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("status %d, want 200 (sent before the timeout)", resp.StatusCode)
		}
		// The header is out: the program spins now.
		id := p.waitClaimed(t, 5*time.Second, "/testfn spin")
		body, err := io.ReadAll(resp.Body)
		if err == nil {
			t.Errorf("response ended cleanly (body %q); want it cut short so the client sees it is incomplete", body)
		}
		if !bytes.HasPrefix(body, []byte("started\n")) {
			t.Errorf("body %q, want it to start with %q", body, "started\n")
		}
		if got := resp.Trailer.Get("Spawn-Exit-Code"); got != "" {
			t.Errorf("a cut-short response carries exit code trailer %q", got)
		}
		p.waitLog(t, 5*time.Second, "response cut short", map[string]string{"route": "spinner", "reason": "timeout"})
		if id != "" {
			p.waitGone(t, id)
		}
	})
}

// TestClientDisconnect checks that a client going away kills its container.
func TestClientDisconnect(t *testing.T) {
	port := freePort(t)
	p := startCaddy(t, port, site(port,
		testfnRoute("/sleep", "sleeper", "sleep 1h", "timeout 5m")))

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.url("/sleep"), nil)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		resp, err := p.client.Do(req)
		if err == nil {
			resp.Body.Close()
			err = fmt.Errorf("got a response, status %d", resp.StatusCode)
		}
		done <- err
	}()

	// The request's container runs the program: the client goes away now.
	id := p.waitClaimed(t, 30*time.Second, "/testfn sleep 1h")
	cancel()
	gone := time.Now()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("client request: %v, want context.Canceled", err)
	}
	if id == "" {
		return
	}
	p.waitGone(t, id)
	// Reported, not asserted: speed is for benchmarks, not tests.
	t.Logf("container %s removed %s after the client went away", id, time.Since(gone).Round(time.Millisecond))
}

// TestNonZeroExit checks that a program failing without output gives 502,
// and its stderr and exit code reach Caddy's log.
func TestNonZeroExit(t *testing.T) {
	port := freePort(t)
	p := startCaddy(t, port, site(port,
		testfnRoute("/exit", "exiter", "exit 3")))

	resp, body := p.get(t, "/exit")
	if resp.StatusCode != http.StatusBadGateway {
		t.Errorf("status %d, want 502; body %q", resp.StatusCode, body)
	}
	if bytes.Contains(body, []byte("boom")) {
		t.Errorf("stderr leaked into the response: %q", body)
	}
	p.waitLog(t, 5*time.Second, "function stderr", map[string]string{
		"route":     "exiter",
		"exit_code": "3",
		"stderr":    "boom on stderr",
	})
}

// TestMissingImage checks that a route whose image does not exist is a
// clear error naming the route and image, and leaves a clean host: at start
// Caddy fails; on a reload the new config is refused and the old one keeps
// serving, and the final shutdown still stops the managed containerd.
func TestMissingImage(t *testing.T) {
	port := freePort(t)
	const ref = "localhost/caddy-spawn/nope:latest"
	nope := fmt.Sprintf(`	handle /nope {
		spawn %s {
			name nope
		}
	}
`, ref)
	hello := fmt.Sprintf(`	handle /hello {
		spawn %s {
			image_archive %s
		}
	}
`, helloRef, archive("hello"))

	t.Run("at start", func(t *testing.T) {
		p := launchCaddy(t, port, caddyfile(site(port, nope)))
		t.Cleanup(p.Stop)
		select {
		case <-p.proc.Exited():
		case <-time.After(startTimeout):
			p.dumpLogs()
			t.Fatalf("caddy still running %s after start with a missing image; want it to fail", startTimeout)
		}
		if p.proc.Err() == nil {
			t.Errorf("caddy exited with status 0; want non-zero")
		}
		out := p.logs.String()
		if !strings.Contains(out, "route nope") || !strings.Contains(out, ref) {
			t.Errorf("caddy's output does not name the route (nope) and the image (%s):\n%s", ref, out)
		}
		if _, ok := p.daemonPID(); !ok {
			t.Errorf("no \"managed containerd started\" log line: the failure happened before containerd, so this does not test the image path")
		}
		// Stop checks the daemon and its shims are gone and no mounts are
		// left.
		p.Stop()
	})

	t.Run("on reload", func(t *testing.T) {
		p := startCaddy(t, port, site(port, hello))
		req, err := http.NewRequest(http.MethodPost, "http://"+adminAddr+"/load",
			strings.NewReader(caddyfile(site(port, hello, nope))))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "text/caddyfile")
		resp, body := p.do(t, req)
		if resp.StatusCode == http.StatusOK {
			t.Errorf("POST /load of a config with a missing image: status 200; want an error")
		}
		if !strings.Contains(string(body), "route nope") || !strings.Contains(string(body), ref) {
			t.Errorf("POST /load: error %q does not name the route (nope) and the image (%s)", body, ref)
		}
		// The old config still serves.
		if resp, body := p.get(t, "/hello"); resp.StatusCode != http.StatusOK {
			t.Errorf("after the refused reload: GET /hello: status %d body %q, want 200", resp.StatusCode, body)
		}
		p.Stop()
		// The refused config must not keep the managed containerd referenced:
		// the shutdown stops it (and sweeps) rather than leaving it to die
		// with the Caddy process.
		if _, ok := p.logs.Find("managed containerd stopped", nil); !ok {
			t.Errorf("no \"managed containerd stopped\" log line at shutdown after a refused reload: the failed config's start kept a reference to the managed containerd, so shutdown neither swept nor stopped it")
		}
	})
}

// TestCleanup runs requests ending every which way and checks that nothing
// is left: before shutdown no container a request used, no stray snapshot
// or lease; after it no daemon, shim or mount; and a Caddy started next on
// the same containerd root finds no leftovers to sweep.
func TestCleanup(t *testing.T) {
	port := freePort(t)
	sites := site(port,
		fmt.Sprintf(`	handle /hello {
		spawn %s {
			image_archive %s
		}
	}
`, helloRef, archive("hello")),
		rawRoute(),
		testfnRoute("/exit", "exiter", "exit 3"),
		testfnRoute("/bad", "badheader", "badheader"),
		testfnRoute("/sleep", "sleeper", "sleep 1h", "timeout 1s"),
		testfnRoute("/partial", "partial", "output-then-exit 4"),
	)
	p := startCaddy(t, port, sites)

	for _, tc := range []struct {
		path   string
		status int
	}{
		{"/hello", 200},
		{"/exit", 502},
		{"/bad", 502},
		{"/sleep", 504},
		{"/partial", 200},
	} {
		resp, _ := p.get(t, tc.path)
		if resp.StatusCode != tc.status {
			t.Errorf("GET %s: status %d, want %d", tc.path, resp.StatusCode, tc.status)
		}
	}
	req, err := http.NewRequest(http.MethodPost, p.url("/raw"), strings.NewReader("x"))
	if err != nil {
		t.Fatal(err)
	}
	if resp, body := p.do(t, req); resp.StatusCode != 200 || string(body) != "x" {
		t.Errorf("POST /raw: status %d body %q, want 200 %q", resp.StatusCode, body, "x")
	}

	p.waitOnlyPooled(t)
	eventually(t, goneTimeout, func() (bool, string) {
		ls, err := p.managedLeases()
		if err != nil {
			return false, err.Error()
		}
		return len(ls) == 0, fmt.Sprintf("managed leases %v", ls)
	})
	pid, ok := p.daemonPID()
	if !ok {
		t.Fatal("no \"managed containerd started\" log line")
	}
	if !processAlive(pid, stateDir) {
		t.Fatalf("managed containerd (pid %d) is not running before Stop", pid)
	}

	// On a disk /run (this machine's ext4) the app put a tmpfs of its own
	// on the state and FIFO directories (state_tmpfs auto); on a tmpfs
	// /run it mounted nothing.
	var st syscall.Statfs_t
	if err := syscall.Statfs(filepath.Dir(stateDir), &st); err != nil {
		t.Fatal(err)
	}
	onDisk := st.Type != unix.TMPFS_MAGIC && st.Type != unix.RAMFS_MAGIC
	for _, dir := range []string{stateDir, runDir} {
		src, fstype := mountAt(dir)
		ours := fstype == "tmpfs" && src == "caddy-spawn-state"
		if ours != onDisk {
			t.Errorf("%s is mounted from %q (%q) with its parent on disk: %v; want the app's tmpfs caddy-spawn-state exactly when on disk", dir, src, fstype, onDisk)
		}
	}

	p.Stop()
	if processAlive(pid, stateDir) {
		t.Errorf("managed containerd (pid %d) still running after Caddy stopped", pid)
	}
	if procs := processesMentioning(stateDir); len(procs) > 0 {
		t.Errorf("processes of the managed containerd left: %v", procs)
	}
	if mounts := mountsUnder(ctrdRoot, stateDir, runDir); len(mounts) > 0 {
		t.Errorf("mounts left: %v", mounts)
	}
	if _, ok := p.logs.Find("managed containerd stopped", nil); !ok {
		t.Errorf("no \"managed containerd stopped\" log line: the daemon was not stopped by Caddy's shutdown")
	}

	// Whatever the first Caddy left in containerd's database (pooled
	// containers, snapshots, leases), the next one sweeps at start and says
	// so. It must find nothing.
	next := startCaddy(t, port, sites)
	if e, ok := next.logs.Find("swept leftovers", nil); ok {
		t.Errorf("the stopped Caddy left objects in containerd, swept by the next start: %v", e)
	}
	next.Stop()
}

// TestReload loads a changed config through the admin API into the running
// Caddy: the new route serves, the old one is gone (with its pool), and the
// process and its managed containerd are the same. Loading the same config
// again keeps the route's pooled containers.
func TestReload(t *testing.T) {
	port := freePort(t)
	oldSites := site(port, fmt.Sprintf(`	handle /old {
		spawn %s {
			name old
			image_archive %s
		}
	}
`, helloRef, archive("hello")))
	newSites := site(port, testfnRoute("/new", "new", "status 201", "pool 2"))

	p := startCaddy(t, port, oldSites)
	daemon, ok := p.daemonPID()
	if !ok {
		t.Fatal("no \"managed containerd started\" log line")
	}
	if resp, body := p.get(t, "/old"); resp.StatusCode != 200 {
		t.Fatalf("before reload: GET /old status %d, body %q", resp.StatusCode, body)
	}

	load := func(config string, force bool) {
		t.Helper()
		req, err := http.NewRequest(http.MethodPost, "http://"+adminAddr+"/load", strings.NewReader(config))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "text/caddyfile")
		if force {
			// Caddy skips a load of an unchanged config unless told not to.
			req.Header.Set("Cache-Control", "must-revalidate")
		}
		resp, body := p.do(t, req)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("POST /load: status %d: %s", resp.StatusCode, body)
		}
	}
	sameProcess := func(when string) {
		t.Helper()
		select {
		case <-p.proc.Exited():
			t.Fatalf("%s: caddy exited: %v", when, p.proc.Err())
		default:
		}
		if !processAlive(daemon, stateDir) {
			t.Errorf("%s: managed containerd (pid %d) is gone", when, daemon)
		}
		if n := len(p.logs.FindAll("managed containerd started", nil)); n != 1 {
			t.Errorf("%s: %d \"managed containerd started\" log lines, want 1 (the daemon must survive reloads)", when, n)
		}
		if _, ok := p.logs.Find("managed containerd stopped", nil); ok {
			t.Errorf("%s: the managed containerd was stopped during a reload", when)
		}
	}
	// pooled returns the route's pooled containers once the pool is full.
	pooled := func(route string, want int) []string {
		t.Helper()
		var ids []string
		eventually(t, 30*time.Second, func() (bool, string) {
			cs, _, err := p.containerStates()
			if err != nil {
				return false, err.Error()
			}
			ids = nil
			for _, c := range cs {
				if c.Route == route && !c.claimed() {
					ids = append(ids, c.ID)
				}
			}
			slices.Sort(ids)
			return len(ids) == want, fmt.Sprintf("route %s: pooled containers %v, want %d", route, ids, want)
		})
		return ids
	}

	load(caddyfile(newSites), false)
	sameProcess("after reload")
	if resp, body := p.get(t, "/new"); resp.StatusCode != http.StatusCreated || string(body) != "status 201\n" {
		t.Errorf("after reload: GET /new: status %d body %q, want 201 %q", resp.StatusCode, body, "status 201\n")
	}
	if resp, body := p.get(t, "/old"); resp.StatusCode != http.StatusNotFound {
		t.Errorf("after reload: GET /old: status %d body %q, want 404 (route removed)", resp.StatusCode, body)
	}
	// The removed route's pool is drained.
	eventually(t, goneTimeout, func() (bool, string) {
		cs, _, err := p.containerStates()
		if err != nil {
			return false, err.Error()
		}
		var left []string
		for _, c := range cs {
			if c.Route == "old" {
				left = append(left, c.ID)
			}
		}
		return len(left) == 0, fmt.Sprintf("containers of the removed route old: %v", left)
	})

	// The same config again, forced: the route is unchanged, so its pooled
	// containers must be the very same ones.
	before := pooled("new", 2)
	load(caddyfile(newSites), true)
	sameProcess("after second reload")
	after := pooled("new", 2)
	if !slices.Equal(before, after) {
		t.Errorf("reloading an unchanged config replaced the pool: before %v, after %v", before, after)
	}
	if resp, body := p.get(t, "/new"); resp.StatusCode != http.StatusCreated || string(body) != "status 201\n" {
		t.Errorf("after second reload: GET /new: status %d body %q, want 201 %q", resp.StatusCode, body, "status 201\n")
	}
}
