//go:build !linux

package spawner

import "syscall"

// daemonProcAttr is never used: StartDaemon refuses to run off Linux.
func daemonProcAttr() *syscall.SysProcAttr { return nil }
