package caddymodule

import (
	"math"
	"strconv"

	"github.com/dustin/go-humanize"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/caddy-spawn/caddy-spawn/spawner"
)

func init() {
	httpcaddyfile.RegisterHandlerDirective("spawn", parseHandlerCaddyfile)
	// Like reverse_proxy, spawn is a terminal handler: order it with them
	// so it works outside a route block.
	httpcaddyfile.RegisterDirectiveOrder("spawn", httpcaddyfile.Before, "reverse_proxy")
	httpcaddyfile.RegisterGlobalOption("spawn", parseGlobalOption)
	// spawn_status answers /status, /ready and /drain and passes the rest
	// on. It is ordered after spawn, so it belongs on a site of its own
	// (e.g. :9180), as the README's "Running a fleet" shows.
	httpcaddyfile.RegisterHandlerDirective("spawn_status", parseStatusCaddyfile)
	httpcaddyfile.RegisterDirectiveOrder("spawn_status", httpcaddyfile.Before, "reverse_proxy")
}

func parseStatusCaddyfile(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	s := new(StatusHandler)
	err := s.UnmarshalCaddyfile(h.Dispenser)
	return s, err
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
//		userns        [<host_id>]
//		report_usage
//		pool          <n>
//		pool_min      <n>
//		pool_max      <n>
//		pool_idle_timeout <duration>
//		max_concurrent <n>
//		queue_timeout <duration>
//		async         off|allow|always [{ … }]  (see parseAsync)
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
		parse, ok := handlerSubdirectives[sub]
		if !ok {
			return d.Errf("unknown subdirective %q", sub)
		}
		if err := parse(h, d); err != nil {
			return err
		}
	}
	if err := h.checkSource(); err != nil {
		return d.WrapErr(err)
	}
	return nil
}

// handlerSubdirectives parses each subdirective of spawn into its field.
// Each converts its arguments and hands the value to the field's checker
// (checks.go), which owns the rule and its message.
var handlerSubdirectives = map[string]func(h *Handler, d *caddyfile.Dispenser) error{
	"name":          func(h *Handler, d *caddyfile.Dispenser) error { return stringArg(d, &h.Name, nil) },
	"image_archive": func(h *Handler, d *caddyfile.Dispenser) error { return stringArg(d, &h.ImageArchive, nil) },
	"pull_policy":   func(h *Handler, d *caddyfile.Dispenser) error { return stringArg(d, &h.PullPolicy, checkPullPolicy) },
	"registry_auth": parseRegistryAuth,
	"command":       func(h *Handler, d *caddyfile.Dispenser) error { return listArg(d, &h.Command) },
	"args":          func(h *Handler, d *caddyfile.Dispenser) error { return listArg(d, &h.Args) },
	"env":           parseEnv,
	"workdir":       func(h *Handler, d *caddyfile.Dispenser) error { return stringArg(d, &h.WorkDir, nil) },
	"timeout": func(h *Handler, d *caddyfile.Dispenser) error {
		return durationArg(d, "timeout", &h.Timeout, checkTimeout)
	},
	"output":      func(h *Handler, d *caddyfile.Dispenser) error { return stringArg(d, &h.Output, checkOutput) },
	"script_name": func(h *Handler, d *caddyfile.Dispenser) error { return stringArg(d, &h.ScriptName, checkScriptName) },
	"memory":      func(h *Handler, d *caddyfile.Dispenser) error { return sizeArg(d, "memory", &h.Memory, checkMemory) },
	"disk":        func(h *Handler, d *caddyfile.Dispenser) error { return sizeArg(d, "disk", &h.Disk, checkDisk) },
	"pids":        func(h *Handler, d *caddyfile.Dispenser) error { return intArg(d, "pids", &h.Pids, checkPids) },
	"cpus":        func(h *Handler, d *caddyfile.Dispenser) error { return floatArg(d, "cpus", &h.CPUs, spawner.CheckCPUs) },
	"nofile": func(h *Handler, d *caddyfile.Dispenser) error {
		return intArg(d, "nofile", &h.Nofile, spawner.CheckNofile[int64])
	},
	"max_request_body": func(h *Handler, d *caddyfile.Dispenser) error {
		h.MaxRequestBody = new(int64)
		return sizeArg(d, "max_request_body", h.MaxRequestBody, checkMaxRequestBody)
	},
	"max_response_bytes": func(h *Handler, d *caddyfile.Dispenser) error {
		return sizeArg(d, "max_response_bytes", &h.MaxResponseBytes, checkMaxResponseBytes)
	},
	"network":            func(h *Handler, d *caddyfile.Dispenser) error { return stringArg(d, &h.Network, checkNetwork) },
	"read_only":          func(h *Handler, d *caddyfile.Dispenser) error { return flagArg(d, &h.ReadOnly) },
	"pass_authorization": func(h *Handler, d *caddyfile.Dispenser) error { return flagArg(d, &h.PassAuthorization) },
	"report_usage":       func(h *Handler, d *caddyfile.Dispenser) error { return flagArg(d, &h.ReportUsage) },
	"user":               func(h *Handler, d *caddyfile.Dispenser) error { return stringArg(d, &h.User, checkUser) },
	"userns":             parseUserns,
	"pool": func(h *Handler, d *caddyfile.Dispenser) error {
		h.Pool = new(int)
		return intArg(d, "pool", h.Pool, checkPool)
	},
	"pool_min": func(h *Handler, d *caddyfile.Dispenser) error {
		h.PoolMin = new(int)
		return intArg(d, "pool_min", h.PoolMin, func(n int) error { return checkPoolBound("pool_min", n) })
	},
	"pool_max": func(h *Handler, d *caddyfile.Dispenser) error {
		h.PoolMax = new(int)
		return intArg(d, "pool_max", h.PoolMax, func(n int) error { return checkPoolBound("pool_max", n) })
	},
	"pool_idle_timeout": func(h *Handler, d *caddyfile.Dispenser) error {
		return durationArg(d, "pool_idle_timeout", &h.PoolIdleTimeout, checkPoolIdleTimeout)
	},
	"max_concurrent": func(h *Handler, d *caddyfile.Dispenser) error {
		return intArg(d, "max_concurrent", &h.MaxConcurrent, checkMaxConcurrent)
	},
	"queue_timeout": func(h *Handler, d *caddyfile.Dispenser) error {
		return durationArg(d, "queue_timeout", &h.QueueTimeout, checkQueueTimeout)
	},
}

