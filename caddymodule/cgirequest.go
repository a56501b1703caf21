package caddymodule

import (
	"net"
	"net/http"
	"path"
	"slices"
	"strconv"
	"strings"
)

// cgiRequest carries what the handler knows about a request beyond *http.Request.
type cgiRequest struct {
	// ScriptName is SCRIPT_NAME: the configured prefix this function is
	// mounted at. Default: "" (mounted at the root). Trailing slashes are
	// ignored, so "/" and "" are the same.
	ScriptName string
	// RequestURI is the original request URI, before Caddy rewrote it
	// (REQUEST_URI). When empty, r.RequestURI or r.URL.RequestURI() is used.
	RequestURI string
	// ServerSoftware is SERVER_SOFTWARE, e.g. "Caddy/v2.11.9 caddy-spawn".
	// Default: "caddy-spawn".
	ServerSoftware string
	// RemoteUser is REMOTE_USER, from Caddy's authentication, when known.
	RemoteUser string
	// AuthType is AUTH_TYPE, e.g. "Basic", when known.
	AuthType string
	// DocumentRoot is the root PATH_TRANSLATED is built from. Default: "",
	// which leaves PATH_TRANSLATED unset.
	DocumentRoot string
	// ClientIP is Caddy's idea of the client's address, which honours the
	// server's trusted_proxies; it becomes REMOTE_ADDR. Empty: the peer's.
	ClientIP string
	// TrustedProxy is whether the peer is one of the server's trusted
	// proxies: only then do the forwarding headers it sent reach the
	// program (see forwardingHeaders).
	TrustedProxy bool
	// PassAuthorization passes Authorization and Proxy-Authorization.
	PassAuthorization bool
}

// forwardingHeaders say who the client is or how it connected. From a peer
// that is not a trusted proxy they are the client's own claims, so they are
// withheld, as Caddy's reverse_proxy replaces them; REMOTE_ADDR, HTTPS and
// SERVER_NAME tell the truth instead.
var forwardingHeaders = []string{
	"Forwarded", "X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Port",
	"X-Forwarded-Prefix", "X-Forwarded-Proto", "X-Forwarded-Ssl", "X-Real-Ip",
	"X-Client-Ip", "True-Client-Ip", "Cf-Connecting-Ip",
}

// authorizationHeaders carry credentials: withheld unless PassAuthorization.
var authorizationHeaders = []string{"Authorization", "Proxy-Authorization"}

// cgiEnv returns the CGI/1.1 meta-variables (RFC 3875 §4.1) for r as
// sorted KEY=VALUE entries, ready to become a container's environment.
//
// Request headers become HTTP_* variables, except:
//   - Content-Type and Content-Length, already given as CONTENT_TYPE and
//     CONTENT_LENGTH;
//   - Proxy, always: HTTP_PROXY is read as a proxy setting by many HTTP
//     clients (httpoxy, CVE-2016-5385);
//   - names with anything but letters, digits and '-': "X_Forwarded_For"
//     would otherwise collide with, or forge, the variable made from
//     "X-Forwarded-For";
//   - headers with a NUL byte in a value, which no environment can hold;
//   - Authorization and Proxy-Authorization unless cr.PassAuthorization;
//   - forwarding headers (X-Forwarded-*, Forwarded, X-Real-IP, …) unless
//     the peer is a trusted proxy (cr.TrustedProxy).
//
// The Host is given as HTTP_HOST (Go keeps it out of r.Header), as
// Apache and net/http/cgi do. A meta-variable whose value would contain
// NUL (for example PATH_INFO from a "%00" in the path) is left out for the
// same reason as such headers; a handler wanting a clean 400 instead must
// check the path itself.
func cgiEnv(r *http.Request, cr cgiRequest) []string {
	env := cgiVars(make([]string, 0, 24+len(r.Header)))
	if cr.AuthType != "" {
		env.add("AUTH_TYPE", cr.AuthType)
	}
	// A chunked body has ContentLength -1. RFC 3875 §4.1.2 wants the
	// decoded length, known only after buffering the whole body; we
	// stream it instead and leave CONTENT_LENGTH unset, so the program
	// reads stdin to EOF.
	if r.ContentLength > 0 && r.Body != nil && r.Body != http.NoBody {
		env.add("CONTENT_LENGTH", strconv.FormatInt(r.ContentLength, 10))
	}
	if ct := r.Header.Values("Content-Type"); len(ct) > 0 {
		env.add("CONTENT_TYPE", ct[0])
	}
	env.add("GATEWAY_INTERFACE", "CGI/1.1")
	env.addPath(r, cr)
	env.addRemote(r, cr)
	method := r.Method
	if method == "" {
		method = http.MethodGet
	}
	env.add("REQUEST_METHOD", method)
	env.add("REQUEST_URI", requestURI(r, cr))
	hostHeader := env.addServer(r, cr)

	headerVars := cgiHeaderVars(withheld(r.Header, cr))
	if _, ok := headerVars["HTTP_HOST"]; !ok && hostHeader != "" {
		headerVars["HTTP_HOST"] = hostHeader
	}
	for key, value := range headerVars {
		env.add(key, value)
	}
	slices.Sort(env)
	return env
}

