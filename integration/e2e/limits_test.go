//go:build integration

package e2e

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// checkUnprivileged checks testfn's "security" report (its
// /proc/self/status lines): root inside, no_new_privileges, seccomp
// filtering, and no capability in any set.
func checkUnprivileged(t *testing.T, status string) {
	t.Helper()
	for _, want := range []string{
		"Uid: 0 0 0 0", "NoNewPrivs: 1", "Seccomp: 2",
		"CapPrm: 0000000000000000", "CapEff: 0000000000000000",
		"CapBnd: 0000000000000000", "CapAmb: 0000000000000000",
	} {
		if !strings.Contains(status, want+"\n") {
			t.Errorf("status lacks %q:\n%s", want, status)
		}
	}
}

// TestIsolationDefaults checks what a default container may do, and the
// opt-outs: no privileges, seccomp, the nofile limit, no network but
// loopback (with `network host` opt-in), a read-only root and a non-root
// user on request. The network host route needs host_network_with_tcp_admin
// with this suite's TCP admin endpoint (TestHostNetworkAdmin tests that).
func TestIsolationDefaults(t *testing.T) {
	port := freePort(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var accepted atomic.Int32
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			c.Close()
		}
	}()
	hostAddr := ln.Addr().String()

	p := startCaddyConfig(t, port, caddyfileWith(site(port,
		testfnRoute("/security", "security", "security", "pool 0"),
		testfnRoute("/rlimit", "rlimit", "rlimit", "pool 0"),
		testfnRoute("/rlimit4096", "rlimit4096", "rlimit", "pool 0", "nofile 4096"),
		testfnRoute("/oom", "oom", "oom", "pool 0"),
		testfnRoute("/oom-pooled", "oom-pooled", "oom", "pool 1"),
		testfnRoute("/oom-disk", "oom-disk", "oom", "pool 0", "disk 16MiB"),
		testfnRoute("/id", "id", "id", "pool 0"),
		// Pooled: the init runs as nobody on a read-only root, and is
		// frozen and thawed like that.
		testfnRoute("/nobody", "nobody", "id", "user 65534", "read_only"),
		testfnRoute("/write", "write", "write /probe /tmp/probe", "pool 0"),
		testfnRoute("/write-ro", "write-ro", "write /probe /tmp/probe", "pool 0", "read_only"),
		testfnRoute("/connect", "connect", "connect "+hostAddr, "pool 0"),
		testfnRoute("/connect-host", "connect-host", "connect "+hostAddr, "pool 0", "network host"),
	), "host_network_with_tcp_admin"))

	t.Run("no privileges, seccomp", func(t *testing.T) {
		checkUnprivileged(t, p.okBody(t, "/security"))
	})

	t.Run("nofile", func(t *testing.T) {
		if got := p.okBody(t, "/rlimit"); got != "nofile=1024/1024\n" {
			t.Errorf("default: %q, want nofile=1024/1024", got)
		}
		if got := p.okBody(t, "/rlimit4096"); got != "nofile=4096/4096\n" {
			t.Errorf("nofile 4096: %q, want nofile=4096/4096", got)
		}
	})

	t.Run("oom score and core dumps", func(t *testing.T) {
		// fsize: the default disk bound (64 MiB) plus spawner.FsizeMargin.
		const want = "oom_score_adj=1000 core=0/0 fsize=68157440/68157440\n"
		for _, path := range []string{"/oom", "/oom-pooled"} {
			if got := p.okBody(t, path); got != want {
				t.Errorf("GET %s: %q, want %q", path, got, want)
			}
		}
		if got := p.okBody(t, "/oom-disk"); got != "oom_score_adj=1000 core=0/0 fsize=17825792/17825792\n" {
			t.Errorf("disk 16MiB: %q, want fsize 16 MiB + 1 MiB", got)
		}
	})

	t.Run("user", func(t *testing.T) {
		if got := p.okBody(t, "/id"); got != "uid=0 gid=0 groups=[0]\n" {
			t.Errorf("default user: %q, want the image's, root", got)
		}
		for range 2 { // warm, then the refill
			if got := p.okBody(t, "/nobody"); got != "uid=65534 gid=65534 groups=[65534]\n" {
				t.Errorf("user 65534: %q, want uid=65534 gid=65534 groups=[65534]", got)
			}
		}
	})

	t.Run("read_only", func(t *testing.T) {
		if got := p.okBody(t, "/write"); got != "/probe: ok\n/tmp/probe: ok\n" {
			t.Errorf("writable root: %q, want both writes ok", got)
		}
		want := "/probe: error: open /probe: read-only file system\n/tmp/probe: ok\n"
		if got := p.okBody(t, "/write-ro"); got != want {
			t.Errorf("read_only: %q, want %q", got, want)
		}
	})

	t.Run("network", func(t *testing.T) {
		got := p.okBody(t, "/connect")
		if !strings.HasPrefix(got, "error: ") || !strings.Contains(got, hostAddr) {
			t.Errorf("default network reached the host's %s: %q, want a connection error", hostAddr, got)
		}
		if n := accepted.Load(); n != 0 {
			t.Errorf("the host listener accepted %d connections from a default container", n)
		}
		if got := p.okBody(t, "/connect-host"); got != "connected\n" {
			t.Errorf("network host: %q, want connected", got)
		}
		if n := accepted.Load(); n != 1 {
			t.Errorf("the host listener accepted %d connections, want 1 (from network host)", n)
		}
	})
}

