package spawner

import (
	"slices"
	"strings"
	"testing"

	"github.com/opencontainers/runtime-spec/specs-go"

	"github.com/containerd/containerd/v2/core/containers"
	ctrsnapshots "github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/pkg/oci"
)

// routeSpec builds the spec a container of f gets, minus the image's config
// (which needs a real image; the containerd integration tests cover it).
func routeSpec(t *testing.T, f *Function) *oci.Spec {
	t.Helper()
	s := &Spawner{cfg: Config{InitBinary: "/var/lib/caddy/spawn/bin/spawn-init"}}
	ctx := namespaces.WithNamespace(t.Context(), "caddy-spawn-test")
	c := &containers.Container{ID: "caddy-spawn-" + f.Name + "-0123abcd"}
	spec, err := oci.GenerateSpec(ctx, nil, c, s.routeOpts(f, f.Name, cgroupsPath("caddy-spawn-test", c.ID))...)
	if err != nil {
		t.Fatalf("GenerateSpec: %v", err)
	}
	return spec
}

func mountAt(spec *oci.Spec, dest string) *specs.Mount {
	for i, m := range spec.Mounts {
		if m.Destination == dest {
			return &spec.Mounts[i]
		}
	}
	return nil
}

func TestSpecDefaults(t *testing.T) {
	spec := routeSpec(t, &Function{Name: "fn"})
	p := spec.Process

	if !p.NoNewPrivileges {
		t.Error("NoNewPrivileges is false")
	}
	if c := p.Capabilities; c != nil && len(c.Bounding)+len(c.Effective)+len(c.Permitted)+len(c.Inheritable)+len(c.Ambient) > 0 {
		t.Errorf("capabilities %+v, want none", *c)
	}
	if p.User.UID != 0 || p.User.GID != 0 {
		t.Errorf("user %d:%d, want the default spec's 0:0 (the image's config sets its own)", p.User.UID, p.User.GID)
	}
	if want := []string{InitPath}; !slices.Equal(p.Args, want) {
		t.Errorf("args %q, want our init first: %q", p.Args, want)
	}
	if i := slices.IndexFunc(p.Rlimits, func(r specs.POSIXRlimit) bool { return r.Type == "RLIMIT_NOFILE" }); i < 0 {
		t.Error("no RLIMIT_NOFILE")
	} else if r := p.Rlimits[i]; r.Soft != DefaultNofile || r.Hard != DefaultNofile {
		t.Errorf("RLIMIT_NOFILE %d/%d, want %d/%d", r.Soft, r.Hard, DefaultNofile, DefaultNofile)
	}

	l := spec.Linux
	if l.Seccomp == nil || l.Seccomp.DefaultAction != specs.ActErrno || len(l.Seccomp.Syscalls) == 0 {
		t.Errorf("seccomp %+v, want containerd's default profile (deny by default)", l.Seccomp)
	} else {
		// Built for no capabilities: the calls CAP_SYS_ADMIN would allow
		// stay denied.
		for _, sc := range l.Seccomp.Syscalls {
			if sc.Action == specs.ActAllow && slices.Contains(sc.Names, "mount") {
				t.Errorf("seccomp allows mount: %+v", sc)
			}
		}
	}
	for _, want := range []string{"/proc/kcore", "/proc/keys", "/proc/timer_list", "/sys/firmware"} {
		if !slices.Contains(l.MaskedPaths, want) {
			t.Errorf("masked paths %q lack %s", l.MaskedPaths, want)
		}
	}
	for _, want := range []string{"/proc/sys", "/proc/sysrq-trigger", "/proc/bus", "/proc/fs", "/proc/irq"} {
		if !slices.Contains(l.ReadonlyPaths, want) {
			t.Errorf("read-only paths %q lack %s", l.ReadonlyPaths, want)
		}
	}
	netns := slices.IndexFunc(l.Namespaces, func(n specs.LinuxNamespace) bool { return n.Type == specs.NetworkNamespace })
	if netns < 0 || l.Namespaces[netns].Path != "" {
		t.Errorf("namespaces %+v: want a fresh network namespace", l.Namespaces)
	}

	r := l.Resources
	if r.Pids == nil || r.Pids.Limit == nil || *r.Pids.Limit != DefaultPids {
		t.Errorf("pids %+v, want %d", r.Pids, DefaultPids)
	}
	if r.Memory == nil || r.Memory.Limit == nil || *r.Memory.Limit != DefaultMemoryBytes {
		t.Fatalf("memory %+v, want %d", r.Memory, DefaultMemoryBytes)
	}
	switch {
	case swapLimitSupported() && (r.Memory.Swap == nil || *r.Memory.Swap != DefaultMemoryBytes):
		t.Errorf("memory+swap %v, want %d (no swap)", r.Memory.Swap, DefaultMemoryBytes)
	case !swapLimitSupported() && r.Memory.Swap != nil:
		t.Errorf("memory+swap %d set on a host without swap accounting: runc would fail", *r.Memory.Swap)
	}
	if r.CPU == nil || r.CPU.Quota == nil || r.CPU.Period == nil || *r.CPU.Quota != 100_000 || *r.CPU.Period != 100_000 {
		t.Errorf("cpu %+v, want quota 100000 per period 100000 (1 CPU)", r.CPU)
	}

	if spec.Root.Readonly {
		t.Error("root is read-only by default")
	}
	if m := mountAt(spec, "/tmp"); m != nil {
		t.Errorf("a mount at /tmp by default: %+v", *m)
	}
	if m := mountAt(spec, InitPath); m == nil || !slices.Contains(m.Options, "ro") || m.Type != "bind" {
		t.Errorf("init mount %+v, want a read-only bind", m)
	}
	if m := mountAt(spec, "/etc/resolv.conf"); m != nil {
		t.Errorf("host resolv.conf mounted without host network: %+v", *m)
	}
}

