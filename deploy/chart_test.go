//go:build chart

// Package deploy_test renders the Helm chart in deploy/caddy-spawn with the
// pinned helm (SPAWN_HELM; `make test-chart` builds it) and decodes every
// rendered object strictly into k8s.io/api types: a field Kubernetes does
// not know, a misspelt or duplicated key, or a kind the chart should not
// make fails the test. It then checks the invariants a fleet needs: hostPaths
// at the same path inside and outside the node pod, the containerd socket as
// a hostPath of type Socket, selectors that match their pods, probes and the
// preStop drain on the node status site of the contract, a grace period no
// shorter than the longest route timeout, the front's spawn_warm policy over
// the nodes' headless Service, and privileges only on the node.
//
// The build tag is the opt-in, as `integration` is for the containerd tests:
// TestMain fails, not skips, without helm.
package deploy_test

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"
)

const (
	chartDir  = "caddy-spawn"
	release   = "fleet"
	namespace = "spawn-test"

	// The node/front contract.
	statusPort   = 9180
	nodePort     = 8080
	readyPath    = "/ready"
	statusPath   = "/status"
	nodeName     = release + "-caddy-spawn-node"
	frontName    = release + "-caddy-spawn-front"
	headlessFQDN = nodeName + "." + namespace + ".svc.cluster.local"
)

var helm string

func TestMain(m *testing.M) {
	helm = os.Getenv("SPAWN_HELM")
	if helm == "" {
		fmt.Fprintln(os.Stderr, "chart tests need SPAWN_HELM, the pinned helm binary (make test-chart builds it)")
		os.Exit(1)
	}
	if _, err := exec.LookPath(helm); err != nil {
		fmt.Fprintf(os.Stderr, "chart tests: helm at SPAWN_HELM=%s: %v\n", helm, err)
		os.Exit(1)
	}
	os.Exit(m.Run())
}

// rendered is the chart's output, decoded.
type rendered struct {
	configMaps  map[string]*corev1.ConfigMap
	services    map[string]*corev1.Service
	daemonSets  map[string]*appsv1.DaemonSet
	deployments map[string]*appsv1.Deployment
}

