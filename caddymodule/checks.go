package caddymodule

import (
	"errors"
	"fmt"
	"math"
	"net"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/distribution/reference"

	"github.com/containerd/containerd/v2/pkg/identifiers"

	"github.com/caddyserver/caddy/v2"

	"github.com/caddy-spawn/caddy-spawn/snapshots"
	"github.com/caddy-spawn/caddy-spawn/spawner"
)

// One checker per config field: each owns the field's range and the
// message, which names the field. Validate calls them on the JSON config;
// the Caddyfile parser, which only converts tokens to values, hands each
// value it read to the same checker so that the error points at its line
// (an explicit "cpus 0" can't reach Validate: in JSON, zero means the
// default). A checker judges a value that is set: Validate skips the zero
// of fields whose zero means "the default" (see ifSet). cpus and nofile are
// spawner's rules: spawner.CheckCPUs and spawner.CheckNofile.

// minMemory and maxMemory bound Handler.Memory.
const (
	minMemory = 4 << 20
	maxMemory = 1 << 50
)

// maxPool bounds Handler.Pool.
const maxPool = 256

func checkImage(ref string) error {
	if ref == "" {
		return errors.New("image: required")
	}
	if _, err := reference.ParseDockerRef(ref); err != nil {
		return fmt.Errorf("image: %q is not a valid image reference: %w", ref, err)
	}
	return nil
}

func checkName(name string) error {
	if !spawner.ValidName(name) {
		return fmt.Errorf("name: %q must be 1-40 lowercase letters and digits, separated by single '-' (set name explicitly)", name)
	}
	return nil
}

func checkPullPolicy(p string) error {
	if !snapshots.ValidPullPolicy(snapshots.PullPolicy(p)) {
		return fmt.Errorf("pull_policy: %q must be %q, %q or %q", p, snapshots.PullMissing, snapshots.PullAlways, snapshots.PullNever)
	}
	return nil
}

func checkRegistryAuth(a *RegistryAuth) error {
	if a != nil && a.Username == "" {
		return errors.New("registry_auth: username required")
	}
	return nil
}

// checkSource checks where the image comes from: pull_policy,
// image_archive and registry_auth, and that they don't contradict.
func (h *Handler) checkSource() error {
	if err := checkPullPolicy(h.PullPolicy); err != nil {
		return err
	}
	if h.ImageArchive != "" && h.PullPolicy == string(snapshots.PullAlways) {
		return errors.New("pull_policy: always contradicts image_archive: with an archive nothing is pulled")
	}
	if err := checkRegistryAuth(h.RegistryAuth); err != nil {
		return err
	}
	if h.RegistryAuth != nil {
		switch {
		case h.ImageArchive != "":
			return errors.New("registry_auth: has no use with image_archive: with an archive nothing is pulled")
		case h.PullPolicy == string(snapshots.PullNever):
			return errors.New("registry_auth: has no use with pull_policy never")
		}
	}
	return nil
}

func checkOutput(o string) error {
	if o != outputCGI && o != outputRaw {
		return fmt.Errorf("output: %q must be %q or %q", o, outputCGI, outputRaw)
	}
	return nil
}

func checkTimeout(d caddy.Duration) error { return positiveDuration("timeout", d) }

func checkQueueTimeout(d caddy.Duration) error { return positiveDuration("queue_timeout", d) }

func positiveDuration(field string, d caddy.Duration) error {
	if d <= 0 {
		return fmt.Errorf("%s: must be positive, got %s", field, time.Duration(d))
	}
	return nil
}

func checkMemory(n int64) error {
	if n < minMemory || n > maxMemory {
		return fmt.Errorf("memory: must be at least 4 MiB and at most 1 PiB, got %d bytes", n)
	}
	return nil
}

func checkDisk(n int64) error {
	if n < 1<<20 || n > maxMemory {
		return fmt.Errorf("disk: must be at least 1 MiB and at most 1 PiB, got %d bytes", n)
	}
	return nil
}

func checkPids(n int64) error {
	if n <= 0 {
		return fmt.Errorf("pids: %d must be a positive integer", n)
	}
	return nil
}

func checkMaxRequestBody(n int64) error {
	if n < 0 {
		return errors.New("max_request_body: must not be negative (0 is unlimited)")
	}
	return nil
}

func checkMaxResponseBytes(n int64) error {
	if n < 0 {
		return errors.New("max_response_bytes: must not be negative (0 is unlimited)")
	}
	return nil
}

func checkNetwork(n string) error {
	if n != networkNone && n != networkHost {
		return fmt.Errorf("network: %q must be %q or %q", n, networkNone, networkHost)
	}
	return nil
}

