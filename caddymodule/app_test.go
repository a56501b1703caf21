package caddymodule

import (
	"errors"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

func TestWarnReachableAdmin(t *testing.T) {
	tcp := adminEndpoint{network: "tcp", host: "localhost", address: "localhost:2019"}
	for _, tc := range []struct {
		name  string
		euid  int
		admin adminEndpoint
		want  string // the address field of the warning; "" for none
	}{
		{name: "root, tcp", euid: 0, admin: tcp, want: "TCP (localhost:2019)"},
		{name: "root, abstract unix socket", euid: 0, admin: adminEndpoint{network: "unix", host: "@a", address: "unix/@a"}, want: "an abstract unix socket (unix/@a)"},
		{name: "root, unknown", euid: 0, admin: adminEndpoint{unknown: errors.New("test")}, want: "an address caddy-spawn could not tell (test), so maybe on TCP"},
		{name: "root, unix socket", euid: 0, admin: adminEndpoint{network: "unix", host: "/run/a.sock", address: "unix//run/a.sock"}},
		{name: "root, admin off", euid: 0, admin: adminEndpoint{disabled: true}},
		{name: "not root, tcp", euid: 1000, admin: tcp},
	} {
		t.Run(tc.name, func(t *testing.T) {
			core, logs := observer.New(zap.DebugLevel)
			a := &App{logger: zap.New(core), admin: tc.admin}
			a.warnReachableAdmin(tc.euid)
			entries := logs.All()
			if tc.want == "" {
				if len(entries) != 0 {
					t.Errorf("logged %+v, want nothing", entries)
				}
				return
			}
			if len(entries) != 1 || entries[0].Level != zap.WarnLevel {
				t.Fatalf("logged %+v, want one warning", entries)
			}
			if got := entries[0].ContextMap()["address"]; got != tc.want {
				t.Errorf("address %q, want %q", got, tc.want)
			}
		})
	}
}