// TestMemoryLimit checks that a program allocating past `memory` is killed
// by the kernel's OOM killer, confined to its container's cgroup: 502, the
// log says it was killed, and the kernel log names the container.
func TestMemoryLimit(t *testing.T) {
	port := freePort(t)
	p := startCaddy(t, port, site(port,
		testfnRoute("/small", "memsmall", "alloc 8", "pool 0", "memory 32MiB"),
		testfnRoute("/hog", "memhog", "alloc 64", "pool 0", "memory 32MiB"),
	))

	resp, body := p.get(t, "/small")
	if resp.StatusCode != http.StatusOK || string(body) != "allocated 8 MiB\n" {
		t.Fatalf("alloc 8 under memory 32MiB: status %d body %q, want 200 and allocated 8 MiB", resp.StatusCode, body)
	}

	resp, body = p.get(t, "/hog")
	if resp.StatusCode != http.StatusBadGateway {
		t.Errorf("alloc 64 under memory 32MiB: status %d body %q, want 502", resp.StatusCode, body)
	}
	var entry map[string]any
	eventually(t, 5*time.Second, func() (bool, string) {
		var ok bool
		entry, ok = p.logs.ErrorMentioning("route memhog", "function exited without output", "exit code 137: killed by signal 9", "out of memory")
		return ok, "no error log entry says route memhog was killed by signal 9, out of memory"
	})
	if entry == nil {
		return
	}
	id := regexp.MustCompile(`caddy-spawn-memhog-[0-9a-f]+`).FindString(fmt.Sprint(entry["msg"]))
	if id == "" {
		t.Fatalf("error log %q names no container", entry["msg"])
	}
	// The kernel's OOM killer did it, within the container's memory cgroup.
	eventually(t, 5*time.Second, func() (bool, string) {
		out, err := exec.Command("dmesg").Output()
		if err != nil {
			return false, "dmesg: " + err.Error()
		}
		memcg := "oom_memcg=/" + namespace + "/" + id + ","
		for line := range strings.SplitSeq(string(out), "\n") {
			if strings.Contains(line, memcg) && strings.Contains(line, "task=testfn") {
				return true, ""
			}
		}
		return false, fmt.Sprintf("the kernel log has no OOM kill of testfn in %s", memcg)
	})
	p.waitGone(t, id)
}

