package caddymodule

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/distribution/reference"
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
)

const (
	defaultPool         = 2
	defaultQueueTimeout = 5 * time.Second
	defaultTimeout      = 60 * time.Second
	// defaultMaxRequestBody bounds request bodies unless a route says
	// otherwise: 100 MiB.
	defaultMaxRequestBody = 100 << 20
	stderrTailBytes       = 4 << 10
	copyBufferSize        = 32 << 10
)

var bufPool = sync.Pool{New: func() any { b := make([]byte, copyBufferSize); return &b }}

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
	// can, Caddy's admin endpoint on localhost included: use it only for
	// trusted images. Default: "none".
	Network string `json:"network,omitempty"`

	// ReadOnly makes the container's root filesystem read-only, with a
	// 64 MiB tmpfs (nosuid, nodev, noexec; its pages count against Memory)
	// at /tmp. Default: false.
	ReadOnly bool `json:"read_only,omitempty"`

	// User runs the program as a numeric user, "<uid>" or "<uid>:<gid>";
	// the group defaults to the uid (not to root's group 0). No names: the
	// image's /etc/passwd is not consulted. Default: the image's USER,
	// root when it sets none.
	User string `json:"user,omitempty"`

	// Pool is how many single-use containers to keep created, started and
	// frozen ahead of requests. A request thaws one (~1 ms) instead of
	// creating one (~100 ms); it is never reused, and the pool refills in the
	// background. 0 disables the pool. Default: 2.
	Pool *int `json:"pool,omitempty"`

	// MaxConcurrent bounds the requests this route runs at once; more wait
	// up to QueueTimeout, then get 503 with Retry-After. Default: 0
	// (unbounded).
	MaxConcurrent int `json:"max_concurrent,omitempty"`

	// QueueTimeout is how long a request waits for a MaxConcurrent slot.
	// Default: 5s.
	QueueTimeout caddy.Duration `json:"queue_timeout,omitempty"`

	app      *App
	auth     *snapshots.Auth
	key      string
	route    *route
	logger   *zap.Logger
	env      []string
	user     *spawner.User
	software string
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
	if h.Timeout == 0 {
		h.Timeout = caddy.Duration(defaultTimeout)
	}
	if h.Output == "" {
		h.Output = outputCGI
	}
	if h.Name == "" {
		h.Name = nameFromImage(h.Image)
	}
	repl := caddy.NewReplacer()
	keys := make([]string, 0, len(h.Env))
	for k := range h.Env {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		h.env = append(h.env, k+"="+repl.ReplaceKnown(h.Env[k], ""))
	}
	simple, _ := caddy.Version()
	h.software = "Caddy/" + simple + " caddy-spawn"

	appIface, err := ctx.App("spawn")
	if err != nil {
		return fmt.Errorf("getting spawn app: %w", err)
	}
	h.app = appIface.(*App)
	if h.Pool == nil {
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
	if h.User != "" {
		u, err := parseUser(h.User)
		if err != nil {
			return fmt.Errorf("user: %w", err)
		}
		h.user = u
	}
	if h.RegistryAuth != nil {
		h.auth = &snapshots.Auth{
			Username: repl.ReplaceKnown(h.RegistryAuth.Username, ""),
			Password: repl.ReplaceKnown(h.RegistryAuth.Password, ""),
		}
	}
	h.key = h.routeKey()
	val, _, err := routes.LoadOrNew(h.key, func() (caddy.Destructor, error) {
		src := snapshots.Source{
			Ref:     h.Image,
			Archive: h.ImageArchive,
			Pull:    snapshots.PullPolicy(h.PullPolicy),
			Auth:    h.auth,
		}
		r := newRoute(h.key, h.Name, src, spawner.Function{
			Name:        h.Name,
			Key:         h.key,
			Entrypoint:  h.Command,
			Args:        h.Args,
			Env:         h.env,
			WorkingDir:  h.WorkDir,
			MemoryBytes: h.Memory,
			Pids:        h.Pids,
			CPUs:        h.CPUs,
			Nofile:      uint64(max(h.Nofile, 0)),
			HostNetwork: h.Network == networkHost,
			ReadOnly:    h.ReadOnly,
			User:        h.user,
		}, *h.Pool)
		if h.MaxConcurrent > 0 {
			r.limit = semaphore.NewWeighted(int64(h.MaxConcurrent))
		}
		return r, nil
	})
	if err != nil {
		return fmt.Errorf("loading route %s: %w", h.Name, err)
	}
	h.route = val.(*route)
	h.app.register(h.route)
	return nil
}

