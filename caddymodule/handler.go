package caddymodule

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sync/semaphore"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/caddy-spawn/caddy-spawn/snapshots"
	"github.com/caddy-spawn/caddy-spawn/spawner"
)

func init() {
	caddy.RegisterModule(Handler{})
}

// Output modes.
const (
	outputCGI = "cgi"
	outputRaw = "raw"
)

// Network modes.
const (
	networkNone = "none"
	networkHost = "host"
)

// Trailers sent after a streamed response; declared up front because the
// status line is long gone when the program exits.
const (
	// trailerExitCode carries the program's exit code.
	trailerExitCode = "Spawn-Exit-Code"
	// trailerError is "oom-killed" when the memory limit killed the
	// program after the status was sent; absent otherwise.
	trailerError = "Spawn-Error"
	// trailerCPUMs and trailerMemoryPeak report a request's usage, with
	// report_usage: CPU milliseconds (user and system) and peak memory
	// bytes of the container from the request's start.
	trailerCPUMs      = "Spawn-Cpu-Ms"
	trailerMemoryPeak = "Spawn-Memory-Peak-Bytes"
)

// Defaults of the handler's settings, applied by setDefaults. The
// container limits' defaults (memory, pids, cpus, nofile) are spawner's.
const (
	defaultPool = 2
	// defaultPoolIdleTimeout: an adaptive pool stays warm this long after
	// its last request (Cloud Run and Lambda keep idle instances minutes).
	defaultPoolIdleTimeout = 5 * time.Minute
	defaultQueueTimeout    = 5 * time.Second
	defaultTimeout         = 60 * time.Second
	// defaultMaxRequestBody bounds request bodies unless a route says
	// otherwise: 100 MiB.
	defaultMaxRequestBody = 100 << 20
)

