//go:build integration

package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/pkg/oci"
	"github.com/containerd/errdefs"

	"github.com/caddy-spawn/caddy-spawn/internal/hostprobe"
	"github.com/caddy-spawn/caddy-spawn/snapshots"
	"github.com/caddy-spawn/caddy-spawn/spawner"
)

// naive serves each request from a container made the plain way, as
// `ctr run` or go-dcgi do: new snapshot and container from the image's
// config and the default spec, a task with its stdout in a buffer, wait,
// start, wait for the exit, delete task and container (with its snapshot),
// then answer.
type naive struct {
	c       *client.Client
	img     client.Image
	fifoDir string
}

func (n *naive) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(namespaces.WithNamespace(context.WithoutCancel(r.Context()), nsNaive), 30*time.Second)
	defer cancel()
	out, err := n.run(ctx, []string{
		"GATEWAY_INTERFACE=CGI/1.1",
		"REQUEST_METHOD=" + r.Method,
		"REQUEST_URI=" + r.RequestURI,
	})
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	head, body, ok := bytes.Cut(out, []byte("\n\n"))
	if !ok {
		http.Error(w, fmt.Sprintf("no CGI header in %.200q", out), http.StatusBadGateway)
		return
	}
	for line := range strings.SplitSeq(string(head), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok {
			w.Header().Set(strings.TrimSpace(k), strings.TrimSpace(v))
		}
	}
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(body)
}

func (n *naive) run(ctx context.Context, env []string) (_ []byte, retErr error) {
	id := "bench-naive-" + randHex(12)
	ctr, err := n.c.NewContainer(ctx, id,
		client.WithImage(n.img),
		client.WithSnapshotter(snapshotter),
		client.WithNewSnapshot(id+"-rootfs", n.img),
		client.WithNewSpec(oci.WithImageConfig(n.img), oci.WithEnv(env)),
	)
	if err != nil {
		return nil, fmt.Errorf("creating container: %w", err)
	}
	defer func() {
		if err := ctr.Delete(ctx, client.WithSnapshotCleanup); err != nil && retErr == nil {
			retErr = fmt.Errorf("deleting container: %w", err)
		}
	}()
	var stdout, stderr bytes.Buffer
	task, err := ctr.NewTask(ctx, cio.NewCreator(cio.WithStreams(nil, &stdout, &stderr), cio.WithFIFODir(n.fifoDir)))
	if err != nil {
		return nil, fmt.Errorf("creating task: %w", err)
	}
	deleted := false
	defer func() {
		if !deleted {
			_, _ = task.Delete(ctx, client.WithProcessKill)
		}
	}()
	exitCh, err := task.Wait(ctx)
	if err != nil {
		return nil, fmt.Errorf("waiting on task: %w", err)
	}
	if err := task.Start(ctx); err != nil {
		return nil, fmt.Errorf("starting task: %w", err)
	}
	var st client.ExitStatus
	select {
	case st = <-exitCh:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	// The exit can be reported before our copy of stdout has drained the
	// FIFO, and Delete cancels the copies (closes the pipes): wait for them
	// to reach EOF first, or the output may be lost.
	ioDone := make(chan struct{})
	go func() {
		task.IO().Wait()
		close(ioDone)
	}()
	select {
	case <-ioDone:
	case <-ctx.Done():
		return nil, fmt.Errorf("waiting for stdout: %w", ctx.Err())
	}
	if _, err := task.Delete(ctx); err != nil {
		return nil, fmt.Errorf("deleting task: %w", err)
	}
	deleted = true
	if code := st.ExitCode(); code != 0 {
		return nil, fmt.Errorf("exit code %d: %s", code, stderr.String())
	}
	return stdout.Bytes(), nil
}

// runNaive measures the naive baseline in its own namespace of the same
// containerd, then removes that namespace.
func (b *bench) runNaive(ctx context.Context) (retErr error) {
	defer func() {
		if err := b.dropNamespace(nsNaive); err != nil {
			retErr = errors.Join(retErr, err)
		}
	}()
	ready, err := snapshots.Ensure(ctx, b.ctrd, nsNaive, snapshots.Source{
		Ref: helloRef, Archive: b.pre.helloTar, Snapshotter: snapshotter,
	}, b.log)
	if err != nil {
		return fmt.Errorf("importing %s into %s: %w", helloRef, nsNaive, err)
	}
	fifoDir := filepath.Join(b.benchRun, "naive-fifo")
	if err := os.MkdirAll(fifoDir, 0o700); err != nil {
		return err
	}
	srv := httptest.NewServer(&naive{c: b.ctrd, img: ready.Image, fifoDir: fifoDir})
	defer srv.Close()
	progress("naive: %d+%d requests", b.cfg.warmup, b.cfg.requests)
	ss, err := b.series(ctx, "naive", srv.URL+"/hello", nil)
	if err != nil {
		return err
	}
	st := latencies(ss)
	b.res.NaiveP50, b.res.NaiveP90, b.res.NaiveP99 = st.p50, st.p90, st.p99
	b.res.naive = st
	return nil
}

// dropNamespace removes everything from a namespace of the managed
// containerd and the namespace itself, and the namespace's parent cgroups.
// Containers still there are counted as leaked: the baselines remove their
// own.
func (b *bench) dropNamespace(ns string) error {
	ctx, cancel := context.WithTimeout(namespaces.WithNamespace(context.Background(), ns), time.Minute)
	defer cancel()
	var errs []error
	// Ours, labelled (the thaw baseline's): frozen ones are thawed first.
	if _, err := spawner.Sweep(ctx, b.ctrd, ns, snapshotter, "", b.log); err != nil {
		errs = append(errs, err)
	}
	ctrs, err := b.ctrd.Containers(ctx)
	if err != nil {
		errs = append(errs, fmt.Errorf("listing containers in %s: %w", ns, err))
	}
	for _, c := range ctrs {
		errs = append(errs, fmt.Errorf("container %s leaked in %s", c.ID(), ns))
		if t, err := c.Task(ctx, nil); err == nil {
			_, _ = t.Delete(ctx, client.WithProcessKill)
		}
		if err := c.Delete(ctx, client.WithSnapshotCleanup); err != nil && !errdefs.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("deleting container %s: %w", c.ID(), err))
		}
	}
	is := b.ctrd.ImageService()
	imgs, err := is.List(ctx)
	if err != nil {
		errs = append(errs, fmt.Errorf("listing images in %s: %w", ns, err))
	}
	for i, img := range imgs {
		var opts []images.DeleteOpt
		if i == len(imgs)-1 {
			// The last delete runs the garbage collector before it returns.
			opts = append(opts, images.SynchronousDelete())
		}
		if err := is.Delete(ctx, img.Name, opts...); err != nil && !errdefs.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("deleting image %s: %w", img.Name, err))
		}
	}
	ls := b.ctrd.LeasesService()
	if leases, err := ls.List(ctx); err == nil {
		for _, l := range leases {
			_ = ls.Delete(ctx, l)
		}
	}
	if err := b.ctrd.NamespaceService().Delete(ctx, ns); err != nil && !errdefs.IsNotFound(err) {
		errs = append(errs, fmt.Errorf("deleting namespace %s: %w", ns, err))
	}
	if err := hostprobe.RemoveNamespaceCgroups(ns); err != nil {
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		b.log.Warn("cleaning up namespace", zap.String("namespace", ns), zap.Error(errors.Join(errs...)))
	}
	return errors.Join(errs...)
}
