//go:build !linux

package spawner

import "time"

// Off Linux there are no cgroups; New refuses to run, so these only keep
// the package compiling.

func oomKilled(string) bool { return false }

func swapLimitSupported() bool { return false }

func readUsage(string) (time.Duration, int64, bool) { return 0, 0, false }

func resetMemoryPeak(string) {}