// Handler serves every request from a fresh, single-use container of an OCI
// image, CGI-style: the request's meta-variables become the program's
// environment, the body streams to its stdin, and its stdout streams back
// as the response. The container is removed after the response.
type Handler struct {
	// Image is the OCI image reference to run, e.g.
	// "localhost/thumbnailer:1.4". Required. The image is made ready (imported,
	// found in the namespace or pulled, see PullPolicy; then unpacked) when
	// the spawn app starts, and pinned to the digest it had then until the
	// next config load.
	Image string `json:"image"`

	// ImageArchive is a docker-archive or OCI-archive tarball holding Image,
	// imported into containerd when the app starts. Optional. With an
	// archive nothing is pulled.
	ImageArchive string `json:"image_archive,omitempty"`

	// PullPolicy says when Image is pulled from its registry: "missing"
	// (when it is not in the namespace yet), "always" (at every start and
	// config load, never per request: a moved tag is picked up at the next
	// reload, which also gives the route a fresh pool) or "never" (the image
	// must be in the namespace or come from ImageArchive). Registries on
	// loopback and those in the app's insecure_registries are reached over
	// plain HTTP, all others over HTTPS. Default: "missing".
	PullPolicy string `json:"pull_policy,omitempty"`

	// RegistryAuth are the credentials for Image's registry (HTTP basic
	// auth, or the registry's token service). They take precedence over the
	// app's registry_config for that registry. Both fields may use global
	// placeholders such as {env.REG_PASS}, resolved at load time; the
	// password is never logged. Optional.
	RegistryAuth *RegistryAuth `json:"registry_auth,omitempty"`

	// Name names the route in container IDs, labels, logs and metrics:
	// lowercase letters, digits and '-', at most 40 characters. Default: the
	// last path element of Image without its tag, e.g. "thumbnailer".
	Name string `json:"name,omitempty"`

	// Command replaces the image's ENTRYPOINT and CMD: the program and its
	// arguments. Default: the image's.
	Command []string `json:"command,omitempty"`

	// Args replaces the image's CMD (the arguments to its ENTRYPOINT).
	// Default: the image's.
	Args []string `json:"args,omitempty"`

	// Env sets environment variables, added to the image's and the CGI
	// variables (these win on conflicts). Values may use global
	// placeholders such as {env.TOKEN}, resolved at load time.
	Env map[string]string `json:"env,omitempty"`

	// WorkDir is the program's working directory. Default: the image's.
	WorkDir string `json:"workdir,omitempty"`

	// Timeout bounds a whole request, from container start to the last
	// byte; the container is killed when it expires, and the client gets 504
	// if no header was sent yet. Default: 60s.
	Timeout caddy.Duration `json:"timeout,omitempty"`

	// Output is "cgi" (stdout starts with a CGI header block: Status,
	// Content-Type, Location, other headers, then an empty line) or "raw"
	// (stdout is the body, status 200). Default: "cgi".
	Output string `json:"output,omitempty"`

	// ScriptName is the URL path prefix the function is mounted at, given to
	// the program as SCRIPT_NAME and removed from PATH_INFO. Default: "".
	ScriptName string `json:"script_name,omitempty"`

	// Memory is the container's memory limit in bytes, at least 4 MiB; swap
	// is limited to the same amount, so the container can't swap past it.
	// A program that allocates beyond it is killed by the kernel's OOM
	// killer (before its header: 502). Default: 256 MiB.
	Memory int64 `json:"memory,omitempty"`

	// Disk bounds the container's writable layer, in bytes (inodes too: one
	// per 16 KiB). A program that fills it gets ENOSPC; the host's disk is
	// never touched. On the fast path the layer is a size-capped tmpfs under
	// the overlay, so its pages count against Memory as well; on the stock
	// path (runc shim) it is not bounded. At least 1 MiB. Default: 64 MiB.
	Disk int64 `json:"disk,omitempty"`

	// Pids is the container's limit on processes and threads, the init
	// included; a fork bomb stops there. Default: 128.
	Pids int64 `json:"pids,omitempty"`

	// CPUs is the container's CPU quota, in CPUs: a CFS quota of CPUs ×
	// 100 ms per 100 ms period, so 0.5 is half of one CPU and 2 is two CPUs'
	// worth of time. Between 0.01 and 1024; to lift the limit, set it to the
	// host's CPU count. Default: 1.
	CPUs float64 `json:"cpus,omitempty"`

	// Nofile is the program's open-file limit (RLIMIT_NOFILE, soft and
	// hard), between 1 and 1048576. Default: 1024.
	Nofile int64 `json:"nofile,omitempty"`

	// MaxRequestBody is the largest request body, in bytes, the program is
	// given; 0 means unlimited. A request whose Content-Length is larger
	// gets 413 before any container starts. A body of unknown length
	// (chunked) is counted as it streams to the program: at the limit the
	// container is killed and the client gets 413 if no header was sent
	// yet, else the response is aborted. Default: 100 MiB (104857600).
	MaxRequestBody *int64 `json:"max_request_body,omitempty"`

	// MaxResponseBytes is the largest response body, in bytes, the program
	// may write (after its CGI header); 0 means unlimited. A program that
	// declares a larger Content-Length gets 502; one that writes past the
	// limit is killed and its response aborted after exactly
	// MaxResponseBytes bytes of body, without the Spawn-Exit-Code trailer
	// (HTTP/1.1: the connection is closed before the last chunk; HTTP/2 and
	// 3: the stream is reset), so the client can tell it is incomplete.
	// Default: 0.
	MaxResponseBytes int64 `json:"max_response_bytes,omitempty"`

	// Network is the container's network: "none", a network namespace of
	// its own with only a loopback device (no way out, and the host's
	// loopback services out of reach), or "host", the host's network
	// namespace, with the host's /etc/hosts and /etc/resolv.conf mounted
	// read-only. With "host" the program can reach everything the host
	// can: use it only for trusted images. "host" is refused while Caddy's
	// admin endpoint listens on TCP (the default, localhost:2019), through
	// which the program could rewrite Caddy's config: set the admin
	// endpoint to a unix socket or off, or accept that with the spawn app's
	// host_network_with_tcp_admin. Default: "none".
	Network string `json:"network,omitempty"`

	// ReadOnly makes the container's root filesystem read-only, with a
	// 64 MiB tmpfs (nosuid, nodev, noexec; its pages count against Memory)
	// at /tmp. Default: false.
	ReadOnly bool `json:"read_only,omitempty"`

	// PassAuthorization passes the request's Authorization and
	// Proxy-Authorization headers to the program (HTTP_AUTHORIZATION,
	// HTTP_PROXY_AUTHORIZATION). Without it they are withheld, as Apache
	// does unless CGIPassAuth is on: a program has no business seeing the
	// credentials Caddy may be checking. Programs that do their own
	// authentication need it, e.g. git-http-backend behind basic auth.
	// Default: false.
	PassAuthorization bool `json:"pass_authorization,omitempty"`

	// ReportUsage adds what the request's container used to the response
	// as trailers: Spawn-Cpu-Ms (CPU time, user and system, in
	// milliseconds) and Spawn-Memory-Peak-Bytes, from the container's
	// cgroup, counted from the request's start. The same figures are
	// always in the access log (spawn_cpu_ms, spawn_memory_peak_bytes,
	// spawn_run_ms), the placeholders {http.spawn.cpu_ms},
	// {http.spawn.memory_peak_bytes} and {http.spawn.run_ms}, and the
	// metrics caddy_spawn_cpu_seconds and caddy_spawn_memory_peak_bytes.
	// Default: false.
	ReportUsage bool `json:"report_usage,omitempty"`

	// Userns runs the container in a user namespace of its own: its users
	// and groups 0 to 65535 are host IDs UsernsHostID to
	// UsernsHostID+65535, so root in the container is an unprivileged user
	// on the host (it owns nothing of the host's, and a process that broke
	// out of the container's other isolation would be that user). The
	// image's files are seen through id-mapped mounts, not copied: this
	// needs the overlay snapshotter on Linux 5.19 or later. It can't be
	// combined with network host. All routes with userns share one range
	// unless they set UsernsHostID. Default: false.
	Userns bool `json:"userns,omitempty"`

	// UsernsHostID is the first host ID of the Userns range, from 65536 to
	// 4294901759. Default: 1879048192 (0x70000000), far above host users
	// and the subordinate ranges useradd hands out from 100000.
	UsernsHostID int64 `json:"userns_host_id,omitempty"`

	// User runs the program as a numeric user, "<uid>" or "<uid>:<gid>";
	// the group defaults to the uid (not to root's group 0). No names: the
	// image's /etc/passwd is not consulted. Default: the image's USER,
	// root when it sets none.
	User string `json:"user,omitempty"`

	// Pool is how many single-use containers to keep created, started and
	// frozen ahead of requests. A request thaws one (~1 ms) instead of
	// creating one (~100 ms); it is never reused, and the pool refills in the
	// background. 0 disables the pool. Default: 2, unless pool_max is set.
	Pool *int `json:"pool,omitempty"`

	// PoolMin and PoolMax make the pool adaptive instead of fixed (not with
	// pool): it keeps between PoolMin and PoolMax containers ready, enough
	// to cover the requests that arrive while one container is created
	// (measured), with headroom; it grows at once when a request finds it
	// empty and shrinks by one a second once demand falls. PoolMin
	// defaults to 0: the route then scales to zero once idle.
	PoolMin *int `json:"pool_min,omitempty"`
	PoolMax *int `json:"pool_max,omitempty"`

	// PoolIdleTimeout is how long after its last request an adaptive
	// pool keeps at least one container ready; then it shrinks to
	// PoolMin. Only with pool_max. Default: 5m.
	PoolIdleTimeout caddy.Duration `json:"pool_idle_timeout,omitempty"`

	// MaxConcurrent bounds the requests this route runs at once; more wait
	// up to QueueTimeout, then get 503 with Retry-After. Default: 0
	// (unbounded).
	MaxConcurrent int `json:"max_concurrent,omitempty"`

	// QueueTimeout is how long a request waits for a MaxConcurrent slot.
	// Default: 5s.
	QueueTimeout caddy.Duration `json:"queue_timeout,omitempty"`

	// Async accepts requests as durable jobs, answered with 202 and run
	// later with retries (see AsyncConfig). Default: off.
	Async *AsyncConfig `json:"async,omitempty"`

	app        *App
	auth       *snapshots.Auth
	key        string
	route      *route
	containers containerSource     // the route's containers; a fake in tests
	limit      *semaphore.Weighted // MaxConcurrent; nil when unbounded
	waits      *waitEstimate
	logger     *zap.Logger
	env        []string
	user       *spawner.User
	software   string
	async      *asyncQueue // nil unless Async is on
}

