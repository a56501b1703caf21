package spawner

import (
	"context"

	"github.com/opencontainers/runtime-spec/specs-go"

	"github.com/containerd/containerd/v2/core/containers"
	"github.com/containerd/containerd/v2/pkg/oci"
)

// specOpts builds the OCI spec of a function container: the image's config,
// the route's overrides, our init in front of the program, and hardening.
func (s *Spawner) specOpts(f *Function, hostname, cgroup string) []oci.SpecOpts {
	mem := f.MemoryBytes
	if mem == 0 {
		mem = DefaultMemoryBytes
	}
	pids := f.Pids
	if pids == 0 {
		pids = DefaultPids
	}
	// Docker's rules: args replace the image's CMD; a new entrypoint drops
	// the image's CMD as well.
	opts := []oci.SpecOpts{oci.WithImageConfigArgs(f.Image.Image, f.Args)}
	if len(f.Entrypoint) > 0 {
		opts = append(opts, oci.WithProcessArgs(append(append([]string{}, f.Entrypoint...), f.Args...)...))
	}
	if len(f.Env) > 0 {
		opts = append(opts, oci.WithEnv(f.Env))
	}
	if f.WorkingDir != "" {
		opts = append(opts, oci.WithProcessCwd(f.WorkingDir))
	}
	opts = append(opts,
		oci.WithHostname(hostname),
		oci.WithCgroup(cgroup),
		// No capabilities: a CGI program needs none.
		oci.WithCapabilities(nil),
		oci.WithAmbientCapabilities(nil),
		oci.WithNoNewPrivileges,
		oci.WithPidsLimit(pids),
		oci.WithMemoryLimit(uint64(mem)),
		// Without a network configured the default spec's fresh network
		// namespace has only a loopback device: no network.
		oci.WithMounts([]specs.Mount{{
			Destination: InitPath,
			Type:        "bind",
			Source:      s.cfg.InitBinary,
			Options:     []string{"rbind", "ro", "nosuid", "nodev"},
		}}),
		withInit(),
	)
	return opts
}

// withInit puts our init in front of the program: it waits for the request's
// environment on stdin, then execs the program.
func withInit() oci.SpecOpts {
	return func(_ context.Context, _ oci.Client, _ *containers.Container, s *oci.Spec) error {
		s.Process.Args = append([]string{InitPath}, s.Process.Args...)
		return nil
	}
}
