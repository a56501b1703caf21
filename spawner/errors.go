package spawner

import "errors"

// Sentinel errors; caddymodule maps them to HTTP statuses.
var (
	// ErrImageNotReady: the route's image is not (yet) present and unpacked.
	ErrImageNotReady = errors.New("image not ready")
	// ErrUnavailable: containerd cannot be reached.
	ErrUnavailable = errors.New("containerd unavailable")
)
