package snapshots

import "fmt"

// Label keys put on everything caddy-spawn creates in containerd: the
// namespace, image records, leases, writable snapshots and containers. The
// reaper, Prune and the janitor select by them, so anything created without
// them would leak.
//
// This is their one definition. It lives here, at the bottom of
// caddymodule → spawner → snapshots, because both snapshots and spawner
// label what they create and snapshots cannot import spawner; spawner
// re-exports the keys (spawner/labels.go) for its callers.
const (
	// LabelManaged is "true" on everything caddy-spawn created, and on the
	// namespace it uses.
	LabelManaged = "dev.caddy-spawn/managed"
	// LabelPin is "true" on the image records that pin a digest
	// ("<name>@<digest>"), as opposed to the records of references and
	// imported archives.
	LabelPin = "dev.caddy-spawn/pin"
	// LabelOwner is the ID of the process that created the object (see
	// spawner.NewOwnerID). Objects of other owners are leftovers of a
	// previous run.
	LabelOwner = "dev.caddy-spawn/owner"
	// LabelRoute is the route (function) name a container serves.
	LabelRoute = "dev.caddy-spawn/route"
	// LabelImage is the pinned manifest digest a container was made from.
	LabelImage = "dev.caddy-spawn/image"
	// LabelPool is the key of the pool a container belongs to.
	LabelPool = "dev.caddy-spawn/pool"
	// LabelCreated is the creation time, RFC 3339 in UTC.
	LabelCreated = "dev.caddy-spawn/created"
	// LabelLayers is "true" on the read-only views of images' layers that
	// fast-path containers share (spawner/layers.go).
	LabelLayers = "dev.caddy-spawn/layers"
)

// LabelFilter is the containerd filter that selects objects whose label key
// equals value, e.g. labels."dev.caddy-spawn/managed"==true.
func LabelFilter(key, value string) string {
	return fmt.Sprintf("labels.%q==%s", key, value)
}

// Leftover reports whether an object with labels is ours (LabelManaged) and
// belongs to another owner than keepOwner; with keepOwner "" every object of
// ours is.
func Leftover(labels map[string]string, keepOwner string) bool {
	return labels[LabelManaged] == "true" && (keepOwner == "" || labels[LabelOwner] != keepOwner)
}
