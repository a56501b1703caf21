package taskserver

import (
	"strings"

	"github.com/containerd/containerd/v2/core/mount"
)

// IsLayerView reports whether mounts are a read-only view of image layers
// that the task server puts a writable layer over (see boundedLayer): one
// read-only bind mount of a layer, or one overlay without an upper
// directory — what containerd's overlay snapshotter gives for a View. The
// spawner asks before sharing a view among containers, so the two agree.
func IsLayerView(mounts []mount.Mount) bool {
	if len(mounts) != 1 {
		return false
	}
	o, ok := overlayParts(mounts[0])
	return ok && !o.upper
}

// overlay is a rootfs mount taken apart: its lower directories (the
// lowerdir option), the directory whose root the upper one replaces, and
// its other options.
type overlay struct {
	lower, root string
	upper       bool // it has an upper directory (root): an active snapshot
	rest        []string
}

// overlayParts takes apart an overlay with an upper directory (an active
// snapshot), an overlay without one or a read-only bind mount of one layer
// (views). Anything else is not ok.
func overlayParts(m mount.Mount) (overlay, bool) {
	var o overlay
	switch m.Type {
	case "overlay":
		for _, opt := range m.Options {
			switch {
			case strings.HasPrefix(opt, "upperdir="):
				o.root, o.upper = strings.TrimPrefix(opt, "upperdir="), true
			case strings.HasPrefix(opt, "workdir="):
			case strings.HasPrefix(opt, "lowerdir="):
				o.lower = strings.TrimPrefix(opt, "lowerdir=")
			default:
				o.rest = append(o.rest, opt)
			}
		}
		if o.lower == "" {
			return o, false
		}
		if o.root == "" {
			o.root, _, _ = strings.Cut(o.lower, ":")
		}
		return o, true
	case "bind":
		ro := false
		for _, opt := range m.Options {
			switch opt {
			case "ro":
				ro = true
			case "rbind", "bind":
			default:
				return o, false
			}
		}
		if !ro || m.Source == "" || strings.Contains(m.Source, ":") {
			return o, false
		}
		return overlay{lower: m.Source, root: m.Source}, true
	}
	return o, false
}