// TestPidsLimit runs a fork bomb under `pids 32`: the container's process
// count stays at the limit, forks fail there, Caddy keeps serving, and the
// timeout kills the lot.
func TestPidsLimit(t *testing.T) {
	port := freePort(t)
	const pids = 32
	p := startCaddy(t, port, site(port,
		testfnRoute("/bomb", "forkbomb", "forkbomb", "pool 0", "pids "+strconv.Itoa(pids), "timeout 5s"),
		testfnRoute("/ok", "ok", "status 200", "pool 0"),
	))

	type result struct {
		status int
		err    error
	}
	done := make(chan result, 1)
	start := time.Now()
	go func() {
		resp, err := p.client.Get(p.url("/bomb"))
		if err != nil {
			done <- result{err: err}
			return
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		done <- result{status: resp.StatusCode}
	}()

	id := p.waitClaimed(t, 30*time.Second, "sleep 3600")
	if id == "" {
		t.FailNow()
	}
	cg := "/sys/fs/cgroup/pids/" + namespace + "/" + id
	if _, err := os.Stat("/sys/fs/cgroup/cgroup.controllers"); err == nil {
		cg = "/sys/fs/cgroup/" + namespace + "/" + id // cgroup v2
	}
	// The bomb runs into the limit: forks fail ("max" events) while the
	// count never passes it.
	peak := 0
	eventually(t, 4*time.Second, func() (bool, string) {
		cur, _ := readInt(cg + "/pids.current")
		peak = max(peak, cur)
		events, _ := os.ReadFile(cg + "/pids.events")
		return strings.Contains(string(events), "max ") && !strings.Contains(string(events), "max 0"),
			fmt.Sprintf("pids.events %q: no fork refused at the limit (pids.current %d)", events, cur)
	})
	if peak > pids {
		t.Errorf("pids.current peaked at %d, over the limit of %d", peak, pids)
	}
	// The host is fine: Caddy serves another route meanwhile.
	if resp, body := p.get(t, "/ok"); resp.StatusCode != http.StatusOK {
		t.Errorf("GET /ok during the fork bomb: status %d body %q", resp.StatusCode, body)
	}

	res := <-done
	if res.err != nil {
		t.Fatalf("GET /bomb: %v", res.err)
	}
	if res.status != http.StatusGatewayTimeout {
		t.Errorf("fork bomb: status %d, want 504 (killed at the timeout)", res.status)
	}
	if took := time.Since(start); took > 15*time.Second {
		t.Errorf("the fork bomb's request took %s with a 5s timeout", took)
	}
	p.waitGone(t, id)
	if _, err := os.Stat(cg); err == nil {
		t.Errorf("cgroup %s still exists after the container is gone", cg)
	}
}

// TestRequestBodyLimit checks max_request_body: a Content-Length over it
// gets 413 before any container starts; a chunked body going over it gets
// 413 if the program had not answered yet, else an aborted response.
func TestRequestBodyLimit(t *testing.T) {
	port := freePort(t)
	const limit = 1 << 20
	p := startCaddy(t, port, site(port,
		testfnRoute("/wc", "bodywc", "wc", "pool 0", "max_request_body 1MiB"),
		testfnRoute("/cat", "bodycat", "cat", "pool 0", "max_request_body 1MiB"),
	))

	t.Run("Content-Length over the limit", func(t *testing.T) {
		// Headers only: the 413 must come without the body being read.
		start := time.Now()
		resp, body, err := rawExchange(p, fmt.Sprintf(
			"POST /wc HTTP/1.1\r\nHost: localhost\r\nContent-Length: %d\r\n\r\n", 10*limit), nil)
		if err != nil {
			t.Fatalf("exchange: %v", err)
		}
		if resp.StatusCode != http.StatusRequestEntityTooLarge {
			t.Errorf("status %d, want 413; body %q", resp.StatusCode, body)
		}
		if took := time.Since(start); took > 2*time.Second {
			t.Errorf("413 took %s", took)
		}
		cs, _, err := p.containerStates()
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range cs {
			if c.Route == "bodywc" {
				t.Errorf("a container was made for a body refused up front: %+v", c)
			}
		}
	})

	t.Run("Content-Length at the limit", func(t *testing.T) {
		req, err := http.NewRequest(http.MethodPost, p.url("/wc"), bytes.NewReader(make([]byte, limit)))
		if err != nil {
			t.Fatal(err)
		}
		resp, body := p.do(t, req)
		if resp.StatusCode != http.StatusOK || string(body) != fmt.Sprintf("%d bytes\n", limit) {
			t.Errorf("status %d body %q, want 200 and %d bytes", resp.StatusCode, body, limit)
		}
	})

	t.Run("chunked under the limit", func(t *testing.T) {
		req, err := http.NewRequest(http.MethodPost, p.url("/wc"), io.MultiReader(bytes.NewReader(make([]byte, limit/2))))
		if err != nil {
			t.Fatal(err)
		}
		req.ContentLength = -1
		resp, body := p.do(t, req)
		if resp.StatusCode != http.StatusOK || string(body) != fmt.Sprintf("%d bytes\n", limit/2) {
			t.Errorf("status %d body %q, want 200 and %d bytes", resp.StatusCode, body, limit/2)
		}
	})

	t.Run("chunked over the limit before the header", func(t *testing.T) {
		resp, body, err := rawExchange(p,
			"POST /wc HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n",
			chunked(4*limit))
		if err != nil {
			t.Fatalf("exchange: %v", err)
		}
		if resp.StatusCode != http.StatusRequestEntityTooLarge {
			t.Errorf("status %d, want 413; body %q", resp.StatusCode, body)
		}
		// wc never saw the end of its input, so it could not answer for a
		// truncated body.
		if bytes.Contains(body, []byte("bytes")) {
			t.Errorf("the program answered for a truncated body: %q", body)
		}
		// The container was killed and removed (a 4xx is logged at debug
		// level only, like Caddy's own).
		p.waitOnlyPooled(t)
	})

	t.Run("chunked over the limit while streaming", func(t *testing.T) {
		pr, pw := io.Pipe()
		go func() {
			err := chunkedBody(pw, 4*limit)
			pw.CloseWithError(err)
		}()
		req, err := http.NewRequest(http.MethodPost, p.url("/cat"), pr)
		if err != nil {
			t.Fatal(err)
		}
		req.ContentLength = -1
		resp, err := p.client.Do(req)
		if err != nil {
			// The body write may fail first; the abort is what matters.
			t.Logf("POST /cat: %v", err)
		} else {
			if resp.StatusCode != http.StatusOK {
				t.Errorf("status %d, want 200 (cat sends its header at once)", resp.StatusCode)
			}
			got, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err == nil {
				t.Errorf("response ended cleanly after %d bytes; want it aborted", len(got))
			}
			if len(got) > limit {
				t.Errorf("echoed %d bytes, more than the %d the program may read", len(got), limit)
			}
			if tr := resp.Trailer.Get("Spawn-Exit-Code"); tr != "" {
				t.Errorf("an aborted response carries Spawn-Exit-Code %q", tr)
			}
		}
		p.waitLog(t, 5*time.Second, "response cut short",
			map[string]string{"route": "bodycat", "reason": "request body over max_request_body"})
		p.waitOnlyPooled(t)
	})
}

// TestResponseBytesLimit checks max_response_bytes: a program writing past
// it is killed and the client gets exactly the limit, then an aborted
// response.
func TestResponseBytesLimit(t *testing.T) {
	port := freePort(t)
	const limit = 1 << 20
	p := startCaddy(t, port, site(port,
		testfnRoute("/small", "floodsmall", "flood 1000", "pool 0", "max_response_bytes 1MiB"),
		testfnRoute("/exact", "floodexact", "flood "+strconv.Itoa(limit), "pool 0", "max_response_bytes 1MiB"),
		testfnRoute("/flood", "flood", "flood "+strconv.Itoa(64*limit), "pool 0", "max_response_bytes 1MiB"),
		testfnRoute("/unlimited", "floodall", "flood "+strconv.Itoa(1<<30), "pool 0"),
	))

	for _, tc := range []struct{ path string }{{"/small"}, {"/exact"}} {
		resp, body := p.get(t, tc.path)
		if resp.StatusCode != http.StatusOK || len(body) == 0 || len(body) > limit {
			t.Errorf("GET %s: status %d, %d bytes; want 200 and the whole body", tc.path, resp.StatusCode, len(body))
		}
		if got := resp.Trailer.Get("Spawn-Exit-Code"); got != "0" {
			t.Errorf("GET %s: Spawn-Exit-Code %q, want 0", tc.path, got)
		}
	}

	resp, err := p.client.Get(p.url("/flood"))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("status %d, want 200", resp.StatusCode)
	}
	body, err := io.ReadAll(resp.Body)
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("reading the body: %v, want io.ErrUnexpectedEOF (aborted)", err)
	}
	if len(body) != limit {
		t.Errorf("got %d bytes, want exactly max_response_bytes (%d)", len(body), limit)
	}
	if got := resp.Trailer.Get("Spawn-Exit-Code"); got != "" {
		t.Errorf("an aborted response carries Spawn-Exit-Code %q", got)
	}
	p.waitLog(t, 5*time.Second, "response cut short",
		map[string]string{"route": "flood", "reason": "response over max_response_bytes"})
	// Killed mid-write, its output unread: still gone at once.
	waitNoneClaimed(t, p, 2*time.Second)

	t.Run("client goes away mid-flood", func(t *testing.T) {
		resp, err := p.client.Get(p.url("/unlimited"))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.CopyN(io.Discard, resp.Body, 4<<20); err != nil {
			t.Fatalf("reading the first 4 MiB: %v", err)
		}
		p.waitClaimed(t, 5*time.Second, "/testfn flood")
		resp.Body.Close() // with most of the GiB unread: the connection closes
		p.waitLog(t, 5*time.Second, "client went away during response", map[string]string{"route": "floodall"})
		waitNoneClaimed(t, p, 2*time.Second)
	})
}

