package taskserver

import (
	"context"
	"fmt"
	"os"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/timestamppb"

	eventstypes "github.com/containerd/containerd/api/events"
	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	tasktypes "github.com/containerd/containerd/api/types/task"
	"github.com/containerd/containerd/v2/core/runtime"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
)

// service is the ttrpc face of a Server: containerd's task API v3.
type service struct{ s *Server }

var _ taskAPI.TTRPCTaskService = (*service)(nil)

func (v *service) task(id, execID string) (*task, error) {
	if execID != "" {
		return nil, fmt.Errorf("exec processes: %w", errdefs.ErrNotImplemented)
	}
	t, ok := v.s.get(id)
	if !ok {
		return nil, fmt.Errorf("task %s: %w", id, errdefs.ErrNotFound)
	}
	return t, nil
}

func (v *service) Create(ctx context.Context, r *taskAPI.CreateTaskRequest) (*taskAPI.CreateTaskResponse, error) {
	ns, _ := namespaces.Namespace(ctx)
	t, err := v.s.create(ctx, ns, r)
	if err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	v.s.events.publish(ns, runtime.TaskCreateEventTopic, &eventstypes.TaskCreate{
		ContainerID: t.id, Bundle: t.bundle, Pid: uint32(t.pid),
		IO: &eventstypes.TaskIO{Stdin: t.stdin, Stdout: t.stdout, Stderr: t.stderr},
	})
	return &taskAPI.CreateTaskResponse{Pid: uint32(t.pid)}, nil
}

func (v *service) Start(ctx context.Context, r *taskAPI.StartRequest) (*taskAPI.StartResponse, error) {
	t, err := v.task(r.ID, r.ExecID)
	if err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	if st := t.status(); st != tasktypes.Status_CREATED {
		return nil, errgrpc.ToGRPC(fmt.Errorf("task %s is %s: %w", t.id, st, errdefs.ErrFailedPrecondition))
	}
	if err := v.s.crun.start(ctx, t.id, t.bundle, t.hooks); err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	t.mu.Lock()
	t.started = true
	t.mu.Unlock()
	v.s.events.publish(t.ns, runtime.TaskStartEventTopic, &eventstypes.TaskStart{ContainerID: t.id, Pid: uint32(t.pid)})
	return &taskAPI.StartResponse{Pid: uint32(t.pid)}, nil
}

func (v *service) Delete(ctx context.Context, r *taskAPI.DeleteRequest) (*taskAPI.DeleteResponse, error) {
	t, err := v.task(r.ID, r.ExecID)
	if err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	code, at, ok := t.exitStatus()
	if !ok {
		if t.status() != tasktypes.Status_CREATED {
			return nil, errgrpc.ToGRPC(fmt.Errorf("task %s is running: %w", t.id, errdefs.ErrFailedPrecondition))
		}
		// Created but never started: as runc's shim, remove it.
		_ = unix.Kill(t.pid, unix.SIGKILL)
		select {
		case <-t.exited:
		case <-ctx.Done():
			return nil, errgrpc.ToGRPC(ctx.Err())
		}
		code, at, _ = t.exitStatus()
	}
	// One Delete wins; a concurrent one finds the task gone.
	v.s.mu.Lock()
	if v.s.tasks[t.id] != t {
		v.s.mu.Unlock()
		return nil, errgrpc.ToGRPC(fmt.Errorf("task %s: %w", t.id, errdefs.ErrNotFound))
	}
	delete(v.s.tasks, t.id)
	v.s.mu.Unlock()
	v.s.cleanup(t)
	v.s.events.publish(t.ns, runtime.TaskDeleteEventTopic, &eventstypes.TaskDelete{
		ContainerID: t.id, Pid: uint32(t.pid), ExitStatus: code, ExitedAt: timestamppb.New(at), ID: t.id,
	})
	return &taskAPI.DeleteResponse{Pid: uint32(t.pid), ExitStatus: code, ExitedAt: timestamppb.New(at)}, nil
}

func (v *service) Kill(ctx context.Context, r *taskAPI.KillRequest) (*emptypb.Empty, error) {
	t, err := v.task(r.ID, r.ExecID)
	if err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	if _, _, ok := t.exitStatus(); ok {
		return nil, errgrpc.ToGRPC(fmt.Errorf("process already finished: %w", errdefs.ErrNotFound))
	}
	// The init is PID 1 of its own PID namespace: SIGKILL to it takes
	// every process of the container with it, so All needs nothing more.
	if err := unix.Kill(t.pid, unix.Signal(r.Signal)); err != nil {
		if err == unix.ESRCH {
			return nil, errgrpc.ToGRPC(fmt.Errorf("process already finished: %w", errdefs.ErrNotFound))
		}
		return nil, errgrpc.ToGRPC(fmt.Errorf("signalling %s: %w", t.id, err))
	}
	// A frozen process acts on SIGKILL only once thawed: as runc does,
	// thaw the container after killing it, whoever froze it (we, or a
	// write to its freezer).
	if unix.Signal(r.Signal) == unix.SIGKILL {
		v.s.thaw(t)
		t.mu.Lock()
		t.paused = false
		t.mu.Unlock()
	}
	return &emptypb.Empty{}, nil
}

