// Package spawner runs single-use containers on containerd, and owns their
// whole life but their root filesystem:
//
//   - the Spawner (spawner.go) and its configuration and the Function a
//     route's containers are made from (function.go);
//   - each container's OCI spec with its limits, hardening and our init in
//     front of the program (spec.go; the init's binary is embedded by
//     subpackage initbin, one per architecture); the container created, started and
//     handed to the caller as an Instance (instance.go) with its stdio FIFOs
//     (fifo_linux.go) and the init's ready and exit records filtered out of
//     its stderr, which ends at the exit record (exitfilter.go); frozen and
//     thawed through the cgroup freezer, the request frame written before
//     the thaw, its usage read from cgroup files kept open
//     (freezer_linux.go, cgroup_linux.go, usage.go); and torn down, a
//     moment after the caller releases it (Release);
//   - the pool of started, frozen, single-use containers (pool.go);
//   - leftover cleanup: the start-up sweep of previous runs' containers,
//     snapshots and leases, and the janitor of this run's orphans
//     (reaper.go); the label keys it sweeps by are re-exported from
//     package snapshots (labels.go);
//   - a managed containerd, supervised as a child process (daemon.go);
//   - the fast path: our task server (subpackage taskserver), supervised as
//     a child process, and the sandbox record through which containerd
//     attaches our containers' tasks to it (fastpath_linux.go); each
//     function's spec and layer chain, taken once from its first container
//     (template.go).
//
// Images and the containers' writable snapshots belong to package snapshots,
// which spawner calls. Spawning containers needs Linux: the package compiles
// everywhere Caddy does, but elsewhere New and StartDaemon return
// ErrNeedsLinux. It does not import Caddy.
package spawner
