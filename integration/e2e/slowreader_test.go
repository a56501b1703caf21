//go:build integration

package e2e

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"testing"
	"time"
)

// TestSlowReader: a client that sends a request to a route with a lot to
// say and never reads must not hold the container, nor the route's only
// max_concurrent slot, past the route's timeout: the write is cut at the
// deadline, the container is removed and the next request is served.
func TestSlowReader(t *testing.T) {
	const size = 20 << 20 // far more than socket buffers and HTTP/2 windows hold
	port := freePort(t)
	p := startCaddy(t, port, site(port,
		testfnRoute("/flood", "flood", fmt.Sprintf("flood %d", size),
			"pool 0", "timeout 2s", "max_concurrent 1", "queue_timeout 10s"),
	))

	for _, tc := range []struct {
		name  string
		stall func(t *testing.T) // sends the request, never reads
	}{
		{"HTTP/1.1", func(t *testing.T) {
			conn, err := net.Dial("tcp", p.hostPort())
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { conn.Close() })
			if tc, ok := conn.(*net.TCPConn); ok {
				_ = tc.SetReadBuffer(4096)
			}
			if _, err := fmt.Fprintf(conn, "GET /flood HTTP/1.1\r\nHost: %s\r\n\r\n", p.hostPort()); err != nil {
				t.Fatal(err)
			}
		}},
		{"h2c", func(t *testing.T) {
			var protos http.Protocols
			protos.SetUnencryptedHTTP2(true)
			tr := &http.Transport{Protocols: &protos}
			t.Cleanup(tr.CloseIdleConnections)
			resp, err := (&http.Client{Transport: tr}).Get(p.url("/flood"))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { resp.Body.Close() })
			if resp.ProtoMajor != 2 {
				t.Fatalf("stalled request went over %s, want HTTP/2", resp.Proto)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.stall(t)
			// The stalled client never reads; its container is running.
			stalled := p.waitClaimed(t, 30*time.Second, "/testfn flood")
			start := time.Now()

			// The second request waits for the slot (queue_timeout 10s),
			// which the stalled one must give back once its 2s timeout
			// has passed.
			resp, err := p.client.Get(p.url("/flood"))
			if err != nil {
				t.Fatal(err)
			}
			n, err := io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			waited := time.Since(start)
			if resp.StatusCode != http.StatusOK || err != nil || n != size {
				t.Fatalf("second request: status %d, %d bytes, %v; want 200 and %d bytes (waited %v)",
					resp.StatusCode, n, err, size, waited)
			}
			t.Logf("second request served after %v", waited)
			p.waitGone(t, stalled)
		})
	}
}
