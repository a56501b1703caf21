package caddymodule

import (
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
)

// TestReadAdminEndpoint reads the admin endpoint out of contexts Caddy
// provisions for real configs. If a Caddy release renames or retypes
// caddy.Context's cfg field, every case but the last fails here: the code
// then treats the endpoint as TCP, which is safe but refuses network host
// routes that should work.
func TestReadAdminEndpoint(t *testing.T) {
	defaultListen := caddy.DefaultAdminListen
	caddy.DefaultAdminListen = "localhost:2019" // as without CADDY_ADMIN
	t.Cleanup(func() { caddy.DefaultAdminListen = defaultListen })
	t.Setenv("SPAWN_TEST_ADMIN", "unix//run/from-env.sock")

	for _, tc := range []struct {
		name          string
		admin         *caddy.AdminConfig
		noConfig      bool // a caddy.Context of no config
		wantReachable bool
		wantString    string
		wantUnknown   bool
	}{
		{name: "no admin config: the default", wantReachable: true, wantString: "TCP (localhost:2019)"},
		{name: "empty listen: the default", admin: &caddy.AdminConfig{}, wantReachable: true, wantString: "TCP (localhost:2019)"},
		{name: "disabled", admin: &caddy.AdminConfig{Disabled: true, Listen: "localhost:2019"}, wantString: "nothing (admin off)"},
		{name: "unix socket", admin: &caddy.AdminConfig{Listen: "unix//run/x.sock"}, wantString: "a unix socket (unix//run/x.sock)"},
		{name: "unix socket from a placeholder", admin: &caddy.AdminConfig{Listen: "{env.SPAWN_TEST_ADMIN}"}, wantString: "a unix socket (unix//run/from-env.sock)"},
		{
			name: "abstract unix socket", admin: &caddy.AdminConfig{Listen: "unix/@caddy-admin"},
			wantReachable: true, wantString: "an abstract unix socket (unix/@caddy-admin)",
		},
		{name: "tcp", admin: &caddy.AdminConfig{Listen: "tcp/127.0.0.1:2999"}, wantReachable: true, wantString: "TCP (127.0.0.1:2999)"},
		{name: "all interfaces", admin: &caddy.AdminConfig{Listen: ":2019"}, wantReachable: true, wantString: "TCP (:2019)"},
		{name: "tcp6", admin: &caddy.AdminConfig{Listen: "tcp6/[::1]:2019"}, wantReachable: true, wantString: "TCP6 ([::1]:2019)"},
		{
			name: "inherited file descriptor", admin: &caddy.AdminConfig{Listen: "fd/3"},
			wantReachable: true, wantString: "an inherited socket that may be TCP (fd/3)",
		},
		{
			name: "unknown placeholder: fail safe", admin: &caddy.AdminConfig{Listen: "{nope}"},
			wantReachable: true, wantUnknown: true, wantString: "could not tell",
		},
		{name: "no config: fail safe", noConfig: true, wantReachable: true, wantUnknown: true, wantString: "could not tell"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var ctx caddy.Context
			if !tc.noConfig {
				var err error
				ctx, err = caddy.ProvisionContext(&caddy.Config{Admin: tc.admin})
				if err != nil {
					t.Fatal(err)
				}
			}
			e := readAdminEndpoint(ctx)
			if (e.unknown != nil) != tc.wantUnknown {
				t.Errorf("could not tell: %v, want %v (is caddy.Context's cfg still a *caddy.Config?)", e.unknown, tc.wantUnknown)
			}
			if got := e.reachable(); got != tc.wantReachable {
				t.Errorf("reachable() = %v, want %v (%+v)", got, tc.wantReachable, e)
			}
			if got := e.String(); !strings.Contains(got, tc.wantString) || (!tc.wantUnknown && got != tc.wantString) {
				t.Errorf("String() = %q, want %q", got, tc.wantString)
			}
		})
	}
}