// Cleanup releases the route; the last config using it drains its pool.
func (h *Handler) Cleanup() error {
	if h.key == "" {
		return nil
	}
	_, err := routes.Delete(h.key)
	return err
}

// routeKey hashes everything that changes the containers of this route,
// including the app settings they are made with. Timeouts, output mode,
// body limits and registry credentials don't: changing them keeps the pool
// and its pinned image. With pull_policy always the key is new at every
// load, so a reload pulls again and a moved tag gets a fresh pool (the
// digest can't be part of the key: Provision does no I/O).
func (h *Handler) routeKey() string {
	var reload string
	if h.PullPolicy == string(snapshots.PullAlways) {
		reload = spawner.NewOwnerID()
	}
	b, _ := json.Marshal(struct {
		Pull, Reload                     string
		Image, Archive, Name, WorkDir    string
		Command, Args, Env               []string
		Memory, Pids, Nofile             int64
		CPUs                             float64
		Network                          string
		ReadOnly                         bool
		User                             *spawner.User
		Pool, MaxConcurrent              int
		Address, Namespace, Snap, RT, RB string
		Managed                          *ManagedContainerd
	}{
		h.PullPolicy, reload,
		h.Image, h.ImageArchive, h.Name, h.WorkDir,
		h.Command, h.Args, h.env,
		h.Memory, h.Pids, h.Nofile,
		h.CPUs,
		h.Network,
		h.ReadOnly,
		h.user,
		*h.Pool, h.MaxConcurrent,
		h.app.Address, h.app.Namespace, h.app.Snapshotter, h.app.Runtime, h.app.RuncBinary,
		h.app.Managed,
	})
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:8])
}

// Validate checks the configuration, naming the field at fault.
func (h *Handler) Validate() error {
	if h.Image == "" {
		return errors.New("image: required")
	}
	if _, err := reference.ParseDockerRef(h.Image); err != nil {
		return fmt.Errorf("image: %q is not a valid image reference: %w", h.Image, err)
	}
	if err := h.validateSource(); err != nil {
		return err
	}
	if !spawner.ValidName(h.Name) {
		return fmt.Errorf("name: %q must be 1-40 lowercase letters and digits, separated by single '-' (set name explicitly)", h.Name)
	}
	if h.Output != outputCGI && h.Output != outputRaw {
		return fmt.Errorf("output: %q must be %q or %q", h.Output, outputCGI, outputRaw)
	}
	if h.Timeout < 0 {
		return errors.New("timeout: must not be negative")
	}
	if h.Memory < 0 || (h.Memory > 0 && h.Memory < 4<<20) {
		return errors.New("memory: must be at least 4 MiB")
	}
	if h.Pids < 0 {
		return errors.New("pids: must not be negative")
	}
	if h.CPUs != 0 && !(h.CPUs >= spawner.MinCPUs && h.CPUs <= spawner.MaxCPUs) {
		return fmt.Errorf("cpus: %g must be between %g and %d", h.CPUs, spawner.MinCPUs, spawner.MaxCPUs)
	}
	if h.Nofile < 0 || h.Nofile > spawner.MaxNofile {
		return fmt.Errorf("nofile: %d must be between 1 and %d", h.Nofile, spawner.MaxNofile)
	}
	if h.MaxRequestBody != nil && *h.MaxRequestBody < 0 {
		return errors.New("max_request_body: must not be negative (0 is unlimited)")
	}
	if h.MaxResponseBytes < 0 {
		return errors.New("max_response_bytes: must not be negative (0 is unlimited)")
	}
	if h.Network != "" && h.Network != networkNone && h.Network != networkHost {
		return fmt.Errorf("network: %q must be %q or %q", h.Network, networkNone, networkHost)
	}
	if h.User != "" {
		if _, err := parseUser(h.User); err != nil {
			return fmt.Errorf("user: %w", err)
		}
	}
	if h.Pool != nil && (*h.Pool < 0 || *h.Pool > 256) {
		return fmt.Errorf("pool: %d must be between 0 and 256", *h.Pool)
	}
	if h.MaxConcurrent < 0 {
		return errors.New("max_concurrent: must not be negative")
	}
	if h.QueueTimeout < 0 {
		return errors.New("queue_timeout: must not be negative")
	}
	for k := range h.Env {
		if k == "" || strings.ContainsAny(k, "=\x00") {
			return fmt.Errorf("env: invalid variable name %q", k)
		}
	}
	if h.ScriptName != "" && !strings.HasPrefix(h.ScriptName, "/") {
		return fmt.Errorf("script_name: %q must start with '/'", h.ScriptName)
	}
	return nil
}

