// Package snapshots owns what containers are made from, in containerd's
// image store and snapshotter:
//
//   - images made ready as unpacked snapshots: imported from an archive,
//     found in the namespace or pulled from a registry (with credentials,
//     mirrors and retries; pull.go), unpacked into the snapshotter ahead of
//     any request (unpack.go), pinned to the digest resolved at start-up so a
//     moving tag never changes what a running route serves (image.go), and
//     pruned once no route uses them (prune.go);
//   - the per-container writable snapshots: each container's own
//     "<containerID>-rootfs" on top of its image's chain, prepared as the
//     container is created, removed when its container never came to be, and
//     swept when a previous run left them behind (writable.go);
//   - the labels on everything caddy-spawn creates in containerd, defined
//     once here for both packages (labels.go), and the leases that keep
//     half-made content from the garbage collector meanwhile (lease.go).
//
// It knows nothing of containers' specs, tasks or pools (package spawner)
// and does not import Caddy.
package snapshots