// cgiVars are meta-variables as KEY=VALUE entries.
type cgiVars []string

// add adds one variable, unless its value holds a NUL, which no
// environment can.
func (env *cgiVars) add(key, value string) {
	if strings.IndexByte(value, 0) >= 0 {
		return
	}
	*env = append(*env, key+"="+value)
}

// addPath adds PATH_INFO, PATH_TRANSLATED, QUERY_STRING and SCRIPT_NAME.
func (env *cgiVars) addPath(r *http.Request, cr cgiRequest) {
	scriptName := strings.TrimRight(cr.ScriptName, "/")
	pathInfo := cleanPathInfo(stripScriptName(r.URL.Path, scriptName))
	env.add("PATH_INFO", pathInfo)
	if cr.DocumentRoot != "" && pathInfo != "" {
		// Cleaned as a rooted path first, so "/../x" stays under the root.
		env.add("PATH_TRANSLATED", path.Join(cr.DocumentRoot, path.Clean("/"+pathInfo)))
	}
	env.add("QUERY_STRING", r.URL.RawQuery)
	env.add("SCRIPT_NAME", scriptName)
}

// cleanPathInfo cleans p with path.Clean's rules ("/a/../b" is "/b", no
// "." or ".." segments, no doubled slashes), so a program that maps
// PATH_INFO to files can't be walked out of its directory; a trailing
// slash is kept. "" stays "".
func cleanPathInfo(p string) string {
	if p == "" {
		return ""
	}
	c := path.Clean("/" + p)
	if strings.HasSuffix(p, "/") && c != "/" {
		c += "/"
	}
	return c
}

// withheld returns h without the headers cr says the program may not see
// (h itself when there are none).
func withheld(h http.Header, cr cgiRequest) http.Header {
	var drop []string
	if !cr.PassAuthorization {
		drop = append(drop, authorizationHeaders...)
	}
	if !cr.TrustedProxy {
		drop = append(drop, forwardingHeaders...)
	}
	var out http.Header
	for k := range h {
		if slices.Contains(drop, http.CanonicalHeaderKey(k)) {
			if out == nil {
				out = h.Clone()
			}
			delete(out, k)
		}
	}
	if out == nil {
		return h
	}
	return out
}

// addRemote adds the REMOTE_* variables: the client as Caddy sees it
// (trusted_proxies honoured); REMOTE_PORT only when that client is the
// peer itself.
func (env *cgiVars) addRemote(r *http.Request, cr cgiRequest) {
	remoteAddr, remotePort := r.RemoteAddr, ""
	if host, port, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		remoteAddr, remotePort = host, port
	}
	if cr.ClientIP != "" && cr.ClientIP != remoteAddr {
		remoteAddr, remotePort = cr.ClientIP, ""
	}
	env.add("REMOTE_ADDR", remoteAddr)
	// No reverse DNS lookup: RFC 3875 §4.1.9 allows REMOTE_ADDR here.
	env.add("REMOTE_HOST", remoteAddr)
	if remotePort != "" {
		env.add("REMOTE_PORT", remotePort)
	}
	if cr.RemoteUser != "" {
		env.add("REMOTE_USER", cr.RemoteUser)
	}
}

