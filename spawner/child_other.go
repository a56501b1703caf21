//go:build !linux

package spawner

import "syscall"

// childProcAttr is never used: supervised children need Linux.
func childProcAttr() *syscall.SysProcAttr { return nil }