// parseRegistryAuth parses "registry_auth <username> <password>".
func parseRegistryAuth(h *Handler, d *caddyfile.Dispenser) error {
	args := d.RemainingArgs()
	if len(args) != 2 {
		return d.ArgErr()
	}
	h.RegistryAuth = &RegistryAuth{Username: args[0], Password: args[1]}
	return checked(d, checkRegistryAuth(h.RegistryAuth))
}

// parseEnv parses one "env <key> <value>"; env may repeat, a key may not.
func parseEnv(h *Handler, d *caddyfile.Dispenser) error {
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
	return checked(d, checkEnvName(args[0]))
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
//		state_tmpfs auto|off
//		image_wait  <duration>
//		refill_concurrency <n>
//		max_containers <n>
//		warm_memory <size>
//		registry_config <path-to-config.json>
//		insecure_registries <host[:port]>...
//		registry_hosts_dir <dir>
//		host_network_with_tcp_admin
//		managed {
//			binary    <containerd-path>
//			root      <dir>
//			state     <dir>
//			log_level <level>
//			sync_metadata
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
		parse, ok := appSubdirectives[sub]
		if !ok {
			return nil, d.Errf("unknown subdirective %q", sub)
		}
		if err := parse(app, d); err != nil {
			return nil, err
		}
	}
	if err := checkBackendChoice(app.Address, app.Managed); err != nil {
		return nil, d.WrapErr(err)
	}
	return httpcaddyfile.App{
		Name:  "spawn",
		Value: caddyconfig.JSON(app, nil),
	}, nil
}

// appSubdirectives parses each subdirective of the spawn global option
// into its field, as handlerSubdirectives does for the handler.
var appSubdirectives = map[string]func(a *App, d *caddyfile.Dispenser) error{
	"address":     func(a *App, d *caddyfile.Dispenser) error { return stringArg(d, &a.Address, nil) },
	"namespace":   func(a *App, d *caddyfile.Dispenser) error { return stringArg(d, &a.Namespace, nil) },
	"snapshotter": func(a *App, d *caddyfile.Dispenser) error { return stringArg(d, &a.Snapshotter, nil) },
	"runtime":     func(a *App, d *caddyfile.Dispenser) error { return stringArg(d, &a.Runtime, nil) },
	"runc_binary": func(a *App, d *caddyfile.Dispenser) error { return stringArg(d, &a.RuncBinary, nil) },
	"fast_path":   func(a *App, d *caddyfile.Dispenser) error { return stringArg(d, &a.FastPath, checkFastPath) },
	"crun_binary": func(a *App, d *caddyfile.Dispenser) error { return stringArg(d, &a.CrunBinary, nil) },
	"run_dir":     func(a *App, d *caddyfile.Dispenser) error { return stringArg(d, &a.RunDir, nil) },
	"state_tmpfs": func(a *App, d *caddyfile.Dispenser) error { return stringArg(d, &a.StateTmpfs, checkStateTmpfs) },
	"image_wait": func(a *App, d *caddyfile.Dispenser) error {
		return durationArg(d, "image_wait", &a.ImageWait, checkImageWait)
	},
	"refill_concurrency": func(a *App, d *caddyfile.Dispenser) error {
		return intArg(d, "refill_concurrency", &a.RefillConcurrency, checkRefillConcurrency)
	},
	"warm_memory": func(a *App, d *caddyfile.Dispenser) error {
		return sizeArg(d, "warm_memory", &a.WarmMemory, checkWarmMemory)
	},
	"max_containers": func(a *App, d *caddyfile.Dispenser) error {
		return intArg(d, "max_containers", &a.MaxContainers, checkMaxContainers)
	},
	"registry_config":    func(a *App, d *caddyfile.Dispenser) error { return stringArg(d, &a.RegistryConfig, nil) },
	"registry_hosts_dir": func(a *App, d *caddyfile.Dispenser) error { return stringArg(d, &a.RegistryHostsDir, nil) },
	"insecure_registries": func(a *App, d *caddyfile.Dispenser) error {
		if err := listArg(d, &a.InsecureRegistries); err != nil {
			return err
		}
		return checked(d, checkInsecureRegistries(a.InsecureRegistries))
	},
	"host_network_with_tcp_admin": func(a *App, d *caddyfile.Dispenser) error {
		return flagArg(d, &a.HostNetworkWithTCPAdmin)
	},
	"managed": parseManaged,
}