// validateSource checks where the image comes from: pull_policy,
// image_archive and registry_auth, and that they don't contradict.
func (h *Handler) validateSource() error {
	if !snapshots.ValidPullPolicy(snapshots.PullPolicy(h.PullPolicy)) {
		return fmt.Errorf("pull_policy: %q must be %q, %q or %q", h.PullPolicy, snapshots.PullMissing, snapshots.PullAlways, snapshots.PullNever)
	}
	if h.ImageArchive != "" && h.PullPolicy == string(snapshots.PullAlways) {
		return errors.New("pull_policy: always contradicts image_archive: with an archive nothing is pulled")
	}
	if h.RegistryAuth != nil {
		switch {
		case h.RegistryAuth.Username == "":
			return errors.New("registry_auth: username required")
		case h.ImageArchive != "":
			return errors.New("registry_auth: has no use with image_archive: with an archive nothing is pulled")
		case h.PullPolicy == string(snapshots.PullNever):
			return errors.New("registry_auth: has no use with pull_policy never")
		}
	}
	return nil
}

// ServeHTTP runs the request in a fresh container.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request, _ caddyhttp.Handler) error {
	start := time.Now()
	defer func() {
		spawnMetrics.requestSeconds.WithLabelValues(h.Name).Observe(time.Since(start).Seconds())
	}()

	// A body known to be too large is refused before anything starts.
	maxBody := h.maxRequestBody()
	if maxBody > 0 && r.ContentLength > maxBody {
		closeAfterReply(w, r)
		return httpError(fmt.Errorf("route %s: %w: Content-Length %d over max_request_body %d",
			h.Name, errBodyTooLarge, r.ContentLength, maxBody))
	}

	if lim := h.route.limit; lim != nil {
		qctx, qcancel := context.WithTimeout(r.Context(), time.Duration(h.QueueTimeout))
		err := lim.Acquire(qctx, 1)
		qcancel()
		if err != nil {
			if r.Context().Err() != nil {
				return httpError(fmt.Errorf("route %s: %w", h.Name, errClientGone))
			}
			w.Header().Set("Retry-After", "1")
			return httpError(fmt.Errorf("route %s: %w (max_concurrent %d)", h.Name, errOverloaded, h.MaxConcurrent))
		}
		defer lim.Release(1)
	}

	ctx, cancel := context.WithTimeout(r.Context(), time.Duration(h.Timeout))
	defer cancel()

	// The program may answer while it still reads the body (a filter such as
	// cat does): HTTP/1 needs full duplex for that; HTTP/2 and 3 have it.
	rc := http.NewResponseController(w)
	_ = rc.EnableFullDuplex()

	acquireStart := time.Now()
	inst, warm, ready, err := h.route.acquire(ctx, time.Duration(h.app.ImageWait))
	if !ready && err == nil {
		w.Header().Set("Retry-After", "5")
		return httpError(fmt.Errorf("route %s: %w", h.Name, errImageNotReady))
	}
	if err != nil {
		if errors.Is(err, spawner.ErrUnavailable) || errors.Is(err, spawner.ErrClosed) {
			w.Header().Set("Retry-After", "5")
		}
		return httpError(h.causeOf(ctx, r, fmt.Errorf("%w: %w", errStartFailed, err)))
	}
	defer h.route.release(h.app.spawner, inst)
	h.recordStart(r, inst, warm, time.Since(acquireStart))

	// Kill the container the moment the request times out or the client
	// goes away; its stdout then ends and the copy below returns.
	stopWatch := context.AfterFunc(ctx, func() { inst.Kill(context.Background()) })
	defer stopWatch()

	stderr := newStderrTail(stderrTailBytes)
	stderrDone := make(chan struct{})
	go func() {
		_, _ = io.Copy(stderr, inst.Stderr())
		close(stderrDone)
	}()

	if err := inst.Begin(h.requestEnv(r)); err != nil {
		return httpError(h.causeOf(ctx, r, fmt.Errorf("%w: %w", errStartFailed, err)))
	}
	// Set by feedStdin, before it kills the container, when the body goes
	// over max_request_body.
	var bodyTooLarge atomic.Bool
	go h.feedStdin(inst, r, maxBody, &bodyTooLarge)

	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	br := bufio.NewReaderSize(inst.Stdout(), copyBufferSize)
	stdoutEOF := false
	defer func() {
		if !stdoutEOF {
			// A response that ends early leaves the program's output
			// unread, and the shim reports no exit of a killed container
			// while its stdout waits for a reader: drain it, off the
			// request, so teardown doesn't stall.
			go func() { _, _ = io.Copy(io.Discard, br) }()
		}
	}()

	var head cgiHead
	if h.Output == outputRaw {
		head = cgiHead{Status: http.StatusOK, Header: make(http.Header)}
		if _, err = br.Peek(1); errors.Is(err, io.EOF) {
			err = errNoOutput
		}
	} else {
		head, err = readCGIHead(br)
	}
	if err == nil && h.MaxResponseBytes > 0 {
		// A body announced too large would only be cut short: say so now,
		// while a status can still tell it.
		if n, perr := strconv.ParseInt(head.Header.Get("Content-Length"), 10, 64); perr == nil && n > h.MaxResponseBytes {
			err = fmt.Errorf("%w: Content-Length %d over max_response_bytes %d", errResponseTooLarge, n, h.MaxResponseBytes)
		}
	}
	if err != nil {
		err = h.failBeforeHeader(ctx, r, inst, err, &bodyTooLarge, stderr, stderrDone)
		if errors.Is(err, errBodyTooLarge) {
			closeAfterReply(w, r)
		}
		return err
	}

	hdr := w.Header()
	for k, v := range head.Header {
		hdr[k] = v
	}
	hdr.Add("Trailer", trailerExitCode)
	hdr.Add("Trailer", trailerError)
	w.WriteHeader(head.Status)
	_ = rc.Flush()

	buf := *bp
	var sent int64
	for {
		n, rerr := br.Read(buf)
		over := h.MaxResponseBytes > 0 && sent+int64(n) > h.MaxResponseBytes
		if over {
			n = int(h.MaxResponseBytes - sent)
		}
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				inst.Kill(context.Background())
				h.logger.Warn("client went away during response",
					zap.String("route", h.Name), zap.String("container", inst.ID), zap.Error(werr))
				panic(http.ErrAbortHandler)
			}
			sent += int64(n)
			if br.Buffered() == 0 || over {
				_ = rc.Flush()
			}
		}
		if over {
			// Only an aborted response tells the client it is incomplete:
			// a trailer would need a clean end, which looks complete.
			inst.Kill(context.Background())
			h.logger.Warn("response cut short",
				zap.String("route", h.Name), zap.String("container", inst.ID),
				zap.String("reason", "response over max_response_bytes"),
				zap.Int64("max_response_bytes", h.MaxResponseBytes))
			panic(http.ErrAbortHandler)
		}
		if rerr != nil {
			stdoutEOF = true
			break
		}
	}
	if bodyTooLarge.Load() {
		// Killed for its request body after the header went out.
		h.logger.Warn("response cut short",
			zap.String("route", h.Name), zap.String("container", inst.ID),
			zap.String("reason", "request body over max_request_body"),
			zap.Int64("max_request_body", maxBody))
		panic(http.ErrAbortHandler)
	}

	select {
	case <-inst.Done():
	case <-ctx.Done():
	}
	if ctx.Err() != nil {
		inst.Kill(context.Background())
		reason := "timeout"
		if r.Context().Err() != nil {
			reason = "client went away"
		}
		h.logger.Warn("response cut short",
			zap.String("route", h.Name), zap.String("container", inst.ID), zap.String("reason", reason))
		panic(http.ErrAbortHandler)
	}
	code := inst.ExitCode()
	hdr.Set(trailerExitCode, strconv.FormatUint(uint64(code), 10))
	if code != 0 && inst.OOMKilled() {
		hdr.Set(trailerError, "oom-killed")
		h.logger.Warn("function killed by its memory limit after the response began",
			zap.String("route", h.Name), zap.String("container", inst.ID), zap.Int64("memory", h.Memory))
	}
	spawnMetrics.exits.WithLabelValues(h.Name, exitCodeLabel(code)).Inc()
	waitBounded(stderrDone, time.Second)
	h.logStderr(inst, code, stderr)
	return nil
}

