//go:build !linux

package spawner

// Off Linux there are no cgroups; New refuses to run, so these only keep
// the package compiling.

func oomKilled(string) bool { return false }

func swapLimitSupported() bool { return false }
