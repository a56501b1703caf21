package caddymodule

import (
	"strconv"

	"github.com/dustin/go-humanize"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/caddy-spawn/caddy-spawn/snapshots"
	"github.com/caddy-spawn/caddy-spawn/spawner"
)

func init() {
	httpcaddyfile.RegisterHandlerDirective("spawn", parseHandlerCaddyfile)
	// Like reverse_proxy, spawn is a terminal handler: order it with them
	// so it works outside a route block.
	httpcaddyfile.RegisterDirectiveOrder("spawn", httpcaddyfile.Before, "reverse_proxy")
	httpcaddyfile.RegisterGlobalOption("spawn", parseGlobalOption)
}

func parseHandlerCaddyfile(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	handler := new(Handler)
	err := handler.UnmarshalCaddyfile(h.Dispenser)
	return handler, err
}

// UnmarshalCaddyfile sets up the handler from Caddyfile tokens. Syntax:
//
//	spawn <image> {
//		name          <route-name>
//		image_archive <path>
//		pull_policy   missing|always|never
//		registry_auth <username> <password>
//		command       <program> [<args...>]
//		args          <args...>
//		env           <key> <value>
//		workdir       <dir>
//		timeout       <duration>
//		output        cgi|raw
//		script_name   <path-prefix>
//		memory        <size>
//		pids          <n>
//		cpus          <n>
//		nofile        <n>
//		max_request_body   <size>
//		max_response_bytes <size>
//		network       none|host
//		read_only
//		user          <uid>[:<gid>]
//		pool          <n>
//		max_concurrent <n>
//		queue_timeout <duration>
//	}
//
// Sizes are bytes or humanized ("10MiB", "1.5GB"); for max_request_body and
// max_response_bytes, 0 means unlimited.
func (h *Handler) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // consume directive name
	if !d.NextArg() {
		return d.ArgErr()
	}
	h.Image = d.Val()
	if d.NextArg() {
		return d.ArgErr()
	}
	seen := map[string]bool{}
	for d.NextBlock(0) {
		sub := d.Val()
		if seen[sub] && sub != "env" {
			return d.Errf("duplicate subdirective %q", sub)
		}
		seen[sub] = true
		switch sub {
		case "name":
			if err := oneArg(d, &h.Name); err != nil {
				return err
			}
		case "image_archive":
			if err := oneArg(d, &h.ImageArchive); err != nil {
				return err
			}
		case "pull_policy":
			if err := oneArg(d, &h.PullPolicy); err != nil {
				return err
			}
			if !snapshots.ValidPullPolicy(snapshots.PullPolicy(h.PullPolicy)) || h.PullPolicy == "" {
				return d.Errf("pull_policy: %q must be %q, %q or %q", h.PullPolicy, snapshots.PullMissing, snapshots.PullAlways, snapshots.PullNever)
			}
		case "registry_auth":
			args := d.RemainingArgs()
			if len(args) != 2 {
				return d.ArgErr()
			}
			if args[0] == "" {
				return d.Err("registry_auth: username required")
			}
			h.RegistryAuth = &RegistryAuth{Username: args[0], Password: args[1]}
		case "command":
			h.Command = d.RemainingArgs()
			if len(h.Command) == 0 {
				return d.ArgErr()
			}
		case "args":
			h.Args = d.RemainingArgs()
			if len(h.Args) == 0 {
				return d.ArgErr()
			}
		case "env":
			args := d.RemainingArgs()
			if len(args) != 2 {
				return d.ArgErr()
			}
			if h.Env == nil {
				h.Env = map[string]string{}
			}
			if _, dup := h.Env[args[0]]; dup {
				return d.Errf("duplicate env variable %q", args[0])
			}
			h.Env[args[0]] = args[1]
		case "workdir":
			if err := oneArg(d, &h.WorkDir); err != nil {
				return err
			}
		case "timeout":
			var s string
			if err := oneArg(d, &s); err != nil {
				return err
			}
			dur, err := caddy.ParseDuration(s)
			if err != nil {
				return d.Errf("timeout: bad duration %q: %v", s, err)
			}
			if dur <= 0 {
				return d.Errf("timeout: must be positive, got %q", s)
			}
			h.Timeout = caddy.Duration(dur)
		case "output":
			if err := oneArg(d, &h.Output); err != nil {
				return err
			}
			if h.Output != outputCGI && h.Output != outputRaw {
				return d.Errf("output: %q must be %q or %q", h.Output, outputCGI, outputRaw)
			}
		case "script_name":
			if err := oneArg(d, &h.ScriptName); err != nil {
				return err
			}
		case "memory":
			n, err := sizeArg(d, sub, 1<<50)
			if err != nil {
				return err
			}
			h.Memory = n
		case "pids":
			var s string
			if err := oneArg(d, &s); err != nil {
				return err
			}
			n, err := strconv.ParseInt(s, 10, 64)
			if err != nil || n <= 0 {
				return d.Errf("pids: %q must be a positive integer", s)
			}
			h.Pids = n
		case "cpus":
			var s string
			if err := oneArg(d, &s); err != nil {
				return err
			}
			n, err := strconv.ParseFloat(s, 64)
			if err != nil || !(n >= spawner.MinCPUs && n <= spawner.MaxCPUs) { // NaN fails too
				return d.Errf("cpus: %q must be a number from %g to %d", s, spawner.MinCPUs, spawner.MaxCPUs)
			}
			h.CPUs = n
		case "nofile":
			var s string
			if err := oneArg(d, &s); err != nil {
				return err
			}
			n, err := strconv.ParseInt(s, 10, 64)
			if err != nil || n <= 0 || n > spawner.MaxNofile {
				return d.Errf("nofile: %q must be an integer from 1 to %d", s, spawner.MaxNofile)
			}
			h.Nofile = n
		case "max_request_body":
			n, err := sizeArg(d, sub, 1<<62)
			if err != nil {
				return err
			}
			h.MaxRequestBody = &n
		case "max_response_bytes":
			n, err := sizeArg(d, sub, 1<<62)
			if err != nil {
				return err
			}
			h.MaxResponseBytes = n
		case "network":
			if err := oneArg(d, &h.Network); err != nil {
				return err
			}
			if h.Network != networkNone && h.Network != networkHost {
				return d.Errf("network: %q must be %q or %q", h.Network, networkNone, networkHost)
			}
		case "read_only":
			if d.NextArg() {
				return d.ArgErr()
			}
			h.ReadOnly = true
		case "user":
			if err := oneArg(d, &h.User); err != nil {
				return err
			}
			if _, err := parseUser(h.User); err != nil {
				return d.Errf("user: %v", err)
			}
		case "pool":
			var s string
			if err := oneArg(d, &s); err != nil {
				return err
			}
			n, err := strconv.Atoi(s)
			if err != nil || n < 0 {
				return d.Errf("pool: %q must be a non-negative integer", s)
			}
			h.Pool = &n
		case "max_concurrent":
			var s string
			if err := oneArg(d, &s); err != nil {
				return err
			}
			n, err := strconv.Atoi(s)
			if err != nil || n <= 0 {
				return d.Errf("max_concurrent: %q must be a positive integer", s)
			}
			h.MaxConcurrent = n
		case "queue_timeout":
			var s string
			if err := oneArg(d, &s); err != nil {
				return err
			}
			dur, err := caddy.ParseDuration(s)
			if err != nil || dur <= 0 {
				return d.Errf("queue_timeout: bad duration %q", s)
			}
			h.QueueTimeout = caddy.Duration(dur)
		default:
			return d.Errf("unknown subdirective %q", sub)
		}
	}
	if err := h.validateSource(); err != nil {
		return d.Err(err.Error())
	}
	return nil
}