// RegistryAuth is a username and password for a registry.
type RegistryAuth struct {
	// Username to log in with. Required. May be a placeholder.
	Username string `json:"username"`
	// Password (or token) to log in with. May be a placeholder such as
	// {env.REG_PASS}, which keeps it out of the config; it is never logged.
	Password string `json:"password,omitempty"`
}

// CaddyModule returns the Caddy module information.
func (Handler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.spawn",
		New: func() caddy.Module { return new(Handler) },
	}
}

// Provision applies defaults and registers the route with the spawn app.
// It does no I/O: images are made ready when the app starts.
func (h *Handler) Provision(ctx caddy.Context) error {
	h.logger = ctx.Logger()
	h.setDefaults()
	repl := caddy.NewReplacer()
	h.env = resolveEnv(repl, h.Env)
	simple, _ := caddy.Version()
	h.software = "Caddy/" + simple + " caddy-spawn"

	appIface, err := ctx.App("spawn")
	if err != nil {
		return fmt.Errorf("getting spawn app: %w", err)
	}
	h.app = appIface.(*App)
	if h.User != "" {
		if h.user, err = parseUser(h.User); err != nil {
			return fmt.Errorf("user: %w", err)
		}
	}
	if h.RegistryAuth != nil {
		if !strings.Contains(h.RegistryAuth.Password, "{") {
			// A literal ends up in Caddy's autosaved config and in
			// GET /config/ on the admin endpoint.
			h.logger.Warn("registry_auth password is a literal; use a placeholder such as {env.REGISTRY_PASSWORD} so it stays out of the saved config and the admin API",
				zap.String("image", h.Image))
		}
		h.auth = &snapshots.Auth{
			Username: repl.ReplaceKnown(h.RegistryAuth.Username, ""),
			Password: repl.ReplaceKnown(h.RegistryAuth.Password, ""),
		}
	}
	if err := h.loadRoute(); err != nil {
		return err
	}
	return h.provisionAsync(ctx)
}

