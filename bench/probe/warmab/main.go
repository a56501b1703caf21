// Command warmab sends paced warm requests to a Caddy route (each once the
// route's pool is full again, as the bench's warm series does), with host
// CGI (net/http/cgi running the hello binary in this process) after each,
// and then host CGI back to back, and prints the p50s and ratios. With
// WARMAB_TRACE=1 it writes each request's CLOCK_MONOTONIC start and end to
// stderr ("REQ" warm, "CGI" host CGI) for trace.sh and segments.py.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/http/cgi"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"time"
	_ "unsafe"
)

//go:linkname nanotime runtime.nanotime
func nanotime() int64

var trace = os.Getenv("WARMAB_TRACE") != ""

func get(cl *http.Client, url string) (time.Duration, string) {
	t0 := time.Now()
	m0 := nanotime()
	resp, err := cl.Get(url)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if trace {
		tag := "CGI"
		if strings.HasSuffix(url, "/warm") {
			tag = "REQ"
		}
		fmt.Fprintf(os.Stderr, "%s %d %d\n", tag, m0, nanotime())
	}
	return time.Since(t0), resp.Header.Get("X-Spawn-Start")
}

func idle(cl *http.Client, metrics string) int {
	resp, err := cl.Get(metrics)
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		l := sc.Text()
		if strings.HasPrefix(l, `caddy_spawn_pool_idle{route="warm"}`) {
			var v float64
			fmt.Sscanf(strings.Fields(l)[1], "%g", &v)
			return int(v)
		}
	}
	return -1
}

func pct(d []time.Duration, p int) float64 {
	s := slices.Clone(d)
	slices.Sort(s)
	return float64(s[len(s)*p/100].Microseconds()) / 1000
}

func main() {
	n := flag.Int("n", 200, "requests per series")
	url := flag.String("url", "http://127.0.0.1:8090/warm", "")
	metrics := flag.String("metrics", "http://127.0.0.1:2099/metrics", "")
	hello := flag.String("hello", "", "")
	size := flag.Int("pool", 4, "")
	flag.Parse()
	if *hello == "" {
		fmt.Fprintln(os.Stderr, "warmab: -hello is required (the hello function built for the host)")
		os.Exit(2)
	}
	srv := httptest.NewServer(&cgi.Handler{Path: *hello})
	defer srv.Close()
	cl := &http.Client{Transport: &http.Transport{Proxy: nil}}
	var warm, cgiPaced, cgiB2B []time.Duration
	miss := 0
	for i := 0; i < *n+10; i++ {
		for idle(cl, *metrics) != *size {
			time.Sleep(10 * time.Millisecond)
		}
		d, st := get(cl, *url)
		if st != "warm" {
			miss++
		}
		idle(cl, *metrics)
		dc, _ := get(cl, srv.URL+"/hello")
		if i >= 10 {
			warm = append(warm, d)
			cgiPaced = append(cgiPaced, dc)
		}
		time.Sleep(10 * time.Millisecond)
	}
	for i := 0; i < *n+10; i++ {
		d, _ := get(cl, srv.URL+"/hello")
		if i >= 10 {
			cgiB2B = append(cgiB2B, d)
		}
	}
	fmt.Printf("warm p50 %.3f p90 %.3f (misses %d) | cgi paced p50 %.3f | cgi b2b p50 %.3f | ratio b2b %.2f paced %.2f\n",
		pct(warm, 50), pct(warm, 90), miss, pct(cgiPaced, 50), pct(cgiB2B, 50), pct(warm, 50)/pct(cgiB2B, 50), pct(warm, 50)/pct(cgiPaced, 50))
}