// render runs helm template with values (YAML) and returns its output and
// error output.
func render(t *testing.T, values string) (string, string, error) {
	t.Helper()
	// Not in t.TempDir(): helm splits --values at commas, which subtest
	// names have.
	dir, err := os.MkdirTemp("", "chart-values-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	f := filepath.Join(dir, "values.yaml")
	if err := os.WriteFile(f, []byte(values), 0o600); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(helm, "template", release, chartDir, "--namespace", namespace, "--values", f)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err = cmd.Run()
	return stdout.String(), stderr.String(), err
}

// mustRender renders values and decodes every object strictly.
func mustRender(t *testing.T, values string) *rendered {
	t.Helper()
	out, errOut, err := render(t, values)
	if err != nil {
		t.Fatalf("helm template: %v\n%s", err, errOut)
	}
	return decode(t, out)
}

// decode splits helm's output into documents and decodes each strictly
// into the k8s.io/api type of its kind.
func decode(t *testing.T, out string) *rendered {
	t.Helper()
	r, err := decodeAll(out)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func decodeAll(out string) (*rendered, error) {
	r := &rendered{
		configMaps:  map[string]*corev1.ConfigMap{},
		services:    map[string]*corev1.Service{},
		daemonSets:  map[string]*appsv1.DaemonSet{},
		deployments: map[string]*appsv1.Deployment{},
	}
	n := 0
	for _, doc := range regexp.MustCompile(`(?m)^---\s*$`).Split(out, -1) {
		if strings.TrimSpace(stripComments(doc)) == "" {
			continue
		}
		if err := r.add(doc); err != nil {
			return nil, fmt.Errorf("%w\n%s", err, doc)
		}
		n++
	}
	if n == 0 {
		return nil, fmt.Errorf("helm template rendered no object:\n%s", out)
	}
	return r, nil
}

// add decodes one document strictly and files it under its kind and name.
func (r *rendered) add(doc string) error {
	// Duplicate YAML keys are an error here; sigs.k8s.io/json then matches
	// field names case-sensitively and reports unknown and duplicate
	// fields, as the API server's strict decoding does.
	js, err := yaml.YAMLToJSONStrict([]byte(doc))
	if err != nil {
		return fmt.Errorf("document is not strict YAML: %w", err)
	}
	var tm metav1.TypeMeta
	if err := kjson.UnmarshalCaseSensitivePreserveInts(js, &tm); err != nil {
		return fmt.Errorf("reading kind: %w", err)
	}
	switch tm.APIVersion + "/" + tm.Kind {
	case "v1/ConfigMap":
		return file(r.configMaps, new(corev1.ConfigMap), js)
	case "v1/Service":
		return file(r.services, new(corev1.Service), js)
	case "apps/v1/DaemonSet":
		return file(r.daemonSets, new(appsv1.DaemonSet), js)
	case "apps/v1/Deployment":
		return file(r.deployments, new(appsv1.Deployment), js)
	}
	return fmt.Errorf("unexpected object %s %s in the chart's output", tm.APIVersion, tm.Kind)
}

// file decodes js strictly into o and files it under its name.
func file[T interface{ GetName() string }](m map[string]T, o T, js []byte) error {
	strict, err := kjson.UnmarshalStrict(js, o)
	if err != nil {
		return fmt.Errorf("decoding %T: %w", o, err)
	}
	if len(strict) > 0 {
		return fmt.Errorf("decoding %T strictly: %v", o, strict)
	}
	if o.GetName() == "" {
		return fmt.Errorf("%T without a name", o)
	}
	if _, dup := m[o.GetName()]; dup {
		return fmt.Errorf("two %T named %s", o, o.GetName())
	}
	m[o.GetName()] = o
	return nil
}

// TestDecodeIsStrict checks the decoder itself: each of these documents
// must be refused, or the chart's checks above prove nothing.
func TestDecodeIsStrict(t *testing.T) {
	const svc = "apiVersion: v1\nkind: Service\nmetadata:\n  name: s\n"
	for _, tc := range []struct{ name, doc, want string }{
		{"unknown field", svc + "spec:\n  clusterIp: None\n", "unknown field"},
		{"field of the wrong case", svc + "spec:\n  ClusterIP: None\n", "unknown field"},
		{"duplicate key", svc + "spec:\n  clusterIP: None\n  clusterIP: None\n", "already set"},
		{"wrong type", svc + "spec:\n  ports: 80\n", "cannot unmarshal"},
		{"unexpected kind", "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n", "unexpected object v1 Pod"},
		{"no name", "apiVersion: v1\nkind: ConfigMap\nmetadata: {}\n", "without a name"},
		{"nothing", "# only a comment\n", "rendered no object"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := decodeAll("---\n" + tc.doc)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("decoding\n%s\ngave %v, want an error saying %q", tc.doc, err, tc.want)
			}
		})
	}
	if _, err := decodeAll("---\n" + svc + "spec:\n  clusterIP: None\n"); err != nil {
		t.Fatalf("a valid Service is refused: %v", err)
	}
}

func stripComments(doc string) string {
	var b strings.Builder
	for l := range strings.SplitSeq(doc, "\n") {
		if !strings.HasPrefix(strings.TrimSpace(l), "#") {
			b.WriteString(l + "\n")
		}
	}
	return b.String()
}

// route is what a test case expects of one route in the node Caddyfile.
type route struct {
	name    string
	path    string
	timeout int // seconds
}

// fleet is what a test case expects of the whole rendering.
type fleet struct {
	routes  []route
	socket  string // containerd.address; "" for managed mode
	fast    bool   // fast-path mounts of the node's containerd (socket mode)
	front   bool
	runDir  string // the spawn run_dir in socket mode
	hostDir string
}

