package caddymodule

import (
	"errors"
	"strings"
	"testing"

	"github.com/caddy-spawn/caddy-spawn/spawner"
)

func TestParseUser(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    spawner.User
		wantErr string
	}{
		{in: "65534", want: spawner.User{UID: 65534, GID: 65534}},
		{in: "1000:100", want: spawner.User{UID: 1000, GID: 100}},
		{in: "0", want: spawner.User{}},
		{in: "0:65534", want: spawner.User{GID: 65534}},
		{in: "4294967294:4294967294", want: spawner.User{UID: 4294967294, GID: 4294967294}},
		{in: "", wantErr: `uid "" must be a number`},
		{in: "nobody", wantErr: `uid "nobody" must be a number from 0 to 4294967294 (names are not looked up)`},
		{in: "1000:", wantErr: `gid "" must be`},
		{in: "1000:users", wantErr: `gid "users" must be`},
		{in: "4294967295", wantErr: `uid "4294967295" must be`},
		{in: "1:4294967295", wantErr: `gid "4294967295" must be`},
		{in: "+1", wantErr: `uid "+1" must be`},
		{in: " 1", wantErr: `uid " 1" must be`},
		{in: "0x10", wantErr: `uid "0x10" must be`},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got, err := parseUser(tc.in)
			switch {
			case tc.wantErr != "":
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Errorf("parseUser(%q) = %+v, %v; want an error containing %q", tc.in, got, err, tc.wantErr)
				}
			case err != nil:
				t.Errorf("parseUser(%q): %v", tc.in, err)
			case *got != tc.want:
				t.Errorf("parseUser(%q) = %+v, want %+v", tc.in, *got, tc.want)
			}
		})
	}
}

func TestCheckHostNetwork(t *testing.T) {
	tcp := adminEndpoint{network: "tcp", host: "localhost", address: "localhost:2019"}
	unix := adminEndpoint{network: "unix", host: "/run/caddy-admin.sock", address: "unix//run/caddy-admin.sock"}
	for _, tc := range []struct {
		name    string
		network string
		admin   adminEndpoint
		allow   bool   // host_network_with_tcp_admin
		noApp   bool   // before Provision
		wantErr string // "" means valid
	}{
		{
			name: "host, tcp admin", network: networkHost, admin: tcp,
			wantErr: `network: "host" is refused while the admin endpoint listens on TCP (localhost:2019): ` +
				`a function could rewrite Caddy's config through it; set admin off or a unix socket (admin unix//run/caddy-admin.sock), ` +
				`or set the spawn option host_network_with_tcp_admin`,
		},
		{
			name: "host, abstract unix admin", network: networkHost,
			admin:   adminEndpoint{network: "unix", host: "@caddy", address: "unix/@caddy"},
			wantErr: `network: "host" is refused while the admin endpoint listens on an abstract unix socket (unix/@caddy)`,
		},
		{
			name: "host, admin unknown", network: networkHost, admin: adminEndpoint{unknown: errors.New("no cfg")},
			wantErr: `network: "host" is refused while the admin endpoint listens on an address caddy-spawn could not tell (no cfg), so maybe on TCP`,
		},
		{name: "host, tcp admin, allowed", network: networkHost, admin: tcp, allow: true},
		{name: "host, unix admin", network: networkHost, admin: unix},
		{name: "host, admin off", network: networkHost, admin: adminEndpoint{disabled: true}},
		{name: "none, tcp admin", network: networkNone, admin: tcp},
		{name: "unset, tcp admin", admin: tcp},
		{name: "host, no app yet", network: networkHost, noApp: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := &Handler{Network: tc.network}
			if !tc.noApp {
				h.app = &App{admin: tc.admin, HostNetworkWithTCPAdmin: tc.allow}
			}
			err := h.checkHostNetwork()
			switch {
			case tc.wantErr == "" && err != nil:
				t.Errorf("unexpected error: %v", err)
			case tc.wantErr != "" && (err == nil || !strings.HasPrefix(err.Error(), tc.wantErr)):
				t.Errorf("error %v, want one starting with %q", err, tc.wantErr)
			}
		})
	}
}