// waitNoneClaimed waits up to timeout until no container a request used is
// left (as waitOnlyPooled, with a tighter bound).
func waitNoneClaimed(t *testing.T, p *caddyProc, timeout time.Duration) {
	t.Helper()
	eventually(t, timeout, func() (bool, string) {
		cs, _, err := p.containerStates()
		if err != nil {
			return false, err.Error()
		}
		for _, c := range cs {
			if c.claimed() {
				return false, fmt.Sprintf("container %s (route %s, process %q) still there", c.ID, c.Route, c.Cmdline)
			}
		}
		return true, ""
	})
}

// rawExchange sends head on a new connection to p, then what body writes
// (in the background, ignoring write errors: the server may close early),
// and reads the response meanwhile.
func rawExchange(p *caddyProc, head string, body func(io.Writer) error) (*http.Response, []byte, error) {
	conn, err := net.DialTimeout("tcp", p.hostPort(), 5*time.Second)
	if err != nil {
		return nil, nil, err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		if _, err := io.WriteString(conn, head); err != nil || body == nil {
			return
		}
		_ = body(ctxWriter{ctx, conn})
	}()
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		return nil, nil, err
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, b, nil
}

// chunked returns a body writer sending n bytes in HTTP/1.1 chunks, then
// the last chunk.
func chunked(n int) func(io.Writer) error {
	return func(w io.Writer) error {
		chunk := bytes.Repeat([]byte("y"), 32<<10)
		for n > 0 {
			c := chunk[:min(n, len(chunk))]
			if _, err := fmt.Fprintf(w, "%x\r\n%s\r\n", len(c), c); err != nil {
				return err
			}
			n -= len(c)
		}
		_, err := io.WriteString(w, "0\r\n\r\n")
		return err
	}
}

// chunkedBody writes n bytes to w in 32 KiB writes (the client chunks them).
func chunkedBody(w io.Writer, n int) error {
	chunk := bytes.Repeat([]byte("z"), 32<<10)
	for n > 0 {
		c := chunk[:min(n, len(chunk))]
		if _, err := w.Write(c); err != nil {
			return err
		}
		n -= len(c)
	}
	return nil
}

// ctxWriter stops writing once ctx is done.
type ctxWriter struct {
	ctx context.Context
	w   io.Writer
}

func (c ctxWriter) Write(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.w.Write(p)
}

func readInt(path string) (int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(strings.TrimSpace(string(b)))
}
