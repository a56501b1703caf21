//go:build !linux

package taskserver

import (
	"context"

	"go.uber.org/zap"
)

// Config is what a task server needs; see the Linux build.
type Config struct {
	Socket, StateDir, Crun, Events string
	Logger                         *zap.Logger
}

// Server is unavailable off Linux.
type Server struct{}

// New fails: the task server needs Linux.
func New(Config) (*Server, error) { return nil, ErrUnsupported }

// Serve is never reached off Linux.
func (*Server) Serve(context.Context) error { return ErrUnsupported }

// Close does nothing off Linux.
func (*Server) Close() {}

// CheckHost fails: the task server needs Linux.
func CheckHost(string) error { return ErrUnsupported }
