package spawner

import (
	"context"
	"math"
	"os"
	"strconv"

	"github.com/opencontainers/runtime-spec/specs-go"

	"github.com/containerd/containerd/v2/contrib/seccomp"
	"github.com/containerd/containerd/v2/core/containers"
	"github.com/containerd/containerd/v2/pkg/oci"
)

// specOpts builds the OCI spec of a function container: the image's config,
// the route's overrides, our init in front of the program, and hardening.
//
// Hardening, on top of containerd's default spec (which already has runc's
// masked and read-only paths under /proc and /sys, no host devices, and a
// fresh PID, IPC, UTS, mount and network namespace):
//   - no capabilities at all and no_new_privileges;
//   - containerd's default seccomp profile (Docker's), built for that empty
//     capability set;
//   - memory (swap included: none), pids, CPU quota and RLIMIT_NOFILE limits;
//   - no core dumps (RLIMIT_CORE 0/0) and oom_score_adj 1000: when the host
//     runs out of memory, functions die first, never Caddy or containerd;
//   - optionally a read-only root filesystem with a small tmpfs at /tmp, a
//     numeric non-root user, and a user namespace whose root is an
//     unprivileged host user.
func (s *Spawner) specOpts(f *Function, hostname, cgroup string) []oci.SpecOpts {
	// Docker's rules: args replace the image's CMD; a new entrypoint drops
	// the image's CMD as well.
	opts := []oci.SpecOpts{oci.WithImageConfigArgs(f.Image.Image, f.Args)}
	if len(f.Entrypoint) > 0 {
		opts = append(opts, oci.WithProcessArgs(append(append([]string{}, f.Entrypoint...), f.Args...)...))
	}
	return append(opts, s.routeOpts(f, hostname, cgroup)...)
}

// routeOpts is everything of the spec but the image's config and command:
// the route's settings, limits, hardening and our init. They apply after
// the image's config, which they override.
func (s *Spawner) routeOpts(f *Function, hostname, cgroup string) []oci.SpecOpts {
	mem := f.MemoryBytes
	if mem == 0 {
		mem = DefaultMemoryBytes
	}
	pids := f.Pids
	if pids == 0 {
		pids = DefaultPids
	}
	cpus := f.CPUs
	if cpus == 0 {
		cpus = DefaultCPUs
	}
	nofile := f.Nofile
	if nofile == 0 {
		nofile = DefaultNofile
	}
	disk := f.DiskBytes
	if disk == 0 {
		disk = DefaultDiskBytes
	}
	var opts []oci.SpecOpts
	if len(f.Env) > 0 {
		opts = append(opts, oci.WithEnv(f.Env))
	}
	if f.WorkingDir != "" {
		opts = append(opts, oci.WithProcessCwd(f.WorkingDir))
	}
	if f.User != nil {
		// After the image config, which sets the image's USER.
		opts = append(opts, oci.WithUIDGID(f.User.UID, f.User.GID))
	}
	opts = append(opts,
		oci.WithHostname(hostname),
		oci.WithCgroup(cgroup),
		// No capabilities: a CGI program needs none.
		oci.WithCapabilities(nil),
		oci.WithAmbientCapabilities(nil),
		oci.WithNoNewPrivileges,
		// After the capabilities: the profile allows the system calls
		// that the capabilities kept would need, here none.
		seccomp.WithDefaultProfile(),
		oci.WithPidsLimit(pids),
		oci.WithMemoryLimit(uint64(mem)),
		oci.WithCPUCFS(cpuQuota(cpus), CPUPeriod),
		oci.WithRlimit(&specs.POSIXRlimit{Type: "RLIMIT_NOFILE", Soft: nofile, Hard: nofile}),
		// No core dumps, not even raised by the program: they would land
		// in its writable layer (the host's disk).
		oci.WithRlimit(&specs.POSIXRlimit{Type: "RLIMIT_CORE", Soft: 0, Hard: 0}),
		// No file larger than the writable layer, on either path (the stock
		// path has no other bound). A little over it, so a program that
		// fills the layer gets ENOSPC, not SIGXFSZ.
		oci.WithRlimit(&specs.POSIXRlimit{Type: "RLIMIT_FSIZE", Soft: fsizeLimit(disk), Hard: fsizeLimit(disk)}),
		withOOMScoreAdj(OOMScoreAdj),
		// The writable layer's bound, applied by the fast path's task
		// server (a size-capped tmpfs under the overlay).
		oci.WithAnnotations(map[string]string{AnnotationDisk: strconv.FormatInt(disk, 10)}),
		oci.WithMounts([]specs.Mount{{
			Destination: InitPath,
			Type:        "bind",
			Source:      s.cfg.InitBinary,
			Options:     []string{"rbind", "ro", "nosuid", "nodev"},
		}}),
		withInit(),
	)
	if swapLimitSupported() {
		// Memory plus swap equal to memory: the limit can't be dodged by
		// swapping.
		opts = append(opts, oci.WithMemorySwap(mem))
	}
	if f.HostNetwork {
		opts = append(opts, withHostNetwork())
	}
	if f.Userns != nil {
		m := f.Userns.idMappings()
		opts = append(opts, oci.WithUserNamespace(m, m))
	}
	// Otherwise the default spec's fresh network namespace, with no
	// network configured, has only a loopback device: no network.
	if f.ReadOnly {
		opts = append(opts, oci.WithRootFSReadonly(), oci.WithMounts([]specs.Mount{{
			Destination: "/tmp",
			Type:        "tmpfs",
			Source:      "tmpfs",
			Options: []string{
				"nosuid", "nodev", "noexec", "mode=1777",
				"size=" + strconv.FormatInt(TmpfsBytes, 10),
			},
		}}))
	}
	return opts
}