// checkHostNetwork refuses network host while the admin endpoint is
// reachable from the host's network namespace (adminEndpoint.reachable),
// unless the spawn app's host_network_with_tcp_admin allows it: any
// function on the route could rewrite Caddy's config through the endpoint.
// It needs the app, which Provision gets before Validate runs.
func (h *Handler) checkHostNetwork() error {
	if h.Network != networkHost || h.app == nil || h.app.HostNetworkWithTCPAdmin || !h.app.admin.reachable() {
		return nil
	}
	return fmt.Errorf("network: %q is refused while the admin endpoint listens on %s: a function could rewrite Caddy's config through it; "+
		"set admin off or a unix socket (admin unix//run/caddy-admin.sock), or set the spawn option host_network_with_tcp_admin",
		h.Network, h.app.admin)
}

func checkUser(u string) error {
	if _, err := parseUser(u); err != nil {
		return fmt.Errorf("user: %w", err)
	}
	return nil
}

// checkUserns checks the user namespace settings and what they can't be
// combined with.
func (h *Handler) checkUserns() error {
	if !h.Userns {
		if h.UsernsHostID != 0 {
			return errors.New("userns_host_id: has no use without userns")
		}
		return nil
	}
	if h.Network == networkHost {
		return errors.New("userns: can't be combined with network host (the host's network namespace is not the container's user namespace's to configure)")
	}
	if u, err := parseUser(h.User); h.User != "" && err == nil && (u.UID >= spawner.UsernsSize || u.GID >= spawner.UsernsSize) {
		return fmt.Errorf("user: %s is not mapped in the user namespace of userns (IDs 0 to %d)", h.User, spawner.UsernsSize-1)
	}
	return ifSet(h.UsernsHostID, checkUsernsHostID)
}

func checkUsernsHostID(id int64) error {
	if err := spawner.CheckUsernsHostID(id); err != nil {
		return fmt.Errorf("userns_host_id: %w", err)
	}
	return nil
}

func checkPool(n int) error {
	if n < 0 || n > maxPool {
		return fmt.Errorf("pool: %d must be between 0 and %d", n, maxPool)
	}
	return nil
}

// checkAdaptivePool checks pool_min, pool_max and pool_idle_timeout
// together: an adaptive pool replaces pool.
func (h *Handler) checkAdaptivePool() error {
	switch {
	case h.PoolMax == nil && h.PoolMin != nil:
		return fmt.Errorf("pool_min: needs pool_max (an adaptive pool)")
	case h.PoolMax == nil && h.PoolIdleTimeout != 0:
		return fmt.Errorf("pool_idle_timeout: only for an adaptive pool (set pool_max)")
	case h.PoolMax == nil:
		return nil
	case h.Pool != nil:
		return fmt.Errorf("pool: a fixed pool cannot be combined with pool_min/pool_max (use pool_min %d pool_max %d for the same)", *h.Pool, *h.Pool)
	case *h.PoolMax < 1 || *h.PoolMax > maxPool:
		return fmt.Errorf("pool_max: %d must be between 1 and %d", *h.PoolMax, maxPool)
	}
	if h.PoolMin != nil && (*h.PoolMin < 0 || *h.PoolMin > *h.PoolMax) {
		return fmt.Errorf("pool_min: %d must be between 0 and pool_max (%d)", *h.PoolMin, *h.PoolMax)
	}
	return ifSet(h.PoolIdleTimeout, checkPoolIdleTimeout)
}

func checkPoolIdleTimeout(d caddy.Duration) error { return positiveDuration("pool_idle_timeout", d) }

// checkPoolBound checks pool_min or pool_max alone; checkAdaptivePool
// checks them together.
func checkPoolBound(field string, n int) error {
	if n < 0 || n > maxPool {
		return fmt.Errorf("%s: %d must be between 0 and %d", field, n, maxPool)
	}
	return nil
}

func checkWarmMemory(n int64) error {
	if n < 0 {
		return fmt.Errorf("warm_memory: %d must not be negative", n)
	}
	return nil
}

func checkMaxConcurrent(n int) error {
	if n <= 0 {
		return fmt.Errorf("max_concurrent: %d must be a positive integer", n)
	}
	return nil
}

func checkEnvName(k string) error {
	if k == "" || strings.ContainsAny(k, "=\x00") {
		return fmt.Errorf("env: invalid variable name %q", k)
	}
	return nil
}

func checkEnv(env map[string]string) error {
	keys := make([]string, 0, len(env))
	for k := range env {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if err := checkEnvName(k); err != nil {
			return err
		}
	}
	return nil
}

func checkScriptName(s string) error {
	if s != "" && !strings.HasPrefix(s, "/") {
		return fmt.Errorf("script_name: %q must start with '/'", s)
	}
	return nil
}

