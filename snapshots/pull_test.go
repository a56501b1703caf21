package snapshots

import (
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/containerd/v2/core/remotes/docker"
	remoteerrors "github.com/containerd/containerd/v2/core/remotes/errors"
	"github.com/containerd/errdefs"
)

func TestPlainHTTP(t *testing.T) {
	tests := []struct {
		name     string
		host     string
		insecure []string
		want     bool
	}{
		{name: "localhost", host: "localhost", want: true},
		{name: "localhost with port", host: "localhost:5000", want: true},
		{name: "ipv4 loopback", host: "127.0.0.1:5000", want: true},
		{name: "other ipv4 loopback", host: "127.0.0.2", want: true},
		{name: "ipv6 loopback", host: "[::1]:5000", want: true},
		{name: "public registry", host: "registry.example.com", want: false},
		{name: "docker hub", host: "docker.io", want: false},
		{name: "listed insecure with port", host: "reg.lan:5000", insecure: []string{"reg.lan:5000"}, want: true},
		{name: "listed insecure by name", host: "reg.lan:5000", insecure: []string{"reg.lan"}, want: true},
		{name: "other port not listed", host: "reg.lan:5001", insecure: []string{"reg.lan:5000"}, want: false},
		{name: "private address is not loopback", host: "10.0.0.1:5000", want: false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := plainHTTP(tc.host, tc.insecure); got != tc.want {
				t.Errorf("plainHTTP(%q, %v) = %v, want %v", tc.host, tc.insecure, got, tc.want)
			}
		})
	}
}

func TestLoadDockerConfig(t *testing.T) {
	tests := []struct {
		name     string
		config   string
		host     string
		wantUser string
		wantPass string
		wantErr  string
	}{
		{name: "auth field", config: `{"auths":{"reg.example.com":{"auth":"dXNlcjpwYTpzcw=="}}}`, host: "reg.example.com", wantUser: "user", wantPass: "pa:ss"},
		{name: "username and password", config: `{"auths":{"reg.example.com:5000":{"username":"u","password":"p"}}}`, host: "reg.example.com:5000", wantUser: "u", wantPass: "p"},
		{name: "url key", config: `{"auths":{"https://reg.example.com/v2/":{"username":"u","password":"p"}}}`, host: "reg.example.com", wantUser: "u", wantPass: "p"},
		{name: "docker hub key", config: `{"auths":{"https://index.docker.io/v1/":{"username":"u","password":"p"}}}`, host: "registry-1.docker.io", wantUser: "u", wantPass: "p"},
		{name: "unknown host", config: `{"auths":{"reg.example.com":{"username":"u","password":"p"}}}`, host: "other.example.com"},
		{name: "bad base64", config: `{"auths":{"r":{"auth":"!!"}}}`, wantErr: "not base64"},
		{name: "no colon", config: `{"auths":{"r":{"auth":"dXNlcg=="}}}`, wantErr: "not user:password"},
		{name: "bad json", config: `{"auths":`, wantErr: "parsing registry config"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "config.json")
			if err := os.WriteFile(path, []byte(tc.config), 0o600); err != nil {
				t.Fatal(err)
			}
			creds, err := LoadDockerConfig(path)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				if strings.Contains(err.Error(), "pa:ss") {
					t.Errorf("error %q shows a secret", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			u, p, err := creds(tc.host)
			if err != nil || u != tc.wantUser || p != tc.wantPass {
				t.Errorf("creds(%q) = %q, %q, %v; want %q, %q", tc.host, u, p, err, tc.wantUser, tc.wantPass)
			}
		})
	}
	if _, err := LoadDockerConfig(filepath.Join(t.TempDir(), "absent.json")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: err = %v, want ErrNotExist", err)
	}
}

func TestClassifyPullError(t *testing.T) {
	tests := []struct {
		name      string
		err       error
		wantAuth  bool
		wantFound bool // ErrImageNotFound
	}{
		{name: "401 status", err: remoteerrors.ErrUnexpectedStatus{Status: "401 Unauthorized", StatusCode: http.StatusUnauthorized}, wantAuth: true},
		{name: "403 status", err: remoteerrors.ErrUnexpectedStatus{Status: "403 Forbidden", StatusCode: http.StatusForbidden}, wantAuth: true},
		{name: "invalid authorization", err: fmt.Errorf("pull access denied: %w", docker.ErrInvalidAuthorization), wantAuth: true},
		{name: "not found", err: fmt.Errorf("ref: %w", errdefs.ErrNotFound), wantFound: true},
		{name: "500 status", err: remoteerrors.ErrUnexpectedStatus{Status: "500", StatusCode: 500}},
		{name: "connection refused", err: errors.New("dial tcp: connection refused")},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := classifyPullError("reg.example.com/fn:1", "reg.example.com", tc.err)
			if got := errors.Is(err, ErrUnauthorized); got != tc.wantAuth {
				t.Errorf("Is(ErrUnauthorized) = %v, want %v: %v", got, tc.wantAuth, err)
			}
			if got := errors.Is(err, ErrImageNotFound); got != tc.wantFound {
				t.Errorf("Is(ErrImageNotFound) = %v, want %v: %v", got, tc.wantFound, err)
			}
			if !errors.Is(err, tc.err) && !strings.Contains(err.Error(), tc.err.Error()) {
				t.Errorf("%v lost the registry's answer %v", err, tc.err)
			}
			if !strings.Contains(err.Error(), "reg.example.com/fn:1") {
				t.Errorf("%v does not name the reference", err)
			}
		})
	}
}

func TestNormalizedRefAndPinName(t *testing.T) {
	tests := []struct {
		ref, wantNorm, wantPin string
	}{
		{ref: "busybox", wantNorm: "docker.io/library/busybox:latest", wantPin: "docker.io/library/busybox@sha256:ab"},
		{ref: "localhost/caddy-spawn/hello:latest", wantNorm: "localhost/caddy-spawn/hello:latest", wantPin: "localhost/caddy-spawn/hello@sha256:ab"},
		{ref: "127.0.0.1:5000/fn:v1", wantNorm: "127.0.0.1:5000/fn:v1", wantPin: "127.0.0.1:5000/fn@sha256:ab"},
	}
	for _, tc := range tests {
		t.Run(tc.ref, func(t *testing.T) {
			if got := NormalizedRef(tc.ref); got != tc.wantNorm {
				t.Errorf("NormalizedRef(%q) = %q, want %q", tc.ref, got, tc.wantNorm)
			}
			got, err := PinName(tc.ref, "sha256:ab")
			if err != nil || got != tc.wantPin {
				t.Errorf("PinName(%q) = %q, %v; want %q", tc.ref, got, err, tc.wantPin)
			}
		})
	}
	if _, err := PinName("Not A Ref", "sha256:ab"); err == nil {
		t.Error("PinName of an invalid reference: no error")
	}
}

func TestRetryable(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{name: "refused", err: classifyPullError("r/f:1", "r", remoteerrors.ErrUnexpectedStatus{StatusCode: http.StatusUnauthorized}), want: false},
		{name: "not found", err: classifyPullError("r/f:1", "r", errdefs.ErrNotFound), want: false},
		{name: "503", err: classifyPullError("r/f:1", "r", remoteerrors.ErrUnexpectedStatus{StatusCode: http.StatusServiceUnavailable}), want: true},
		{name: "connection refused", err: classifyPullError("r/f:1", "r", errors.New("dial tcp: connection refused")), want: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := retryable(tc.err); got != tc.want {
				t.Errorf("retryable(%v) = %v, want %v", tc.err, got, tc.want)
			}
		})
	}
}