// parseGlobalOption sets up the spawn app from the global option. Syntax:
//
//	spawn {
//		address     <containerd-socket>
//		namespace   <name>
//		snapshotter <name>
//		runtime     <name>
//		runc_binary <path>
//		fast_path   auto|on|off
//		crun_binary <path>
//		run_dir     <dir>
//		image_wait  <duration>
//		refill_concurrency <n>
//		registry_config <path-to-config.json>
//		insecure_registries <host[:port]>...
//		registry_hosts_dir <dir>
//		managed {
//			binary    <containerd-path>
//			root      <dir>
//			state     <dir>
//			log_level <level>
//		}
//	}
func parseGlobalOption(d *caddyfile.Dispenser, existing any) (any, error) {
	d.Next() // consume option name
	if existing != nil {
		return nil, d.Err("the spawn global option may appear only once")
	}
	app := new(App)
	if d.NextArg() {
		return nil, d.ArgErr()
	}
	seen := map[string]bool{}
	for d.NextBlock(0) {
		sub := d.Val()
		if seen[sub] {
			return nil, d.Errf("duplicate subdirective %q", sub)
		}
		seen[sub] = true
		var err error
		switch sub {
		case "address":
			err = oneArg(d, &app.Address)
		case "namespace":
			err = oneArg(d, &app.Namespace)
		case "snapshotter":
			err = oneArg(d, &app.Snapshotter)
		case "runtime":
			err = oneArg(d, &app.Runtime)
		case "runc_binary":
			err = oneArg(d, &app.RuncBinary)
		case "fast_path":
			err = oneArg(d, &app.FastPath)
		case "crun_binary":
			err = oneArg(d, &app.CrunBinary)
		case "run_dir":
			err = oneArg(d, &app.RunDir)
		case "image_wait":
			var s string
			if err = oneArg(d, &s); err != nil {
				return nil, err
			}
			dur, perr := caddy.ParseDuration(s)
			if perr != nil || dur < 0 {
				return nil, d.Errf("image_wait: bad duration %q", s)
			}
			app.ImageWait = caddy.Duration(dur)
		case "refill_concurrency":
			var s string
			if err = oneArg(d, &s); err != nil {
				return nil, err
			}
			n, perr := strconv.Atoi(s)
			if perr != nil || n <= 0 {
				return nil, d.Errf("refill_concurrency: %q must be a positive integer", s)
			}
			app.RefillConcurrency = n
		case "registry_config":
			err = oneArg(d, &app.RegistryConfig)
		case "registry_hosts_dir":
			err = oneArg(d, &app.RegistryHostsDir)
		case "insecure_registries":
			app.InsecureRegistries = d.RemainingArgs()
			if len(app.InsecureRegistries) == 0 {
				return nil, d.ArgErr()
			}
			for _, h := range app.InsecureRegistries {
				if verr := validRegistryHost(h); verr != nil {
					return nil, d.Errf("insecure_registries: %v", verr)
				}
			}
		case "managed":
			if d.NextArg() {
				return nil, d.ArgErr()
			}
			app.Managed = new(ManagedContainerd)
			mseen := map[string]bool{}
			for d.NextBlock(1) {
				msub := d.Val()
				if mseen[msub] {
					return nil, d.Errf("duplicate managed subdirective %q", msub)
				}
				mseen[msub] = true
				switch msub {
				case "binary":
					err = oneArg(d, &app.Managed.Binary)
				case "root":
					err = oneArg(d, &app.Managed.Root)
				case "state":
					err = oneArg(d, &app.Managed.State)
				case "log_level":
					err = oneArg(d, &app.Managed.LogLevel)
				default:
					return nil, d.Errf("unknown managed subdirective %q", msub)
				}
				if err != nil {
					return nil, err
				}
			}
		default:
			return nil, d.Errf("unknown subdirective %q", sub)
		}
		if err != nil {
			return nil, err
		}
	}
	if app.Address != "" && app.Managed != nil {
		return nil, d.Err("address and managed are mutually exclusive")
	}
	return httpcaddyfile.App{
		Name:  "spawn",
		Value: caddyconfig.JSON(app, nil),
	}, nil
}

// sizeArg reads one size argument of subdirective sub: bytes, or humanized
// ("10MiB", "1.5GB"), at most limit.
func sizeArg(d *caddyfile.Dispenser, sub string, limit uint64) (int64, error) {
	var s string
	if err := oneArg(d, &s); err != nil {
		return 0, err
	}
	n, err := humanize.ParseBytes(s)
	if err != nil {
		return 0, d.Errf("%s: bad size %q: %v", sub, s, err)
	}
	if n > limit {
		return 0, d.Errf("%s: size %q is too large", sub, s)
	}
	return int64(n), nil
}

// oneArg reads exactly one argument into dst.
func oneArg(d *caddyfile.Dispenser, dst *string) error {
	if !d.NextArg() {
		return d.ArgErr()
	}
	*dst = d.Val()
	if d.NextArg() {
		return d.ArgErr()
	}
	return nil
}

// Interface guards
var _ caddyfile.Unmarshaler = (*Handler)(nil)
