//go:build !linux

package caddyproc

import (
	"os"
	"syscall"
)

// terminate is the signal Stop sends first. Off Linux (where caddy-spawn
// cannot run containers anyway) it is a plain interrupt.
var terminate = os.Interrupt

// sysProcAttr keeps the default process attributes off Linux.
func sysProcAttr() *syscall.SysProcAttr { return nil }

// killGroup kills Caddy itself off Linux.
func killGroup(p *os.Process) { _ = p.Kill() }
