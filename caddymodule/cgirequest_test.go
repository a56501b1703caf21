package caddymodule

import (
	"crypto/tls"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
)

func TestCGIEnv(t *testing.T) {
	for _, tc := range []struct {
		name string
		req  func() *http.Request
		cr   cgiRequest
		want map[string]string // entries that must be present, with these values
		omit []string          // keys that must be absent
	}{
		{
			name: "plain GET",
			req: func() *http.Request {
				r := httptest.NewRequest(http.MethodGet, "http://example.com/hello?a=1&b=%20x", nil)
				r.RemoteAddr = "192.0.2.7:51234"
				r.RequestURI = "/hello?a=1&b=%20x" // origin-form, as a server sees it
				return r
			},
			cr: cgiRequest{ServerSoftware: "Caddy/v2.11.9 caddy-spawn"},
			want: map[string]string{
				"GATEWAY_INTERFACE": "CGI/1.1",
				"PATH_INFO":         "/hello",
				"QUERY_STRING":      "a=1&b=%20x",
				"REMOTE_ADDR":       "192.0.2.7",
				"REMOTE_HOST":       "192.0.2.7",
				"REMOTE_PORT":       "51234",
				"REQUEST_METHOD":    "GET",
				"REQUEST_SCHEME":    "http",
				"REQUEST_URI":       "/hello?a=1&b=%20x",
				"SCRIPT_NAME":       "",
				"SERVER_NAME":       "example.com",
				"SERVER_PORT":       "80",
				"SERVER_PROTOCOL":   "HTTP/1.1",
				"SERVER_SOFTWARE":   "Caddy/v2.11.9 caddy-spawn",
				"HTTP_HOST":         "example.com",
			},
			omit: []string{
				"AUTH_TYPE", "CONTENT_LENGTH", "CONTENT_TYPE", "HTTPS",
				"PATH_TRANSLATED", "REMOTE_USER",
			},
		},
		{
			name: "POST with known length and content type",
			req: func() *http.Request {
				r := httptest.NewRequest(http.MethodPost, "http://example.com/", strings.NewReader("hello"))
				r.Header.Set("Content-Type", "text/plain; charset=utf-8")
				r.Header.Set("Content-Length", "5")
				return r
			},
			want: map[string]string{
				"REQUEST_METHOD": "POST",
				"CONTENT_LENGTH": "5",
				"CONTENT_TYPE":   "text/plain; charset=utf-8",
			},
			omit: []string{"HTTP_CONTENT_TYPE", "HTTP_CONTENT_LENGTH"},
		},
		{
			name: "chunked body has no CONTENT_LENGTH",
			req: func() *http.Request {
				r := httptest.NewRequest(http.MethodPost, "http://example.com/", strings.NewReader("hello"))
				r.ContentLength = -1
				r.TransferEncoding = []string{"chunked"}
				return r
			},
			want: map[string]string{"REQUEST_METHOD": "POST"},
			omit: []string{"CONTENT_LENGTH", "HTTP_TRANSFER_ENCODING"},
		},
		{
			name: "empty body has no CONTENT_LENGTH",
			req: func() *http.Request {
				r := httptest.NewRequest(http.MethodPost, "http://example.com/", http.NoBody)
				r.ContentLength = 0
				return r
			},
			omit: []string{"CONTENT_LENGTH"},
		},
		{
			name: "empty Content-Type header is present",
			req: func() *http.Request {
				r := httptest.NewRequest(http.MethodGet, "http://example.com/", nil)
				r.Header["Content-Type"] = []string{""}
				return r
			},
			want: map[string]string{"CONTENT_TYPE": ""},
		},
		{
			name: "TLS defaults port 443",
			req: func() *http.Request {
				r := httptest.NewRequest(http.MethodGet, "https://secure.example/", nil)
				r.Proto, r.ProtoMajor, r.ProtoMinor = "HTTP/2.0", 2, 0
				return r
			},
			want: map[string]string{
				"HTTPS":           "on",
				"REQUEST_SCHEME":  "https",
				"SERVER_NAME":     "secure.example",
				"SERVER_PORT":     "443",
				"SERVER_PROTOCOL": "HTTP/2.0",
			},
		},
		{
			name: "port from Host wins over scheme default",
			req: func() *http.Request {
				r := httptest.NewRequest(http.MethodGet, "http://example.com:8443/", nil)
				r.TLS = &tls.ConnectionState{}
				return r
			},
			want: map[string]string{
				"HTTPS":       "on",
				"SERVER_NAME": "example.com",
				"SERVER_PORT": "8443",
				"HTTP_HOST":   "example.com:8443",
			},
		},
		{
			name: "IPv6 remote and host",
			req: func() *http.Request {
				r := httptest.NewRequest(http.MethodGet, "http://[2001:db8::1]:8080/x", nil)
				r.RemoteAddr = "[2001:db8::42]:40000"
				return r
			},
			want: map[string]string{
				"REMOTE_ADDR": "2001:db8::42",
				"REMOTE_HOST": "2001:db8::42",
				"REMOTE_PORT": "40000",
				"SERVER_NAME": "[2001:db8::1]",
				"SERVER_PORT": "8080",
			},
		},
		{
			name: "IPv6 host without port",
			req: func() *http.Request {
				r := httptest.NewRequest(http.MethodGet, "http://[::1]/x", nil)
				r.RemoteAddr = "[fe80::1%eth0]:1"
				return r
			},
			want: map[string]string{
				"REMOTE_ADDR": "fe80::1%eth0",
				"REMOTE_PORT": "1",
				"SERVER_NAME": "[::1]",
				"SERVER_PORT": "80",
			},
		},
		{
			name: "remote address without port",
			req: func() *http.Request {
				r := httptest.NewRequest(http.MethodGet, "http://example.com/", nil)
				r.RemoteAddr = "@"
				return r
			},
			want: map[string]string{"REMOTE_ADDR": "@", "REMOTE_HOST": "@"},
			omit: []string{"REMOTE_PORT"},
		},
		{
			name: "ScriptName stripped from path",
			req: func() *http.Request {
				r := httptest.NewRequest(http.MethodGet, "http://example.com/fn/a/b?q", nil)
				r.RequestURI = "/fn/a/b?q"
				return r
			},
			cr: cgiRequest{ScriptName: "/fn"},
			want: map[string]string{
				"SCRIPT_NAME":  "/fn",
				"PATH_INFO":    "/a/b",
				"QUERY_STRING": "q",
				"REQUEST_URI":  "/fn/a/b?q",
			},
		},
		{
			name: "PATH_INFO cleaned: no dot segments or doubled slashes, trailing slash kept",
			req: func() *http.Request {
				r := httptest.NewRequest(http.MethodGet, "http://example.com/fn/a/x", nil)
				r.URL.Path = "/fn/a/../../..//etc/./passwd/"
				return r
			},
			cr:   cgiRequest{ScriptName: "/fn"},
			want: map[string]string{"SCRIPT_NAME": "/fn", "PATH_INFO": "/etc/passwd/"},
		},
		{
			name: "ScriptName with trailing slash",
			req: func() *http.Request {
				return httptest.NewRequest(http.MethodGet, "http://example.com/fn/a", nil)
			},
			cr:   cgiRequest{ScriptName: "/fn/"},
			want: map[string]string{"SCRIPT_NAME": "/fn", "PATH_INFO": "/a"},
		},
		{
			name: "ScriptName equal to path leaves empty PATH_INFO",
			req: func() *http.Request {
				return httptest.NewRequest(http.MethodGet, "http://example.com/fn", nil)
			},
			cr:   cgiRequest{ScriptName: "/fn", DocumentRoot: "/srv"},
			want: map[string]string{"SCRIPT_NAME": "/fn", "PATH_INFO": ""},
			omit: []string{"PATH_TRANSLATED"},
		},
		{
			name: "ScriptName only matches whole segments",
			req: func() *http.Request {
				return httptest.NewRequest(http.MethodGet, "http://example.com/fnord", nil)
			},
			cr:   cgiRequest{ScriptName: "/fn"},
			want: map[string]string{"SCRIPT_NAME": "/fn", "PATH_INFO": "/fnord"},
		},
		{
			name: "ScriptName not a prefix",
			req: func() *http.Request {
				return httptest.NewRequest(http.MethodGet, "http://example.com/other/x", nil)
			},
			cr:   cgiRequest{ScriptName: "/fn"},
			want: map[string]string{"PATH_INFO": "/other/x"},
		},
		{
			name: "PATH_TRANSLATED from DocumentRoot",
			req: func() *http.Request {
				return httptest.NewRequest(http.MethodGet, "http://example.com/fn/a/b", nil)
			},
			cr:   cgiRequest{ScriptName: "/fn", DocumentRoot: "/srv/www/"},
			want: map[string]string{"PATH_TRANSLATED": "/srv/www/a/b"},
		},
		{
			name: "PATH_TRANSLATED stays under DocumentRoot",
			req: func() *http.Request {
				r := httptest.NewRequest(http.MethodGet, "http://example.com/", nil)
				r.URL.Path = "/../../etc/passwd"
				return r
			},
			cr:   cgiRequest{DocumentRoot: "/srv"},
			want: map[string]string{"PATH_TRANSLATED": "/srv/etc/passwd"},
		},
		{
			name: "original RequestURI preferred",
			req: func() *http.Request {
				return httptest.NewRequest(http.MethodGet, "http://example.com/rewritten", nil)
			},
			cr:   cgiRequest{RequestURI: "/original?x=1"},
			want: map[string]string{"REQUEST_URI": "/original?x=1", "PATH_INFO": "/rewritten"},
		},
		{
			name: "RequestURI from URL when unset",
			req: func() *http.Request {
				r := httptest.NewRequest(http.MethodGet, "http://example.com/p%2Fq?z", nil)
				r.RequestURI = ""
				return r
			},
			want: map[string]string{"REQUEST_URI": "/p%2Fq?z", "PATH_INFO": "/p/q"},
		},
		{
			name: "auth and defaults",
			req: func() *http.Request {
				r := httptest.NewRequest(http.MethodGet, "http://example.com/", nil)
				r.Method, r.Proto = "", ""
				return r
			},
			cr: cgiRequest{AuthType: "Basic", RemoteUser: "alice"},
			want: map[string]string{
				"AUTH_TYPE":       "Basic",
				"REMOTE_USER":     "alice",
				"REQUEST_METHOD":  "GET",
				"SERVER_PROTOCOL": "HTTP/1.1",
				"SERVER_SOFTWARE": "caddy-spawn",
			},
		},
		{
			name: "headers joined, Cookie with semicolons",
			req: func() *http.Request {
				r := httptest.NewRequest(http.MethodGet, "http://example.com/", nil)
				r.Header.Add("Accept", "text/html")
				r.Header.Add("Accept", "application/json")
				r.Header.Add("Cookie", "a=1")
				r.Header.Add("Cookie", "b=2, c")
				r.Header.Add("X-Request-Id", "abc")
				r.Header["x-lower"] = []string{"v"}
				return r
			},
			want: map[string]string{
				"HTTP_ACCEPT":       "text/html, application/json",
				"HTTP_COOKIE":       "a=1; b=2, c",
				"HTTP_X_REQUEST_ID": "abc",
				"HTTP_X_LOWER":      "v",
			},
		},
		{
			name: "same header under two spellings is merged",
			req: func() *http.Request {
				r := httptest.NewRequest(http.MethodGet, "http://example.com/", nil)
				r.Header["X-Dup"] = []string{"1"}
				r.Header["x-dup"] = []string{"2"}
				return r
			},
			want: map[string]string{"HTTP_X_DUP": "1, 2"},
		},
		{
			name: "Host in a hand-built header map is not duplicated",
			req: func() *http.Request {
				r := httptest.NewRequest(http.MethodGet, "http://example.com/", nil)
				r.Header["host"] = []string{"other.example"}
				return r
			},
			want: map[string]string{"HTTP_HOST": "other.example", "SERVER_NAME": "example.com"},
		},
		{
			name: "httpoxy Proxy header dropped",
			req: func() *http.Request {
				r := httptest.NewRequest(http.MethodGet, "http://example.com/", nil)
				r.Header.Set("Proxy", "http://evil.example:8080")
				r.Header["proxy"] = []string{"http://evil.example:8081"}
				return r
			},
			omit: []string{"HTTP_PROXY"},
		},
		{
			name: "underscore and odd header names dropped",
			req: func() *http.Request {
				r := httptest.NewRequest(http.MethodGet, "http://example.com/", nil)
				r.Header["X_Forwarded_For"] = []string{"10.0.0.1"}
				r.Header["Proxy_"] = []string{"x"}
				r.Header["X.Dot"] = []string{"x"}
				r.Header[""] = []string{"x"}
				r.Header.Set("X-Forwarded-For", "192.0.2.1")
				return r
			},
			cr:   cgiRequest{TrustedProxy: true},
			want: map[string]string{"HTTP_X_FORWARDED_FOR": "192.0.2.1"},
			omit: []string{"HTTP_PROXY_", "HTTP_X.DOT", "HTTP_"},
		},
		{
			name: "forwarding headers from an untrusted peer withheld; REMOTE_ADDR is the client",
			req: func() *http.Request {
				r := httptest.NewRequest(http.MethodGet, "http://example.com/", nil)
				r.RemoteAddr = "198.51.100.7:4321"
				r.Header.Set("X-Forwarded-For", "10.9.9.9")
				r.Header.Set("Forwarded", "for=10.9.9.9")
				r.Header.Set("X-Real-IP", "10.9.9.9")
				r.Header.Set("x-forwarded-proto", "https")
				r.Header.Set("X-Other", "kept")
				return r
			},
			cr:   cgiRequest{ClientIP: "198.51.100.7"},
			want: map[string]string{"REMOTE_ADDR": "198.51.100.7", "REMOTE_PORT": "4321", "HTTP_X_OTHER": "kept"},
			omit: []string{"HTTP_X_FORWARDED_FOR", "HTTP_FORWARDED", "HTTP_X_REAL_IP", "HTTP_X_FORWARDED_PROTO"},
		},
		{
			name: "behind a trusted proxy: its forwarding headers pass, REMOTE_ADDR is Caddy's client IP, no port",
			req: func() *http.Request {
				r := httptest.NewRequest(http.MethodGet, "http://example.com/", nil)
				r.RemoteAddr = "10.0.0.2:5555"
				r.Header.Set("X-Forwarded-For", "203.0.113.9")
				return r
			},
			cr:   cgiRequest{ClientIP: "203.0.113.9", TrustedProxy: true},
			want: map[string]string{"REMOTE_ADDR": "203.0.113.9", "REMOTE_HOST": "203.0.113.9", "HTTP_X_FORWARDED_FOR": "203.0.113.9"},
			omit: []string{"REMOTE_PORT"},
		},
		{
			name: "Authorization withheld by default",
			req: func() *http.Request {
				r := httptest.NewRequest(http.MethodGet, "http://example.com/", nil)
				r.Header.Set("Authorization", "Basic dTpw")
				r.Header.Set("Proxy-Authorization", "Basic dTpw")
				return r
			},
			omit: []string{"HTTP_AUTHORIZATION", "HTTP_PROXY_AUTHORIZATION"},
		},
		{
			name: "Authorization passed with pass_authorization",
			req: func() *http.Request {
				r := httptest.NewRequest(http.MethodGet, "http://example.com/", nil)
				r.Header.Set("Authorization", "Basic dTpw")
				return r
			},
			cr:   cgiRequest{PassAuthorization: true},
			want: map[string]string{"HTTP_AUTHORIZATION": "Basic dTpw"},
		},
		{
			name: "header with NUL dropped",
			req: func() *http.Request {
				r := httptest.NewRequest(http.MethodGet, "http://example.com/", nil)
				r.Header.Add("X-Nul", "ok")
				r.Header.Add("X-Nul", "bad\x00value")
				r.Header.Set("Content-Type", "text/plain\x00")
				r.Header.Set("X-Fine", "fine")
				return r
			},
			want: map[string]string{"HTTP_X_FINE": "fine"},
			omit: []string{"HTTP_X_NUL", "CONTENT_TYPE"},
		},
		{
			name: "NUL in decoded path drops PATH_INFO",
			req: func() *http.Request {
				return httptest.NewRequest(http.MethodGet, "http://example.com/a%00b", nil)
			},
			want: map[string]string{"QUERY_STRING": ""},
			omit: []string{"PATH_INFO"},
		},
		{
			name: "Host taken from URL when r.Host empty",
			req: func() *http.Request {
				r := httptest.NewRequest(http.MethodGet, "http://example.com:81/", nil)
				r.Host = ""
				return r
			},
			want: map[string]string{"SERVER_NAME": "example.com", "SERVER_PORT": "81"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := cgiEnv(tc.req(), tc.cr)
			if !slices.IsSorted(env) {
				t.Errorf("env not sorted: %q", env)
			}
			got := envMap(t, env)
			for k, want := range tc.want {
				v, ok := got[k]
				if !ok {
					t.Errorf("%s missing; env = %q", k, env)
					continue
				}
				if v != want {
					t.Errorf("%s = %q, want %q", k, v, want)
				}
			}
			for _, k := range tc.omit {
				if v, ok := got[k]; ok {
					t.Errorf("%s = %q, want it absent", k, v)
				}
			}
			for _, k := range []string{
				"GATEWAY_INTERFACE", "QUERY_STRING", "REMOTE_ADDR", "REQUEST_METHOD",
				"SCRIPT_NAME", "SERVER_NAME", "SERVER_PORT", "SERVER_PROTOCOL", "SERVER_SOFTWARE",
				"REQUEST_SCHEME", "REQUEST_URI",
			} {
				if _, ok := got[k]; !ok {
					t.Errorf("required %s missing; env = %q", k, env)
				}
			}
		})
	}
}

