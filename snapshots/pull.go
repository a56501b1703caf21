package snapshots

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/distribution/reference"
	"github.com/sirupsen/logrus"
	"go.uber.org/zap"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/remotes"
	"github.com/containerd/containerd/v2/core/remotes/docker"
	"github.com/containerd/containerd/v2/core/remotes/docker/config"
	remoteerrors "github.com/containerd/containerd/v2/core/remotes/errors"
	"github.com/containerd/errdefs"
	"github.com/containerd/log"
)

// PullPolicy says when Ensure pulls an image from its registry.
type PullPolicy string

// Pull policies.
const (
	// PullMissing pulls only when the image is not in the namespace. It is
	// the default ("" means the same).
	PullMissing PullPolicy = "missing"
	// PullAlways pulls on every Ensure, that is at every start and config
	// load (never per request), so a moved tag is picked up then.
	PullAlways PullPolicy = "always"
	// PullNever never pulls: the image must be in the namespace already or
	// come from an archive.
	PullNever PullPolicy = "never"
)

// ErrUnauthorized is returned when a registry refuses the credentials (or
// their absence) for an image: HTTP 401 or 403.
var ErrUnauthorized = errors.New("registry refused access")

// ValidPullPolicy reports whether p is a known policy ("" included).
func ValidPullPolicy(p PullPolicy) bool {
	return p == "" || p == PullMissing || p == PullAlways || p == PullNever
}

// Auth is a username and password for one registry.
type Auth struct {
	Username string
	Password string
}

// Registries holds the settings shared by all pulls of an app.
type Registries struct {
	// Insecure lists registry hosts ("host" or "host:port") reached over
	// plain HTTP. Loopback registries (localhost, 127.0.0.0/8, ::1) always
	// are.
	Insecure []string
	// Credentials returns the username and password for a registry host,
	// or "" for none; e.g. from LoadDockerConfig. Optional.
	Credentials func(host string) (string, string, error)
	// HostsDir is a directory in containerd's hosts layout
	// (<dir>/<host>/hosts.toml, as /etc/containerd/certs.d): mirrors,
	// per-host TLS and capabilities. Optional.
	HostsDir string
}

// pull fetches src.Ref from its registry into the content store and unpacks
// it into src.Snapshotter. ctx carries the namespace and Ensure's lease.
func pull(ctx context.Context, c *client.Client, src Source, logger *zap.Logger) (client.Image, error) {
	named, err := reference.ParseDockerRef(src.Ref)
	if err != nil {
		return nil, fmt.Errorf("parsing image reference %q: %w", src.Ref, err)
	}
	host := reference.Domain(named)
	// The resolver logs each failed attempt through containerd's logrus
	// logger to stderr; we log once, through zap, and return the error.
	ctx = log.WithLogger(ctx, quietLogger)
	logger.Info("pulling image",
		zap.String("image", src.Ref),
		zap.String("registry", host),
		zap.Bool("plain_http", plainHTTP(host, src.Registries.Insecure)))
	start := time.Now()
	var img client.Image
	backoff := pullBackoff
	for attempt := 1; ; attempt++ {
		img, err = c.Pull(ctx, named.String(),
			client.WithResolver(newResolver(ctx, host, src)),
			client.WithPullUnpack,
			client.WithPullSnapshotter(src.Snapshotter),
			client.WithPullLabels(map[string]string{LabelManaged: "true"}),
		)
		if err == nil {
			break
		}
		err = classifyPullError(src.Ref, host, err)
		if attempt == pullAttempts || !retryable(err) || ctx.Err() != nil {
			return nil, err
		}
		logger.Warn("pull failed; retrying",
			zap.String("image", src.Ref),
			zap.Int("attempt", attempt),
			zap.Duration("backoff", backoff),
			zap.Error(err))
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("pulling %s: %w", src.Ref, ctx.Err())
		case <-time.After(backoff):
		}
		backoff *= 4
	}
	fields := []zap.Field{
		zap.String("image", src.Ref),
		zap.String("digest", img.Target().Digest.String()),
		zap.Duration("took", time.Since(start)),
	}
	if diffs, err := img.RootFS(ctx); err == nil {
		fields = append(fields, zap.Int("layers", len(diffs)))
	}
	if size, err := img.Size(ctx); err == nil {
		fields = append(fields, zap.Int64("bytes", size))
	}
	logger.Info("pulled image", fields...)
	return img, nil
}

// quietLogger discards what containerd's client logs during a pull.
var quietLogger = func() *log.Entry {
	l := logrus.New()
	l.SetOutput(io.Discard)
	return logrus.NewEntry(l)
}()

// A pull that fails for another reason than a refusal or a missing image
// (the registry unreachable or answering 5xx, a reset connection) is
// retried pullAttempts times in all, pullBackoff apart, then ×4.
const (
	pullAttempts = 3
	pullBackoff  = 250 * time.Millisecond
)

