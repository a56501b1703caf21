package caddymodule

import (
	"strings"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/pkg/identifiers"

	"github.com/caddyserver/caddy/v2"
)

// validHandler is a handler as Provision leaves it: defaults applied.
func validHandler() *Handler {
	return &Handler{
		Image:   "localhost/caddy-spawn/hello:latest",
		Name:    "hello",
		Output:  outputCGI,
		Timeout: caddy.Duration(defaultTimeout),
	}
}

// sampleContainerID is what spawner.Create makes of a route name.
func sampleContainerID(name string) string { return "caddy-spawn-" + name + "-0123abcd" }

func TestHandlerValidate(t *testing.T) {
	for _, tc := range []struct {
		name    string
		modify  func(h *Handler)
		wantErr string // "" means valid
	}{
		{name: "defaults", modify: func(*Handler) {}},
		{name: "image by digest", modify: func(h *Handler) {
			h.Image = "docker.io/library/nginx@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
		}},
		{name: "short image name", modify: func(h *Handler) { h.Image = "busybox" }},
		{name: "raw output", modify: func(h *Handler) { h.Output = outputRaw }},
		{name: "name of 40 characters", modify: func(h *Handler) { h.Name = strings.Repeat("a", 40) }},
		{name: "name with digits and dashes", modify: func(h *Handler) { h.Name = "thumb-2x" }},
		{name: "zero timeout", modify: func(h *Handler) { h.Timeout = 0 }},
		{name: "memory unset", modify: func(h *Handler) { h.Memory = 0 }},
		{name: "memory exactly 4 MiB", modify: func(h *Handler) { h.Memory = 4 << 20 }},
		{name: "pids", modify: func(h *Handler) { h.Pids = 1 }},
		{name: "env", modify: func(h *Handler) { h.Env = map[string]string{"TOKEN": "{env.TOKEN}", "EMPTY": ""} }},
		{name: "script_name", modify: func(h *Handler) { h.ScriptName = "/fn/hello" }},
		{name: "cpus unset", modify: func(h *Handler) { h.CPUs = 0 }},
		{name: "cpus minimum", modify: func(h *Handler) { h.CPUs = 0.01 }},
		{name: "cpus maximum", modify: func(h *Handler) { h.CPUs = 1024 }},
		{name: "nofile", modify: func(h *Handler) { h.Nofile = 65536 }},
		{name: "nofile maximum", modify: func(h *Handler) { h.Nofile = 1 << 20 }},
		{name: "max_request_body unlimited", modify: func(h *Handler) { h.MaxRequestBody = ptr(int64(0)) }},
		{name: "max_request_body", modify: func(h *Handler) { h.MaxRequestBody = ptr(int64(1)) }},
		{name: "max_response_bytes", modify: func(h *Handler) { h.MaxResponseBytes = 1 << 30 }},
		{name: "network unset", modify: func(h *Handler) { h.Network = "" }},
		{name: "network none", modify: func(h *Handler) { h.Network = "none" }},
		{name: "network host", modify: func(h *Handler) { h.Network = "host" }},
		{name: "userns", modify: func(h *Handler) { h.Userns = true }},
		{name: "userns with a mapped user", modify: func(h *Handler) { h.Userns, h.User = true, "65535:65535" }},
		{name: "userns with its host ID", modify: func(h *Handler) { h.Userns, h.UsernsHostID = true, 65536 }},
		{name: "userns with the last host ID", modify: func(h *Handler) { h.Userns, h.UsernsHostID = true, 4294901759 }},
		{name: "read_only", modify: func(h *Handler) { h.ReadOnly = true }},
		{name: "pass_authorization", modify: func(h *Handler) { h.PassAuthorization = true }},
		{name: "user uid", modify: func(h *Handler) { h.User = "65534" }},
		{name: "user uid:gid", modify: func(h *Handler) { h.User = "65534:65534" }},
		{name: "user largest uid", modify: func(h *Handler) { h.User = "4294967294" }},
		{name: "pull_policy missing", modify: func(h *Handler) { h.PullPolicy = "missing" }},
		{name: "pull_policy always", modify: func(h *Handler) { h.PullPolicy = "always" }},
		{name: "pull_policy never", modify: func(h *Handler) { h.PullPolicy = "never" }},
		{name: "pull_policy never with image_archive", modify: func(h *Handler) {
			h.PullPolicy = "never"
			h.ImageArchive = "/srv/fn.tar"
		}},
		{name: "registry_auth", modify: func(h *Handler) {
			h.RegistryAuth = &RegistryAuth{Username: "deploy", Password: "{env.REG_PASS}"}
		}},
		{name: "registry_auth with pull_policy always", modify: func(h *Handler) {
			h.PullPolicy = "always"
			h.RegistryAuth = &RegistryAuth{Username: "deploy", Password: "x"}
		}},
		{
			name:    "unknown pull_policy",
			modify:  func(h *Handler) { h.PullPolicy = "Always" },
			wantErr: `pull_policy: "Always" must be "missing", "always" or "never"`,
		},
		{name: "adaptive pool", modify: func(h *Handler) {
			h.PoolMin, h.PoolMax, h.PoolIdleTimeout = ptr(1), ptr(8), caddy.Duration(time.Second)
		}},
		{name: "adaptive pool to zero", modify: func(h *Handler) { h.PoolMax = ptr(8) }},
		{
			name:    "pool with pool_max",
			modify:  func(h *Handler) { h.Pool, h.PoolMax = ptr(2), ptr(8) },
			wantErr: "pool: a fixed pool cannot be combined with pool_min/pool_max (use pool_min 2 pool_max 2 for the same)",
		},
		{
			name:    "pool_min without pool_max",
			modify:  func(h *Handler) { h.PoolMin = ptr(1) },
			wantErr: "pool_min: needs pool_max (an adaptive pool)",
		},
		{
			name:    "pool_min above pool_max",
			modify:  func(h *Handler) { h.PoolMin, h.PoolMax = ptr(5), ptr(3) },
			wantErr: "pool_min: 5 must be between 0 and pool_max (3)",
		},
		{
			name:    "pool_max 0",
			modify:  func(h *Handler) { h.PoolMax = ptr(0) },
			wantErr: "pool_max: 0 must be between 1 and 256",
		},
		{
			name:    "pool_idle_timeout of a fixed pool",
			modify:  func(h *Handler) { h.PoolIdleTimeout = caddy.Duration(time.Second) },
			wantErr: "pool_idle_timeout: only for an adaptive pool (set pool_max)",
		},
		{
			name: "pull_policy always with image_archive",
			modify: func(h *Handler) {
				h.PullPolicy = "always"
				h.ImageArchive = "/srv/fn.tar"
			},
			wantErr: "pull_policy: always contradicts image_archive",
		},
		{
			name: "registry_auth with image_archive",
			modify: func(h *Handler) {
				h.ImageArchive = "/srv/fn.tar"
				h.RegistryAuth = &RegistryAuth{Username: "deploy", Password: "x"}
			},
			wantErr: "registry_auth: has no use with image_archive",
		},
		{
			name: "registry_auth with pull_policy never",
			modify: func(h *Handler) {
				h.PullPolicy = "never"
				h.RegistryAuth = &RegistryAuth{Username: "deploy", Password: "x"}
			},
			wantErr: "registry_auth: has no use with pull_policy never",
		},
		{
			name:    "registry_auth without username",
			modify:  func(h *Handler) { h.RegistryAuth = &RegistryAuth{Password: "x"} },
			wantErr: "registry_auth: username required",
		},
		{
			name:    "missing image",
			modify:  func(h *Handler) { h.Image = "" },
			wantErr: "image: required",
		},
		// An uppercase first component is a registry host, as in
		// "UPPER:5000/case": the reference is valid.
		{name: "uppercase registry", modify: func(h *Handler) { h.Image = "UPPER/case:tag" }},
		{
			name:    "uppercase repository",
			modify:  func(h *Handler) { h.Image = "localhost/Hello:1" },
			wantErr: `image: "localhost/Hello:1" is not a valid image reference`,
		},
		{
			name:    "uppercase short name",
			modify:  func(h *Handler) { h.Image = "UPPER:tag" },
			wantErr: `image: "UPPER:tag" is not a valid image reference`,
		},
		{
			name:    "image with a space",
			modify:  func(h *Handler) { h.Image = "a b" },
			wantErr: `image: "a b" is not a valid image reference`,
		},
		{
			name:    "image with a bad digest",
			modify:  func(h *Handler) { h.Image = "nginx@sha256:abc" },
			wantErr: `image: "nginx@sha256:abc" is not a valid image reference`,
		},
		{
			name:    "empty name",
			modify:  func(h *Handler) { h.Name = "" },
			wantErr: `name: "" must be 1-40 lowercase letters and digits, separated by single '-'`,
		},
		{
			name:    "uppercase name",
			modify:  func(h *Handler) { h.Name = "Hello" },
			wantErr: `name: "Hello" must be`,
		},
		{
			name:    "name with underscore",
			modify:  func(h *Handler) { h.Name = "a_b" },
			wantErr: `name: "a_b" must be`,
		},
		{
			name:    "name starting with a dash",
			modify:  func(h *Handler) { h.Name = "-a" },
			wantErr: `name: "-a" must be`,
		},
		{
			name:    "name of 41 characters",
			modify:  func(h *Handler) { h.Name = strings.Repeat("a", 41) },
			wantErr: "name: ",
		},
		{
			name:    "name with consecutive dashes",
			modify:  func(h *Handler) { h.Name = "a--b" },
			wantErr: `name: "a--b"`,
		},
		{
			name:    "name ending in a dash",
			modify:  func(h *Handler) { h.Name = "a-" },
			wantErr: `name: "a-"`,
		},
		{
			name:    "bad output",
			modify:  func(h *Handler) { h.Output = "json" },
			wantErr: `output: "json" must be "cgi" or "raw"`,
		},
		{
			name:    "output unset",
			modify:  func(h *Handler) { h.Output = "" },
			wantErr: `output: "" must be "cgi" or "raw"`,
		},
		{
			name:    "negative timeout",
			modify:  func(h *Handler) { h.Timeout = caddy.Duration(-time.Second) },
			wantErr: "timeout: must be positive, got -1s",
		},
		{
			name:    "memory too small",
			modify:  func(h *Handler) { h.Memory = 4<<20 - 1 },
			wantErr: "memory: must be at least 4 MiB",
		},
		{
			name:    "negative memory",
			modify:  func(h *Handler) { h.Memory = -1 },
			wantErr: "memory: must be at least 4 MiB",
		},
		{
			name:    "negative pids",
			modify:  func(h *Handler) { h.Pids = -1 },
			wantErr: "pids: -1 must be a positive integer",
		},
		{
			name:    "cpus under the minimum",
			modify:  func(h *Handler) { h.CPUs = 0.009 },
			wantErr: "cpus 0.009 out of range: must be a number from 0.01 to 1024",
		},
		{
			name:    "negative cpus",
			modify:  func(h *Handler) { h.CPUs = -1 },
			wantErr: "cpus -1 out of range",
		},
		{
			name:    "cpus over the maximum",
			modify:  func(h *Handler) { h.CPUs = 1025 },
			wantErr: "cpus 1025 out of range",
		},
		{
			name:    "negative nofile",
			modify:  func(h *Handler) { h.Nofile = -1 },
			wantErr: "nofile -1 under the minimum: must be an integer from 1 to 1048576",
		},
		{
			name:    "nofile over the maximum",
			modify:  func(h *Handler) { h.Nofile = 1<<20 + 1 },
			wantErr: "nofile 1048577 over the maximum",
		},
		{
			name:    "negative max_request_body",
			modify:  func(h *Handler) { h.MaxRequestBody = ptr(int64(-1)) },
			wantErr: "max_request_body: must not be negative",
		},
		{
			name:    "negative max_response_bytes",
			modify:  func(h *Handler) { h.MaxResponseBytes = -1 },
			wantErr: "max_response_bytes: must not be negative",
		},
		{
			name:    "userns with network host",
			modify:  func(h *Handler) { h.Userns, h.Network = true, "host" },
			wantErr: "userns: can't be combined with network host",
		},
		{
			name:    "userns with a user it doesn't map",
			modify:  func(h *Handler) { h.Userns, h.User = true, "70000" },
			wantErr: "user: 70000 is not mapped in the user namespace of userns (IDs 0 to 65535)",
		},
		{
			name:    "userns with a group it doesn't map",
			modify:  func(h *Handler) { h.Userns, h.User = true, "1000:65536" },
			wantErr: "user: 1000:65536 is not mapped",
		},
		{
			name:    "userns_host_id without userns",
			modify:  func(h *Handler) { h.UsernsHostID = 2_000_000_000 },
			wantErr: "userns_host_id: has no use without userns",
		},
		{
			name:    "userns_host_id on the host's own IDs",
			modify:  func(h *Handler) { h.Userns, h.UsernsHostID = true, 1000 },
			wantErr: "userns_host_id: host ID 1000 out of range: must be from 65536 to 4294901759",
		},
		{
			name:    "userns_host_id past the last range",
			modify:  func(h *Handler) { h.Userns, h.UsernsHostID = true, 4294901760 },
			wantErr: "userns_host_id: host ID 4294901760 out of range",
		},
		{
			name:    "bad network",
			modify:  func(h *Handler) { h.Network = "bridge" },
			wantErr: `network: "bridge" must be "none" or "host"`,
		},
		{
			name:    "user by name",
			modify:  func(h *Handler) { h.User = "nobody" },
			wantErr: `user: "nobody": uid "nobody" must be a number`,
		},
		{
			name:    "user -1",
			modify:  func(h *Handler) { h.User = "4294967295" },
			wantErr: `user: "4294967295": uid`,
		},
		{
			name:    "user with an empty uid",
			modify:  func(h *Handler) { h.User = ":1" },
			wantErr: `user: ":1": uid "" must be a number`,
		},
		{
			name:    "user with a bad gid",
			modify:  func(h *Handler) { h.User = "1:-1" },
			wantErr: `user: "1:-1": gid "-1" must be a number`,
		},
		{
			name:    "empty env key",
			modify:  func(h *Handler) { h.Env = map[string]string{"": "x"} },
			wantErr: `env: invalid variable name ""`,
		},
		{
			name:    "env key with '='",
			modify:  func(h *Handler) { h.Env = map[string]string{"A=B": "x"} },
			wantErr: `env: invalid variable name "A=B"`,
		},
		{
			name:    "env key with NUL",
			modify:  func(h *Handler) { h.Env = map[string]string{"A\x00B": "x"} },
			wantErr: `env: invalid variable name "A\x00B"`,
		},
		{
			name:    "script_name without leading slash",
			modify:  func(h *Handler) { h.ScriptName = "fn/hello" },
			wantErr: `script_name: "fn/hello" must start with '/'`,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := validHandler()
			tc.modify(h)
			err := h.Validate()
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case tc.wantErr == "":
				// A name Validate accepts must make a container ID
				// containerd accepts too.
				if err := identifiers.Validate(sampleContainerID(h.Name)); err != nil {
					t.Errorf("valid name %q makes an invalid container ID: %v", h.Name, err)
				}
			case err == nil:
				t.Fatalf("got no error, want one containing %q", tc.wantErr)
			case !strings.Contains(err.Error(), tc.wantErr):
				t.Errorf("error %q does not contain %q", err, tc.wantErr)
			}
		})
	}
}