// TestCGIEnvExact pins the whole environment of one request, so an
// unexpected extra variable shows up too.
func TestCGIEnvExact(t *testing.T) {
	r := httptest.NewRequest(http.MethodPut, "https://api.example:8443/fn/items/7?v=2", strings.NewReader("{}"))
	r.RemoteAddr = "[2001:db8::9]:5555"
	r.RequestURI = "/fn/items/7?v=2"
	r.Header.Set("Content-Type", "application/json")
	r.Header.Set("User-Agent", "test/1")
	r.Header.Set("Proxy", "http://evil")

	got := cgiEnv(r, cgiRequest{
		ScriptName:     "/fn",
		ServerSoftware: "Caddy/v2.11.9 caddy-spawn",
		RemoteUser:     "bob",
		AuthType:       "Bearer",
	})
	want := []string{
		"AUTH_TYPE=Bearer",
		"CONTENT_LENGTH=2",
		"CONTENT_TYPE=application/json",
		"GATEWAY_INTERFACE=CGI/1.1",
		"HTTPS=on",
		"HTTP_HOST=api.example:8443",
		"HTTP_USER_AGENT=test/1",
		"PATH_INFO=/items/7",
		"QUERY_STRING=v=2",
		"REMOTE_ADDR=2001:db8::9",
		"REMOTE_HOST=2001:db8::9",
		"REMOTE_PORT=5555",
		"REMOTE_USER=bob",
		"REQUEST_METHOD=PUT",
		"REQUEST_SCHEME=https",
		"REQUEST_URI=/fn/items/7?v=2",
		"SCRIPT_NAME=/fn",
		"SERVER_NAME=api.example",
		"SERVER_PORT=8443",
		"SERVER_PROTOCOL=HTTP/1.1",
		"SERVER_SOFTWARE=Caddy/v2.11.9 caddy-spawn",
	}
	if !slices.Equal(got, want) {
		t.Errorf("cgiEnv() =\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestSplitHostHeader(t *testing.T) {
	for _, tc := range []struct {
		name, host, wantName, wantPort string
	}{
		{name: "name only", host: "example.com", wantName: "example.com"},
		{name: "name and port", host: "example.com:8080", wantName: "example.com", wantPort: "8080"},
		{name: "empty port", host: "example.com:", wantName: "example.com"},
		{name: "ipv4", host: "192.0.2.1:81", wantName: "192.0.2.1", wantPort: "81"},
		{name: "ipv6 bracketed", host: "[::1]:81", wantName: "[::1]", wantPort: "81"},
		{name: "ipv6 no port", host: "[::1]", wantName: "[::1]"},
		{name: "ipv6 bare", host: "2001:db8::1", wantName: "[2001:db8::1]"},
		{name: "unclosed bracket", host: "[::1", wantName: "[::1"},
		{name: "empty", host: ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			name, port := splitHostHeader(tc.host)
			if name != tc.wantName || port != tc.wantPort {
				t.Errorf("splitHostHeader(%q) = %q, %q; want %q, %q", tc.host, name, port, tc.wantName, tc.wantPort)
			}
		})
	}
}

func envMap(t *testing.T, env []string) map[string]string {
	t.Helper()
	m := make(map[string]string, len(env))
	for _, kv := range env {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			t.Fatalf("entry %q has no '='", kv)
		}
		if strings.IndexByte(kv, 0) >= 0 {
			t.Fatalf("entry %q contains NUL", kv)
		}
		if _, dup := m[k]; dup {
			t.Fatalf("duplicate key %s in %q", k, env)
		}
		m[k] = v
	}
	return m
}
