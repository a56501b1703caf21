//go:build !linux

// Command spawn-init is the first process of every caddy-spawn container;
// containers run only on Linux (see main.go). Elsewhere it only says so, so
// that the module builds and vets wherever Caddy does.
package main

import "os"

func main() {
	_, _ = os.Stderr.WriteString("spawn-init: runs only on Linux, as the first process of a caddy-spawn container\n")
	os.Exit(125)
}
