package caddymodule

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sync/semaphore"

	"github.com/containerd/containerd/v2/pkg/namespaces"

	"github.com/caddyserver/caddy/v2"

	"github.com/caddy-spawn/caddy-spawn/snapshots"
	"github.com/caddy-spawn/caddy-spawn/spawner"
	"github.com/caddy-spawn/caddy-spawn/spawner/initbin"
)

func init() {
	caddy.RegisterModule(App{})
}

// Defaults of the app's settings.
const (
	defaultNamespace   = "caddy-spawn"
	defaultSnapshotter = "overlayfs"
	defaultRunDir      = "/run/caddy-spawn"

	// defaultMaxContainersPerCPU sets MaxContainers' default.
	defaultMaxContainersPerCPU = 64

	fastPathAuto     = "auto"
	fastPathOn       = "on"
	fastPathOff      = "off"
	defaultImageWait = 10 * time.Second
)

// processOwner labels everything this Caddy process creates in containerd.
// It lives as long as the process, across config reloads, so a reload never
// sweeps containers that are still in use; a restarted Caddy has a new owner
// and sweeps the old one's leftovers.
var processOwner = spawner.NewOwnerID()

// App is the "spawn" Caddy app. It connects to containerd — or, when no
// address is configured, starts and supervises its own ("managed")
// containerd — and gets every function's image ready before requests need it.
//
// In a Caddyfile it is configured with the `spawn` global option.
type App struct {
	// Address of the containerd socket to use, e.g.
	// "/run/containerd/containerd.sock". When empty, caddy-spawn starts a
	// managed containerd of its own (see Managed). containerd 1.7 or later
	// is needed (an older one fails the start, naming its version); the fast
	// path needs 2.0 or later, and on 1.7 containers run on the runc shim.
	// Default: "" (managed).
	Address string `json:"address,omitempty"`

	// Managed configures the containerd that caddy-spawn starts when no
	// Address is set.
	Managed *ManagedContainerd `json:"managed,omitempty"`

	// Namespace is the containerd namespace for all our images and
	// containers. It must be dedicated to one Caddy instance. Default:
	// "caddy-spawn".
	Namespace string `json:"namespace,omitempty"`

	// Snapshotter to unpack images and prepare container filesystems with.
	// Default: "overlayfs".
	Snapshotter string `json:"snapshotter,omitempty"`

	// Runtime is the containerd runtime (shim) name. Default:
	// "io.containerd.runc.v2".
	Runtime string `json:"runtime,omitempty"`

	// RuncBinary is the runc executable for the runc shim to use. Default:
	// "runc" from the PATH of containerd.
	RuncBinary string `json:"runc_binary,omitempty"`

	// FastPath chooses how containers are run. "auto" runs them on
	// caddy-spawn's own task server with crun, without a shim process per
	// container, when this host can (crun installed; a pure cgroup v2 host
	// or a v1 host with no controller left on the unified hierarchy), and on
	// containerd's runc shim (Runtime) otherwise, saying why at start-up.
	// "on" requires the fast path: the app fails to start without it.
	// "off" always uses the runc shim. It is chosen when the containerd
	// connection is first made; changing it takes a restart. Default: "auto".
	// EXPERIMENTAL.
	FastPath string `json:"fast_path,omitempty"`

	// CrunBinary is the crun executable of the fast path. Default: "crun"
	// from PATH.
	CrunBinary string `json:"crun_binary,omitempty"`

	// RunDir holds runtime files: stdio FIFOs and, in managed mode, the
	// daemon's state and socket. Default: "/run/caddy-spawn".
	RunDir string `json:"run_dir,omitempty"`

	// StateTmpfs says what to do when RunDir, or the managed containerd's
	// state directory, is not on a memory file system: "auto" mounts a
	// tmpfs there (source "caddy-spawn-state", 256 MiB at most), removed
	// when the containerd connection goes (after a managed containerd
	// stopped), kept after a crash for the next start to use; "off" leaves
	// them on the disk, which costs CPU for every container. Like FastPath,
	// it is chosen when the containerd connection is first made, with that
	// config's RunDir; changing either takes a restart. Default: "auto".
	StateTmpfs string `json:"state_tmpfs,omitempty"`

	// RefillConcurrency bounds how many containers are created at once in
	// the background to refill pools, across all routes, so refilling never
	// starves the machine. Default: the number of CPUs.
	RefillConcurrency int `json:"refill_concurrency,omitempty"`

	// MaxContainers bounds the containers the app has at once, pooled and
	// serving, across all routes. At the bound, a request that needs a new
	// container waits up to its route's queue_timeout for one to be
	// removed, then gets 503 with Retry-After; pool refills wait their
	// turn and never take a container a request could use. Default: 64 per
	// CPU (128 on 2 CPUs).
	MaxContainers int `json:"max_containers,omitempty"`

	// WarmMemory caps, in bytes, the memory of every route's idle pooled
	// containers together, each counted at its route's memory limit (the
	// most a paused container can hold) from the moment its creation
	// starts until a request claims it. Within the cap, routes get warm
	// containers by recent demand, so the busiest stay warm and quiet
	// ones give theirs up. Default: 0 (no cap).
	WarmMemory int64 `json:"warm_memory,omitempty"`

	// ImageWait is how long a request waits for its route's image to become
	// ready (e.g. while containerd starts) before getting 503. Default: 10s.
	ImageWait caddy.Duration `json:"image_wait,omitempty"`

	// RegistryConfig is the path of a Docker-style config.json whose
	// "auths" give credentials for registries (a base64 "auth" of
	// "user:password", or "username" and "password"; credential helpers
	// and identity tokens are not supported). It is read at every start and
	// config load. A route's registry_auth wins for its own registry.
	// Default: none.
	RegistryConfig string `json:"registry_config,omitempty"`

	// InsecureRegistries lists registry hosts ("host" or "host:port") that
	// are reached over plain HTTP instead of HTTPS. Registries on loopback
	// (localhost, 127.0.0.0/8, ::1) always are. Default: none.
	InsecureRegistries []string `json:"insecure_registries,omitempty"`

	// RegistryHostsDir is a directory in containerd's registry hosts layout
	// (<dir>/<host>/hosts.toml, <dir>/_default/hosts.toml; the format of
	// /etc/containerd/certs.d): mirrors, per-registry CA certificates and
	// capabilities for pulls. Default: none.
	RegistryHostsDir string `json:"registry_hosts_dir,omitempty"`

	// HostNetworkWithTCPAdmin allows routes with network "host" although
	// Caddy's admin endpoint listens on TCP (or anywhere else the host's
	// network namespace reaches: an abstract unix socket, an inherited
	// socket, or an address caddy-spawn could not read). Any function on
	// such a route can then rewrite Caddy's config through the endpoint,
	// e.g. load a route that runs any image with any settings. Without it,
	// such a route is refused; the safe alternatives are the admin endpoint
	// on a unix socket ("admin": {"listen": "unix//run/caddy-admin.sock"})
	// or off. Default: false.
	HostNetworkWithTCPAdmin bool `json:"host_network_with_tcp_admin,omitempty"`

	ctx      caddy.Context
	logger   *zap.Logger
	mu       *sync.Mutex
	routes   []*route
	backend  *backend
	bkey     string
	spawner  *spawner.Spawner
	cancel   context.CancelFunc
	bgDone   chan struct{}
	initPath string
	refill   *semaphore.Weighted
	admin    adminEndpoint // where this config's admin endpoint listens

	registries snapshots.Registries
}