func TestRender(t *testing.T) {
	hello := []route{{name: "hello", path: "/hello", timeout: 60}}
	three := []route{
		{name: "thumb", path: "/thumb/*", timeout: 30},
		{name: "report-pdf", path: "/report", timeout: 300},
		{name: "echo", path: "/echo", timeout: 5},
	}
	const threeValues = `
routes:
  - name: thumb
    path: /thumb/*
    image: registry.example/thumb:1.4
    pool: 4
    timeoutSeconds: 30
    limits: {memory: 128MiB, cpus: "0.5", pids: 64, disk: 32MiB}
    env: {MODE: fast, QUOTE: 'say "hi"'}
  - name: report-pdf
    path: /report
    image: registry.example/report@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
    pool: 0
    timeoutSeconds: 300
    command: ["/bin/report", "--format", "pdf"]
    maxConcurrent: 2
    queueTimeoutSeconds: 3
    extra: [read_only, "user 65534"]
  - name: echo
    path: /echo
    image: registry.example/echo:1
    timeoutSeconds: 5
    output: raw
`
	for _, tc := range []struct {
		name   string
		values string
		want   fleet
	}{
		{
			name:   "defaults",
			values: "{}\n",
			want:   fleet{routes: hello, front: true, hostDir: "/var/lib/caddy-spawn"},
		},
		{
			name: "node socket",
			values: `
containerd:
  address: /run/containerd/containerd.sock
node:
  runDir: /run/spawn-fleet
  hostDir: /srv/caddy-spawn
`,
			want: fleet{
				routes: hello, front: true, socket: "/run/containerd/containerd.sock", fast: true,
				runDir: "/run/spawn-fleet", hostDir: "/srv/caddy-spawn",
			},
		},
		{
			name: "node socket without fast path",
			values: `
containerd:
  address: /var/run/k3s/containerd/containerd.sock
spawn:
  fastPath: "off"
front:
  enabled: false
`,
			want: fleet{
				routes: hello, socket: "/var/run/k3s/containerd/containerd.sock",
				runDir: "/run/caddy-spawn", hostDir: "/var/lib/caddy-spawn",
			},
		},
		{
			name:   "custom routes",
			values: threeValues,
			want:   fleet{routes: three, front: true, hostDir: "/var/lib/caddy-spawn"},
		},
		{
			name:   "custom routes, explicit grace period",
			values: threeValues + "node:\n  drainTimeoutSeconds: 320\n  terminationGracePeriodSeconds: 400\n",
			want:   fleet{routes: three, front: true, hostDir: "/var/lib/caddy-spawn"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := mustRender(t, tc.values)
			checkFleet(t, r, tc.want)
		})
	}
}

// TestRenderExplicitGrace checks that set values are used as set.
func TestRenderExplicitGrace(t *testing.T) {
	r := mustRender(t, "node:\n  drainTimeoutSeconds: 70\n  terminationGracePeriodSeconds: 200\n")
	ds := r.daemonSets[nodeName]
	if ds == nil {
		t.Fatalf("no DaemonSet %s", nodeName)
	}
	if g := ds.Spec.Template.Spec.TerminationGracePeriodSeconds; g == nil || *g != 200 {
		t.Errorf("terminationGracePeriodSeconds = %v, want 200 as set", g)
	}
	if d := drainTimeout(t, nodeContainer(t, ds)); d != 70 {
		t.Errorf("drain --timeout = %ds, want 70s as set", d)
	}
}

func TestRenderRefuses(t *testing.T) {
	for _, tc := range []struct {
		name, values, want string
	}{
		{
			name:   "grace period shorter than drain + stop",
			values: "node:\n  terminationGracePeriodSeconds: 30\n",
			want:   "node.terminationGracePeriodSeconds: 30 is shorter than the drain timeout (65 s, from the longest route timeoutSeconds) + node.stopMarginSeconds (30 s) = 95",
		},
		{
			name: "drain shorter than the longest route timeout",
			values: `
node: {drainTimeoutSeconds: 100}
routes:
  - {name: a, path: /a, image: r/a:1, timeoutSeconds: 20}
  - {name: b, path: /b, image: r/b:1, timeoutSeconds: 120}
`,
			want: "node.drainTimeoutSeconds: 100 is shorter than the longest route timeoutSeconds (120)",
		},
		{
			name:   "timeout not in seconds",
			values: "routes:\n  - {name: a, path: /a, image: r/a:1, timeoutSeconds: 1m}\n",
			want:   "routes[0].timeoutSeconds: 1m must be a whole number of seconds",
		},
		{
			name:   "timeout missing",
			values: "routes:\n  - {name: a, path: /a, image: r/a:1}\n",
			want:   "routes[0].timeoutSeconds: needed",
		},
		{
			name:   "bad route name",
			values: "routes:\n  - {name: Thumb_1, path: /a, image: r/a:1, timeoutSeconds: 5}\n",
			want:   `routes[0].name: "Thumb_1" must be 1-40 lowercase letters and digits`,
		},
		{
			name: "duplicate route name",
			values: `
routes:
  - {name: a, path: /a, image: r/a:1, timeoutSeconds: 5}
  - {name: a, path: /b, image: r/b:1, timeoutSeconds: 5}
`,
			want: `routes[1].name: "a" is used by another route`,
		},
		{
			name:   "unknown route field",
			values: "routes:\n  - {name: a, path: /a, image: r/a:1, timeoutSeconds: 5, memory: 1GiB}\n",
			want:   "routes[0].memory: unknown route field",
		},
		{
			name:   "no routes",
			values: "routes: []\n",
			want:   "routes: at least one route is needed",
		},
		{
			name:   "namespace of kubernetes",
			values: "spawn: {namespace: k8s.io}\n",
			want:   `spawn.namespace: "k8s.io" is not ours`,
		},
		{
			name:   "relative socket",
			values: "containerd: {address: run/containerd.sock}\n",
			want:   `containerd.address: "run/containerd.sock" must be the absolute path`,
		},
		{
			name:   "same ports",
			values: "node: {port: 9180}\n",
			want:   "node.statusPort: 9180 is node.port too",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, errOut, err := render(t, tc.values)
			if err == nil {
				t.Fatalf("helm template succeeded, want a failure saying %q; rendered:\n%s", tc.want, out)
			}
			if !strings.Contains(errOut, tc.want) {
				t.Fatalf("helm template failed with\n%s\nwant it to say %q", errOut, tc.want)
			}
		})
	}
}

