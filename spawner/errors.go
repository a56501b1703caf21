package spawner

import (
	"errors"
	"fmt"
	"runtime"
)

// Sentinel errors; caddymodule maps them to HTTP statuses.
var (
	// ErrImageNotReady: the route's image is not (yet) present and unpacked.
	ErrImageNotReady = errors.New("image not ready")
	// ErrUnavailable: containerd cannot be reached.
	ErrUnavailable = errors.New("containerd unavailable")
	// ErrAtCapacity: the Spawner has MaxContainers containers and none
	// was given back in time.
	ErrAtCapacity = errors.New("at the container limit")
	// ErrNeedsLinux: spawning containers needs Linux (containerd's runc
	// shim, cgroups, FIFOs); the module compiles elsewhere, but New and
	// StartDaemon return this error there.
	ErrNeedsLinux = errors.New("spawning containers needs Linux")
)

// goos is runtime.GOOS; a variable so that tests on Linux can see what
// other systems get.
var goos = runtime.GOOS

// requireLinux returns ErrNeedsLinux, naming the system, off Linux.
func requireLinux() error {
	if goos == "linux" {
		return nil
	}
	return fmt.Errorf("%w (containerd's runc shim, cgroups, FIFOs); this program runs on %s", ErrNeedsLinux, goos)
}