// validApp is an app as Provision leaves it (address mode).
func validApp() *App {
	return &App{
		Address:     "/run/containerd/containerd.sock",
		Namespace:   defaultNamespace,
		Snapshotter: defaultSnapshotter,
		RunDir:      defaultRunDir,
		ImageWait:   caddy.Duration(defaultImageWait),
	}
}

func TestAppValidate(t *testing.T) {
	for _, tc := range []struct {
		name    string
		modify  func(a *App)
		wantErr string // "" means valid
	}{
		{name: "address", modify: func(*App) {}},
		{name: "managed", modify: func(a *App) {
			a.Address = ""
			a.Managed = &ManagedContainerd{Root: "/var/lib/caddy/spawn/containerd", State: "/run/caddy-spawn/containerd-0123abcd"}
		}},
		{name: "namespace with dots and mixed case", modify: func(a *App) { a.Namespace = "Caddy.spawn_2" }},
		{name: "zero image_wait", modify: func(a *App) { a.ImageWait = 0 }},
		{name: "warm_memory", modify: func(a *App) { a.WarmMemory = 1 << 30 }},
		{name: "negative warm_memory", modify: func(a *App) { a.WarmMemory = -1 }, wantErr: "warm_memory: -1 must not be negative"},
		{name: "insecure_registries", modify: func(a *App) {
			a.InsecureRegistries = []string{"reg.lan", "reg.lan:5000", "10.0.0.5:80", "[fd00::1]:5000"}
		}},
		{
			name:    "insecure_registries with a scheme",
			modify:  func(a *App) { a.InsecureRegistries = []string{"http://reg.lan"} },
			wantErr: `insecure_registries: "http://reg.lan" must be a registry host or host:port`,
		},
		{
			name:    "insecure_registries with a bad port",
			modify:  func(a *App) { a.InsecureRegistries = []string{"reg.lan:99999"} },
			wantErr: `insecure_registries: "reg.lan:99999": bad port`,
		},
		{
			name:    "insecure_registries empty entry",
			modify:  func(a *App) { a.InsecureRegistries = []string{""} },
			wantErr: `insecure_registries: "" must be a registry host`,
		},
		{
			name:    "namespace default",
			modify:  func(a *App) { a.Namespace = "default" },
			wantErr: `namespace: "default" belongs to other tools`,
		},
		{
			name:    "namespace k8s.io",
			modify:  func(a *App) { a.Namespace = "k8s.io" },
			wantErr: `namespace: "k8s.io" belongs to other tools`,
		},
		{
			name:    "namespace moby",
			modify:  func(a *App) { a.Namespace = "moby" },
			wantErr: `namespace: "moby" belongs to other tools`,
		},
		{
			name:    "namespace with a space",
			modify:  func(a *App) { a.Namespace = "caddy spawn" },
			wantErr: `namespace: identifier "caddy spawn" must match`,
		},
		{
			name:    "namespace with a slash",
			modify:  func(a *App) { a.Namespace = "caddy/spawn" },
			wantErr: `namespace: identifier "caddy/spawn" must match`,
		},
		{
			name:    "namespace with consecutive separators",
			modify:  func(a *App) { a.Namespace = "caddy--spawn" },
			wantErr: `namespace: identifier "caddy--spawn" must match`,
		},
		{
			name:    "namespace too long",
			modify:  func(a *App) { a.Namespace = strings.Repeat("n", 77) },
			wantErr: "namespace: identifier",
		},
		{
			name:    "empty namespace",
			modify:  func(a *App) { a.Namespace = "" },
			wantErr: "namespace: identifier must not be empty",
		},
		{
			name:    "address and managed",
			modify:  func(a *App) { a.Managed = &ManagedContainerd{} },
			wantErr: "address and managed are mutually exclusive",
		},
		{
			name:    "negative image_wait",
			modify:  func(a *App) { a.ImageWait = caddy.Duration(-time.Second) },
			wantErr: "image_wait: must not be negative",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := validApp()
			tc.modify(a)
			err := a.Validate()
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case tc.wantErr == "":
			case err == nil:
				t.Fatalf("got no error, want one containing %q", tc.wantErr)
			case !strings.Contains(err.Error(), tc.wantErr):
				t.Errorf("error %q does not contain %q", err, tc.wantErr)
			}
		})
	}
}

