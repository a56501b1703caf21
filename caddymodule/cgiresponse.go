package caddymodule

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"

	"golang.org/x/net/http/httpguts"
)

// maxCGIHeaderBytes bounds the CGI response header block, including the
// empty line that ends it.
const maxCGIHeaderBytes = 64 << 10

// errNoOutput means the program closed stdout before writing a byte.
var errNoOutput = errors.New("program wrote no output")

// malformedHeaderError means the program's output does not start with a
// valid CGI response header block (RFC 3875 §6).
type malformedHeaderError struct{ reason string }

func (e malformedHeaderError) Error() string {
	return "malformed CGI response header: " + e.reason
}

// cgiHead is the parsed CGI response header block.
type cgiHead struct {
	Status  int         // final HTTP status to send
	Header  http.Header // headers to send (without Status)
	Dropped []string    // fields of the program's that are not sent (see reservedField)
}

// reservedField reports whether the program may not send the header field
// name (canonical form): the Spawn-* fields are ours (a program's
// "Spawn-Exit-Code: 0" would forge success for clients that read headers),
// and Alt-Svc would advertise other endpoints for the whole origin.
func reservedField(name string) bool {
	return strings.HasPrefix(name, "Spawn-") || name == "Alt-Svc"
}

// cgiHopByHopHeaders are the connection-specific fields of RFC 9110 §7.6.1
// (plus the legacy Proxy-Connection). The server owns the connection and
// its framing, so a program's values for them are dropped, together with
// any field the program names in its own Connection header.
var cgiHopByHopHeaders = []string{
	"Connection",
	"Keep-Alive",
	"Proxy-Connection",
	"Te",
	"Trailer",
	"Transfer-Encoding",
	"Upgrade",
}

// readCGIHead reads the CGI response header block (RFC 3875 §6) from br
// and leaves br positioned at the first byte of the body.
//
// Lines end in "\n" or "\r\n" and the block ends at the first empty line.
// Each line is "Name: value"; obsolete line folding is rejected. The
// status is, in order: the Status field ("NNN" or "NNN reason", 200–599);
// 302 if there is a Location; otherwise 200.
//
// A local Location (a path starting with "/", RFC 3875 §6.2.2) is not
// re-dispatched inside Caddy the way a CGI server may: running another
// route from a program's output would bypass that route's matchers and
// authentication. It is answered to the client as a 302 redirect, exactly
// like a client redirect (§6.2.3).
//
// A missing Content-Type is allowed even though RFC 3875 §6.3.1 asks for
// one: it is left unset, and Go's ResponseWriter sniffs it from the first
// body bytes, as for any Caddy handler.
//
// Errors are errNoOutput when the program wrote nothing,
// malformedHeaderError for output that is not a valid header block
// (including EOF before its empty line and a block over
// maxCGIHeaderBytes), or the wrapped read error.
func readCGIHead(br *bufio.Reader) (cgiHead, error) {
	head := cgiHead{Header: make(http.Header)}
	var (
		consumed   int // bytes of the header block read so far
		lineNo     int
		haveStatus bool
	)
	for {
		line, err := readCGIHeaderLine(br, maxCGIHeaderBytes-consumed)
		consumed += len(line)
		lineNo++
		switch {
		case errors.Is(err, errCGIHeaderTooLarge):
			return cgiHead{}, malformedHeaderError{reason: fmt.Sprintf("header block exceeds %d KiB", maxCGIHeaderBytes>>10)}
		case errors.Is(err, io.EOF) && consumed == 0:
			return cgiHead{}, errNoOutput
		case errors.Is(err, io.EOF):
			return cgiHead{}, malformedHeaderError{reason: "truncated header block (output ended before the empty line)"}
		case err != nil:
			return cgiHead{}, fmt.Errorf("reading CGI response header: %w", err)
		}

		line = bytes.TrimSuffix(line[:len(line)-1], []byte{'\r'})
		if len(line) == 0 {
			break
		}
		name, value, err := parseCGIHeaderField(line, lineNo)
		if err != nil {
			return cgiHead{}, err
		}
		if err := head.add(name, value, lineNo, &haveStatus); err != nil {
			return cgiHead{}, err
		}
	}
	head.finish(haveStatus)
	return head, nil
}

