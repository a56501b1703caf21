package caddymodule

import (
	"encoding/json"
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

// TestValidateHostNetworkAdmin runs caddy.Validate (what `caddy validate`
// and every config load run) on whole JSON configs: a network host route is
// refused while the admin endpoint listens on TCP, naming the field, and
// accepted with the admin endpoint on a unix socket or off, or with the
// override.
func TestValidateHostNetworkAdmin(t *testing.T) {
	defaultListen := caddy.DefaultAdminListen
	caddy.DefaultAdminListen = "localhost:2019" // as without CADDY_ADMIN
	t.Cleanup(func() { caddy.DefaultAdminListen = defaultListen })
	for _, tc := range []struct {
		name    string
		admin   string // the config's "admin" object; "" for none
		spawn   string // the spawn app's JSON
		network string
		wantErr string // "" means valid
	}{
		{
			name: "default admin", spawn: `{}`, network: "host",
			wantErr: `network: "host" is refused while the admin endpoint listens on TCP (localhost:2019)`,
		},
		{
			name: "tcp admin", admin: `{"listen": "127.0.0.1:2999"}`, spawn: `{}`, network: "host",
			wantErr: `network: "host" is refused while the admin endpoint listens on TCP (127.0.0.1:2999)`,
		},
		{name: "unix admin", admin: `{"listen": "unix//run/caddy-admin.sock"}`, spawn: `{}`, network: "host"},
		{name: "admin off", admin: `{"disabled": true}`, spawn: `{}`, network: "host"},
		{name: "override", admin: `{"listen": "127.0.0.1:2999"}`, spawn: `{"host_network_with_tcp_admin": true}`, network: "host"},
		{name: "network none", spawn: `{}`, network: "none"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			raw := `{
				"apps": {
					"http": {"servers": {"srv0": {"listen": ["127.0.0.1:0"], "routes": [{"handle": [
						{"handler": "spawn", "image": "localhost/caddy-spawn/hello:latest", "network": "` + tc.network + `"}
					]}]}}},
					"spawn": ` + tc.spawn + `
				}`
			if tc.admin != "" {
				raw += `, "admin": ` + tc.admin
			}
			raw += `}`
			var cfg caddy.Config
			if err := json.Unmarshal([]byte(raw), &cfg); err != nil {
				t.Fatalf("config %s: %v", raw, err)
			}
			err := caddy.Validate(&cfg)
			switch {
			case tc.wantErr == "" && err != nil:
				t.Errorf("unexpected error: %v", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Errorf("error %v, want one containing %q", err, tc.wantErr)
			}
		})
	}
}
