package spawner

import (
	"context"
	"syscall"
	"time"

	tasks "github.com/containerd/containerd/api/services/tasks/v1"
	"github.com/containerd/containerd/api/types"
	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/containers"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/errdefs/pkg/errgrpc"
)

// taskOps is what an Instance does with its task: client.Task on the
// stock path, fastTask on the fast path's shared layers.
type taskOps interface {
	Wait(context.Context) (<-chan client.ExitStatus, error)
	Start(context.Context) error
	CloseIO(context.Context, ...client.IOCloserOpts) error
	Kill(context.Context, syscall.Signal, ...client.KillOpts) error
	Delete(context.Context, ...client.ProcessDeleteOpts) (*client.ExitStatus, error)
}

// fastTask is a task driven through containerd's task service directly,
// one call per step. The client's Task and Container make more for the
// same steps — creating a task reads the container record twice and its
// snapshot's mounts, deleting one reads its status, deleting a container
// looks for its task and reads its record again, and NewContainer takes
// and drops a lease, each a round trip and most a metadata transaction.
// A fast-path container on shared layers needs none of them: its record
// has no snapshot, its rootfs is the view's, and it is only ever deleted
// by us once its task is gone.
type fastTask struct {
	svc tasks.TasksClient
	id  string
}

// createFastContainer creates the container record from opts (as
// client.NewContainer would apply them) without a lease: nothing the
// record refers to is created with it.
func (s *Spawner) createFastContainer(ctx context.Context, id string, opts []client.NewContainerOpts) error {
	c := containers.Container{ID: id}
	for _, o := range opts {
		if err := o(ctx, s.cfg.Client, &c); err != nil {
			return err
		}
	}
	_, err := s.cfg.Client.ContainerService().Create(ctx, c)
	return err
}

// newFastTask creates the task of container id with dio as its stdio, the
// view's mounts as its rootfs, on the task server. It returns the task's
// handle even on error: containerd may have made the task before the
// error (its Create can fail after the runtime's), so the caller's
// teardown kills and deletes it by ID (NotFound when it never existed).
func (s *Spawner) newFastTask(ctx context.Context, id string, dio *cio.DirectIO, view *layerView) (*fastTask, error) {
	cfg := dio.Config()
	req := &tasks.CreateTaskRequest{
		ContainerID: id, Stdin: cfg.Stdin, Stdout: cfg.Stdout, Stderr: cfg.Stderr,
		TaskApiAddress: s.cfg.FastPath.Endpoint(), TaskApiVersion: 3,
	}
	for _, m := range view.mounts {
		req.Rootfs = append(req.Rootfs, &types.Mount{Type: m.Type, Source: m.Source, Target: m.Target, Options: m.Options})
	}
	t := &fastTask{svc: s.cfg.Client.TaskService(), id: id}
	if _, err := t.svc.Create(ctx, req); err != nil {
		return t, errgrpc.ToNative(err)
	}
	return t, nil
}

func (t *fastTask) Wait(ctx context.Context) (<-chan client.ExitStatus, error) {
	ch := make(chan client.ExitStatus, 1)
	go func() {
		defer close(ch)
		r, err := t.svc.Wait(ctx, &tasks.WaitRequest{ContainerID: t.id})
		if err != nil {
			ch <- *client.NewExitStatus(client.UnknownExitStatus, time.Time{}, errgrpc.ToNative(err))
			return
		}
		ch <- *client.NewExitStatus(r.ExitStatus, r.ExitedAt.AsTime(), nil)
	}()
	return ch, nil
}

func (t *fastTask) Start(ctx context.Context) error {
	_, err := t.svc.Start(ctx, &tasks.StartRequest{ContainerID: t.id})
	return errgrpc.ToNative(err)
}

// CloseIO closes the task's stdin (the only stream there is to close).
func (t *fastTask) CloseIO(ctx context.Context, _ ...client.IOCloserOpts) error {
	_, err := t.svc.CloseIO(ctx, &tasks.CloseIORequest{ContainerID: t.id, Stdin: true})
	return errgrpc.ToNative(err)
}

// Kill signals the task's init (its PID namespace goes with it).
func (t *fastTask) Kill(ctx context.Context, sig syscall.Signal, _ ...client.KillOpts) error {
	_, err := t.svc.Kill(ctx, &tasks.KillRequest{ContainerID: t.id, Signal: uint32(sig)})
	return errgrpc.ToNative(err)
}

// Delete removes the exited task; containerd refuses one still running.
func (t *fastTask) Delete(ctx context.Context, _ ...client.ProcessDeleteOpts) (*client.ExitStatus, error) {
	r, err := t.svc.Delete(ctx, &tasks.DeleteTaskRequest{ContainerID: t.id})
	if err != nil {
		return nil, errgrpc.ToNative(err)
	}
	return client.NewExitStatus(r.ExitStatus, r.ExitedAt.AsTime(), nil), nil
}