// recordStart reports how the container was obtained: metrics, the
// {http.spawn.*} placeholders and access-log fields.
func (h *Handler) recordStart(r *http.Request, inst *spawner.Instance, warm bool, took time.Duration) {
	startType, result := "cold", "miss"
	if warm {
		startType, result = "warm", "hit"
	}
	spawnMetrics.claims.WithLabelValues(h.Name, result).Inc()
	spawnMetrics.startSeconds.WithLabelValues(h.Name, startType).Observe(took.Seconds())
	if repl, ok := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer); ok {
		repl.Set("http.spawn.start_type", startType)
		repl.Set("http.spawn.start_duration", took)
		repl.Set("http.spawn.start_duration_ms", float64(took)/float64(time.Millisecond))
		repl.Set("http.spawn.container", inst.ID)
	}
	if extra, ok := r.Context().Value(caddyhttp.ExtraLogFieldsCtxKey).(*caddyhttp.ExtraLogFields); ok {
		extra.Add(zap.String("spawn_start", startType))
		extra.Add(zap.Duration("spawn_start_duration", took))
		extra.Add(zap.String("spawn_container", inst.ID))
	}
}

// requestEnv is the environment sent to the init: CGI variables, then the
// route's env, which wins.
func (h *Handler) requestEnv(r *http.Request) []string {
	cr := cgiRequest{ScriptName: h.ScriptName, ServerSoftware: h.software}
	if orig, ok := r.Context().Value(caddyhttp.OriginalRequestCtxKey).(http.Request); ok {
		cr.RequestURI = orig.RequestURI
	}
	if repl, ok := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer); ok {
		if user, ok := repl.GetString("http.auth.user.id"); ok && user != "" {
			cr.RemoteUser = user
		}
	}
	env := cgiEnv(r, cr)
	return append(env, h.env...)
}