// addServer adds the SERVER_* variables, HTTPS and REQUEST_SCHEME, and
// returns the Host the request was sent to.
func (env *cgiVars) addServer(r *http.Request, cr cgiRequest) (hostHeader string) {
	hostHeader = r.Host
	if hostHeader == "" {
		hostHeader = r.URL.Host
	}
	serverName, serverPort := splitHostHeader(hostHeader)
	if serverPort == "" {
		serverPort = "80"
		if r.TLS != nil {
			serverPort = "443"
		}
	}
	env.add("SERVER_NAME", serverName)
	env.add("SERVER_PORT", serverPort)
	proto := r.Proto
	if proto == "" {
		proto = "HTTP/1.1"
	}
	env.add("SERVER_PROTOCOL", proto)
	software := cr.ServerSoftware
	if software == "" {
		software = "caddy-spawn"
	}
	env.add("SERVER_SOFTWARE", software)
	if r.TLS != nil {
		env.add("HTTPS", "on")
		env.add("REQUEST_SCHEME", "https")
	} else {
		env.add("REQUEST_SCHEME", "http")
	}
	return hostHeader
}

// cgiHeaderVars maps request headers to HTTP_* variables, skipping the
// headers cgiEnv documents as skipped. Header maps built by hand may hold
// the same field under several spellings; their values are merged in
// sorted key order so the result is deterministic.
func cgiHeaderVars(h http.Header) map[string]string {
	keys := make([]string, 0, len(h))
	for k := range h {
		keys = append(keys, k)
	}
	slices.Sort(keys)

	merged := make(map[string][]string, len(keys))
	dropped := make(map[string]bool)
	for _, k := range keys {
		name := http.CanonicalHeaderKey(k)
		switch name {
		case "Content-Type", "Content-Length", "Proxy":
			continue
		}
		if !isCGIHeaderName(name) {
			continue
		}
		envKey := "HTTP_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
		for _, v := range h[k] {
			if strings.IndexByte(v, 0) >= 0 {
				dropped[envKey] = true
			}
		}
		merged[envKey] = append(merged[envKey], h[k]...)
	}

	vars := make(map[string]string, len(merged))
	for envKey, values := range merged {
		if dropped[envKey] {
			continue
		}
		sep := ", "
		if envKey == "HTTP_COOKIE" {
			// RFC 6265 §5.4: cookie-pairs are separated by "; ", and a
			// cookie value may itself contain a comma.
			sep = "; "
		}
		vars[envKey] = strings.Join(values, sep)
	}
	return vars
}

// isCGIHeaderName reports whether name is non-empty and only letters,
// digits and '-', so its HTTP_* variable name is unambiguous.
func isCGIHeaderName(name string) bool {
	if name == "" {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '-':
		default:
			return false
		}
	}
	return true
}

// stripScriptName returns urlPath without the scriptName prefix when the
// prefix matches whole path segments ("/fn" matches "/fn" and "/fn/x" but
// not "/fnord"); otherwise urlPath unchanged. scriptName has no trailing
// slash.
func stripScriptName(urlPath, scriptName string) string {
	if scriptName == "" {
		return urlPath
	}
	rest, ok := strings.CutPrefix(urlPath, scriptName)
	if !ok || (rest != "" && rest[0] != '/') {
		return urlPath
	}
	return rest
}

// requestURI returns the URI the client sent, preferring the one recorded
// before Caddy's rewrites.
func requestURI(r *http.Request, cr cgiRequest) string {
	switch {
	case cr.RequestURI != "":
		return cr.RequestURI
	case r.RequestURI != "":
		return r.RequestURI
	default:
		return r.URL.RequestURI()
	}
}

// splitHostHeader splits a Host header into SERVER_NAME and port. An IPv6
// literal keeps its brackets, as RFC 3875 §4.1.14 spells SERVER_NAME
// ("[" ipv6-address "]"); port is "" when absent.
func splitHostHeader(host string) (name, port string) {
	if strings.HasPrefix(host, "[") {
		end := strings.IndexByte(host, ']')
		if end < 0 {
			return host, ""
		}
		name, rest := host[:end+1], host[end+1:]
		if p, ok := strings.CutPrefix(rest, ":"); ok {
			port = p
		}
		return name, port
	}
	if strings.Count(host, ":") > 1 {
		// A bare IPv6 literal without brackets: no port to split off.
		if ip := net.ParseIP(host); ip != nil {
			return "[" + host + "]", ""
		}
		return host, ""
	}
	name, port, _ = strings.Cut(host, ":")
	return name, port
}
