package snapshots

import (
	"time"

	"github.com/containerd/containerd/v2/core/leases"
)

// leaseExpiry bounds how long a lease of a crashed process can pin content.
const leaseExpiry = 30 * time.Minute

func withLeaseLabels() leases.Opt {
	return leases.WithLabels(map[string]string{LabelManaged: "true"})
}

func withLeaseExpiry() leases.Opt {
	return leases.WithExpiration(leaseExpiry)
}
