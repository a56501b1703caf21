package taskserver

import "errors"

// ErrUnsupported is returned by New when this host cannot run the task
// server's containers; the message says why. The spawn app then uses
// containerd's stock runc shim.
var ErrUnsupported = errors.New("fast path unavailable")