// checkFleet checks every invariant of a rendering against what the case
// set.
func checkFleet(t *testing.T, r *rendered, want fleet) {
	t.Helper()
	ds := r.daemonSets[nodeName]
	if ds == nil || len(r.daemonSets) != 1 {
		t.Fatalf("want one DaemonSet %s, got %v", nodeName, keys(r.daemonSets))
	}
	pod := ds.Spec.Template.Spec
	checkSelector(t, "DaemonSet "+ds.Name, ds.Spec.Selector, ds.Spec.Template.Labels)

	nodeCM := r.configMaps[nodeName]
	if nodeCM == nil {
		t.Fatalf("no ConfigMap %s for the node Caddyfile", nodeName)
	}
	nodeCaddyfile := nodeCM.Data["Caddyfile"]
	checkConfigVolume(t, pod, nodeName)

	// The routes and the timeouts the grace period must cover.
	longest := 0
	for _, rt := range want.routes {
		block := routeBlock(t, nodeCaddyfile, rt.path)
		if !regexp.MustCompile(`(?m)^\s*name ` + regexp.QuoteMeta(rt.name) + `$`).MatchString(block) {
			t.Errorf("route %s: its spawn block has no `name %s`:\n%s", rt.path, rt.name, block)
		}
		if !regexp.MustCompile(`(?m)^\s*timeout ` + strconv.Itoa(rt.timeout) + `s$`).MatchString(block) {
			t.Errorf("route %s: its spawn block has no `timeout %ds`:\n%s", rt.path, rt.timeout, block)
		}
		longest = max(longest, rt.timeout)
	}
	if n := strings.Count(nodeCaddyfile, "\n\tspawn /"); n != len(want.routes) {
		t.Errorf("node Caddyfile has %d spawn routes, want %d:\n%s", n, len(want.routes), nodeCaddyfile)
	}
	site := siteBlock(t, nodeCaddyfile, statusPort)
	if !regexp.MustCompile(`(?m)^\s*spawn_status$`).MatchString(site) {
		t.Errorf("status site :%d has no spawn_status handler:\n%s", statusPort, site)
	}
	siteBlock(t, nodeCaddyfile, nodePort)

	// The node container: privileged, probes, preStop, grace.
	c := nodeContainer(t, ds)
	if c.SecurityContext == nil || c.SecurityContext.Privileged == nil || !*c.SecurityContext.Privileged {
		t.Errorf("node container is not privileged; it runs containers")
	}
	checkProbe(t, "node readiness", c, c.ReadinessProbe, statusPort, readyPath)
	checkProbe(t, "node liveness", c, c.LivenessProbe, statusPort, statusPath)
	checkPort(t, c, "http", nodePort)
	drain := drainTimeout(t, c)
	if drain < longest {
		t.Errorf("preStop drain --timeout %ds is shorter than the longest route timeout %ds", drain, longest)
	}
	grace := pod.TerminationGracePeriodSeconds
	if grace == nil {
		t.Fatalf("node pod has no terminationGracePeriodSeconds (the default 30 s is shorter than a route timeout)")
	}
	if *grace < int64(longest) || *grace <= int64(drain) {
		t.Errorf("terminationGracePeriodSeconds %d: want ≥ the longest route timeout (%d s) and > the drain timeout (%d s)", *grace, longest, drain)
	}
	if g := caddyGlobal(t, nodeCaddyfile, "grace_period"); g != strconv.Itoa(drain)+"s" {
		t.Errorf("node Caddyfile grace_period = %q, want the drain timeout %ds", g, drain)
	}

	// Every hostPath is mounted at its own path: containerd on the host
	// (socket mode) and the shims see the paths Caddy hands them.
	mounts := mountsByVolume(c)
	hostPaths := map[string]*corev1.HostPathVolumeSource{} // path → source
	for _, v := range pod.Volumes {
		if v.HostPath == nil {
			continue
		}
		m, ok := mounts[v.Name]
		if !ok {
			t.Errorf("hostPath volume %s (%s) is not mounted", v.Name, v.HostPath.Path)
			continue
		}
		if m.MountPath != v.HostPath.Path {
			t.Errorf("hostPath %s is mounted at %s: it must be at the same path inside the pod", v.HostPath.Path, m.MountPath)
		}
		if v.HostPath.Type == nil {
			t.Errorf("hostPath %s has no type", v.HostPath.Path)
		}
		hostPaths[v.HostPath.Path] = v.HostPath
	}
	if hp := hostPaths[want.hostDir]; hp == nil || *hp.Type != corev1.HostPathDirectoryOrCreate {
		t.Errorf("no hostPath DirectoryOrCreate for node.hostDir %s: %v", want.hostDir, keys(hostPaths))
	}
	if env := envValue(c, "XDG_DATA_HOME"); !strings.HasPrefix(env, want.hostDir+"/") {
		t.Errorf("XDG_DATA_HOME %q is not under the hostPath %s (the init binary is bind-mounted from it)", env, want.hostDir)
	}
	runDir := caddySpawnOption(t, nodeCaddyfile, "run_dir")
	sockets := 0
	for _, hp := range hostPaths {
		if *hp.Type == corev1.HostPathSocket {
			sockets++
		}
	}
	if want.socket == "" {
		if sockets != 0 || caddySpawnOption(t, nodeCaddyfile, "address") != "" {
			t.Errorf("managed mode: a containerd socket is mounted or configured")
		}
		if !regexp.MustCompile(`(?m)^\s*root ` + regexp.QuoteMeta(want.hostDir) + `/`).MatchString(nodeCaddyfile) {
			t.Errorf("managed containerd's root is not under node.hostDir %s:\n%s", want.hostDir, nodeCaddyfile)
		}
		if !isEmptyDirMemoryMount(pod, c, runDir) {
			t.Errorf("managed mode: run_dir %s is not on a memory-backed emptyDir", runDir)
		}
	} else {
		if hp := hostPaths[want.socket]; hp == nil || *hp.Type != corev1.HostPathSocket {
			t.Errorf("socket mode: %s is not a hostPath of type Socket; hostPaths: %v", want.socket, keys(hostPaths))
		}
		if sockets != 1 {
			t.Errorf("socket mode: %d hostPaths of type Socket, want 1", sockets)
		}
		if a := caddySpawnOption(t, nodeCaddyfile, "address"); a != want.socket {
			t.Errorf("socket mode: spawn address = %q, want %q", a, want.socket)
		}
		if runDir != want.runDir {
			t.Errorf("socket mode: run_dir = %q, want %q", runDir, want.runDir)
		}
		if hp := hostPaths[runDir]; hp == nil {
			t.Errorf("socket mode: run_dir %s is not a same-path hostPath; hostPaths: %v", runDir, keys(hostPaths))
		}
		for _, dir := range []string{"/var/lib/containerd", "/run/containerd"} {
			if got := hostPaths[dir] != nil; got != want.fast {
				t.Errorf("socket mode, fast path %v: hostPath %s mounted = %v", want.fast, dir, got)
			}
		}
		if strings.Contains(nodeCaddyfile, "managed {") {
			t.Errorf("socket mode: the node Caddyfile still configures a managed containerd")
		}
	}

	// The nodes' headless Service, selecting the node pods.
	svc := r.services[nodeName]
	if svc == nil {
		t.Fatalf("no Service %s for the nodes", nodeName)
	}
	if svc.Spec.ClusterIP != corev1.ClusterIPNone {
		t.Errorf("node Service clusterIP = %q, want None (headless, for dynamic a)", svc.Spec.ClusterIP)
	}
	if svc.Spec.PublishNotReadyAddresses {
		t.Errorf("node Service publishes not-ready nodes: the front would send to nodes still warming or draining")
	}
	checkServiceSelects(t, svc, ds.Spec.Template.Labels, c, nodePort)

	// Privileges only where intended: nothing but the node container.
	for _, d := range r.deployments {
		for _, fc := range d.Spec.Template.Spec.Containers {
			checkUnprivileged(t, d.Name, d.Spec.Template.Spec, fc)
		}
	}

	if !want.front {
		if len(r.deployments) != 0 || r.services[frontName] != nil || r.configMaps[frontName] != nil {
			t.Errorf("front disabled, yet rendered: deployments %v", keys(r.deployments))
		}
		return
	}
	front := r.deployments[frontName]
	if front == nil || len(r.deployments) != 1 {
		t.Fatalf("want one Deployment %s, got %v", frontName, keys(r.deployments))
	}
	checkSelector(t, "Deployment "+front.Name, front.Spec.Selector, front.Spec.Template.Labels)
	if labels.SelectorFromSet(ds.Spec.Selector.MatchLabels).Matches(labels.Set(front.Spec.Template.Labels)) {
		t.Errorf("the node DaemonSet's selector also matches the front's pods")
	}
	frontCM := r.configMaps[frontName]
	if frontCM == nil {
		t.Fatalf("no ConfigMap %s for the front Caddyfile", frontName)
	}
	checkConfigVolume(t, front.Spec.Template.Spec, frontName)
	fcf := frontCM.Data["Caddyfile"]
	for _, re := range []string{
		`(?m)^\s*lb_policy spawn_warm( \{)?$`,
		`(?m)^\s*dynamic a \{$`,
		`(?m)^\s*name ` + regexp.QuoteMeta(headlessFQDN) + `$`,
		`(?m)^\s*port ` + strconv.Itoa(nodePort) + `$`,
		"(?m)^\\s*expression `\\{rp.status_code\\} == 503 && \\{rp.header.Spawn-Refused\\}",
	} {
		if !regexp.MustCompile(re).MatchString(fcf) {
			t.Errorf("front Caddyfile lacks %s:\n%s", re, fcf)
		}
	}
	fsvc := r.services[frontName]
	if fsvc == nil {
		t.Fatalf("no Service %s for the front", frontName)
	}
	fc := front.Spec.Template.Spec.Containers[0]
	checkServiceSelects(t, fsvc, front.Spec.Template.Labels, &fc, 8080)
	if labels.SelectorFromSet(fsvc.Spec.Selector).Matches(labels.Set(ds.Spec.Template.Labels)) {
		t.Errorf("the front Service also selects the node pods")
	}
}

