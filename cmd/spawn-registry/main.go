// Command spawn-registry serves the example and test images from an
// in-memory registry on loopback, so the examples can be run from a registry
// instead of from archives:
//
//	spawn-registry [-images build/images] [-listen 127.0.0.1:5000] [-v]
//
// It pushes every DIR/*.tar (docker archives, as written by spawn-mkimage)
// to <listen>/caddy-spawn/<name>:latest, prints one line per image —
// reference, digest — and serves until interrupted. The registry is
// go-containerregistry's (pkg/registry): plain HTTP, no auth, nothing on
// disk. caddy-spawn pulls from loopback registries over plain HTTP without
// further configuration.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

func main() {
	images := flag.String("images", "build/images", "directory with the image archives to push")
	listen := flag.String("listen", "127.0.0.1:5000", "loopback address to serve the registry on")
	verbose := flag.Bool("v", false, "log every registry request to stderr")
	flag.Parse()
	logOut := io.Discard
	if *verbose {
		logOut = os.Stderr
	}
	if err := run(*images, *listen, log.New(logOut, "registry: ", log.LstdFlags)); err != nil {
		fmt.Fprintln(os.Stderr, "spawn-registry:", err)
		os.Exit(1)
	}
}

func run(dir, listen string, logger *log.Logger) error {
	host, _, err := net.SplitHostPort(listen)
	if err != nil {
		return fmt.Errorf("-listen %q: %w", listen, err)
	}
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return fmt.Errorf("-listen %q: not a loopback address (this registry has no auth)", listen)
	}
	archives, err := filepath.Glob(filepath.Join(dir, "*.tar"))
	if err != nil || len(archives) == 0 {
		return fmt.Errorf("no image archives in %s (run `make images`)", dir)
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return err
	}
	srv := &http.Server{
		Handler:           registry.New(registry.Logger(logger)),
		ReadHeaderTimeout: 10 * time.Second,
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()

	addr := ln.Addr().String()
	for _, a := range archives {
		img, err := tarball.ImageFromPath(a, nil)
		if err != nil {
			return fmt.Errorf("reading %s: %w", a, err)
		}
		ref := addr + "/caddy-spawn/" + strings.TrimSuffix(filepath.Base(a), ".tar") + ":latest"
		tag, err := name.NewTag(ref)
		if err != nil {
			return err
		}
		if err := remote.Write(tag, img); err != nil {
			return fmt.Errorf("pushing %s: %w", ref, err)
		}
		dg, err := img.Digest()
		if err != nil {
			return err
		}
		fmt.Printf("%s\t%s\n", ref, dg)
	}
	fmt.Printf("serving on http://%s; Ctrl-C to stop\n", addr)

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdown); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