// ManagedContainerd configures the containerd that caddy-spawn runs as a
// child process when no address is given.
type ManagedContainerd struct {
	// Binary is the containerd executable. Default: "containerd" in PATH.
	// The shim (containerd-shim-runc-v2) and runc must be in PATH too.
	Binary string `json:"binary,omitempty"`
	// Root is the daemon's persistent directory (content, snapshots).
	// Default: "spawn/containerd" in Caddy's data directory.
	Root string `json:"root,omitempty"`
	// State is the daemon's runtime directory, which also holds its socket.
	// Default: "<run_dir>/containerd-<hash of root>".
	State string `json:"state,omitempty"`
	// LogLevel is containerd's own log level; its log is
	// "<state>/containerd.log". Default: "warn".
	LogLevel string `json:"log_level,omitempty"`
	// SyncMetadata makes containerd sync its metadata database to disk
	// at every write, as it does by default. Default: off (bbolt's
	// no_sync), ~4 ms of CPU less per container: a power loss may then
	// damage the managed containerd's metadata database (see the README).
	SyncMetadata bool `json:"sync_metadata,omitempty"`
}

// CaddyModule returns the Caddy module information.
func (App) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "spawn",
		New: func() caddy.Module { return new(App) },
	}
}

// Provision sets defaults. It does no I/O: it also runs for `caddy validate`.
func (a *App) Provision(ctx caddy.Context) error {
	a.ctx = ctx
	a.logger = ctx.Logger()
	a.mu = new(sync.Mutex)
	a.admin = readAdminEndpoint(ctx)
	a.setDefaults()
	a.refill = semaphore.NewWeighted(int64(a.RefillConcurrency))
	if err := initMetrics(ctx.GetMetricsRegistry()); err != nil {
		return fmt.Errorf("registering metrics: %w", err)
	}
	return nil
}