func checkSelector(t *testing.T, what string, sel *metav1.LabelSelector, podLabels map[string]string) {
	t.Helper()
	if sel == nil || len(sel.MatchLabels)+len(sel.MatchExpressions) == 0 {
		t.Fatalf("%s has an empty selector", what)
	}
	s, err := metav1.LabelSelectorAsSelector(sel)
	if err != nil {
		t.Fatalf("%s selector: %v", what, err)
	}
	if !s.Matches(labels.Set(podLabels)) {
		t.Errorf("%s selector %s does not match its pod template's labels %v", what, s, podLabels)
	}
}

// checkServiceSelects checks that svc selects the pods labelled podLabels
// and that its targetPorts resolve to their container's ports, one of them
// port.
func checkServiceSelects(t *testing.T, svc *corev1.Service, podLabels map[string]string, c *corev1.Container, port int) {
	t.Helper()
	if len(svc.Spec.Selector) == 0 || !labels.SelectorFromSet(svc.Spec.Selector).Matches(labels.Set(podLabels)) {
		t.Errorf("Service %s selector %v does not match its pods' labels %v", svc.Name, svc.Spec.Selector, podLabels)
	}
	found := false
	for _, p := range svc.Spec.Ports {
		cp := resolvePort(t, c, p.TargetPort.String())
		if cp == 0 {
			t.Errorf("Service %s port %s: targetPort %s is no port of container %s", svc.Name, p.Name, p.TargetPort.String(), c.Name)
		}
		found = found || cp == port
	}
	if !found {
		t.Errorf("Service %s does not reach container port %d", svc.Name, port)
	}
}

