// Command caddy is Caddy with the standard modules and caddy-spawn linked
// in, like Caddy's own cmd/caddy. Build your own with xcaddy instead if you
// need other plugins too (see xcaddy.Dockerfile).
package main

import (
	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	// Caddy's standard modules.
	_ "github.com/caddyserver/caddy/v2/modules/standard"

	// caddy-spawn: the spawn app and the http.handlers.spawn handler.
	_ "github.com/caddy-spawn/caddy-spawn/caddymodule"
)

func main() {
	caddycmd.Main()
}