// Validate checks the settings, naming the field at fault. It is
// read-only. Each field's rule lives in its checker (checks.go).
func (a *App) Validate() error {
	return firstError(
		checkNamespace(a.Namespace),
		checkBackendChoice(a.Address, a.Managed),
		checkFastPath(a.FastPath),
		checkStateTmpfs(a.StateTmpfs),
		ifSet(a.RefillConcurrency, checkRefillConcurrency),
		ifSet(a.MaxContainers, checkMaxContainers),
		checkWarmMemory(a.WarmMemory),
		checkImageWait(a.ImageWait),
		checkInsecureRegistries(a.InsecureRegistries),
	)
}

// Start connects to (or starts) containerd, sweeps leftovers of previous
// runs, and gets every route's image ready. A route whose image does not
// exist fails the start, and so does a containerd older than
// spawner.MinContainerdVersion. If containerd can't be reached, the start
// goes on: requests get 503 until it is back (and if it then proves too
// old, the error is logged at each retry).
func (a *App) Start() (err error) {
	a.warnReachableAdmin(os.Geteuid())
	if err := a.checkDirs(); err != nil {
		return err
	}
	initDir := filepath.Join(caddy.AppDataDir(), "spawn", "bin")
	p, err := initbin.Install(initDir)
	if err != nil {
		return fmt.Errorf("installing spawn-init: %w", err)
	}
	a.initPath = p

	a.registries = snapshots.Registries{Insecure: a.InsecureRegistries, HostsDir: a.RegistryHostsDir}
	if a.RegistryConfig != "" {
		creds, err := snapshots.LoadDockerConfig(a.RegistryConfig)
		if err != nil {
			return fmt.Errorf("registry_config: %w", err)
		}
		a.registries.Credentials = creds
	}

	b, err := a.connect()
	if err != nil {
		return err
	}
	if a.FastPath == fastPathOn && b.fast == nil {
		_ = a.releaseBackend()
		return fmt.Errorf("fast_path on: the fast path is not running for this containerd (see the start-up log for why, or restart Caddy after changing fast_path)")
	}
	// Caddy does not Stop an app whose Start failed: release here, or a
	// refused config would keep the containerd backend alive forever.
	defer func() {
		if err != nil {
			_ = a.releaseBackend()
		}
	}()

	warmBudget.SetTotal(a.WarmMemory)
	spawnMetrics.warmBudget.Set(float64(a.WarmMemory))

	fifoDir := filepath.Join(a.RunDir, "fifo", processOwner)
	a.spawner, err = b.spawner(spawner.Config{
		Client:        b.client,
		Namespace:     a.Namespace,
		Snapshotter:   a.Snapshotter,
		Runtime:       a.Runtime,
		RuncBinary:    a.RuncBinary,
		InitBinary:    a.initPath,
		FIFODir:       fifoDir,
		Owner:         processOwner,
		FastPath:      b.fast,
		MaxContainers: a.MaxContainers,
		Logger:        a.logger,
	})
	if err != nil {
		return err
	}
	removeStaleFIFODirs(filepath.Join(a.RunDir, "fifo"), processOwner)

	bg, cancel := context.WithCancel(context.Background())
	a.cancel = cancel
	a.bgDone = make(chan struct{})

	// First attempt in the foreground, so a missing image fails the start.
	err = a.prepare(bg)
	if err != nil && !errors.Is(err, spawner.ErrUnavailable) {
		cancel()
		close(a.bgDone)
		return err
	}
	if err != nil {
		a.logger.Error("containerd unreachable; requests get 503 until it is back",
			zap.String("address", b.address), zap.Error(err))
		go a.retryPrepare(bg)
	} else {
		close(a.bgDone)
	}
	return nil
}