// feedStdin streams the request body into the program's stdin and closes
// it at EOF. It may outlive ServeHTTP when the program stops reading early;
// closing stdin (done by Release) ends it. With limit > 0 it passes at most
// limit bytes: if the body has more, it sets tooLarge and kills the
// container, leaving stdin open so the program can't take the truncated
// body for a whole one.
func (h *Handler) feedStdin(inst *spawner.Instance, r *http.Request, limit int64, tooLarge *atomic.Bool) {
	if r.Body != nil && r.Body != http.NoBody {
		var body io.Reader = r.Body
		if limit > 0 {
			body = &limitedBody{r: r.Body, left: limit}
		}
		bp := bufPool.Get().(*[]byte)
		_, err := io.CopyBuffer(writerOnly{inst.Stdin()}, body, *bp)
		bufPool.Put(bp)
		// Caddy's request_body max_size ends the body the same way.
		var mbe *http.MaxBytesError
		if errors.Is(err, errBodyTooLarge) || errors.As(err, &mbe) {
			tooLarge.Store(true)
			inst.Kill(context.Background())
			return
		}
		if err != nil {
			if ce := h.logger.Check(zap.DebugLevel, "request body not fully delivered"); ce != nil {
				ce.Write(zap.String("route", h.Name), zap.String("container", inst.ID), zap.Error(err))
			}
		}
	}
	_ = inst.CloseStdin(context.Background())
}

// failBeforeHeader ends a request that produced no valid header: it kills
// the container, works out why, logs the program's stderr and returns the
// error for Caddy to answer with.
func (h *Handler) failBeforeHeader(ctx context.Context, r *http.Request, inst *spawner.Instance, err error, bodyTooLarge *atomic.Bool, stderr *stderrTail, stderrDone chan struct{}) error {
	if errors.Is(err, errNoOutput) {
		// The program closed stdout: wait for its exit to tell why.
		select {
		case <-inst.Done():
		case <-ctx.Done():
		}
	}
	inst.Kill(context.Background())
	waitBounded(inst.Done(), 2*time.Second)
	waitBounded(stderrDone, time.Second)

	var cause error
	var mh malformedHeaderError
	switch {
	case bodyTooLarge.Load():
		// We killed it: the body went over the limit.
		cause = fmt.Errorf("%w: body over max_request_body %d", errBodyTooLarge, h.maxRequestBody())
	case ctx.Err() != nil:
		cause = h.causeOf(ctx, r, ctx.Err())
	case errors.As(err, &mh):
		cause = fmt.Errorf("%w: %w", errBadOutput, err)
	case errors.Is(err, errNoOutput):
		cause = fmt.Errorf("%w (%s)", errFailedNoOutput, describeExit(inst.ExitCode()))
		if inst.ExitCode() != 0 && inst.OOMKilled() {
			cause = fmt.Errorf("%w (%s; out of memory: the memory limit killed it)", errFailedNoOutput, describeExit(inst.ExitCode()))
		}
	case errors.Is(err, errResponseTooLarge):
		cause = err
	default:
		cause = fmt.Errorf("%w: %w", errBadOutput, err)
	}
	code := uint32(0)
	select {
	case <-inst.Done():
		code = inst.ExitCode()
	default:
	}
	h.logStderr(inst, code, stderr)
	return httpError(fmt.Errorf("route %s, container %s: %w", h.Name, inst.ID, cause))
}

