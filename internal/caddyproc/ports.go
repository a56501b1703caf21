package caddyproc

import (
	"fmt"
	"net"
)

// FreePorts returns n distinct TCP ports that were free on loopback just
// now: the kernel picks each one (listening on port 0), and all n listeners
// stay open until every port is picked, so none repeats. The ports are
// closed again when FreePorts returns, for Caddy to bind: until it does,
// another process could take one (the tests and the bench run one at a
// time, so in practice nothing does).
func FreePorts(n int) ([]int, error) {
	ls := make([]net.Listener, 0, n)
	defer func() {
		for _, l := range ls {
			_ = l.Close()
		}
	}()
	ports := make([]int, 0, n)
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("finding a free port: %w", err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// FreePort returns one port as FreePorts does.
func FreePort() (int, error) {
	ports, err := FreePorts(1)
	if err != nil {
		return 0, err
	}
	return ports[0], nil
}
