package caddymodule

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"testing"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/caddy-spawn/caddy-spawn/spawner"
)

func TestHTTPError(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		want int
	}{
		{name: "body too large", err: fmt.Errorf("route fn: %w: Content-Length 2 over max_request_body 1", errBodyTooLarge), want: http.StatusRequestEntityTooLarge},
		{name: "response too large", err: fmt.Errorf("route fn: %w", errResponseTooLarge), want: http.StatusBadGateway},
		{name: "timeout", err: fmt.Errorf("%w after 1s: %w", errTimeout, context.DeadlineExceeded), want: http.StatusGatewayTimeout},
		{name: "client gone", err: fmt.Errorf("%w: %w", errClientGone, context.Canceled), want: statusClientClosedRequest},
		{name: "overloaded", err: errOverloaded, want: http.StatusServiceUnavailable},
		{name: "at max_containers", err: fmt.Errorf("route r: %w", spawner.ErrAtCapacity), want: http.StatusServiceUnavailable},
		{name: "containerd down", err: fmt.Errorf("%w: %w", errStartFailed, spawner.ErrUnavailable), want: http.StatusServiceUnavailable},
		{name: "no output", err: fmt.Errorf("%w (exit code 137: killed by signal 9 (killed))", errFailedNoOutput), want: http.StatusBadGateway},
		{name: "bad output", err: errBadOutput, want: http.StatusBadGateway},
		{name: "start failed", err: errStartFailed, want: http.StatusBadGateway},
		{name: "unknown", err: errors.New("something else"), want: http.StatusBadGateway},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var he caddyhttp.HandlerError
			if err := httpError(tc.err); !errors.As(err, &he) || he.StatusCode != tc.want {
				t.Errorf("httpError(%v) = %v, want status %d", tc.err, err, tc.want)
			}
		})
	}
}
