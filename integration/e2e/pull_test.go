//go:build integration

package e2e

import (
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/caddy-spawn/caddy-spawn/internal/imagebuild"
)

// pushTestfn pushes testfn.tar plus a layer holding /version, with
// FN_VERSION=<version> in its environment, to ref on a registry behind
// basic auth, and returns the pushed digest.
func pushTestfn(t *testing.T, ref, user, pass, version string) string {
	t.Helper()
	base, err := tarball.ImageFromPath(archive("testfn"), nil)
	if err != nil {
		t.Fatalf("reading testfn.tar: %v", err)
	}
	extra, err := imagebuild.Build(imagebuild.Spec{
		Ref:    "localhost/extra:" + version,
		Layers: [][]imagebuild.File{{{Path: "/version", Mode: 0o644, Data: []byte(version + "\n")}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	layers, err := extra.Layers()
	if err != nil {
		t.Fatal(err)
	}
	img, err := mutate.AppendLayers(base, layers...)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cfg := cf.Config
	cfg.Env = append(append([]string(nil), cfg.Env...), "FN_VERSION="+version)
	if img, err = mutate.Config(img, cfg); err != nil {
		t.Fatal(err)
	}
	tag, err := name.NewTag(ref)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(tag, img, remote.WithContext(t.Context()),
		remote.WithAuth(&authn.Basic{Username: user, Password: pass})); err != nil {
		t.Fatalf("pushing %s: %v", ref, err)
	}
	dg, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return dg.String()
}

// TestPullFromRegistry: a route whose image is only in a registry on
// loopback, behind basic auth with the password in an environment
// placeholder. Caddy pulls it at start-up and serves it; a tag moved in the
// registry changes nothing until a reload, which (pull_policy always) pulls
// the new digest.
func TestPullFromRegistry(t *testing.T) {
	port := freePort(t)
	const user, pass = "spawn", "e2e-registry-secret"
	inner := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	reg := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u, p, ok := r.BasicAuth()
		if !ok || u != user || p != pass {
			w.Header().Set("WWW-Authenticate", `Basic realm="caddy-spawn-e2e"`)
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		inner.ServeHTTP(w, r)
	}))
	t.Cleanup(reg.Close)
	host := strings.TrimPrefix(reg.URL, "http://")
	ref := host + "/caddy-spawn/pulled-" + randHex(8) + ":latest"
	d1 := pushTestfn(t, ref, user, pass, "v1")
	// Caddy inherits the environment: the password reaches it only as
	// {env.SPAWN_E2E_REG_PASS}.
	t.Setenv("SPAWN_E2E_REG_PASS", pass)

	sites := site(port, fmt.Sprintf(`	handle /pulled {
		spawn %s {
			name pulled
			args env
			pull_policy always
			registry_auth %s {env.SPAWN_E2E_REG_PASS}
		}
	}
`, ref, user))
	p := startCaddy(t, port, sites)
	version := func(when string) string {
		t.Helper()
		resp, body := p.get(t, "/pulled")
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("%s: GET /pulled: status %d, body %q", when, resp.StatusCode, body)
		}
		for l := range strings.SplitSeq(string(body), "\n") {
			if v, ok := strings.CutPrefix(l, "FN_VERSION="); ok {
				return v
			}
		}
		t.Fatalf("%s: no FN_VERSION in %q", when, body)
		return ""
	}
	if v := version("after start"); v != "v1" {
		t.Errorf("after start: FN_VERSION %q, want v1", v)
	}
	entry, ok := p.logs.Find("pulled image", map[string]string{"route": "pulled", "image": ref})
	if !ok {
		t.Errorf("no \"pulled image\" log line for route pulled and %s", ref)
	} else {
		if entry["digest"] != d1 {
			t.Errorf("pulled digest %v, want %s", entry["digest"], d1)
		}
		if n, _ := entry["layers"].(float64); n < 2 {
			t.Errorf("pulled image log: layers %v, want a multi-layer image", entry["layers"])
		}
		t.Logf("pulled image: %v", entry)
	}

	// Move the tag: the running config keeps its pinned digest.
	d2 := pushTestfn(t, ref, user, pass, "v2")
	if d1 == d2 {
		t.Fatal("v1 and v2 have the same digest")
	}
	if v := version("after the tag moved"); v != "v1" {
		t.Errorf("after the tag moved, before a reload: FN_VERSION %q, want v1 (pinned)", v)
	}

	// Reload the same config: pull_policy always pulls again.
	reload := func() {
		t.Helper()
		req, err := http.NewRequest(http.MethodPost, "http://"+adminAddr+"/load", strings.NewReader(caddyfile(sites)))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "text/caddyfile")
		req.Header.Set("Cache-Control", "must-revalidate")
		if resp, body := p.do(t, req); resp.StatusCode != http.StatusOK {
			t.Fatalf("POST /load: status %d: %s", resp.StatusCode, body)
		}
	}
	reload()
	if v := version("after reload"); v != "v2" {
		t.Errorf("after reload: FN_VERSION %q, want v2 (the moved tag)", v)
	}
	if _, ok := p.logs.Find("pulled image", map[string]string{"route": "pulled", "digest": d2}); !ok {
		t.Errorf("no \"pulled image\" log line with digest %s after the reload", d2)
	}
	// The first config is gone: the next load releases the v1 pin, which
	// nothing uses any more.
	pin := strings.TrimSuffix(ref, ":latest") + "@" + d1
	if _, ok := p.logs.Find("removed unused image", map[string]string{"image": pin}); ok {
		t.Errorf("v1 pin %s removed while the first config was still live", pin)
	}
	reload()
	if v := version("after the second reload"); v != "v2" {
		t.Errorf("after the second reload: FN_VERSION %q, want v2", v)
	}
	if _, ok := p.logs.Find("removed unused image", map[string]string{"image": pin}); !ok {
		t.Errorf("no \"removed unused image\" log line for the v1 pin %s after the second reload", pin)
	}
	if strings.Contains(p.logs.String(), pass) {
		t.Error("Caddy's log contains the registry password")
	}
}