// cpuQuota is the CFS quota in microseconds per CPUPeriod for cpus CPUs.
func cpuQuota(cpus float64) int64 {
	return int64(math.Round(cpus * CPUPeriod))
}

// withHostNetwork joins the host's network namespace and, as ctr and
// nerdctl do for --net-host, bind-mounts the host's /etc/hosts and
// /etc/resolv.conf read-only so names resolve as on the host.
func withHostNetwork() oci.SpecOpts {
	return func(ctx context.Context, c oci.Client, ctr *containers.Container, s *oci.Spec) error {
		if err := oci.WithHostNamespace(specs.NetworkNamespace)(ctx, c, ctr, s); err != nil {
			return err
		}
		for _, f := range []string{"/etc/hosts", "/etc/resolv.conf"} {
			if _, err := os.Stat(f); err != nil {
				continue
			}
			s.Mounts = append(s.Mounts, specs.Mount{
				Destination: f, Type: "bind", Source: f,
				Options: []string{"rbind", "ro", "nosuid", "nodev", "noexec"},
			})
		}
		return nil
	}
}

// idMappings is the user namespace's mapping, for users and groups alike.
func (u *Userns) idMappings() []specs.LinuxIDMapping {
	return []specs.LinuxIDMapping{{ContainerID: 0, HostID: u.HostID, Size: UsernsSize}}
}

// fsizeLimit is RLIMIT_FSIZE for a writable layer of disk bytes.
func fsizeLimit(disk int64) uint64 { return uint64(disk) + FsizeMargin }

// withOOMScoreAdj sets the OOM killer's adjustment of the container's
// processes.
func withOOMScoreAdj(adj int) oci.SpecOpts {
	return func(_ context.Context, _ oci.Client, _ *containers.Container, s *oci.Spec) error {
		s.Process.OOMScoreAdj = &adj
		return nil
	}
}

// withInit puts our init in front of the program: it waits for the request's
// environment on stdin, then execs the program.
func withInit() oci.SpecOpts {
	return func(_ context.Context, _ oci.Client, _ *containers.Container, s *oci.Spec) error {
		s.Process.Args = append([]string{InitPath}, s.Process.Args...)
		return nil
	}
}
