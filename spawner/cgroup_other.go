//go:build !linux

package spawner

import "time"

// Off Linux there are no cgroups; New refuses to run, so these only keep
// the package compiling.

func oomKilled(string) bool { return false }

func swapLimitSupported() bool { return false }

type usageFiles struct{}

func openUsage(string) (*usageFiles, error) { return nil, ErrNeedsLinux }

func (*usageFiles) read() (time.Duration, int64, bool) { return 0, 0, false }

func (*usageFiles) resetPeak() {}

func (*usageFiles) close() {}
