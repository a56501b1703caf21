package caddymodule

import (
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
)

// checkDispenserErr asserts that err names the problem (wantErr) and, as
// every Dispenser error does, the line it is on: "…, at Testfile:<line>".
func checkDispenserErr(t *testing.T, err error, wantErr string, wantLine int) {
	t.Helper()
	if err == nil {
		t.Fatalf("got no error, want one containing %q", wantErr)
	}
	if !strings.Contains(err.Error(), wantErr) {
		t.Errorf("error %q does not contain %q", err, wantErr)
	}
	if loc := fmt.Sprintf(", at Testfile:%d", wantLine); !strings.HasSuffix(err.Error(), loc) {
		t.Errorf("error %q does not end with %q", err, loc)
	}
}

func TestHandlerUnmarshalCaddyfile(t *testing.T) {
	for _, tc := range []struct {
		name  string
		input string
		want  Handler
	}{
		{
			name:  "image only",
			input: `spawn localhost/caddy-spawn/hello:latest`,
			want:  Handler{Image: "localhost/caddy-spawn/hello:latest"},
		},
		{
			name:  "empty block",
			input: "spawn hello {\n}",
			want:  Handler{Image: "hello"},
		},
		{
			name: "name",
			input: `spawn hello {
				name greeter
			}`,
			want: Handler{Image: "hello", Name: "greeter"},
		},
		{
			name: "image_archive",
			input: `spawn localhost/hello:1 {
				image_archive /srv/images/hello.tar
			}`,
			want: Handler{Image: "localhost/hello:1", ImageArchive: "/srv/images/hello.tar"},
		},
		{
			name: "pull_policy always",
			input: `spawn reg.example.com/fn:1 {
				pull_policy always
			}`,
			want: Handler{Image: "reg.example.com/fn:1", PullPolicy: "always"},
		},
		{
			name: "pull_policy never",
			input: `spawn hello {
				pull_policy never
			}`,
			want: Handler{Image: "hello", PullPolicy: "never"},
		},
		{
			name: "registry_auth with a placeholder password",
			input: `spawn reg.example.com/fn:1 {
				registry_auth deploy {env.REG_PASS}
			}`,
			want: Handler{Image: "reg.example.com/fn:1", RegistryAuth: &RegistryAuth{Username: "deploy", Password: "{env.REG_PASS}"}},
		},
		{
			name: "command with arguments",
			input: `spawn hello {
				command /bin/sh -c "echo hi"
			}`,
			want: Handler{Image: "hello", Command: []string{"/bin/sh", "-c", "echo hi"}},
		},
		{
			name: "command alone",
			input: `spawn hello {
				command /app
			}`,
			want: Handler{Image: "hello", Command: []string{"/app"}},
		},
		{
			name: "args",
			input: `spawn hello {
				args --verbose --level 3
			}`,
			want: Handler{Image: "hello", Args: []string{"--verbose", "--level", "3"}},
		},
		{
			name: "multiple env",
			input: `spawn hello {
				env GREETING "hello world"
				env TOKEN {env.TOKEN}
				env EMPTY ""
			}`,
			want: Handler{Image: "hello", Env: map[string]string{
				"GREETING": "hello world",
				"TOKEN":    "{env.TOKEN}",
				"EMPTY":    "",
			}},
		},
		{
			name: "workdir",
			input: `spawn hello {
				workdir /work
			}`,
			want: Handler{Image: "hello", WorkDir: "/work"},
		},
		{
			name: "timeout in Go syntax",
			input: `spawn hello {
				timeout 1m30s
			}`,
			want: Handler{Image: "hello", Timeout: caddy.Duration(90 * time.Second)},
		},
		{
			name: "timeout in days",
			input: `spawn hello {
				timeout 1d
			}`,
			want: Handler{Image: "hello", Timeout: caddy.Duration(24 * time.Hour)},
		},
		{
			name: "output cgi",
			input: `spawn hello {
				output cgi
			}`,
			want: Handler{Image: "hello", Output: "cgi"},
		},
		{
			name: "output raw",
			input: `spawn hello {
				output raw
			}`,
			want: Handler{Image: "hello", Output: "raw"},
		},
		{
			name: "script_name",
			input: `spawn hello {
				script_name /fn/hello
			}`,
			want: Handler{Image: "hello", ScriptName: "/fn/hello"},
		},
		{
			name: "memory in MiB",
			input: `spawn hello {
				memory 256MiB
			}`,
			want: Handler{Image: "hello", Memory: 268435456},
		},
		{
			name: "memory in SI units",
			input: `spawn hello {
				memory 1.5GB
			}`,
			want: Handler{Image: "hello", Memory: 1500000000},
		},
		{
			name: "memory in bytes",
			input: `spawn hello {
				memory 8388608
			}`,
			want: Handler{Image: "hello", Memory: 8 << 20},
		},
		{
			name: "pids",
			input: `spawn hello {
				pids 64
			}`,
			want: Handler{Image: "hello", Pids: 64},
		},
		{
			name: "cpus fraction",
			input: `spawn hello {
				cpus 0.5
			}`,
			want: Handler{Image: "hello", CPUs: 0.5},
		},
		{
			name: "cpus whole",
			input: `spawn hello {
				cpus 2
			}`,
			want: Handler{Image: "hello", CPUs: 2},
		},
		{
			name: "cpus minimum",
			input: `spawn hello {
				cpus 0.01
			}`,
			want: Handler{Image: "hello", CPUs: 0.01},
		},
		{
			name: "nofile",
			input: `spawn hello {
				nofile 4096
			}`,
			want: Handler{Image: "hello", Nofile: 4096},
		},
		{
			name: "nofile maximum",
			input: `spawn hello {
				nofile 1048576
			}`,
			want: Handler{Image: "hello", Nofile: 1 << 20},
		},
		{
			name: "max_request_body in MiB",
			input: `spawn hello {
				max_request_body 10MiB
			}`,
			want: Handler{Image: "hello", MaxRequestBody: ptr(int64(10 << 20))},
		},
		{
			name: "max_request_body unlimited",
			input: `spawn hello {
				max_request_body 0
			}`,
			want: Handler{Image: "hello", MaxRequestBody: ptr(int64(0))},
		},
		{
			name: "max_request_body in bytes",
			input: `spawn hello {
				max_request_body 1000
			}`,
			want: Handler{Image: "hello", MaxRequestBody: ptr(int64(1000))},
		},
		{
			name: "max_response_bytes in GB",
			input: `spawn hello {
				max_response_bytes 1GB
			}`,
			want: Handler{Image: "hello", MaxResponseBytes: 1e9},
		},
		{
			name: "max_response_bytes unlimited",
			input: `spawn hello {
				max_response_bytes 0
			}`,
			want: Handler{Image: "hello"},
		},
		{
			name: "network none",
			input: `spawn hello {
				network none
			}`,
			want: Handler{Image: "hello", Network: "none"},
		},
		{
			name: "network host",
			input: `spawn hello {
				network host
			}`,
			want: Handler{Image: "hello", Network: "host"},
		},
		{
			name: "read_only",
			input: `spawn hello {
				read_only
			}`,
			want: Handler{Image: "hello", ReadOnly: true},
		},
		{
			name: "report_usage",
			input: `spawn hello {
				report_usage
			}`,
			want: Handler{Image: "hello", ReportUsage: true},
		},
		{
			name: "userns",
			input: `spawn hello {
				userns
			}`,
			want: Handler{Image: "hello", Userns: true},
		},
		{
			name: "userns with a host ID",
			input: `spawn hello {
				userns 2000000000
			}`,
			want: Handler{Image: "hello", Userns: true, UsernsHostID: 2000000000},
		},
		{
			name: "pass_authorization",
			input: `spawn hello {
				pass_authorization
			}`,
			want: Handler{Image: "hello", PassAuthorization: true},
		},
		{
			name: "user uid",
			input: `spawn hello {
				user 65534
			}`,
			want: Handler{Image: "hello", User: "65534"},
		},
		{
			name: "user uid and gid",
			input: `spawn hello {
				user 1000:100
			}`,
			want: Handler{Image: "hello", User: "1000:100"},
		},
		{
			name: "user root",
			input: `spawn hello {
				user 0:0
			}`,
			want: Handler{Image: "hello", User: "0:0"},
		},
		{
			name: "all subdirectives",
			input: `spawn localhost/caddy-spawn/hello:latest {
				name          hello
				image_archive /srv/hello.tar
				command       /hello --serve
				args          -v
				env           A 1
				env           B 2
				workdir       /tmp
				timeout       5s
				output        raw
				script_name   /hello
				memory        64MiB
				pids          32
				cpus          0.25
				nofile        256
				max_request_body   1MiB
				max_response_bytes 2MiB
				network       host
				read_only
				user          1000:1000
			}`,
			want: Handler{
				Image:            "localhost/caddy-spawn/hello:latest",
				Name:             "hello",
				ImageArchive:     "/srv/hello.tar",
				Command:          []string{"/hello", "--serve"},
				Args:             []string{"-v"},
				Env:              map[string]string{"A": "1", "B": "2"},
				WorkDir:          "/tmp",
				Timeout:          caddy.Duration(5 * time.Second),
				Output:           "raw",
				ScriptName:       "/hello",
				Memory:           64 << 20,
				Pids:             32,
				CPUs:             0.25,
				Nofile:           256,
				MaxRequestBody:   ptr(int64(1 << 20)),
				MaxResponseBytes: 2 << 20,
				Network:          "host",
				ReadOnly:         true,
				User:             "1000:1000",
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got Handler
			if err := got.UnmarshalCaddyfile(caddyfile.NewTestDispenser(tc.input)); err != nil {
				t.Fatalf("unexpected error: %v", err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got  %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

func TestHandlerUnmarshalCaddyfileErrors(t *testing.T) {
	for _, tc := range []struct {
		name     string
		input    string
		wantErr  string
		wantLine int
	}{
		{
			name:     "missing image",
			input:    `spawn`,
			wantErr:  "wrong argument count",
			wantLine: 1,
		},
		{
			name: "missing image before block",
			input: `spawn {
				name hello
			}`,
			wantErr:  "wrong argument count or unexpected line ending after 'spawn'",
			wantLine: 1,
		},
		{
			name:     "extra argument after image",
			input:    `spawn hello world`,
			wantErr:  "wrong argument count or unexpected line ending after 'world'",
			wantLine: 1,
		},
		{
			name: "unknown subdirective",
			input: `spawn hello {
				name hello
				image other
			}`,
			wantErr:  `unknown subdirective "image"`,
			wantLine: 3,
		},
		{
			name: "bad pull_policy",
			input: `spawn hello {
				pull_policy sometimes
			}`,
			wantErr:  `pull_policy: "sometimes" must be "missing", "always" or "never"`,
			wantLine: 2,
		},
		{
			name: "pull_policy without value",
			input: `spawn hello {
				pull_policy
			}`,
			wantErr:  "wrong argument count",
			wantLine: 2,
		},
		{
			name: "duplicate pull_policy",
			input: `spawn hello {
				pull_policy never
				pull_policy always
			}`,
			wantErr:  `duplicate subdirective "pull_policy"`,
			wantLine: 3,
		},
		{
			name: "registry_auth without password",
			input: `spawn hello {
				registry_auth deploy
			}`,
			wantErr:  "wrong argument count",
			wantLine: 2,
		},
		{
			name: "registry_auth with three arguments",
			input: `spawn hello {
				registry_auth deploy pass extra
			}`,
			wantErr:  "wrong argument count",
			wantLine: 2,
		},
		{
			name: "registry_auth with an empty username",
			input: `spawn hello {
				registry_auth "" pass
			}`,
			wantErr:  "registry_auth: username required",
			wantLine: 2,
		},
		{
			name: "duplicate subdirective",
			input: `spawn hello {
				timeout 5s
				output raw
				timeout 10s
			}`,
			wantErr:  `duplicate subdirective "timeout"`,
			wantLine: 4,
		},
		{
			name: "duplicate env key",
			input: `spawn hello {
				env A 1
				env B 2
				env A 3
			}`,
			wantErr:  `duplicate env variable "A"`,
			wantLine: 4,
		},
		{
			name: "bad duration",
			input: `spawn hello {
				timeout soon
			}`,
			wantErr:  `timeout: bad duration "soon"`,
			wantLine: 2,
		},
		{
			name: "zero timeout",
			input: `spawn hello {
				timeout 0s
			}`,
			wantErr:  `timeout: must be positive, got 0s`,
			wantLine: 2,
		},
		{
			name: "negative timeout",
			input: `spawn hello {
				timeout -5s
			}`,
			wantErr:  `timeout: must be positive, got -5s`,
			wantLine: 2,
		},
		{
			name: "bad output",
			input: `spawn hello {
				output json
			}`,
			wantErr:  `output: "json" must be "cgi" or "raw"`,
			wantLine: 2,
		},
		{
			name: "bad memory",
			input: `spawn hello {
				memory lots
			}`,
			wantErr:  `memory: bad size "lots"`,
			wantLine: 2,
		},
		{
			name: "negative memory",
			input: `spawn hello {
				memory -1
			}`,
			wantErr:  `memory: bad size "-1"`,
			wantLine: 2,
		},
		{
			name: "pids not a number",
			input: `spawn hello {
				pids many
			}`,
			wantErr:  `pids: "many" is not an integer`,
			wantLine: 2,
		},
		{
			name: "zero pids",
			input: `spawn hello {
				pids 0
			}`,
			wantErr:  `pids: 0 must be a positive integer`,
			wantLine: 2,
		},
		{
			name: "name without argument",
			input: `spawn hello {
				name
			}`,
			wantErr:  "wrong argument count or unexpected line ending after 'name'",
			wantLine: 2,
		},
		{
			name: "name with two arguments",
			input: `spawn hello {
				name a b
			}`,
			wantErr:  "wrong argument count or unexpected line ending after 'b'",
			wantLine: 2,
		},
		{
			name: "env with one argument",
			input: `spawn hello {
				env KEY
			}`,
			wantErr:  "wrong argument count or unexpected line ending after 'KEY'",
			wantLine: 2,
		},
		{
			name: "env with three arguments",
			input: `spawn hello {
				env KEY a b
			}`,
			wantErr:  "wrong argument count or unexpected line ending after 'b'",
			wantLine: 2,
		},
		{
			name: "command without argument",
			input: `spawn hello {
				command
			}`,
			wantErr:  "wrong argument count or unexpected line ending after 'command'",
			wantLine: 2,
		},
		{
			name: "args without argument",
			input: `spawn hello {
				args
			}`,
			wantErr:  "wrong argument count or unexpected line ending after 'args'",
			wantLine: 2,
		},
		{
			name: "timeout without argument",
			input: `spawn hello {
				timeout
			}`,
			wantErr:  "wrong argument count or unexpected line ending after 'timeout'",
			wantLine: 2,
		},
		{
			name: "memory with two arguments",
			input: `spawn hello {
				memory 256 MiB
			}`,
			wantErr:  "wrong argument count or unexpected line ending after 'MiB'",
			wantLine: 2,
		},
		{
			name: "cpus not a number",
			input: `spawn hello {
				cpus two
			}`,
			wantErr:  `cpus: "two" is not a number`,
			wantLine: 2,
		},
		{
			name: "zero cpus",
			input: `spawn hello {
				cpus 0
			}`,
			wantErr:  `cpus 0 out of range: must be a number from 0.01 to 1024`,
			wantLine: 2,
		},
		{
			name: "cpus under the kernel's minimum quota",
			input: `spawn hello {
				cpus 0.001
			}`,
			wantErr:  `cpus 0.001 out of range: must be a number`,
			wantLine: 2,
		},
		{
			name: "cpus too many",
			input: `spawn hello {
				cpus 2048
			}`,
			wantErr:  `cpus 2048 out of range: must be a number`,
			wantLine: 2,
		},
		{
			name: "cpus NaN",
			input: `spawn hello {
				cpus NaN
			}`,
			wantErr:  `cpus NaN out of range: must be a number`,
			wantLine: 2,
		},
		{
			name: "cpus without argument",
			input: `spawn hello {
				cpus
			}`,
			wantErr:  "wrong argument count or unexpected line ending after 'cpus'",
			wantLine: 2,
		},
		{
			name: "zero nofile",
			input: `spawn hello {
				nofile 0
			}`,
			wantErr:  `nofile 0 under the minimum: must be an integer from 1 to 1048576`,
			wantLine: 2,
		},
		{
			name: "nofile too large",
			input: `spawn hello {
				nofile 1048577
			}`,
			wantErr:  `nofile 1048577 over the maximum: must be an integer from 1 to 1048576`,
			wantLine: 2,
		},
		{
			name: "nofile not a number",
			input: `spawn hello {
				nofile lots
			}`,
			wantErr:  `nofile: "lots" is not an integer`,
			wantLine: 2,
		},
		{
			name: "bad max_request_body",
			input: `spawn hello {
				max_request_body big
			}`,
			wantErr:  `max_request_body: bad size "big"`,
			wantLine: 2,
		},
		{
			name: "negative max_request_body",
			input: `spawn hello {
				max_request_body -1
			}`,
			wantErr:  `max_request_body: bad size "-1"`,
			wantLine: 2,
		},
		{
			name: "max_request_body too large",
			input: `spawn hello {
				max_request_body 100EiB
			}`,
			wantErr:  `max_request_body: `,
			wantLine: 2,
		},
		{
			name: "max_request_body without argument",
			input: `spawn hello {
				max_request_body
			}`,
			wantErr:  "wrong argument count or unexpected line ending after 'max_request_body'",
			wantLine: 2,
		},
		{
			name: "bad max_response_bytes",
			input: `spawn hello {
				max_response_bytes 1 MiB
			}`,
			wantErr:  "wrong argument count or unexpected line ending after 'MiB'",
			wantLine: 2,
		},
		{
			name: "max_response_bytes not a size",
			input: `spawn hello {
				max_response_bytes plenty
			}`,
			wantErr:  `max_response_bytes: bad size "plenty"`,
			wantLine: 2,
		},
		{
			name: "unknown network",
			input: `spawn hello {
				network bridge
			}`,
			wantErr:  `network: "bridge" must be "none" or "host"`,
			wantLine: 2,
		},
		{
			name: "network without argument",
			input: `spawn hello {
				network
			}`,
			wantErr:  "wrong argument count or unexpected line ending after 'network'",
			wantLine: 2,
		},
		{
			name: "read_only with an argument",
			input: `spawn hello {
				read_only true
			}`,
			wantErr:  "wrong argument count or unexpected line ending after 'true'",
			wantLine: 2,
		},
		{
			name: "userns with a word",
			input: `spawn hello {
				userns yes
			}`,
			wantErr:  `userns: "yes" is not an integer`,
			wantLine: 2,
		},
		{
			name: "userns on the host's own IDs",
			input: `spawn hello {
				userns 1000
			}`,
			wantErr:  "userns_host_id: host ID 1000 out of range",
			wantLine: 2,
		},
		{
			name: "userns with two arguments",
			input: `spawn hello {
				userns 2000000000 5
			}`,
			wantErr:  "wrong argument count or unexpected line ending after '5'",
			wantLine: 2,
		},
		{
			name: "duplicate read_only",
			input: `spawn hello {
				read_only
				read_only
			}`,
			wantErr:  `duplicate subdirective "read_only"`,
			wantLine: 3,
		},
		{
			name: "user by name",
			input: `spawn hello {
				user nobody
			}`,
			wantErr:  `user: "nobody": uid "nobody" must be a number from 0 to 4294967294 (names are not looked up)`,
			wantLine: 2,
		},
		{
			name: "user with a group name",
			input: `spawn hello {
				user 1000:staff
			}`,
			wantErr:  `user: "1000:staff": gid "staff" must be a number`,
			wantLine: 2,
		},
		{
			name: "user with an empty gid",
			input: `spawn hello {
				user 1000:
			}`,
			wantErr:  `user: "1000:": gid "" must be a number`,
			wantLine: 2,
		},
		{
			name: "user -1",
			input: `spawn hello {
				user 4294967295
			}`,
			wantErr:  `user: "4294967295": uid "4294967295" must be a number`,
			wantLine: 2,
		},
		{
			name: "negative user",
			input: `spawn hello {
				user -5
			}`,
			wantErr:  `user: "-5": uid "-5" must be a number`,
			wantLine: 2,
		},
		{
			name: "user with two colons",
			input: `spawn hello {
				user 1:2:3
			}`,
			wantErr:  `user: "1:2:3": gid "2:3" must be a number`,
			wantLine: 2,
		},
		{
			name: "pids without argument",
			input: `spawn hello {
				pids
			}`,
			wantErr:  "wrong argument count or unexpected line ending after 'pids'",
			wantLine: 2,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var h Handler
			err := h.UnmarshalCaddyfile(caddyfile.NewTestDispenser(tc.input))
			checkDispenserErr(t, err, tc.wantErr, tc.wantLine)
		})
	}
}

// decodeGlobalOption unwraps what parseGlobalOption returns into an App.
func decodeGlobalOption(t *testing.T, v any) App {
	t.Helper()
	ha, ok := v.(httpcaddyfile.App)
	if !ok {
		t.Fatalf("got %T, want httpcaddyfile.App", v)
	}
	if ha.Name != "spawn" {
		t.Errorf("app name = %q, want %q", ha.Name, "spawn")
	}
	var app App
	if err := json.Unmarshal(ha.Value, &app); err != nil {
		t.Fatalf("decoding app JSON %s: %v", ha.Value, err)
	}
	return app
}

func TestParseGlobalOption(t *testing.T) {
	for _, tc := range []struct {
		name  string
		input string
		want  App
	}{
		{
			name:  "bare option",
			input: `spawn`,
			want:  App{},
		},
		{
			name:  "empty block",
			input: "spawn {\n}",
			want:  App{},
		},
		{
			name: "address",
			input: `spawn {
				address /run/containerd/containerd.sock
			}`,
			want: App{Address: "/run/containerd/containerd.sock"},
		},
		{
			name: "namespace",
			input: `spawn {
				namespace my-spawn
			}`,
			want: App{Namespace: "my-spawn"},
		},
		{
			name: "max_containers and fast_path",
			input: `spawn {
				max_containers 32
				fast_path off
				crun_binary /usr/local/bin/crun
			}`,
			want: App{MaxContainers: 32, FastPath: "off", CrunBinary: "/usr/local/bin/crun"},
		},
		{
			name: "state_tmpfs off",
			input: `spawn {
				state_tmpfs off
			}`,
			want: App{StateTmpfs: "off"},
		},
		{
			name: "host_network_with_tcp_admin",
			input: `spawn {
				host_network_with_tcp_admin
			}`,
			want: App{HostNetworkWithTCPAdmin: true},
		},
		{
			name: "registry_config",
			input: `spawn {
				registry_config /etc/caddy/registries.json
			}`,
			want: App{RegistryConfig: "/etc/caddy/registries.json"},
		},
		{
			name: "registry_hosts_dir",
			input: `spawn {
				registry_hosts_dir /etc/containerd/certs.d
			}`,
			want: App{RegistryHostsDir: "/etc/containerd/certs.d"},
		},
		{
			name: "insecure_registries",
			input: `spawn {
				insecure_registries reg.lan:5000 10.0.0.5
			}`,
			want: App{InsecureRegistries: []string{"reg.lan:5000", "10.0.0.5"}},
		},
		{
			name: "snapshotter",
			input: `spawn {
				snapshotter native
			}`,
			want: App{Snapshotter: "native"},
		},
		{
			name: "runtime",
			input: `spawn {
				runtime io.containerd.runc.v2
			}`,
			want: App{Runtime: "io.containerd.runc.v2"},
		},
		{
			name: "runc_binary",
			input: `spawn {
				runc_binary /usr/local/sbin/runc
			}`,
			want: App{RuncBinary: "/usr/local/sbin/runc"},
		},
		{
			name: "run_dir",
			input: `spawn {
				run_dir /run/spawn
			}`,
			want: App{RunDir: "/run/spawn"},
		},
		{
			name: "image_wait",
			input: `spawn {
				image_wait 30s
			}`,
			want: App{ImageWait: caddy.Duration(30 * time.Second)},
		},
		{
			name: "image_wait zero",
			input: `spawn {
				image_wait 0
			}`,
			want: App{},
		},
		{
			name: "managed without block",
			input: `spawn {
				managed
			}`,
			want: App{Managed: &ManagedContainerd{}},
		},
		{
			name: "managed with every subdirective",
			input: `spawn {
				managed {
					binary    /opt/containerd/bin/containerd
					root      /var/lib/caddy-spawn/containerd
					state     /run/caddy-spawn/containerd
					log_level debug
				}
				namespace spawn-test
			}`,
			want: App{
				Namespace: "spawn-test",
				Managed: &ManagedContainerd{
					Binary:   "/opt/containerd/bin/containerd",
					Root:     "/var/lib/caddy-spawn/containerd",
					State:    "/run/caddy-spawn/containerd",
					LogLevel: "debug",
				},
			},
		},
		{
			name: "everything with an address",
			input: `spawn {
				address     /run/containerd/containerd.sock
				namespace   caddy-spawn-prod
				snapshotter overlayfs
				runtime     io.containerd.runc.v2
				runc_binary /usr/bin/runc
				run_dir     /run/caddy-spawn
				image_wait  1m
			}`,
			want: App{
				Address:     "/run/containerd/containerd.sock",
				Namespace:   "caddy-spawn-prod",
				Snapshotter: "overlayfs",
				Runtime:     "io.containerd.runc.v2",
				RuncBinary:  "/usr/bin/runc",
				RunDir:      "/run/caddy-spawn",
				ImageWait:   caddy.Duration(time.Minute),
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v, err := parseGlobalOption(caddyfile.NewTestDispenser(tc.input), nil)
			if err != nil {
				t.Fatalf("unexpected error: %v", err)
			}
			got := decodeGlobalOption(t, v)
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got  %+v (managed %+v)\nwant %+v (managed %+v)", got, got.Managed, tc.want, tc.want.Managed)
			}
		})
	}
}

func TestParseGlobalOptionErrors(t *testing.T) {
	for _, tc := range []struct {
		name     string
		input    string
		existing any
		wantErr  string
		wantLine int
	}{
		{
			name:     "argument on the option",
			input:    `spawn /run/containerd/containerd.sock`,
			wantErr:  "wrong argument count",
			wantLine: 1,
		},
		{
			name: "unknown subdirective",
			input: `spawn {
				namespace x
				socket /run/containerd/containerd.sock
			}`,
			wantErr:  `unknown subdirective "socket"`,
			wantLine: 3,
		},
		{
			name: "max_containers not positive",
			input: `spawn {
				max_containers 0
			}`,
			wantErr:  "max_containers: 0 must be a positive integer",
			wantLine: 2,
		},
		{
			name: "host_network_with_tcp_admin with an argument",
			input: `spawn {
				host_network_with_tcp_admin yes
			}`,
			wantErr:  "wrong argument count",
			wantLine: 2,
		},
		{
			name: "fast_path unknown",
			input: `spawn {
				fast_path sometimes
			}`,
			wantErr:  `fast_path: "sometimes" must be auto, on or off`,
			wantLine: 2,
		},
		{
			name: "state_tmpfs unknown",
			input: `spawn {
				state_tmpfs always
			}`,
			wantErr:  `state_tmpfs: "always" must be auto or off`,
			wantLine: 2,
		},
		{
			name: "registry_config without path",
			input: `spawn {
				registry_config
			}`,
			wantErr:  "wrong argument count",
			wantLine: 2,
		},
		{
			name: "registry_hosts_dir with two arguments",
			input: `spawn {
				registry_hosts_dir /a /b
			}`,
			wantErr:  "wrong argument count",
			wantLine: 2,
		},
		{
			name: "insecure_registries without hosts",
			input: `spawn {
				insecure_registries
			}`,
			wantErr:  "wrong argument count",
			wantLine: 2,
		},
		{
			name: "insecure_registries with a URL",
			input: `spawn {
				insecure_registries http://reg.lan:5000/
			}`,
			wantErr:  `insecure_registries: "http://reg.lan:5000/" must be a registry host or host:port, without scheme or path`,
			wantLine: 2,
		},
		{
			name: "unknown managed subdirective",
			input: `spawn {
				managed {
					root /var/lib/x
					config /etc/containerd/config.toml
				}
			}`,
			wantErr:  `unknown managed subdirective "config"`,
			wantLine: 4,
		},
		{
			name: "duplicate subdirective",
			input: `spawn {
				namespace a
				snapshotter native
				namespace b
			}`,
			wantErr:  `duplicate subdirective "namespace"`,
			wantLine: 4,
		},
		{
			name: "duplicate managed block",
			input: `spawn {
				managed {
					root /a
				}
				managed
			}`,
			wantErr:  `duplicate subdirective "managed"`,
			wantLine: 5,
		},
		{
			name: "duplicate managed subdirective",
			input: `spawn {
				managed {
					root /a
					root /b
				}
			}`,
			wantErr:  `duplicate managed subdirective "root"`,
			wantLine: 4,
		},
		{
			// The conflict is only known once the block is read, so the
			// error points at its closing brace.
			name: "address and managed together",
			input: `spawn {
				address /run/containerd/containerd.sock
				managed {
					root /var/lib/x
				}
			}`,
			wantErr:  "address and managed are mutually exclusive",
			wantLine: 6,
		},
		{
			name: "address without argument",
			input: `spawn {
				address
			}`,
			wantErr:  "wrong argument count or unexpected line ending after 'address'",
			wantLine: 2,
		},
		{
			name: "namespace with two arguments",
			input: `spawn {
				namespace a b
			}`,
			wantErr:  "wrong argument count or unexpected line ending after 'b'",
			wantLine: 2,
		},
		{
			name: "managed with an argument",
			input: `spawn {
				managed /usr/bin/containerd
			}`,
			wantErr:  "wrong argument count or unexpected line ending after '/usr/bin/containerd'",
			wantLine: 2,
		},
		{
			name: "managed root without argument",
			input: `spawn {
				managed {
					root
				}
			}`,
			wantErr:  "wrong argument count or unexpected line ending after 'root'",
			wantLine: 3,
		},
		{
			name: "bad image_wait",
			input: `spawn {
				image_wait later
			}`,
			wantErr:  `image_wait: bad duration "later"`,
			wantLine: 2,
		},
		{
			name: "negative image_wait",
			input: `spawn {
				image_wait -1s
			}`,
			wantErr:  `image_wait: must not be negative, got -1s`,
			wantLine: 2,
		},
		{
			name: "image_wait without argument",
			input: `spawn {
				image_wait
			}`,
			wantErr:  "wrong argument count or unexpected line ending after 'image_wait'",
			wantLine: 2,
		},
		{
			name: "second occurrence",
			input: `spawn {
				namespace b
			}`,
			existing: httpcaddyfile.App{Name: "spawn", Value: json.RawMessage(`{"namespace":"a"}`)},
			wantErr:  "the spawn global option may appear only once",
			wantLine: 1,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseGlobalOption(caddyfile.NewTestDispenser(tc.input), tc.existing)
			checkDispenserErr(t, err, tc.wantErr, tc.wantLine)
		})
	}
}

func ptr[T any](v T) *T { return &v }