func TestSpecRouteSettings(t *testing.T) {
	for _, tc := range []struct {
		name  string
		fn    Function
		check func(t *testing.T, spec *oci.Spec)
	}{
		{
			name: "half a CPU",
			fn:   Function{CPUs: 0.5},
			check: func(t *testing.T, spec *oci.Spec) {
				if q := spec.Linux.Resources.CPU.Quota; *q != 50_000 {
					t.Errorf("quota %d, want 50000", *q)
				}
			},
		},
		{
			name: "smallest CPU share",
			fn:   Function{CPUs: MinCPUs},
			check: func(t *testing.T, spec *oci.Spec) {
				if q := spec.Linux.Resources.CPU.Quota; *q != 1000 {
					t.Errorf("quota %d, want 1000 (the kernel's minimum)", *q)
				}
			},
		},
		{
			name: "four CPUs",
			fn:   Function{CPUs: 4},
			check: func(t *testing.T, spec *oci.Spec) {
				if q := spec.Linux.Resources.CPU.Quota; *q != 400_000 {
					t.Errorf("quota %d, want 400000", *q)
				}
			},
		},
		{
			name: "memory and pids",
			fn:   Function{MemoryBytes: 32 << 20, Pids: 16},
			check: func(t *testing.T, spec *oci.Spec) {
				r := spec.Linux.Resources
				if *r.Memory.Limit != 32<<20 || *r.Pids.Limit != 16 {
					t.Errorf("memory %d pids %d, want %d and 16", *r.Memory.Limit, *r.Pids.Limit, 32<<20)
				}
				if swapLimitSupported() && *r.Memory.Swap != 32<<20 {
					t.Errorf("memory+swap %d, want %d", *r.Memory.Swap, 32<<20)
				}
			},
		},
		{
			name: "nofile",
			fn:   Function{Nofile: 4096},
			check: func(t *testing.T, spec *oci.Spec) {
				n := 0
				for _, r := range spec.Process.Rlimits {
					if r.Type == "RLIMIT_NOFILE" {
						n++
						if r.Soft != 4096 || r.Hard != 4096 {
							t.Errorf("RLIMIT_NOFILE %d/%d, want 4096/4096", r.Soft, r.Hard)
						}
					}
				}
				if n != 1 {
					t.Errorf("%d RLIMIT_NOFILE entries, want 1", n)
				}
			},
		},
		{
			name: "user",
			fn:   Function{User: &User{UID: 65534, GID: 65533}},
			check: func(t *testing.T, spec *oci.Spec) {
				u := spec.Process.User
				if u.UID != 65534 || u.GID != 65533 {
					t.Errorf("user %d:%d, want 65534:65533", u.UID, u.GID)
				}
				if slices.Contains(u.AdditionalGids, 0) {
					t.Errorf("additional gids %v include root's group", u.AdditionalGids)
				}
			},
		},
		{
			name: "read-only root with tmpfs /tmp",
			fn:   Function{ReadOnly: true},
			check: func(t *testing.T, spec *oci.Spec) {
				if !spec.Root.Readonly {
					t.Error("root is writable")
				}
				m := mountAt(spec, "/tmp")
				if m == nil || m.Type != "tmpfs" {
					t.Fatalf("/tmp mount %+v, want a tmpfs", m)
				}
				for _, want := range []string{"size=67108864", "mode=1777", "nosuid", "nodev", "noexec"} {
					if !slices.Contains(m.Options, want) {
						t.Errorf("/tmp options %q lack %s", m.Options, want)
					}
				}
				if mountAt(spec, InitPath) == nil {
					t.Error("no init mount")
				}
			},
		},
		{
			name: "host network",
			fn:   Function{HostNetwork: true},
			check: func(t *testing.T, spec *oci.Spec) {
				for _, ns := range spec.Linux.Namespaces {
					if ns.Type == specs.NetworkNamespace {
						t.Errorf("network namespace %+v with host network", ns)
					}
				}
				if m := mountAt(spec, "/etc/resolv.conf"); m != nil && !slices.Contains(m.Options, "ro") {
					t.Errorf("resolv.conf mount %+v is writable", *m)
				}
				// The rest of the hardening stays.
				if spec.Linux.Seccomp == nil || !spec.Process.NoNewPrivileges {
					t.Error("host network dropped seccomp or no_new_privileges")
				}
			},
		},
		{
			name: "user namespace",
			fn:   Function{Userns: &Userns{HostID: 2_000_000_000}},
			check: func(t *testing.T, spec *oci.Spec) {
				if !slices.ContainsFunc(spec.Linux.Namespaces, func(ns specs.LinuxNamespace) bool {
					return ns.Type == specs.UserNamespace && ns.Path == ""
				}) {
					t.Errorf("namespaces %+v: no new user namespace", spec.Linux.Namespaces)
				}
				want := []specs.LinuxIDMapping{{ContainerID: 0, HostID: 2_000_000_000, Size: UsernsSize}}
				if !slices.Equal(spec.Linux.UIDMappings, want) || !slices.Equal(spec.Linux.GIDMappings, want) {
					t.Errorf("mappings uid %+v gid %+v, want %+v for both", spec.Linux.UIDMappings, spec.Linux.GIDMappings, want)
				}
				// The rest of the hardening stays.
				if spec.Linux.Seccomp == nil || !spec.Process.NoNewPrivileges || len(spec.Process.Capabilities.Bounding) != 0 {
					t.Error("userns dropped seccomp, no_new_privileges or the empty capability set")
				}
			},
		},
		{
			name: "no user namespace by default",
			fn:   Function{},
			check: func(t *testing.T, spec *oci.Spec) {
				for _, ns := range spec.Linux.Namespaces {
					if ns.Type == specs.UserNamespace {
						t.Errorf("user namespace %+v without userns", ns)
					}
				}
				if len(spec.Linux.UIDMappings) != 0 {
					t.Errorf("uid mappings %+v without userns", spec.Linux.UIDMappings)
				}
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fn := tc.fn
			fn.Name = "fn"
			tc.check(t, routeSpec(t, &fn))
		})
	}
}