func TestNameFromImage(t *testing.T) {
	for _, tc := range []struct {
		name  string
		image string
		want  string
	}{
		{name: "local image with tag", image: "localhost/caddy-spawn/hello:latest", want: "hello"},
		{name: "bare name", image: "nginx", want: "nginx"},
		{name: "bare name with tag", image: "nginx:1.27", want: "nginx"},
		{
			name:  "digest",
			image: "docker.io/library/nginx@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
			want:  "nginx",
		},
		{
			name:  "tag and digest",
			image: "nginx:1.27@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
			want:  "nginx",
		},
		{name: "registry with port", image: "reg:5000/a/B_c:1", want: "b-c"},
		{name: "registry with port, no tag", image: "reg:5000/thumb", want: "thumb"},
		{name: "dots become dashes", image: "ghcr.io/org/my.app:v1", want: "my-app"},
		{name: "separators trimmed", image: "localhost/_app_:1", want: "app"},
		{name: "nothing usable", image: "localhost/___", want: ""},
		{name: "truncated to 40", image: "localhost/" + strings.Repeat("x", 50), want: strings.Repeat("x", 40)},
		{
			name:  "double underscore",
			image: "localhost/my__app:1",
			want:  "my-app",
		},
		{
			name:  "truncation leaves no trailing dash",
			image: "localhost/" + strings.Repeat("a", 39) + "_b",
			want:  strings.Repeat("a", 39),
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := nameFromImage(tc.image)
			if got != tc.want {
				t.Errorf("nameFromImage(%q) = %q, want %q", tc.image, got, tc.want)
			}
			if got == "" {
				return
			}
			// A derived name must pass Validate and make a container ID
			// containerd accepts.
			h := validHandler()
			h.Name = got
			if err := h.Validate(); err != nil {
				t.Errorf("derived name %q fails Validate: %v", got, err)
			}
			if err := identifiers.Validate(sampleContainerID(got)); err != nil {
				t.Errorf("derived name %q makes an invalid container ID: %v", got, err)
			}
		})
	}
}