// Validate checks the configuration, naming the field at fault. Each
// field's rule lives in its checker (checks.go).
func (h *Handler) Validate() error {
	var maxBody int64
	if h.MaxRequestBody != nil {
		maxBody = *h.MaxRequestBody
	}
	var pool int
	if h.Pool != nil {
		pool = *h.Pool
	}
	return firstError(
		checkImage(h.Image),
		h.checkSource(),
		checkName(h.Name),
		checkOutput(h.Output),
		ifSet(h.Timeout, checkTimeout),
		ifSet(h.Memory, checkMemory),
		ifSet(h.Disk, checkDisk),
		ifSet(h.Pids, checkPids),
		ifSet(h.CPUs, spawner.CheckCPUs),
		ifSet(h.Nofile, spawner.CheckNofile[int64]),
		checkMaxRequestBody(maxBody),
		checkMaxResponseBytes(h.MaxResponseBytes),
		ifSet(h.Network, checkNetwork),
		ifSet(h.User, checkUser),
		h.checkUserns(),
		h.checkHostNetwork(),
		checkPool(pool),
		h.checkAdaptivePool(),
		ifSet(h.MaxConcurrent, checkMaxConcurrent),
		ifSet(h.QueueTimeout, checkQueueTimeout),
		checkEnv(h.Env),
		checkScriptName(h.ScriptName),
		h.checkAsync(),
	)
}