func checkNamespace(ns string) error {
	switch ns {
	case "default", "k8s.io", "moby":
		return fmt.Errorf("namespace: %q belongs to other tools; use a namespace of caddy-spawn's own", ns)
	}
	if err := identifiers.Validate(ns); err != nil {
		return fmt.Errorf("namespace: %w", err)
	}
	return nil
}

func checkBackendChoice(address string, managed *ManagedContainerd) error {
	if address != "" && managed != nil {
		return errors.New("address and managed are mutually exclusive: with an address, caddy-spawn uses that containerd as is")
	}
	return nil
}

func checkFastPath(mode string) error {
	switch mode {
	case "", fastPathAuto, fastPathOn, fastPathOff:
		return nil
	}
	return fmt.Errorf("fast_path: %q must be auto, on or off", mode)
}

func checkMaxContainers(n int) error {
	if n <= 0 {
		return fmt.Errorf("max_containers: %d must be a positive integer", n)
	}
	return nil
}

func checkRefillConcurrency(n int) error {
	if n <= 0 {
		return fmt.Errorf("refill_concurrency: %d must be a positive integer", n)
	}
	return nil
}

func checkImageWait(d caddy.Duration) error {
	if d < 0 {
		return fmt.Errorf("image_wait: must not be negative, got %s", time.Duration(d))
	}
	return nil
}

func checkInsecureRegistries(hosts []string) error {
	for _, h := range hosts {
		if err := validRegistryHost(h); err != nil {
			return fmt.Errorf("insecure_registries: %w", err)
		}
	}
	return nil
}

// validRegistryHost checks that h is a registry "host" or "host:port",
// without a scheme or path.
func validRegistryHost(h string) error {
	if h == "" || strings.ContainsAny(h, "/ \t") || strings.Contains(h, "://") {
		return fmt.Errorf("%q must be a registry host or host:port, without scheme or path", h)
	}
	if _, port, err := net.SplitHostPort(h); err == nil {
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return fmt.Errorf("%q: bad port", h)
		}
	}
	return nil
}

// ifSet runs check on v unless v is the zero value, which means "the
// default" and needs no check.
func ifSet[T comparable](v T, check func(T) error) error {
	var zero T
	if v == zero {
		return nil
	}
	return check(v)
}

// firstError returns the first non-nil error: the order of a Validate's
// checks is the order its errors are reported in.
func firstError(errs ...error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// parseUser parses "<uid>" or "<uid>:<gid>", numeric; the gid defaults to
// the uid.
func parseUser(s string) (*spawner.User, error) {
	uidStr, gidStr, hasGID := strings.Cut(s, ":")
	uid, err := parseID(uidStr)
	if err != nil {
		return nil, fmt.Errorf("%q: uid %w", s, err)
	}
	gid := uid
	if hasGID {
		if gid, err = parseID(gidStr); err != nil {
			return nil, fmt.Errorf("%q: gid %w", s, err)
		}
	}
	return &spawner.User{UID: uid, GID: gid}, nil
}

// parseID parses a numeric user or group ID. 4294967295 is (uid_t)-1,
// which the kernel treats as "no change".
func parseID(s string) (uint32, error) {
	n, err := strconv.ParseUint(s, 10, 32)
	if err != nil || n == math.MaxUint32 {
		return 0, fmt.Errorf("%q must be a number from 0 to %d (names are not looked up)", s, uint32(math.MaxUint32-1))
	}
	return uint32(n), nil
}

// checkWarmHome: spawn_warm's home, 1 to 64 nodes.
func checkWarmHome(n int) error {
	if n < 1 || n > 64 {
		return fmt.Errorf("spawn_warm: home %d: want 1 to 64 nodes", n)
	}
	return nil
}

// checkWarmStatusPort: spawn_warm's status_port, a TCP port.
func checkWarmStatusPort(p int) error {
	if p < 1 || p > 65535 {
		return fmt.Errorf("spawn_warm: status_port %d: want 1 to 65535", p)
	}
	return nil
}

// checkWarmDurations: spawn_warm's poll_interval (at least 10ms) and
// report_ttl (longer than poll_interval, or every report would expire
// before the next).
func checkWarmDurations(poll, ttl caddy.Duration) error {
	if time.Duration(poll) < 10*time.Millisecond {
		return fmt.Errorf("spawn_warm: poll_interval %s: want at least 10ms", time.Duration(poll))
	}
	if ttl <= poll {
		return fmt.Errorf("spawn_warm: report_ttl %s: want longer than poll_interval %s", time.Duration(ttl), time.Duration(poll))
	}
	return nil
}