func checkProbe(t *testing.T, what string, c *corev1.Container, p *corev1.Probe, port int, path string) {
	t.Helper()
	if p == nil || p.HTTPGet == nil {
		t.Errorf("%s probe: want GET :%d%s, got %+v", what, port, path, p)
		return
	}
	if got := resolvePort(t, c, p.HTTPGet.Port.String()); got != port || p.HTTPGet.Path != path {
		t.Errorf("%s probe: GET :%d%s, want GET :%d%s", what, got, p.HTTPGet.Path, port, path)
	}
}

func checkPort(t *testing.T, c *corev1.Container, name string, port int) {
	t.Helper()
	if got := resolvePort(t, c, name); got != port {
		t.Errorf("container %s port %s = %d, want %d", c.Name, name, got, port)
	}
}

// resolvePort turns a port name or number into the container's port number
// (0: none).
func resolvePort(t *testing.T, c *corev1.Container, port string) int {
	t.Helper()
	for _, p := range c.Ports {
		if p.Name == port || strconv.Itoa(int(p.ContainerPort)) == port {
			return int(p.ContainerPort)
		}
	}
	return 0
}

func checkUnprivileged(t *testing.T, owner string, pod corev1.PodSpec, c corev1.Container) {
	t.Helper()
	sc := c.SecurityContext
	if sc == nil {
		t.Errorf("%s/%s: no securityContext", owner, c.Name)
		return
	}
	if sc.Privileged != nil && *sc.Privileged {
		t.Errorf("%s/%s is privileged", owner, c.Name)
	}
	if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		t.Errorf("%s/%s allows privilege escalation", owner, c.Name)
	}
	if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		t.Errorf("%s/%s has a writable root filesystem", owner, c.Name)
	}
	if sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") || len(sc.Capabilities.Add) != 0 {
		t.Errorf("%s/%s capabilities %+v, want drop ALL and none added", owner, c.Name, sc.Capabilities)
	}
	psc := pod.SecurityContext
	if psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot || psc.RunAsUser == nil || *psc.RunAsUser == 0 {
		t.Errorf("%s: pod does not run as non-root: %+v", owner, psc)
	}
	for _, v := range pod.Volumes {
		if v.HostPath != nil {
			t.Errorf("%s mounts hostPath %s", owner, v.HostPath.Path)
		}
	}
	if pod.HostNetwork || pod.HostPID || pod.HostIPC {
		t.Errorf("%s shares a host namespace", owner)
	}
}

