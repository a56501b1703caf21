package caddymodule

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/dustin/go-humanize"
	"github.com/spf13/cobra"
	"go.uber.org/zap"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/namespaces"

	"github.com/caddyserver/caddy/v2"
	caddycmd "github.com/caddyserver/caddy/v2/cmd"

	"github.com/caddy-spawn/caddy-spawn/snapshots"
	"github.com/caddy-spawn/caddy-spawn/spawner"
)

func init() {
	caddycmd.RegisterCommand(caddycmd.Command{
		Name:  "spawn",
		Usage: "images|ps|import <archive>|drain [--address <socket>] [--namespace <name>]",
		Short: "Shows and manages caddy-spawn's images and containers in containerd",
		Long: `
Operator commands of caddy-spawn. They talk to containerd directly:
--address is its socket (default: the managed containerd's socket for the
default run_dir and root), --namespace the spawn app's namespace (default:
caddy-spawn).

  images   our images: name, digest, size, and the routes whose containers
           use them now
  ps       our containers: route, state (pooled: frozen, waiting for a
           request; running: serving or warming up; or the task's paused,
           created, stopped), age
  import   imports a docker/OCI archive into the namespace, labelled as ours
           (routes with pull_policy missing or never then find it)
  drain    makes a running node drain (spawn_status POST /drain at
           --status, default http://127.0.0.1:9180): it refuses new spawn
           requests with 503 and Spawn-Refused, and the command returns
           when none is in flight, or fails after --timeout (default 60s);
           a Kubernetes preStop hook
`,
		CobraFunc: func(cmd *cobra.Command) {
			cmd.PersistentFlags().String("address", "", "containerd socket (default: the managed containerd's)")
			cmd.PersistentFlags().String("namespace", defaultNamespace, "containerd namespace of the spawn app")
			cmd.AddCommand(&cobra.Command{
				Use:   "images",
				Short: "Lists caddy-spawn's images",
				Args:  cobra.NoArgs,
				RunE: func(c *cobra.Command, _ []string) error {
					return withClient(c, func(ctx context.Context, cl *client.Client, ns string) error {
						return listImages(ctx, cl, ns, c.OutOrStdout())
					})
				},
			})
			cmd.AddCommand(&cobra.Command{
				Use:   "ps",
				Short: "Lists caddy-spawn's containers",
				Args:  cobra.NoArgs,
				RunE: func(c *cobra.Command, _ []string) error {
					return withClient(c, func(ctx context.Context, cl *client.Client, ns string) error {
						return listContainers(ctx, cl, ns, c.OutOrStdout(), time.Now())
					})
				},
			})
			drain := &cobra.Command{
				Use:   "drain",
				Short: "Makes a running node refuse new spawn requests and waits for those in flight",
				Args:  cobra.NoArgs,
				RunE: func(c *cobra.Command, _ []string) error {
					status, _ := c.Flags().GetString("status")
					timeout, _ := c.Flags().GetDuration("timeout")
					return drainNode(status, timeout, c.OutOrStdout())
				},
			}
			drain.Flags().String("status", "http://127.0.0.1:9180", "the node's spawn_status site")
			drain.Flags().Duration("timeout", defaultDrainTimeout, "how long to wait for requests in flight")
			cmd.AddCommand(drain)
			cmd.AddCommand(&cobra.Command{
				Use:   "import <archive> <image-ref>",
				Short: "Imports an image archive holding <image-ref> and unpacks it",
				Args:  cobra.ExactArgs(2),
				RunE: func(c *cobra.Command, args []string) error {
					return withClient(c, func(ctx context.Context, cl *client.Client, ns string) error {
						ready, err := snapshots.Ensure(ctx, cl, ns, snapshots.Source{
							Ref: args[1], Archive: args[0], Snapshotter: defaultSnapshotter, Pull: snapshots.PullNever,
						}, zap.NewNop())
						if err != nil {
							return err
						}
						fmt.Fprintf(c.OutOrStdout(), "%s\t%s\t%s\n", args[1], ready.Digest, ready.Took.Round(time.Millisecond))
						return nil
					})
				},
			})
		},
	})
}

// defaultManagedSocket is the socket of the managed containerd an app with
// default run_dir and managed root starts (see App.Provision).
func defaultManagedSocket() string {
	root := filepath.Join(caddy.AppDataDir(), "spawn", "containerd")
	return filepath.Join(managedStateDir(defaultRunDir, root), "containerd.sock")
}

// managedStateDir is the default state directory of a managed containerd
// with root root.
func managedStateDir(runDir, root string) string {
	sum := sha256.Sum256([]byte(root))
	return filepath.Join(runDir, "containerd-"+hex.EncodeToString(sum[:4]))
}