// connect takes (or makes) the containerd backend.
func (a *App) connect() (*backend, error) {
	b, key, err := a.acquireBackend()
	if err != nil {
		return nil, err
	}
	a.backend, a.bkey = b, key
	return b, nil
}

// Stop stops background work and releases the containerd connection; the
// last config to release a managed containerd stops it.
func (a *App) Stop() error {
	if a.cancel != nil {
		a.cancel()
		<-a.bgDone
	}
	return a.releaseBackend()
}

// Cleanup releases what a Start that never got its Stop still holds.
func (a *App) Cleanup() error {
	return a.releaseBackend()
}

// setDefaults fills in every app setting left unset: the one place
// defaults are applied.
func (a *App) setDefaults() {
	if a.Namespace == "" {
		a.Namespace = defaultNamespace
	}
	if a.Snapshotter == "" {
		a.Snapshotter = defaultSnapshotter
	}
	if a.Runtime == "" {
		a.Runtime = spawner.DefaultRuntime
	}
	if a.RunDir == "" {
		a.RunDir = defaultRunDir
	}
	if a.ImageWait == 0 {
		a.ImageWait = caddy.Duration(defaultImageWait)
	}
	if a.RefillConcurrency == 0 {
		a.RefillConcurrency = runtime.NumCPU()
	}
	if a.MaxContainers == 0 {
		a.MaxContainers = defaultMaxContainersPerCPU * runtime.NumCPU()
	}
	if a.Address == "" {
		if a.Managed == nil {
			a.Managed = new(ManagedContainerd)
		}
		if a.Managed.Root == "" {
			a.Managed.Root = filepath.Join(caddy.AppDataDir(), "spawn", "containerd")
		}
		if a.Managed.State == "" {
			a.Managed.State = managedStateDir(a.RunDir, a.Managed.Root)
		}
	}
}

// register adds a route; handlers call it while they are provisioned.
func (a *App) register(r *route) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.routes = append(a.routes, r)
}

// routeList returns the routes of this config.
func (a *App) routeList() []*route {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]*route(nil), a.routes...)
}

// prepare checks containerd, sweeps leftovers and readies all images.
func (a *App) prepare(ctx context.Context) error {
	c := a.backend.client
	nsCtx := namespaces.WithNamespace(ctx, a.Namespace)
	if err := a.spawner.Healthy(ctx); err != nil {
		return err
	}
	if err := a.backend.checkVersion(ctx); err != nil {
		return err
	}
	if err := spawner.EnsureNamespace(nsCtx, c, a.Namespace); err != nil {
		return fmt.Errorf("%w: %w", spawner.ErrUnavailable, err)
	}
	if _, err := spawner.Sweep(ctx, c, a.Namespace, a.Snapshotter, processOwner, a.logger); err != nil {
		a.logger.Warn("sweeping leftovers", zap.Error(err))
	}
	a.mu.Lock()
	routes := append([]*route(nil), a.routes...)
	a.mu.Unlock()
	// Routes often share an image (and its archive): get each source ready
	// once per pass, not once per route.
	type sourceKey struct {
		ref, archive string
		pull         snapshots.PullPolicy
		auth         snapshots.Auth
	}
	readied := map[sourceKey]*snapshots.Ready{}
	for _, r := range routes {
		if r.isReady() {
			continue
		}
		key := sourceKey{ref: r.src.Ref, archive: r.src.Archive, pull: r.src.Pull}
		if r.src.Auth != nil {
			key.auth = *r.src.Auth
		}
		ready := readied[key]
		if ready == nil {
			src := r.src
			src.Snapshotter = a.Snapshotter
			src.Registries = a.registries
			var err error
			ready, err = snapshots.Ensure(ctx, c, a.Namespace, src, a.logger.With(zap.String("route", r.name)))
			if err != nil {
				if a.spawner.Healthy(ctx) != nil {
					return fmt.Errorf("%w: %w", spawner.ErrUnavailable, err)
				}
				return fmt.Errorf("route %s: image %s: %w", r.name, r.image, err)
			}
			readied[key] = ready
		}
		r.setReady(ready, a.spawner, a.refill, a.logger)
		a.logger.Info("image ready",
			zap.String("route", r.name),
			zap.String("image", r.image),
			zap.String("digest", ready.Digest),
			zap.Duration("took", ready.Took))
	}
	a.pruneImages(ctx)
	return nil
}

