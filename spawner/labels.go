package spawner

import (
	"crypto/rand"
	"encoding/hex"
	"time"

	"github.com/caddy-spawn/caddy-spawn/snapshots"
)

// Label keys put on everything caddy-spawn creates in containerd. They are
// defined once, in snapshots/labels.go (snapshots labels what it creates
// too, and cannot import spawner); these are the same constants.
const (
	// LabelManaged is "true" on every container, snapshot, lease and image
	// caddy-spawn created.
	LabelManaged = snapshots.LabelManaged
	// LabelOwner is the ID of the process (see NewOwnerID) that created the
	// object. Objects of other owners are leftovers of a previous run.
	LabelOwner = snapshots.LabelOwner
	// LabelRoute is the route (function) name the container serves.
	LabelRoute = snapshots.LabelRoute
	// LabelImage is the pinned manifest digest the container was made from.
	LabelImage = snapshots.LabelImage
	// LabelPool is the key of the pool the container belongs to.
	LabelPool = snapshots.LabelPool
	// LabelCreated is the creation time, RFC 3339 in UTC.
	LabelCreated = snapshots.LabelCreated
	// LabelLayers marks the shared read-only views of images' layers.
	LabelLayers = snapshots.LabelLayers
)

// NewOwnerID returns a random owner ID. A process should make one and use it
// for its whole life, across config reloads.
func NewOwnerID() string {
	return randHex(8)
}

func randHex(n int) string {
	b := make([]byte, n/2)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func (f *Function) labels(owner string) map[string]string {
	return map[string]string{
		LabelManaged: "true",
		LabelOwner:   owner,
		LabelRoute:   f.Name,
		LabelImage:   f.Image.Digest,
		LabelPool:    f.Key,
		LabelCreated: time.Now().UTC().Format(time.RFC3339),
	}
}
