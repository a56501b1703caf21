//go:build !linux

package spawner

// freezer is the cgroup freezer, which exists only on Linux; New refuses to
// run elsewhere, so this only keeps the package compiling.
type freezer struct{}

func newFreezer(string) (*freezer, error) { return nil, ErrNeedsLinux }

func (*freezer) freeze() error { return ErrNeedsLinux }

func (*freezer) thaw() error { return ErrNeedsLinux }

func (*freezer) close() {}