// pruneImages removes our images that no route of any live config uses:
// neither its reference nor the digest it pinned. Routes of a config being
// replaced still count, so a reload never removes what the old config
// serves; what it released goes at the next start or reload.
func (a *App) pruneImages(ctx context.Context) {
	keep := map[string]bool{}
	routes.Range(func(_, v any) bool {
		r := v.(*route)
		keep[r.image] = true
		keep[snapshots.NormalizedRef(r.image)] = true
		r.mu.Lock()
		if r.fn != nil && r.fn.Image != nil {
			keep[r.fn.Image.Pin] = true
		}
		r.mu.Unlock()
		return true
	})
	if _, err := snapshots.Prune(ctx, a.backend.client, a.Namespace, keep, a.logger); err != nil {
		a.logger.Warn("removing unused images", zap.Error(err))
	}
}

func (a *App) retryPrepare(ctx context.Context) {
	defer close(a.bgDone)
	backoff := 500 * time.Millisecond
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		err := a.prepare(ctx)
		if err == nil {
			a.logger.Info("containerd reachable again; routes ready")
			return
		}
		if !errors.Is(err, spawner.ErrUnavailable) {
			a.logger.Error("preparing routes", zap.Error(err))
		}
		backoff = min(backoff*2, 10*time.Second)
	}
}

// removeStaleFIFODirs removes FIFO directories of previous processes.
func removeStaleFIFODirs(parent, keep string) {
	entries, err := os.ReadDir(parent)
	if err != nil {
		return
	}
	for _, e := range entries {
		if e.Name() != keep {
			_ = os.RemoveAll(filepath.Join(parent, e.Name()))
		}
	}
}

// warnReachableAdmin warns when Caddy runs as root (euid 0) with an admin
// endpoint the host's network namespace reaches: any local user, and any
// function on a network host route, can then reconfigure Caddy — load a
// route that runs any image with any settings.
func (a *App) warnReachableAdmin(euid int) {
	if euid != 0 || !a.admin.reachable() {
		return
	}
	a.logger.Warn("admin endpoint reachable by every local user while Caddy runs as root: they, and any function on a network host route, can reconfigure Caddy; use a unix socket (admin unix//run/caddy-admin.sock) or admin off",
		zap.Stringer("address", a.admin))
}

// checkDirs refuses state directories someone else could change.
func (a *App) checkDirs() error {
	if err := checkOwnDir("run_dir", a.RunDir); err != nil {
		return err
	}
	if a.Managed != nil {
		if err := checkOwnDir("managed root", a.Managed.Root); err != nil {
			return err
		}
		if err := checkOwnDir("managed state", a.Managed.State); err != nil {
			return err
		}
	}
	return nil
}

// Interface guards
var (
	_ caddy.App          = (*App)(nil)
	_ caddy.Provisioner  = (*App)(nil)
	_ caddy.Validator    = (*App)(nil)
	_ caddy.CleanerUpper = (*App)(nil)
)