// retryable reports whether a classified pull error may go away by itself.
func retryable(err error) bool {
	return !errors.Is(err, ErrUnauthorized) && !errors.Is(err, ErrImageNotFound)
}

// classifyPullError names the reference and the registry, and tells a
// refusal (401/403: ErrUnauthorized) from a missing image
// (ErrImageNotFound) while keeping the registry's own answer.
func classifyPullError(ref, host string, err error) error {
	var status remoteerrors.ErrUnexpectedStatus
	switch {
	case errors.Is(err, docker.ErrInvalidAuthorization),
		errdefs.IsUnauthorized(err), errdefs.IsPermissionDenied(err),
		errors.As(err, &status) && (status.StatusCode == http.StatusUnauthorized || status.StatusCode == http.StatusForbidden):
		return fmt.Errorf("pulling %s from registry %s: %w (check registry_auth or registry_config): %w", ref, host, ErrUnauthorized, err)
	case errdefs.IsNotFound(err):
		return fmt.Errorf("pulling %s from registry %s: %w: %w", ref, host, ErrImageNotFound, err)
	}
	return fmt.Errorf("pulling %s from registry %s: %w", ref, host, err)
}

// newResolver returns a resolver for src.Ref, whose registry is host: plain
// HTTP for loopback and insecure hosts, the route's credentials for host
// and the app's for any other.
func newResolver(ctx context.Context, host string, src Source) remotes.Resolver {
	creds := func(h string) (string, string, error) {
		if src.Auth != nil && (h == host || host == "docker.io" && h == "registry-1.docker.io") {
			return src.Auth.Username, src.Auth.Password, nil
		}
		if src.Registries.Credentials != nil {
			return src.Registries.Credentials(h)
		}
		return "", "", nil
	}
	return docker.NewResolver(docker.ResolverOptions{
		Hosts: func(h string) ([]docker.RegistryHost, error) {
			opts := config.HostOptions{Credentials: creds}
			if src.Registries.HostsDir != "" {
				opts.HostDir = config.HostDirFromRoot(src.Registries.HostsDir)
			}
			if plainHTTP(h, src.Registries.Insecure) {
				opts.DefaultScheme = "http"
			}
			return config.ConfigureHosts(ctx, opts)(h)
		},
	})
}

// plainHTTP reports whether host is reached over plain HTTP: a loopback
// host, or one listed in insecure.
func plainHTTP(host string, insecure []string) bool {
	if slices.Contains(insecure, host) {
		return true
	}
	name := host
	if h, _, err := net.SplitHostPort(host); err == nil {
		name = h
		if slices.Contains(insecure, h) {
			return true
		}
	}
	name = strings.Trim(name, "[]")
	if name == "localhost" {
		return true
	}
	ip := net.ParseIP(name)
	return ip != nil && ip.IsLoopback()
}

// dockerConfig is the part of a Docker config.json we read.
type dockerConfig struct {
	Auths map[string]struct {
		Auth     string `json:"auth"`
		Username string `json:"username"`
		Password string `json:"password"`
	} `json:"auths"`
}

// LoadDockerConfig reads a Docker-style config.json ("auths", each with a
// base64 "auth" of "user:password" or a "username" and "password") and
// returns a Credentials function for Registries. Keys may be a host, a
// host:port or a URL ("https://index.docker.io/v1/" is Docker Hub).
// Credential helpers and identity tokens are not supported.
func LoadDockerConfig(path string) (func(host string) (string, string, error), error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading registry config: %w", err)
	}
	var cfg dockerConfig
	if err := json.Unmarshal(b, &cfg); err != nil {
		return nil, fmt.Errorf("parsing registry config %s: %w", path, err)
	}
	auths := make(map[string]Auth, len(cfg.Auths))
	for key, a := range cfg.Auths {
		user, pass := a.Username, a.Password
		if a.Auth != "" {
			dec, err := base64.StdEncoding.DecodeString(a.Auth)
			if err != nil {
				return nil, fmt.Errorf("parsing registry config %s: auths[%q].auth: not base64", path, key)
			}
			var ok bool
			user, pass, ok = strings.Cut(string(dec), ":")
			if !ok {
				return nil, fmt.Errorf("parsing registry config %s: auths[%q].auth: not user:password", path, key)
			}
		}
		h := configHost(key)
		auths[h] = Auth{Username: user, Password: pass}
		if h == "index.docker.io" || h == "docker.io" {
			auths["registry-1.docker.io"] = auths[h]
		}
	}
	return func(host string) (string, string, error) {
		a := auths[host]
		return a.Username, a.Password, nil
	}, nil
}

// configHost turns a config.json auths key into a registry host.
func configHost(key string) string {
	key = strings.TrimPrefix(strings.TrimPrefix(key, "https://"), "http://")
	h, _, _ := strings.Cut(key, "/")
	return h
}