// Cleanup releases the route; the last config using it drains its pool.
func (h *Handler) Cleanup() error {
	aerr := h.cleanupAsync()
	if h.key == "" {
		return aerr
	}
	_, err := routes.Delete(h.key)
	return errors.Join(aerr, err)
}

// ServeHTTP runs the request in a fresh container, step by step over one
// exchange (exchange.go). Until the header is sent, a failure is returned
// for Caddy to answer; after it, the exchange's one abort path ends the
// response.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request, _ caddyhttp.Handler) error {
	start := time.Now()
	defer func() {
		spawnMetrics.requestSeconds.WithLabelValues(h.Name).Observe(time.Since(start).Seconds())
	}()
	if err := h.refuseLargeBody(w, r); err != nil {
		return err
	}
	// Until the program begins, no byte of the body is read: a refusal
	// says so (refusal.go), and a fleet's front may try another node.
	if err := refuseDraining(w, r, h.Name); err != nil {
		return err
	}
	defer thisNode.enter()()
	if handled, err := h.serveAsync(w, r); handled {
		return err
	}
	leave, err := h.admit(w, r)
	if err != nil {
		return markRefusal(w, r, err)
	}
	defer leave()
	return h.run(w, r)
}

// run serves r from one fresh container: the steps of a request once it
// is admitted, shared by client requests and async jobs' attempts.
func (h *Handler) run(w http.ResponseWriter, r *http.Request) error {
	ctx, cancel := context.WithTimeout(r.Context(), time.Duration(h.Timeout))
	defer cancel()
	ex := newExchange(ctx, h, w, r)
	if err := ex.acquire(); err != nil {
		return markRefusal(w, r, err)
	}
	defer ex.end()
	if err := ex.begin(); err != nil {
		return err
	}
	if err := ex.readHead(); err != nil {
		return ex.failBeforeHeader(err)
	}
	ex.writeHeader()
	if cut := ex.streamBody(); cut != nil {
		ex.abort(cut)
	}
	ex.finalize()
	return nil
}

// setDefaults fills in every handler setting left unset: the one place
// defaults are applied.
func (h *Handler) setDefaults() {
	if h.Timeout == 0 {
		h.Timeout = caddy.Duration(defaultTimeout)
	}
	if h.Output == "" {
		h.Output = outputCGI
	}
	if h.Name == "" {
		h.Name = nameFromImage(h.Image)
	}
	if h.PoolMax != nil {
		if h.PoolMin == nil {
			h.PoolMin = new(int)
		}
		if h.PoolIdleTimeout == 0 {
			h.PoolIdleTimeout = caddy.Duration(defaultPoolIdleTimeout)
		}
	} else if h.Pool == nil {
		n := defaultPool
		h.Pool = &n
	}
	if h.QueueTimeout == 0 {
		h.QueueTimeout = caddy.Duration(defaultQueueTimeout)
	}
	if h.MaxRequestBody == nil {
		n := int64(defaultMaxRequestBody)
		h.MaxRequestBody = &n
	}
	if h.Network == "" {
		h.Network = networkNone
	}
}