// parseCGIHeaderField splits one header line (without its line end) into
// a canonical field name and its trimmed value.
func parseCGIHeaderField(line []byte, lineNo int) (name, value string, err error) {
	if line[0] == ' ' || line[0] == '\t' {
		return "", "", malformed(lineNo, "obsolete line folding")
	}
	rawName, rawValue, ok := bytes.Cut(line, []byte{':'})
	if !ok && lineNo == 1 && bytes.HasPrefix(line, []byte("HTTP/")) {
		return "", "", malformed(lineNo, `HTTP status line; non-parsed-header output is not supported, print "Status: NNN" instead`)
	}
	if !ok {
		return "", "", malformed(lineNo, "missing colon (did the program print headers and an empty line before the body?)")
	}
	name = string(rawName)
	if !httpguts.ValidHeaderFieldName(name) {
		return "", "", malformed(lineNo, fmt.Sprintf("invalid field name %.64q", name))
	}
	value = strings.Trim(string(rawValue), " \t")
	if !httpguts.ValidHeaderFieldValue(value) {
		return "", "", malformed(lineNo, fmt.Sprintf("invalid value for %.64q", name))
	}
	return http.CanonicalHeaderKey(name), value, nil
}

// add records one header field: Status sets the status, Location and
// Content-Length are checked, everything goes into the header.
func (head *cgiHead) add(name, value string, lineNo int, haveStatus *bool) error {
	switch name {
	case "Status":
		if *haveStatus {
			return malformed(lineNo, "duplicate Status")
		}
		status, err := parseCGIStatus(value)
		if err != nil {
			return malformed(lineNo, err.Error())
		}
		head.Status, *haveStatus = status, true
		return nil
	case "Location":
		if value == "" {
			return malformed(lineNo, "empty Location")
		}
		if strings.HasPrefix(value, "//") || strings.HasPrefix(value, `/\`) {
			// Browsers read both as a URL on another host: an open redirect.
			return malformed(lineNo, fmt.Sprintf("Location %.64q is protocol-relative; use a path or an absolute URL", value))
		}
		if head.Header.Get("Location") != "" {
			return malformed(lineNo, "duplicate Location")
		}
	case "Content-Length":
		// Go's ResponseWriter trusts a single valid Content-Length
		// for framing; two, or a non-number, would reach the client as
		// conflicting framing.
		if len(head.Header.Values("Content-Length")) > 0 {
			return malformed(lineNo, "duplicate Content-Length")
		}
		if _, err := strconv.ParseUint(value, 10, 63); err != nil {
			return malformed(lineNo, "Content-Length is not a non-negative integer")
		}
	}
	if reservedField(name) {
		head.Dropped = append(head.Dropped, name)
		return nil
	}
	head.Header.Add(name, value)
	return nil
}

// finish drops the hop-by-hop fields and settles the status: the Status
// field's, else 302 with a Location, else 200.
func (head *cgiHead) finish(haveStatus bool) {
	for _, name := range head.Header.Values("Connection") {
		for token := range strings.SplitSeq(name, ",") {
			if token = strings.TrimSpace(token); token != "" {
				head.Header.Del(token)
			}
		}
	}
	for _, name := range cgiHopByHopHeaders {
		head.Header.Del(name)
	}
	switch {
	case haveStatus:
	case head.Header.Get("Location") != "":
		head.Status = http.StatusFound
	default:
		head.Status = http.StatusOK
	}
}

// errCGIHeaderTooLarge is internal to readCGIHead and never returned by it.
var errCGIHeaderTooLarge = errors.New("CGI header line over budget")

// readCGIHeaderLine returns the next line of br including its '\n',
// reading at most limit bytes. At EOF it returns what it read with io.EOF.
// Lines longer than br's buffer are assembled from several reads.
func readCGIHeaderLine(br *bufio.Reader, limit int) ([]byte, error) {
	var line []byte
	for {
		frag, err := br.ReadSlice('\n')
		if len(line)+len(frag) > limit {
			return nil, errCGIHeaderTooLarge
		}
		if err == nil && line == nil {
			// Common case: the whole line fit in the buffer. Copy it, as
			// the next read overwrites frag.
			return bytes.Clone(frag), nil
		}
		line = append(line, frag...)
		if !errors.Is(err, bufio.ErrBufferFull) {
			return line, err
		}
	}
}

// parseCGIStatus parses a Status field value: three digits, optionally
// followed by a space and a reason phrase (which HTTP/2 and HTTP/3 cannot
// carry, so it is dropped). Informational 1xx codes are rejected: Go's
// ResponseWriter treats WriteHeader(1xx) as an interim response (or, for
// 101, a protocol switch), never as the final status.
func parseCGIStatus(value string) (int, error) {
	code, _, _ := strings.Cut(value, " ")
	if len(code) != 3 || !isDigits(code) {
		return 0, fmt.Errorf("status %.64q is not a 3-digit code", value)
	}
	status, _ := strconv.Atoi(code)
	switch {
	case status < 100 || status > 599:
		return 0, fmt.Errorf("status %d out of range 200-599", status)
	case status < 200:
		return 0, fmt.Errorf("status %d is informational, not a final status", status)
	}
	return status, nil
}

func isDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

func malformed(lineNo int, reason string) malformedHeaderError {
	return malformedHeaderError{reason: fmt.Sprintf("line %d: %s", lineNo, reason)}
}
