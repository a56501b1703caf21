//go:build !linux

package spawner

import (
	"context"
	"fmt"

	"go.uber.org/zap"

	"github.com/containerd/containerd/v2/client"
)

// FastPathConfig configures the fast path; see the Linux build.
type FastPathConfig struct {
	StateDir, Crun, Containerd, BinDir string
}

// FastPath is unavailable off Linux.
type FastPath struct{}

// SandboxID is the sandbox record our containers name.
const SandboxID = "caddy-spawn-task-server"

// StartFastPath fails off Linux.
func StartFastPath(context.Context, FastPathConfig, *zap.Logger) (*FastPath, error) {
	return nil, fmt.Errorf("%w: needs Linux", ErrFastPathUnavailable)
}

// Endpoint is never reached off Linux.
func (*FastPath) Endpoint() string { return "" }

// Runtime is never reached off Linux.
func (*FastPath) Runtime() string { return "" }

// Pid is never reached off Linux.
func (*FastPath) Pid() int { return 0 }

// Stop does nothing off Linux.
func (*FastPath) Stop(context.Context) {}

// EnsureSandbox is never reached off Linux.
func (*FastPath) EnsureSandbox(context.Context, *client.Client) error { return ErrFastPathUnavailable }

// RemoveSandbox does nothing off Linux.
func RemoveSandbox(context.Context, *client.Client) error { return nil }