// loadRoute finds (or makes) the route of this handler's function, shared
// across reloads under its key, and registers it with the app.
func (h *Handler) loadRoute() error {
	fn, src := h.function(), h.source()
	key, err := routeKey(h.routeIdentity(fn, src))
	if err != nil {
		return err
	}
	fn.Key, h.key = key, key
	val, _, err := routes.LoadOrNew(key, func() (caddy.Destructor, error) {
		r := newRoute(key, h.Name, src, fn, h.poolSpec())
		if h.MaxConcurrent > 0 {
			r.limit = semaphore.NewWeighted(int64(h.MaxConcurrent))
		}
		return r, nil
	})
	if err != nil {
		return fmt.Errorf("loading route %s: %w", h.Name, err)
	}
	h.route = val.(*route)
	h.limit = h.route.limit
	h.waits = h.route.waits
	h.containers = routeContainers{route: h.route, app: h.app}
	h.app.register(h.route)
	return nil
}

// function is the spawner.Function this handler's containers are made
// from, without its image (resolved when the app starts) and key.
func (h *Handler) function() spawner.Function {
	return spawner.Function{
		Name:        h.Name,
		Entrypoint:  h.Command,
		Args:        h.Args,
		Env:         h.env,
		WorkingDir:  h.WorkDir,
		MemoryBytes: h.Memory,
		DiskBytes:   h.Disk,
		Pids:        h.Pids,
		CPUs:        h.CPUs,
		Nofile:      uint64(max(h.Nofile, 0)),
		HostNetwork: h.Network == networkHost,
		ReadOnly:    h.ReadOnly,
		User:        h.user,
		Userns:      h.userns(),
	}
}

// userns is the function's user namespace, nil without one.
func (h *Handler) userns() *spawner.Userns {
	if !h.Userns {
		return nil
	}
	id := h.UsernsHostID
	if id == 0 {
		id = spawner.DefaultUsernsHostID
	}
	return &spawner.Userns{HostID: uint32(min(max(id, 0), spawner.MaxUsernsHostID))}
}

// poolSpec is the route's pool: fixed (pool) or adaptive (pool_min,
// pool_max, pool_idle_timeout).
func (h *Handler) poolSpec() poolSpec {
	if h.PoolMax != nil {
		return poolSpec{Min: *h.PoolMin, Max: *h.PoolMax, IdleTimeout: time.Duration(h.PoolIdleTimeout)}
	}
	return poolSpec{Min: *h.Pool, Max: *h.Pool}
}

// source is where the route's image comes from.
func (h *Handler) source() snapshots.Source {
	return snapshots.Source{
		Ref:     h.Image,
		Archive: h.ImageArchive,
		Pull:    snapshots.PullPolicy(h.PullPolicy),
		Auth:    h.auth,
	}
}

// routeIdentity is what the route key of this handler hashes: its
// function and image source, its pool, and the app settings its
// containers are made with. With pull_policy always it also holds a
// nonce, new at every load, so a reload pulls again and a moved tag gets a
// fresh pool (the digest can't be part of the key: Provision does no I/O).
func (h *Handler) routeIdentity(fn spawner.Function, src snapshots.Source) routeIdentity {
	id := routeIdentity{
		Function:      fn,
		Source:        sourceIdentity{Ref: src.Ref, Archive: src.Archive, Pull: h.PullPolicy},
		Pool:          h.poolSpec(),
		MaxConcurrent: h.MaxConcurrent,
		Backend: backendIdentity{
			Address: h.app.Address, Namespace: h.app.Namespace, Snapshotter: h.app.Snapshotter,
			Runtime: h.app.Runtime, RuncBinary: h.app.RuncBinary, Managed: h.app.Managed,
		},
	}
	if h.PullPolicy == string(snapshots.PullAlways) {
		id.Reload = spawner.NewOwnerID()
	}
	return id
}

// refuseLargeBody refuses, before anything starts, a body whose
// Content-Length is over max_request_body.
func (h *Handler) refuseLargeBody(w http.ResponseWriter, r *http.Request) error {
	if maxBody := *h.MaxRequestBody; maxBody > 0 && r.ContentLength > maxBody {
		closeAfterReply(w, r)
		return httpError(fmt.Errorf("route %s: %w: Content-Length %d over max_request_body %d",
			h.Name, errBodyTooLarge, r.ContentLength, maxBody))
	}
	return nil
}

