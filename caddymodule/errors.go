package caddymodule

import (
	"context"
	"errors"
	"net/http"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/caddy-spawn/caddy-spawn/spawner"
)

// statusClientClosedRequest is nginx's and Caddy's 499: the client went away.
const statusClientClosedRequest = 499

// Errors the handler reports; each maps to one HTTP status in httpError.
var (
	errTimeout        = errors.New("function timed out")
	errImageNotReady  = errors.New("function image is not ready")
	errBadOutput      = errors.New("function wrote a malformed CGI response")
	errFailedNoOutput = errors.New("function exited without output")
	errStartFailed    = errors.New("starting function container")
	errClientGone     = errors.New("client went away")
	errOverloaded     = errors.New("too many concurrent requests")
	errDraining       = errors.New("node is draining")
	errBodyTooLarge   = errors.New("request body too large")
	// errResponseTooLarge: the program announced a body over
	// max_response_bytes (one that writes past it is cut short instead).
	errResponseTooLarge = errors.New("function response too large")
	// Async jobs (async.go): the route's max_queued is reached; no such
	// job on this route; the job store failed, so nothing was accepted.
	errQueueFull   = errors.New("too many queued jobs")
	errJobNotFound = errors.New("no such job")
	errJobStore    = errors.New("storing job")
)

// httpError maps an error to a caddyhttp.HandlerError with the status the
// client gets. It is the only place that decides HTTP statuses.
func httpError(err error) error {
	status := http.StatusBadGateway
	switch {
	case errors.Is(err, errClientGone), errors.Is(err, context.Canceled):
		status = statusClientClosedRequest
	case errors.Is(err, errBodyTooLarge):
		status = http.StatusRequestEntityTooLarge
	case errors.Is(err, errTimeout), errors.Is(err, context.DeadlineExceeded):
		status = http.StatusGatewayTimeout
	case errors.Is(err, errJobNotFound):
		status = http.StatusNotFound
	case errors.Is(err, errOverloaded), errors.Is(err, errDraining), errors.Is(err, errImageNotReady), errors.Is(err, errQueueFull), errors.Is(err, errJobStore), errors.Is(err, spawner.ErrUnavailable),
		errors.Is(err, spawner.ErrImageNotReady), errors.Is(err, spawner.ErrAtCapacity):
		status = http.StatusServiceUnavailable
	case errors.Is(err, errBadOutput), errors.Is(err, errFailedNoOutput), errors.Is(err, errStartFailed), errors.Is(err, errResponseTooLarge):
		status = http.StatusBadGateway
	}
	return caddyhttp.Error(status, err)
}
