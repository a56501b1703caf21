package spawner

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"github.com/containerd/containerd/v2/client"
)

// ErrContainerdTooOld: the containerd we are connected to is older than
// MinContainerdVersion. It is a fact of the host, not an outage: retrying
// does not help.
var ErrContainerdTooOld = errors.New("containerd too old")

// ContainerdVersion is a containerd release as its Version API reports it
// ("1.7.35", "v2.4.2", "2.1.0-rc.1", "1.6.20~ds1" from Debian): the numbers
// that order releases, and the text as reported.
type ContainerdVersion struct {
	Major, Minor, Patch int
	// Raw is the version as containerd reported it.
	Raw string
}

// MinContainerdVersion is the oldest containerd caddy-spawn works with:
// the oldest release line upstream still supports and that `make
// integration-address` tests. containerd 1.6 is refused: upstream support
// ended in August 2025 (no security fixes since), and it is not tested.
var MinContainerdVersion = ContainerdVersion{Major: 1, Minor: 7, Raw: "1.7.0"}

// FastPathMinContainerdVersion is the oldest containerd that can run the
// fast path: 2.0 is the first to take a task API endpoint per task, which
// attaches our containers to the task server with no task of its own in
// the sandbox (1.7 attaches a sandbox's containers only to the shim of a
// running sandbox task).
var FastPathMinContainerdVersion = ContainerdVersion{Major: 2, Raw: "2.0.0"}

// ParseContainerdVersion reads the leading "[v]MAJOR.MINOR[.PATCH]" of s;
// whatever follows (a pre-release, "+unknown", a distribution's suffix) is
// kept in Raw only.
func ParseContainerdVersion(s string) (ContainerdVersion, error) {
	v := ContainerdVersion{Raw: s}
	m := versionPrefix.FindStringSubmatch(strings.TrimSpace(s))
	if m == nil {
		return v, fmt.Errorf("containerd version %q is not MAJOR.MINOR.PATCH", s)
	}
	for i, p := range []*int{&v.Major, &v.Minor, &v.Patch} {
		if m[i+1] == "" {
			continue // "2.0" has no patch number
		}
		n, err := strconv.Atoi(m[i+1])
		if err != nil {
			return v, fmt.Errorf("containerd version %q: %w", s, err)
		}
		*p = n
	}
	return v, nil
}

// versionPrefix matches the numbers that start a containerd version.
var versionPrefix = regexp.MustCompile(`^v?(\d+)\.(\d+)(?:\.(\d+))?`)

// Less reports whether v is an older release than w. Pre-releases count as
// their release ("2.0.0-rc.1" is not older than "2.0.0").
func (v ContainerdVersion) Less(w ContainerdVersion) bool {
	if v.Major != w.Major {
		return v.Major < w.Major
	}
	if v.Minor != w.Minor {
		return v.Minor < w.Minor
	}
	return v.Patch < w.Patch
}

// String is the version as containerd reported it.
func (v ContainerdVersion) String() string { return v.Raw }

// Supported returns nil when caddy-spawn works with v, and otherwise an
// error (errors.Is ErrContainerdTooOld) naming v and the minimum.
func (v ContainerdVersion) Supported() error {
	if v.Less(MinContainerdVersion) {
		return fmt.Errorf("%w: found containerd %s, caddy-spawn needs %s or later", ErrContainerdTooOld, v, MinContainerdVersion)
	}
	return nil
}

// FastPathSupported returns nil when v can run the fast path, and
// otherwise an error (errors.Is ErrFastPathUnavailable) saying why.
func (v ContainerdVersion) FastPathSupported() error {
	if v.Less(FastPathMinContainerdVersion) {
		return fmt.Errorf("%w: containerd %s cannot attach tasks to our task server (a task API endpoint per task needs containerd %s or later)",
			ErrFastPathUnavailable, v, FastPathMinContainerdVersion)
	}
	return nil
}

// QueryContainerdVersion asks containerd for its version. An error is
// errors.Is ErrUnavailable: containerd did not answer.
func QueryContainerdVersion(ctx context.Context, c *client.Client) (ContainerdVersion, error) {
	got, err := c.Version(ctx)
	if err != nil {
		return ContainerdVersion{}, fmt.Errorf("%w: asking containerd for its version: %w", ErrUnavailable, err)
	}
	return ParseContainerdVersion(got.Version)
}
