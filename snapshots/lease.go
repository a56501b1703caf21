package snapshots

import (
	"time"

	"github.com/containerd/containerd/v2/core/leases"
)

// LabelManaged marks images and leases created by caddy-spawn's image
// handling. It mirrors spawner.LabelManaged (spawner imports snapshots, not
// the other way round).
const LabelManaged = "dev.caddy-spawn/managed"

// LabelPin marks the image records that pin a digest ("<name>@<digest>"),
// as opposed to the records of references and imported archives.
const LabelPin = "dev.caddy-spawn/pin"

// leaseExpiry bounds how long a lease of a crashed process can pin content.
const leaseExpiry = 30 * time.Minute

func withLeaseLabels() leases.Opt {
	return leases.WithLabels(map[string]string{LabelManaged: "true"})
}

func withLeaseExpiry() leases.Opt {
	return leases.WithExpiration(leaseExpiry)
}
