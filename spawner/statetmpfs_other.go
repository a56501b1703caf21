//go:build !linux

package spawner

// MountStateTmpfs does nothing off Linux, where no container runs.
func MountStateTmpfs(string) (bool, error) { return false, nil }

// UnmountStateTmpfs does nothing off Linux.
func UnmountStateTmpfs(string) error { return nil }
