package caddymodule

import (
	"errors"
	"fmt"
	"reflect"
	"strings"

	"github.com/caddyserver/caddy/v2"
)

// adminEndpoint is where Caddy's local admin API listens in the config being
// loaded. Whoever reaches it can rewrite the whole config — load a route that
// runs any image with any settings — so it matters whether a process in the
// host's network namespace (a local user, a function on a network host
// route) can reach it without access to the host's filesystem.
type adminEndpoint struct {
	disabled bool
	// network and host as caddy.ParseNetworkAddress splits the listen
	// address: "tcp" and "localhost", "unix" and "/run/caddy-admin.sock".
	network, host string
	// address is the resolved listen address, for messages: host:port on
	// IP networks ("localhost:2019"), else network and path
	// ("unix//run/caddy-admin.sock").
	address string
	// unknown says why the endpoint could not be read. The endpoint is then
	// taken to be on TCP: callers fail safe.
	unknown error
}

// readAdminEndpoint reads where the admin endpoint of ctx's config listens,
// resolving it as Caddy does when it starts the endpoint
// (replaceLocalAdminServer): no admin config or an empty listen address
// means caddy.DefaultAdminListen (localhost:2019, or CADDY_ADMIN), and
// global placeholders are replaced. It does no I/O.
func readAdminEndpoint(ctx caddy.Context) adminEndpoint {
	disabled, listen, err := adminConfig(ctx)
	switch {
	case err != nil:
		return adminEndpoint{unknown: err}
	case disabled:
		return adminEndpoint{disabled: true}
	}
	input, err := caddy.NewReplacer().ReplaceOrErr(listen, true, true)
	if err != nil {
		return adminEndpoint{unknown: fmt.Errorf("admin listen address %q: %w", listen, err)}
	}
	if input == "" {
		input = caddy.DefaultAdminListen
	}
	addr, err := caddy.ParseNetworkAddress(input)
	if err != nil {
		return adminEndpoint{unknown: fmt.Errorf("admin listen address %q: %w", input, err)}
	}
	e := adminEndpoint{network: addr.Network, host: addr.Host, address: addr.String()}
	if !addr.IsUnixNetwork() && !addr.IsFdNetwork() {
		e.address = addr.JoinHostPort(0)
	}
	return e
}

// adminConfig returns the admin settings (caddy.Config.Admin) of the config
// ctx belongs to.
//
// Caddy (v2.11) gives modules no accessor for them, so this reads the
// unexported field caddy.Context.cfg with reflect, through read-only getters
// (no unsafe, nothing written). If a Caddy release renames or retypes the
// field, this returns an error — the callers then treat the endpoint as on
// TCP and say they could not tell — and TestReadAdminEndpoint fails loudly.
func adminConfig(ctx caddy.Context) (disabled bool, listen string, err error) {
	cfg := reflect.ValueOf(ctx).FieldByName("cfg")
	if !cfg.IsValid() || cfg.Type() != reflect.TypeFor[*caddy.Config]() {
		return false, "", errors.New("this Caddy's caddy.Context has no field cfg *caddy.Config to read the admin settings from")
	}
	if cfg.IsNil() {
		return false, "", errors.New("the Caddy context belongs to no config")
	}
	admin := cfg.Elem().FieldByName("Admin")
	if admin.IsNil() {
		return false, "", nil // the default endpoint
	}
	// Read field by field: a value reached through an unexported field
	// can't be copied out whole (Interface panics).
	a := admin.Elem()
	return a.FieldByName("Disabled").Bool(), a.FieldByName("Listen").String(), nil
}

// The fields adminConfig reads by name: this stops compiling if they change.
var _ = caddy.Config{Admin: &caddy.AdminConfig{Disabled: false, Listen: ""}}

// reachable reports whether a process in the host's network namespace may
// reach the endpoint without the host's filesystem: TCP (or any IP
// network), an abstract unix socket ("unix/@name": bound to the network
// namespace, no file permissions), a socket inherited as a file descriptor
// (it may be TCP; its kind is not known before Caddy starts), or an
// endpoint that could not be read. A unix socket file is out of reach of
// functions: their mount namespace has no path to it.
func (e adminEndpoint) reachable() bool {
	switch {
	case e.disabled:
		return false
	case e.unknown == nil && caddy.IsUnixNetwork(e.network):
		return strings.HasPrefix(e.host, "@")
	}
	return true
}

// String describes where the endpoint listens, for messages:
// "TCP (localhost:2019)".
func (e adminEndpoint) String() string {
	switch {
	case e.unknown != nil:
		return fmt.Sprintf("an address caddy-spawn could not tell (%v), so maybe on TCP", e.unknown)
	case e.disabled:
		return "nothing (admin off)"
	case caddy.IsUnixNetwork(e.network) && strings.HasPrefix(e.host, "@"):
		return fmt.Sprintf("an abstract unix socket (%s)", e.address)
	case caddy.IsUnixNetwork(e.network):
		return fmt.Sprintf("a unix socket (%s)", e.address)
	case caddy.IsFdNetwork(e.network):
		return fmt.Sprintf("an inherited socket that may be TCP (%s)", e.address)
	}
	return fmt.Sprintf("%s (%s)", strings.ToUpper(e.network), e.address)
}