// checkConfigVolume checks that the pod mounts ConfigMap name at /etc/caddy,
// where its command reads the Caddyfile.
func checkConfigVolume(t *testing.T, pod corev1.PodSpec, name string) {
	t.Helper()
	c := pod.Containers[0]
	if !slices.Equal(c.Command[:4], []string{"caddy", "run", "--config", "/etc/caddy/Caddyfile"}) {
		t.Errorf("%s command %v does not run /etc/caddy/Caddyfile", c.Name, c.Command)
	}
	mounts := mountsByVolume(&c)
	for _, v := range pod.Volumes {
		if v.ConfigMap != nil && v.ConfigMap.Name == name && mounts[v.Name].MountPath == "/etc/caddy" {
			return
		}
	}
	t.Errorf("%s does not mount ConfigMap %s at /etc/caddy", c.Name, name)
}

func nodeContainer(t *testing.T, ds *appsv1.DaemonSet) *corev1.Container {
	t.Helper()
	cs := ds.Spec.Template.Spec.Containers
	if len(cs) != 1 {
		t.Fatalf("node pod has %d containers, want 1", len(cs))
	}
	return &cs[0]
}

// drainTimeout checks that the preStop hook runs `caddy spawn drain` against
// the status port and returns its --timeout in seconds.
func drainTimeout(t *testing.T, c *corev1.Container) int {
	t.Helper()
	if c.Lifecycle == nil || c.Lifecycle.PreStop == nil || c.Lifecycle.PreStop.Exec == nil {
		t.Fatalf("node container has no preStop exec hook")
	}
	cmd := c.Lifecycle.PreStop.Exec.Command
	if len(cmd) < 3 || !slices.Equal(cmd[:3], []string{"caddy", "spawn", "drain"}) {
		t.Fatalf("preStop runs %q, want caddy spawn drain", cmd)
	}
	status := flagValue(cmd, "--status")
	if status != "http://127.0.0.1:"+strconv.Itoa(statusPort) {
		t.Errorf("preStop drain --status %q, want the status site http://127.0.0.1:%d", status, statusPort)
	}
	d := flagValue(cmd, "--timeout")
	n, err := strconv.Atoi(strings.TrimSuffix(d, "s"))
	if err != nil || !strings.HasSuffix(d, "s") || n <= 0 {
		t.Fatalf("preStop drain --timeout %q is not a positive number of seconds", d)
	}
	return n
}