// admit waits up to queue_timeout for one of the route's max_concurrent
// slots; leave gives it back. A request whose estimated wait (the queue
// ahead of it, and a cold start when the pool is empty) exceeds
// queue_timeout gets 503 with that estimate as Retry-After at once.
func (h *Handler) admit(w http.ResponseWriter, r *http.Request) (leave func(), err error) {
	if err := h.shed(w); err != nil {
		return nil, err
	}
	if h.limit == nil {
		return func() {}, nil
	}
	qctx, qcancel := context.WithTimeout(r.Context(), time.Duration(h.QueueTimeout))
	dequeue := h.waits.queued()
	err = h.limit.Acquire(qctx, 1)
	dequeue()
	qcancel()
	if err != nil {
		if r.Context().Err() != nil {
			return nil, httpError(fmt.Errorf("route %s: %w", h.Name, errClientGone))
		}
		w.Header().Set("Retry-After", "1")
		return nil, httpError(fmt.Errorf("route %s: %w (max_concurrent %d)", h.Name, errOverloaded, h.MaxConcurrent))
	}
	release := h.waits.hold(time.Now())
	return func() {
		release()
		h.limit.Release(1)
	}, nil
}

// shed refuses a request at once when its estimated wait exceeds
// queue_timeout.
func (h *Handler) shed(w http.ResponseWriter) error {
	cold := true
	if src, ok := h.containers.(interface{ idle() int }); ok {
		cold = src.idle() == 0
	}
	est, ok := h.waits.estimate(time.Now(), h.MaxConcurrent, cold)
	if !ok || est <= time.Duration(h.QueueTimeout) {
		return nil
	}
	spawnMetrics.rejects.WithLabelValues(h.Name).Inc()
	w.Header().Set("Retry-After", strconv.FormatInt(int64(math.Ceil(est.Seconds())), 10))
	return httpError(fmt.Errorf("route %s: %w: estimated wait %v over queue_timeout %v",
		h.Name, errOverloaded, est.Round(time.Millisecond), time.Duration(h.QueueTimeout)))
}

// resolveEnv turns the route's env into sorted KEY=VALUE entries, with
// global placeholders resolved.
func resolveEnv(repl *caddy.Replacer, env map[string]string) []string {
	if len(env) == 0 {
		return nil
	}
	keys := make([]string, 0, len(env))
	for k := range env {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	out := make([]string, 0, len(keys))
	for _, k := range keys {
		out = append(out, k+"="+repl.ReplaceKnown(env[k], ""))
	}
	return out
}

// nameFromImage derives a route name from an image reference:
// "localhost/caddy-spawn/hello:latest" → "hello".
func nameFromImage(ref string) string {
	s := ref
	if i := strings.IndexByte(s, '@'); i >= 0 {
		s = s[:i]
	}
	if i := strings.LastIndexByte(s, '/'); i >= 0 {
		s = s[i+1:]
	}
	if i := strings.IndexByte(s, ':'); i >= 0 {
		s = s[:i]
	}
	var b strings.Builder
	dash := false
	for _, c := range strings.ToLower(s) {
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
			b.WriteRune(c)
			dash = false
		case !dash:
			b.WriteByte('-')
			dash = true
		}
	}
	name := strings.Trim(b.String(), "-")
	if len(name) > 40 {
		name = strings.TrimRight(name[:40], "-")
	}
	return name
}

// Interface guards
var (
	_ caddy.Provisioner           = (*Handler)(nil)
	_ caddy.Validator             = (*Handler)(nil)
	_ caddy.CleanerUpper          = (*Handler)(nil)
	_ caddyhttp.MiddlewareHandler = (*Handler)(nil)
)