// parseManaged parses the managed { ... } block of the global option.
func parseManaged(a *App, d *caddyfile.Dispenser) error {
	if d.NextArg() {
		return d.ArgErr()
	}
	a.Managed = new(ManagedContainerd)
	fields := map[string]*string{
		"binary":    &a.Managed.Binary,
		"root":      &a.Managed.Root,
		"state":     &a.Managed.State,
		"log_level": &a.Managed.LogLevel,
	}
	seen := map[string]bool{}
	for d.NextBlock(1) {
		sub := d.Val()
		if seen[sub] {
			return d.Errf("duplicate managed subdirective %q", sub)
		}
		seen[sub] = true
		if sub == "sync_metadata" {
			if err := flagArg(d, &a.Managed.SyncMetadata); err != nil {
				return err
			}
			continue
		}
		dst, ok := fields[sub]
		if !ok {
			return d.Errf("unknown managed subdirective %q", sub)
		}
		if err := stringArg(d, dst, nil); err != nil {
			return err
		}
	}
	return nil
}

// checked attaches the current line to the error of a field's checker.
func checked(d *caddyfile.Dispenser, err error) error {
	if err != nil {
		return d.WrapErr(err)
	}
	return nil
}

// stringArg reads exactly one argument into dst, then checks it with check
// unless that is nil.
func stringArg(d *caddyfile.Dispenser, dst *string, check func(string) error) error {
	if !d.NextArg() {
		return d.ArgErr()
	}
	*dst = d.Val()
	if d.NextArg() {
		return d.ArgErr()
	}
	if check == nil {
		return nil
	}
	return checked(d, check(*dst))
}

// parseUserns reads `userns [<host_id>]`.
func parseUserns(h *Handler, d *caddyfile.Dispenser) error {
	h.Userns = true
	if !d.NextArg() {
		return nil
	}
	d.Prev()
	return intArg(d, "userns", &h.UsernsHostID, checkUsernsHostID)
}

// flagArg sets a subdirective that takes no argument.
func flagArg(d *caddyfile.Dispenser, dst *bool) error {
	if d.NextArg() {
		return d.ArgErr()
	}
	*dst = true
	return nil
}

// listArg reads one or more arguments into dst.
func listArg(d *caddyfile.Dispenser, dst *[]string) error {
	*dst = d.RemainingArgs()
	if len(*dst) == 0 {
		return d.ArgErr()
	}
	return nil
}

// intArg reads one integer argument of subdirective sub into dst and
// checks it.
func intArg[N int | int64](d *caddyfile.Dispenser, sub string, dst *N, check func(N) error) error {
	var s string
	if err := stringArg(d, &s, nil); err != nil {
		return err
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || int64(N(n)) != n {
		return d.Errf("%s: %q is not an integer", sub, s)
	}
	*dst = N(n)
	return checked(d, check(*dst))
}

// floatArg reads one number argument of subdirective sub into dst and
// checks it.
func floatArg(d *caddyfile.Dispenser, sub string, dst *float64, check func(float64) error) error {
	var s string
	if err := stringArg(d, &s, nil); err != nil {
		return err
	}
	n, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return d.Errf("%s: %q is not a number", sub, s)
	}
	*dst = n
	return checked(d, check(n))
}

// durationArg reads one duration argument of subdirective sub into dst
// and checks it.
func durationArg(d *caddyfile.Dispenser, sub string, dst *caddy.Duration, check func(caddy.Duration) error) error {
	var s string
	if err := stringArg(d, &s, nil); err != nil {
		return err
	}
	dur, err := caddy.ParseDuration(s)
	if err != nil {
		return d.Errf("%s: bad duration %q: %v", sub, s, err)
	}
	*dst = caddy.Duration(dur)
	return checked(d, check(*dst))
}

// sizeArg reads one size argument of subdirective sub into dst — bytes, or
// humanized ("10MiB", "1.5GB") — and checks it.
func sizeArg(d *caddyfile.Dispenser, sub string, dst *int64, check func(int64) error) error {
	var s string
	if err := stringArg(d, &s, nil); err != nil {
		return err
	}
	n, err := humanize.ParseBytes(s)
	if err != nil {
		return d.Errf("%s: bad size %q: %v", sub, s, err)
	}
	if n > math.MaxInt64 {
		return d.Errf("%s: size %q is too large", sub, s)
	}
	*dst = int64(n)
	return checked(d, check(*dst))
}

// Interface guards
var _ caddyfile.Unmarshaler = (*Handler)(nil)
