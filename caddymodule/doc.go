// Package caddymodule is the Caddy side of caddy-spawn, and the only package
// that imports Caddy. It owns:
//
//   - the "spawn" app (app.go): settings, getting every route's image ready at
//     start, and the background retry while containerd is away;
//   - the containerd backend (backend.go): one client per socket or managed
//     daemon, shared across config reloads, with the spawners made on it;
//   - routes (route.go): one pool of paused containers per distinct function,
//     shared across reloads under a key derived from the spawner.Function;
//   - the "http.handlers.spawn" handler (handler.go) and the steps of one
//     request (exchange.go) against a container seen through the process
//     interface (process.go);
//   - CGI: the request's meta-variables (cgirequest.go) and the parsing of the
//     program's response header (cgiresponse.go);
//   - configuration: the Caddyfile directive and global option (caddyfile.go)
//     and one checker per config field (checks.go);
//   - errors → HTTP statuses (errors.go), metrics (metrics.go) and the
//     `caddy spawn` command (command.go).
//
// Container lifecycle is spawner's; images and snapshots are snapshots'.
package caddymodule