func (v *service) Wait(ctx context.Context, r *taskAPI.WaitRequest) (*taskAPI.WaitResponse, error) {
	t, err := v.task(r.ID, r.ExecID)
	if err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	select {
	case <-t.exited:
	case <-ctx.Done():
		return nil, errgrpc.ToGRPC(ctx.Err())
	}
	code, at, _ := t.exitStatus()
	return &taskAPI.WaitResponse{ExitStatus: code, ExitedAt: timestamppb.New(at)}, nil
}

func (v *service) State(ctx context.Context, r *taskAPI.StateRequest) (*taskAPI.StateResponse, error) {
	t, err := v.task(r.ID, r.ExecID)
	if err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	resp := &taskAPI.StateResponse{
		ID: t.id, Bundle: t.bundle, Pid: uint32(t.pid), Status: t.status(),
		Stdin: t.stdin, Stdout: t.stdout, Stderr: t.stderr,
	}
	if code, at, ok := t.exitStatus(); ok {
		resp.ExitStatus, resp.ExitedAt = code, timestamppb.New(at)
	}
	return resp, nil
}

func (v *service) Pause(ctx context.Context, r *taskAPI.PauseRequest) (*emptypb.Empty, error) {
	return v.freeze(ctx, r.ID, true)
}

func (v *service) Resume(ctx context.Context, r *taskAPI.ResumeRequest) (*emptypb.Empty, error) {
	return v.freeze(ctx, r.ID, false)
}

func (v *service) freeze(ctx context.Context, id string, pause bool) (*emptypb.Empty, error) {
	t, err := v.task(id, "")
	if err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	cmd := "resume"
	if pause {
		cmd = "pause"
	}
	if err := v.s.crun.run(ctx, t.bundle+"/crun.log", [3]*os.File{}, cmd, id); err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	t.mu.Lock()
	t.paused = pause
	t.mu.Unlock()
	return &emptypb.Empty{}, nil
}

func (v *service) Pids(ctx context.Context, r *taskAPI.PidsRequest) (*taskAPI.PidsResponse, error) {
	t, err := v.task(r.ID, "")
	if err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	return &taskAPI.PidsResponse{Processes: []*tasktypes.ProcessInfo{{Pid: uint32(t.pid)}}}, nil
}

// CloseIO has nothing to do: the container reads the stdin FIFO itself,
// and sees EOF when the client closes its end.
func (v *service) CloseIO(ctx context.Context, r *taskAPI.CloseIORequest) (*emptypb.Empty, error) {
	if _, err := v.task(r.ID, r.ExecID); err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	return &emptypb.Empty{}, nil
}

func (v *service) Connect(ctx context.Context, r *taskAPI.ConnectRequest) (*taskAPI.ConnectResponse, error) {
	resp := &taskAPI.ConnectResponse{ShimPid: uint32(os.Getpid())}
	if t, ok := v.s.get(r.ID); ok {
		resp.TaskPid = uint32(t.pid)
	}
	return resp, nil
}

// Shutdown is a no-op: containerd asks every task's shim to shut down after
// the task's delete, but this server is shared by all of them.
func (v *service) Shutdown(ctx context.Context, r *taskAPI.ShutdownRequest) (*emptypb.Empty, error) {
	return &emptypb.Empty{}, nil
}

func (v *service) Exec(ctx context.Context, r *taskAPI.ExecProcessRequest) (*emptypb.Empty, error) {
	return nil, errgrpc.ToGRPC(fmt.Errorf("exec: %w", errdefs.ErrNotImplemented))
}

func (v *service) ResizePty(ctx context.Context, r *taskAPI.ResizePtyRequest) (*emptypb.Empty, error) {
	return nil, errgrpc.ToGRPC(fmt.Errorf("terminals: %w", errdefs.ErrNotImplemented))
}

func (v *service) Checkpoint(ctx context.Context, r *taskAPI.CheckpointTaskRequest) (*emptypb.Empty, error) {
	return nil, errgrpc.ToGRPC(fmt.Errorf("checkpoint: %w", errdefs.ErrNotImplemented))
}

func (v *service) Update(ctx context.Context, r *taskAPI.UpdateTaskRequest) (*emptypb.Empty, error) {
	return nil, errgrpc.ToGRPC(fmt.Errorf("update: %w", errdefs.ErrNotImplemented))
}

func (v *service) Stats(ctx context.Context, r *taskAPI.StatsRequest) (*taskAPI.StatsResponse, error) {
	return nil, errgrpc.ToGRPC(fmt.Errorf("stats: %w", errdefs.ErrNotImplemented))
}

func (s *Server) publishExit(t *task) {
	code, at, _ := t.exitStatus()
	s.logger.Debug("container exited", zap.String("container", t.id), zap.Uint32("status", code))
	s.events.publish(t.ns, runtime.TaskExitEventTopic, &eventstypes.TaskExit{
		ContainerID: t.id, ID: t.id, Pid: uint32(t.pid), ExitStatus: code, ExitedAt: timestamppb.New(at),
	})
}
