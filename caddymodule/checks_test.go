package caddymodule

import (
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