// causeOf tells a timeout from a client that went away.
func (h *Handler) causeOf(ctx context.Context, r *http.Request, err error) error {
	switch {
	case r.Context().Err() != nil:
		return fmt.Errorf("%w: %w", errClientGone, err)
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		return fmt.Errorf("%w after %s: %w", errTimeout, time.Duration(h.Timeout), err)
	}
	return err
}

// logStderr logs what the program wrote to stderr, bounded, never mixed
// into the response.
func (h *Handler) logStderr(inst *spawner.Instance, code uint32, stderr *stderrTail) {
	text, total := stderr.String()
	if total == 0 {
		return
	}
	lvl := zap.InfoLevel
	if code != 0 {
		lvl = zap.WarnLevel
	}
	if ce := h.logger.Check(lvl, "function stderr"); ce != nil {
		ce.Write(
			zap.String("route", h.Name),
			zap.String("image", h.Image),
			zap.String("container", inst.ID),
			zap.Uint32("exit_code", code),
			zap.Int64("stderr_bytes", total),
			zap.String("stderr", text))
	}
}

// closeAfterReply marks an HTTP/1 connection for closing after a response
// that leaves the request body unread. Without it, Go's server would first
// try to read up to 256 KiB of the body to keep the connection, waiting on
// a client that waits for the response (Caddy wraps the body, which hides
// its size). HTTP/2 and 3 need nothing: a stream ends on its own.
func closeAfterReply(w http.ResponseWriter, r *http.Request) {
	if r.ProtoMajor == 1 {
		w.Header().Set("Connection", "close")
	}
}

// maxRequestBody is the body limit in bytes, 0 for none.
func (h *Handler) maxRequestBody() int64 {
	if h.MaxRequestBody == nil {
		return defaultMaxRequestBody
	}
	return *h.MaxRequestBody
}

// limitedBody passes at most left more bytes of r, then fails with
// errBodyTooLarge if r has more.
type limitedBody struct {
	r    io.Reader
	left int64
}

func (l *limitedBody) Read(p []byte) (int, error) {
	// One byte more than allowed tells "exactly at the limit" from "over".
	if int64(len(p)) > l.left+1 {
		p = p[:l.left+1]
	}
	n, err := l.r.Read(p)
	if int64(n) > l.left {
		n = int(l.left)
		l.left = 0
		return n, errBodyTooLarge
	}
	l.left -= int64(n)
	return n, err
}

// describeExit says how a program ended, from its exit code (128+n for
// signal n, as a shell reports it).
func describeExit(code uint32) string {
	if code > 128 && code < 128+65 {
		sig := syscall.Signal(code - 128)
		return fmt.Sprintf("exit code %d: killed by signal %d (%s)", code, code-128, sig)
	}
	return fmt.Sprintf("exit code %d", code)
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

func waitBounded(ch <-chan struct{}, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ch:
	case <-t.C:
	}
}

// writerOnly hides ReaderFrom so io.CopyBuffer uses our pooled buffer.
type writerOnly struct{ io.Writer }

// stderrTail keeps the last max bytes written to it and counts the rest.
type stderrTail struct {
	mu    sync.Mutex
	max   int
	buf   []byte
	total int64
}

func newStderrTail(max int) *stderrTail { return &stderrTail{max: max} }

func (t *stderrTail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.total += int64(len(p))
	t.buf = append(t.buf, p...)
	if len(t.buf) > t.max {
		t.buf = append(t.buf[:0], t.buf[len(t.buf)-t.max:]...)
	}
	return len(p), nil
}

// String returns the kept tail and the total byte count.
func (t *stderrTail) String() (string, int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.buf), t.total
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