func TestFunctionValidate(t *testing.T) {
	for _, tc := range []struct {
		name    string
		fn      Function
		wantErr string
	}{
		{name: "no image", fn: Function{Name: "fn"}, wantErr: "image not ready"},
		{name: "cpus under the minimum", fn: Function{Name: "fn", CPUs: 0.001}, wantErr: "cpus 0.001 out of range"},
		{name: "cpus over the maximum", fn: Function{Name: "fn", CPUs: 2000}, wantErr: "cpus 2000 out of range"},
		{name: "nofile too large", fn: Function{Name: "fn", Nofile: MaxNofile + 1}, wantErr: "nofile 1048577 over"},
		{name: "userns range on host IDs", fn: Function{Name: "fn", Userns: &Userns{HostID: 1000}}, wantErr: "host ID 1000 out of range"},
		{name: "userns range past the last ID", fn: Function{Name: "fn", Userns: &Userns{HostID: MaxUsernsHostID + 1}}, wantErr: "out of range"},
		{name: "userns with host network", fn: Function{Name: "fn", Userns: &Userns{HostID: DefaultUsernsHostID}, HostNetwork: true}, wantErr: "can't be combined with the host's network"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.fn.validate()
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("validate() = %v, want an error containing %q", err, tc.wantErr)
			}
		})
	}
}

func TestFunctionSnapshotOpts(t *testing.T) {
	if opts := (&Function{}).snapshotOpts(); len(opts) != 0 {
		t.Errorf("%d snapshot options without userns, want none", len(opts))
	}
	var info ctrsnapshots.Info
	for _, o := range (&Function{Userns: &Userns{HostID: 2_000_000_000}}).snapshotOpts() {
		if err := o(&info); err != nil {
			t.Fatal(err)
		}
	}
	for _, l := range []string{ctrsnapshots.LabelSnapshotUIDMapping, ctrsnapshots.LabelSnapshotGIDMapping} {
		if got := info.Labels[l]; got != "0:2000000000:65536" {
			t.Errorf("label %s = %q, want 0:2000000000:65536", l, got)
		}
	}
}
