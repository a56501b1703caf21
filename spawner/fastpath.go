package spawner

import "errors"

// ErrFastPathUnavailable is returned by StartFastPath when this host cannot
// run the fast path; its message says why. The stock runc shim is used then.
var ErrFastPathUnavailable = errors.New("fast path unavailable")