func withClient(c *cobra.Command, f func(context.Context, *client.Client, string) error) error {
	addr, _ := c.Flags().GetString("address")
	ns, _ := c.Flags().GetString("namespace")
	if addr == "" {
		addr = defaultManagedSocket()
	}
	cl, err := client.New(addr, client.WithDefaultNamespace(ns), client.WithTimeout(5*time.Second))
	if err != nil {
		return fmt.Errorf("connecting to containerd at %s: %w", addr, err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	return f(namespaces.WithNamespace(ctx, ns), cl, ns)
}

// listImages prints our images and the routes whose containers use them.
func listImages(ctx context.Context, cl *client.Client, ns string, w io.Writer) error {
	imgs, err := cl.ListImages(ctx, `labels."`+spawner.LabelManaged+`"==true`)
	if err != nil {
		return fmt.Errorf("listing images in %s: %w", ns, err)
	}
	ctrs, err := cl.Containers(ctx, `labels."`+spawner.LabelManaged+`"==true`)
	if err != nil {
		return fmt.Errorf("listing containers in %s: %w", ns, err)
	}
	routesOf := map[string]map[string]bool{} // digest → routes
	for _, c := range ctrs {
		labels, err := c.Labels(ctx)
		if err != nil {
			continue // removed meanwhile
		}
		d := labels[spawner.LabelImage]
		if routesOf[d] == nil {
			routesOf[d] = map[string]bool{}
		}
		routesOf[d][labels[spawner.LabelRoute]] = true
	}
	sort.Slice(imgs, func(i, j int) bool { return imgs[i].Name() < imgs[j].Name() })
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "IMAGE\tDIGEST\tSIZE\tROUTES")
	for _, img := range imgs {
		d := img.Target().Digest.String()
		size := "-"
		if n, err := img.Size(ctx); err == nil {
			size = humanize.IBytes(uint64(n))
		}
		var rs []string
		for r := range routesOf[d] {
			rs = append(rs, r)
		}
		sort.Strings(rs)
		routes := strings.Join(rs, ",")
		if routes == "" {
			routes = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", img.Name(), d, size, routes)
	}
	return tw.Flush()
}

// listContainers prints our containers: route, task state and age.
func listContainers(ctx context.Context, cl *client.Client, ns string, w io.Writer, now time.Time) error {
	ctrs, err := cl.Containers(ctx, `labels."`+spawner.LabelManaged+`"==true`)
	if err != nil {
		return fmt.Errorf("listing containers in %s: %w", ns, err)
	}
	type row struct{ id, route, state, age string }
	var rows []row
	for _, c := range ctrs {
		info, err := c.Info(ctx, client.WithoutRefreshedMetadata)
		if err != nil {
			continue // removed meanwhile
		}
		state := "no task"
		if task, err := c.Task(ctx, nil); err == nil {
			if st, err := task.Status(ctx); err == nil {
				state = string(st.Status)
			}
		}
		// The pool freezes idle containers' cgroups itself; the shim
		// still reports them running.
		if state == string(client.Running) && frozen(ctx, c, ns) {
			state = "pooled"
		}
		rows = append(rows, row{
			id: c.ID(), route: info.Labels[spawner.LabelRoute], state: state,
			age: now.Sub(info.CreatedAt).Round(time.Second).String(),
		})
	}
	sort.Slice(rows, func(i, j int) bool { return rows[i].id < rows[j].id })
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "CONTAINER\tROUTE\tSTATE\tAGE")
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", r.id, r.route, r.state, r.age)
	}
	return tw.Flush()
}

// frozen reports whether c's cgroup is frozen (cgroup v2 cgroup.freeze or
// v1 freezer.state), as the pool keeps idle containers.
func frozen(ctx context.Context, c client.Container, ns string) bool {
	cg := "/" + ns + "/" + c.ID() // containerd's default
	if spec, err := c.Spec(ctx); err == nil && spec.Linux != nil && spec.Linux.CgroupsPath != "" {
		cg = spec.Linux.CgroupsPath
	}
	if b, err := os.ReadFile(filepath.Join("/sys/fs/cgroup", cg, "cgroup.freeze")); err == nil {
		return strings.TrimSpace(string(b)) == "1"
	}
	b, err := os.ReadFile(filepath.Join("/sys/fs/cgroup/freezer", cg, "freezer.state"))
	return err == nil && strings.TrimSpace(string(b)) == "FROZEN"
}

// drainNode POSTs /drain to the node's status site and waits for its
// answer: nil once no spawn request is in flight there.
func drainNode(status string, timeout time.Duration, out io.Writer) error {
	u := strings.TrimRight(status, "/") + "/drain?timeout=" + timeout.String()
	cl := &http.Client{Timeout: timeout + 10*time.Second, Transport: &http.Transport{Proxy: nil}}
	resp, err := cl.Post(u, "", nil)
	if err != nil {
		return fmt.Errorf("draining %s: %w", status, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	switch resp.StatusCode {
	case http.StatusOK:
		fmt.Fprintf(out, "drained: %s", body)
		return nil
	case http.StatusServiceUnavailable:
		return fmt.Errorf("draining %s: requests still in flight after %s: %s", status, timeout, strings.TrimSpace(string(body)))
	}
	return fmt.Errorf("draining %s: status %d: %s", status, resp.StatusCode, strings.TrimSpace(string(body)))
}
