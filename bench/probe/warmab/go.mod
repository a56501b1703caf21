// warmab is a probe, not part of caddy-spawn: its own module, so that the
// repository's builds, tests and lint leave it alone.
module github.com/caddy-spawn/caddy-spawn/bench/probe/warmab

go 1.24
