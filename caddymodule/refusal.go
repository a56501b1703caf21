package caddymodule

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/caddy-spawn/caddy-spawn/spawner"
)

// headerRefused marks a 503 a node sent before it read any of the request
// body, so a front may send the request to another node: its value is the
// reason. A front matches it with retry_match (see the README's "Running
// a fleet").
const headerRefused = "Spawn-Refused"

// Reasons in headerRefused.
const (
	refusedDraining   = "draining"   // the node drains (spawn_status POST /drain)
	refusedOverloaded = "overloaded" // max_concurrent or max_containers reached
	refusedNotReady   = "not-ready"  // the route's image is not ready, or containerd is unreachable
)

// refusalReason is the reason to mark err with, or "" when err is not a
// refusal before the body.
func refusalReason(err error) string {
	switch {
	case errors.Is(err, errDraining):
		return refusedDraining
	case errors.Is(err, errOverloaded), errors.Is(err, spawner.ErrAtCapacity):
		return refusedOverloaded
	case errors.Is(err, errImageNotReady), errors.Is(err, spawner.ErrImageNotReady), errors.Is(err, spawner.ErrUnavailable):
		return refusedNotReady
	}
	return ""
}

// markRefusal sets headerRefused on w when err refuses the request before
// its body was read, and returns err. Only steps that run before the body
// is touched may call it. A refused request with a body also closes the
// connection: otherwise Go's server reads up to 256 KiB of the unread body
// after the handler returns, to keep the connection, and for a client
// that sent "Expect: 100-continue" that read sends "100 Continue", so a
// front would send the body it could otherwise replay to another node.
func markRefusal(w http.ResponseWriter, r *http.Request, err error) error {
	if reason := refusalReason(err); reason != "" {
		w.Header().Set(headerRefused, reason)
		if r.ContentLength != 0 {
			closeAfterReply(w, r)
		}
	}
	return err
}

// refuseDraining refuses a request while this node drains.
func refuseDraining(w http.ResponseWriter, r *http.Request, route string) error {
	if !thisNode.draining.Load() {
		return nil
	}
	w.Header().Set("Retry-After", "1")
	return markRefusal(w, r, httpError(fmt.Errorf("route %s: %w", route, errDraining)))
}
