package taskserver

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"

	"github.com/opencontainers/runtime-spec/specs-go"
)

// annotationSeccompBPF is crun's annotation for a filter already compiled
// to BPF (base64): crun loads it as is instead of compiling the spec's
// seccomp section with libseccomp, which costs ~10 ms of CPU per container.
const annotationSeccompBPF = "run.oci.seccomp_bpf_data"

// annotationDisk bounds the writable layer (bytes), as spawner sets it.
const annotationDisk = "dev.caddy-spawn/disk"

// crunSpecVersion is the runtime-spec version written for crun: releases
// before 1.9 refuse newer versions, and nothing we use is newer.
const crunSpecVersion = "1.0.2"

// seccompCache holds compiled filters by the digest of the spec's seccomp
// section: a profile is compiled once, by crun, for the first container
// that uses it; every later container loads the same BPF.
type seccompCache struct {
	mu  sync.Mutex
	bpf map[[32]byte]string // base64
}

func (c *seccompCache) get(k [32]byte) (string, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	b, ok := c.bpf[k]
	return b, ok
}

func (c *seccompCache) put(k [32]byte, b64 string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.bpf == nil {
		c.bpf = map[[32]byte]string{}
	}
	c.bpf[k] = b64
}

// prepareSpec rewrites the bundle's config.json for crun: the spec version
// it accepts and, when this seccomp profile was compiled before, the
// compiled filter. It returns the profile's digest (ok false: no seccomp).
func (s *Server) prepareSpec(t *task, bundle string) (key [32]byte, cached, ok bool, err error) {
	path := filepath.Join(bundle, "config.json")
	b, err := os.ReadFile(path)
	if err != nil {
		return key, false, false, fmt.Errorf("reading spec: %w", err)
	}
	var spec specs.Spec
	if err := json.Unmarshal(b, &spec); err != nil {
		return key, false, false, fmt.Errorf("decoding spec: %w", err)
	}
	spec.Version = crunSpecVersion
	if spec.Linux != nil {
		t.cgroup = spec.Linux.CgroupsPath
	}
	t.hooks = spec.Hooks != nil
	if v, ok := spec.Annotations[annotationDisk]; ok {
		if n, err := strconv.ParseInt(v, 10, 64); err == nil && n > 0 {
			t.disk = n
		}
	}
	if spec.Linux != nil && spec.Linux.Seccomp != nil {
		sb, err := json.Marshal(spec.Linux.Seccomp)
		if err != nil {
			return key, false, false, err
		}
		key, ok = sha256.Sum256(sb), true
		if bpf, hit := s.seccomp.get(key); hit {
			if spec.Annotations == nil {
				spec.Annotations = map[string]string{}
			}
			spec.Annotations[annotationSeccompBPF] = bpf
			cached = true
		}
	}
	out, err := json.Marshal(&spec)
	if err != nil {
		return key, false, false, err
	}
	if err := os.WriteFile(path, out, 0o600); err != nil {
		return key, false, false, fmt.Errorf("writing spec: %w", err)
	}
	return key, cached, ok, nil
}

// learnSeccomp keeps the filter crun compiled for container id.
func (s *Server) learnSeccomp(key [32]byte, id string) {
	b, err := os.ReadFile(filepath.Join(s.crun.root, id, "seccomp.bpf"))
	if err != nil || len(b) == 0 {
		return
	}
	s.seccomp.put(key, base64.StdEncoding.EncodeToString(b))
}