func flagValue(args []string, name string) string {
	for i, a := range args {
		if a == name && i+1 < len(args) {
			return args[i+1]
		}
		if v, ok := strings.CutPrefix(a, name+"="); ok {
			return v
		}
	}
	return ""
}

func mountsByVolume(c *corev1.Container) map[string]corev1.VolumeMount {
	m := map[string]corev1.VolumeMount{}
	for _, vm := range c.VolumeMounts {
		m[vm.Name] = vm
	}
	return m
}

func envValue(c *corev1.Container, name string) string {
	for _, e := range c.Env {
		if e.Name == name {
			return e.Value
		}
	}
	return ""
}

// isEmptyDirMemoryMount reports whether dir lies on a memory-backed
// emptyDir of the pod.
func isEmptyDirMemoryMount(pod corev1.PodSpec, c *corev1.Container, dir string) bool {
	mounts := mountsByVolume(c)
	for _, v := range pod.Volumes {
		m, ok := mounts[v.Name]
		if v.EmptyDir != nil && v.EmptyDir.Medium == corev1.StorageMediumMemory && ok &&
			(dir == m.MountPath || strings.HasPrefix(dir, m.MountPath+"/")) {
			return true
		}
	}
	return false
}

// routeBlock returns the spawn block of the route with path in a Caddyfile.
func routeBlock(t *testing.T, caddyfile, path string) string {
	t.Helper()
	m := regexp.MustCompile(`(?ms)^\tspawn ` + regexp.QuoteMeta(path) + ` \S+ \{\n(.*?)^\t\}$`).FindStringSubmatch(caddyfile)
	if m == nil {
		t.Fatalf("node Caddyfile has no spawn block for %s:\n%s", path, caddyfile)
	}
	return m[1]
}

// siteBlock returns the body of the site on :port.
func siteBlock(t *testing.T, caddyfile string, port int) string {
	t.Helper()
	m := regexp.MustCompile(`(?ms)^:` + strconv.Itoa(port) + ` \{\n(.*?)^\}$`).FindStringSubmatch(caddyfile)
	if m == nil {
		t.Fatalf("Caddyfile has no site :%d:\n%s", port, caddyfile)
	}
	return m[1]
}

// caddyGlobal returns a one-line global option of a Caddyfile ("" if unset).
func caddyGlobal(t *testing.T, caddyfile, name string) string {
	t.Helper()
	m := regexp.MustCompile(`(?m)^\t` + regexp.QuoteMeta(name) + ` (\S+)$`).FindStringSubmatch(caddyfile)
	if m == nil {
		return ""
	}
	return m[1]
}

// caddySpawnOption returns a one-line option of the global spawn block.
func caddySpawnOption(t *testing.T, caddyfile, name string) string {
	t.Helper()
	block := regexp.MustCompile(`(?ms)^\tspawn \{\n(.*?)^\t\}$`).FindStringSubmatch(caddyfile)
	if block == nil {
		t.Fatalf("node Caddyfile has no global spawn block:\n%s", caddyfile)
	}
	m := regexp.MustCompile(`(?m)^\t\t` + regexp.QuoteMeta(name) + ` (\S+)$`).FindStringSubmatch(block[1])
	if m == nil {
		return ""
	}
	return m[1]
}

func keys[V any](m map[string]V) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}
