package caddymodule

import (
	"bufio"
	"errors"
	"io"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"testing/iotest"

	"golang.org/x/net/http/httpguts"
)

func TestReadCGIHead(t *testing.T) {
	errBoom := errors.New("boom")
	bigLine := "X-Big: " + strings.Repeat("a", maxCGIHeaderBytes) + "\n"
	// manyLines is a block of 100-byte lines just over the limit.
	manyLines := strings.Repeat("X-Filler: "+strings.Repeat("b", 89)+"\n", maxCGIHeaderBytes/100+1) + "\nbody"
	// exactLimit is a block whose size, empty line included, is exactly
	// maxCGIHeaderBytes.
	exactPrefix := "X-Exact: "
	exactLimit := exactPrefix + strings.Repeat("c", maxCGIHeaderBytes-len(exactPrefix)-2) + "\n\nbody"

	for _, tc := range []struct {
		name     string
		input    io.Reader
		bufSize  int // bufio.Reader size; 0 means the default
		want     cgiHead
		wantBody string
		wantErr  error // nil, a sentinel (errors.Is) or malformedHeaderError (reason substring)
	}{
		{
			name:     "content type only",
			input:    strings.NewReader("Content-Type: text/plain\n\nhello"),
			want:     cgiHead{Status: 200, Header: http.Header{"Content-Type": {"text/plain"}}},
			wantBody: "hello",
		},
		{
			name:     "reserved fields from the program are dropped",
			input:    strings.NewReader("Spawn-Exit-Code: 0\nspawn-error: none\nAlt-Svc: h3=\":443\"\nX-Ok: 1\n\nbody"),
			want:     cgiHead{Status: 200, Header: http.Header{"X-Ok": {"1"}}, Dropped: []string{"Spawn-Exit-Code", "Spawn-Error", "Alt-Svc"}},
			wantBody: "body",
		},
		{
			name:    "protocol-relative Location is an open redirect",
			input:   strings.NewReader("Location: //evil.example/x\n\n"),
			wantErr: malformedHeaderError{reason: "protocol-relative"},
		},
		{
			name:    "backslash Location is an open redirect",
			input:   strings.NewReader("Location: /\\evil.example\n\n"),
			wantErr: malformedHeaderError{reason: "protocol-relative"},
		},
		{
			name:     "CRLF line endings",
			input:    strings.NewReader("Content-Type: text/plain\r\nX-A: 1\r\n\r\nhello\r\n"),
			want:     cgiHead{Status: 200, Header: http.Header{"Content-Type": {"text/plain"}, "X-A": {"1"}}},
			wantBody: "hello\r\n",
		},
		{
			name:     "mixed LF and CRLF",
			input:    strings.NewReader("X-A: 1\nX-B: 2\r\n\nbody"),
			want:     cgiHead{Status: 200, Header: http.Header{"X-A": {"1"}, "X-B": {"2"}}},
			wantBody: "body",
		},
		{
			name:     "status with reason",
			input:    strings.NewReader("Status: 404 Not Found\nContent-Type: text/plain\n\nnope"),
			want:     cgiHead{Status: 404, Header: http.Header{"Content-Type": {"text/plain"}}},
			wantBody: "nope",
		},
		{
			name:  "status without reason",
			input: strings.NewReader("status: 201\n\n"),
			want:  cgiHead{Status: 201, Header: http.Header{}},
		},
		{
			name:  "status 599",
			input: strings.NewReader("Status: 599\n\n"),
			want:  cgiHead{Status: 599, Header: http.Header{}},
		},
		{
			name:    "status 600 out of range",
			input:   strings.NewReader("Status: 600 Nope\n\n"),
			wantErr: malformedHeaderError{reason: "out of range"},
		},
		{
			name:    "status 099 out of range",
			input:   strings.NewReader("Status: 099\n\n"),
			wantErr: malformedHeaderError{reason: "out of range"},
		},
		{
			name:    "status 1xx is not final",
			input:   strings.NewReader("Status: 101 Switching Protocols\n\n"),
			wantErr: malformedHeaderError{reason: "informational"},
		},
		{
			name:    "status not numeric",
			input:   strings.NewReader("Status: OK\n\n"),
			wantErr: malformedHeaderError{reason: "3-digit"},
		},
		{
			name:    "status four digits",
			input:   strings.NewReader("Status: 2000\n\n"),
			wantErr: malformedHeaderError{reason: "3-digit"},
		},
		{
			name:    "status glued reason",
			input:   strings.NewReader("Status: 200OK\n\n"),
			wantErr: malformedHeaderError{reason: "3-digit"},
		},
		{
			name:    "status empty",
			input:   strings.NewReader("Status:\n\n"),
			wantErr: malformedHeaderError{reason: "3-digit"},
		},
		{
			name:    "duplicate status",
			input:   strings.NewReader("Status: 200\nStatus: 500\n\n"),
			wantErr: malformedHeaderError{reason: "line 2: duplicate Status"},
		},
		{
			name:     "absolute Location means 302",
			input:    strings.NewReader("Location: https://example.com/next\n\n"),
			want:     cgiHead{Status: 302, Header: http.Header{"Location": {"https://example.com/next"}}},
			wantBody: "",
		},
		{
			name:  "local Location is a 302 too",
			input: strings.NewReader("Location: /elsewhere?x=1\n\n"),
			want:  cgiHead{Status: 302, Header: http.Header{"Location": {"/elsewhere?x=1"}}},
		},
		{
			name:     "Location with explicit Status",
			input:    strings.NewReader("Location: /moved\nStatus: 301 Moved Permanently\n\nsee /moved"),
			want:     cgiHead{Status: 301, Header: http.Header{"Location": {"/moved"}}},
			wantBody: "see /moved",
		},
		{
			name:    "empty Location",
			input:   strings.NewReader("Location:  \n\n"),
			wantErr: malformedHeaderError{reason: "empty Location"},
		},
		{
			name:    "duplicate Location",
			input:   strings.NewReader("Location: /a\nLocation: /b\n\n"),
			wantErr: malformedHeaderError{reason: "duplicate Location"},
		},
		{
			name:  "valid Content-Length kept",
			input: strings.NewReader("Content-Length: 5\n\nhello"),
			want:  cgiHead{Status: 200, Header: http.Header{"Content-Length": {"5"}}}, wantBody: "hello",
		},
		{
			name:    "duplicate Content-Length",
			input:   strings.NewReader("Content-Length: 5\nContent-Length: 6\n\nhello"),
			wantErr: malformedHeaderError{reason: "duplicate Content-Length"},
		},
		{
			name:    "non-numeric Content-Length",
			input:   strings.NewReader("Content-Length: -1\n\n"),
			wantErr: malformedHeaderError{reason: "Content-Length"},
		},
		{
			name:  "value whitespace trimmed, inner kept",
			input: strings.NewReader("X-A: \t spaced  out \t\r\n\n"),
			want:  cgiHead{Status: 200, Header: http.Header{"X-A": {"spaced  out"}}},
		},
		{
			name:  "empty value allowed",
			input: strings.NewReader("X-Empty:\n\n"),
			want:  cgiHead{Status: 200, Header: http.Header{"X-Empty": {""}}},
		},
		{
			name:     "only an empty line",
			input:    strings.NewReader("\nbody"),
			want:     cgiHead{Status: 200, Header: http.Header{}},
			wantBody: "body",
		},
		{
			name:    "folded line",
			input:   strings.NewReader("X-A: one\n two\n\n"),
			wantErr: malformedHeaderError{reason: "line 2: obsolete line folding"},
		},
		{
			name:    "folded line with tab",
			input:   strings.NewReader("X-A: one\r\n\ttwo\r\n\r\n"),
			wantErr: malformedHeaderError{reason: "obsolete line folding"},
		},
		{
			name:    "missing colon",
			input:   strings.NewReader("hello world\n"),
			wantErr: malformedHeaderError{reason: "line 1: missing colon"},
		},
		{
			name:    "invalid name with space",
			input:   strings.NewReader("Bad Name: x\n\n"),
			wantErr: malformedHeaderError{reason: "invalid field name"},
		},
		{
			name:    "space before colon",
			input:   strings.NewReader("X-A : x\n\n"),
			wantErr: malformedHeaderError{reason: "invalid field name"},
		},
		{
			name:    "empty name",
			input:   strings.NewReader(": x\n\n"),
			wantErr: malformedHeaderError{reason: "invalid field name"},
		},
		{
			name:    "status line instead of headers",
			input:   strings.NewReader("HTTP/1.1 200 OK\n\n"),
			wantErr: malformedHeaderError{reason: "HTTP status line"},
		},
		{
			name:    "control character in value",
			input:   strings.NewReader("X-A: a\x00b\n\n"),
			wantErr: malformedHeaderError{reason: "invalid value"},
		},
		{
			name:    "bare CR in value",
			input:   strings.NewReader("X-A: a\rb\n\n"),
			wantErr: malformedHeaderError{reason: "invalid value"},
		},
		{
			name:    "single huge line",
			input:   strings.NewReader(bigLine + "\n"),
			wantErr: malformedHeaderError{reason: "header block exceeds 64 KiB"},
		},
		{
			name:    "huge line with small buffer",
			input:   strings.NewReader(bigLine + "\n"),
			bufSize: 16,
			wantErr: malformedHeaderError{reason: "header block exceeds 64 KiB"},
		},
		{
			name:    "many lines over the limit",
			input:   strings.NewReader(manyLines),
			wantErr: malformedHeaderError{reason: "header block exceeds 64 KiB"},
		},
		{
			name:    "endless output without newline",
			input:   io.LimitReader(neverEnding('x'), 10*maxCGIHeaderBytes),
			wantErr: malformedHeaderError{reason: "header block exceeds 64 KiB"},
		},
		{
			name:     "block of exactly the limit",
			input:    strings.NewReader(exactLimit),
			bufSize:  64,
			want:     cgiHead{Status: 200, Header: http.Header{"X-Exact": {strings.Repeat("c", maxCGIHeaderBytes-len(exactPrefix)-2)}}},
			wantBody: "body",
		},
		{
			name:    "one byte over the limit",
			input:   strings.NewReader("X" + exactLimit),
			wantErr: malformedHeaderError{reason: "header block exceeds 64 KiB"},
		},
		{
			name:     "long line across small buffer",
			input:    strings.NewReader("X-Long: " + strings.Repeat("d", 100) + "\r\n\r\nrest"),
			bufSize:  16,
			want:     cgiHead{Status: 200, Header: http.Header{"X-Long": {strings.Repeat("d", 100)}}},
			wantBody: "rest",
		},
		{
			name:     "one byte at a time",
			input:    iotest.OneByteReader(strings.NewReader("Status: 418\r\nX-A: 1\r\n\r\ntea")),
			want:     cgiHead{Status: 418, Header: http.Header{"X-A": {"1"}}},
			wantBody: "tea",
		},
		{
			name:    "truncated mid-line",
			input:   strings.NewReader("Content-Type: text/pl"),
			wantErr: malformedHeaderError{reason: "truncated header block"},
		},
		{
			name:    "truncated before empty line",
			input:   strings.NewReader("Content-Type: text/plain\n"),
			wantErr: malformedHeaderError{reason: "truncated header block"},
		},
		{
			name:    "truncated CR only",
			input:   strings.NewReader("X-A: 1\r\n\r"),
			wantErr: malformedHeaderError{reason: "truncated header block"},
		},
		{
			name:    "empty output",
			input:   strings.NewReader(""),
			wantErr: errNoOutput,
		},
		{
			name:    "read error before output",
			input:   iotest.ErrReader(errBoom),
			wantErr: errBoom,
		},
		{
			name:    "read error mid-block",
			input:   io.MultiReader(strings.NewReader("X-A: 1\n"), iotest.ErrReader(errBoom)),
			wantErr: errBoom,
		},
		{
			name: "hop-by-hop headers dropped",
			input: strings.NewReader("Connection: close, X-Secret\nKeep-Alive: timeout=5\nTransfer-Encoding: chunked\n" +
				"Upgrade: websocket\nProxy-Connection: keep-alive\nTE: trailers\nTrailer: X-Exit\n" +
				"X-Secret: s\nX-Kept: k\n\nbody"),
			want:     cgiHead{Status: 200, Header: http.Header{"X-Kept": {"k"}}},
			wantBody: "body",
		},
		{
			name:  "duplicate Set-Cookie kept",
			input: strings.NewReader("Set-Cookie: a=1; Path=/\nset-cookie: b=2\nContent-Type: text/html\n\n<p>"),
			want: cgiHead{Status: 200, Header: http.Header{
				"Set-Cookie":   {"a=1; Path=/", "b=2"},
				"Content-Type": {"text/html"},
			}},
			wantBody: "<p>",
		},
		{
			name:     "body left unread, including blank lines and header-like text",
			input:    strings.NewReader("Status: 200\n\n\nX-Not-A-Header: 1\n\nend"),
			want:     cgiHead{Status: 200, Header: http.Header{}},
			wantBody: "\nX-Not-A-Header: 1\n\nend",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			br := bufio.NewReader(tc.input)
			if tc.bufSize > 0 {
				br = bufio.NewReaderSize(tc.input, tc.bufSize)
			}
			got, err := readCGIHead(br)
			checkCGIHeadErr(t, err, tc.wantErr)
			if tc.wantErr != nil {
				if got.Status != 0 || got.Header != nil {
					t.Errorf("readCGIHead() = %+v on error, want zero value", got)
				}
				return
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("readCGIHead() = %+v, want %+v", got, tc.want)
			}
			body, err := io.ReadAll(br)
			if err != nil {
				t.Fatalf("reading body: %v", err)
			}
			if string(body) != tc.wantBody {
				t.Errorf("body = %q, want %q", body, tc.wantBody)
			}
		})
	}
}

func TestMalformedHeaderErrorMessage(t *testing.T) {
	_, err := readCGIHead(bufio.NewReader(strings.NewReader("oops\n")))
	const want = "malformed CGI response header: line 1: missing colon"
	if err == nil || !strings.HasPrefix(err.Error(), want) {
		t.Errorf("error = %v, want prefix %q", err, want)
	}
}

// checkCGIHeadErr compares got with want: nil, a sentinel matched with
// errors.Is, or a malformedHeaderError whose reason must be a substring
// of the returned one.
func checkCGIHeadErr(t *testing.T, got, want error) {
	t.Helper()
	switch want := want.(type) {
	case nil:
		if got != nil {
			t.Fatalf("readCGIHead() error = %v, want nil", got)
		}
	case malformedHeaderError:
		var m malformedHeaderError
		if !errors.As(got, &m) {
			t.Fatalf("readCGIHead() error = %v, want malformedHeaderError", got)
		}
		if !strings.Contains(m.reason, want.reason) {
			t.Fatalf("readCGIHead() reason = %q, want it to contain %q", m.reason, want.reason)
		}
	default:
		if !errors.Is(got, want) {
			t.Fatalf("readCGIHead() error = %v, want %v", got, want)
		}
		if _, ok := errors.AsType[malformedHeaderError](got); ok {
			t.Fatalf("readCGIHead() error = %v is a malformedHeaderError, want %v", got, want)
		}
	}
}

// neverEnding is an endless stream of one byte.
type neverEnding byte

func (b neverEnding) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = byte(b)
	}
	return len(p), nil
}

func FuzzReadCGIHead(f *testing.F) {
	for _, seed := range []string{
		"",
		"\n",
		"Content-Type: text/plain\n\nhello",
		"Status: 404 Not Found\r\nContent-Type: text/plain\r\n\r\nnope",
		"Location: /x\n\n",
		"Connection: X-A\nX-A: 1\nTrailer: X\n\n",
		"X-A: 1\n folded\n\n",
		"Status: 1000\n\n",
		"no colon\n\n",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, input []byte) {
		br := bufio.NewReaderSize(strings.NewReader(string(input)), 16)
		head, err := readCGIHead(br)
		if err != nil {
			var m malformedHeaderError
			switch {
			case errors.Is(err, errNoOutput):
				if len(input) != 0 {
					t.Fatalf("errNoOutput for %d bytes of input", len(input))
				}
			case errors.As(err, &m):
			default:
				t.Fatalf("unexpected error type %T: %v", err, err)
			}
			return
		}

		if head.Status < 200 || head.Status > 599 {
			t.Fatalf("Status = %d, want 200..599", head.Status)
		}
		if head.Header == nil {
			t.Fatal("Header is nil")
		}
		for _, name := range append([]string{"Status"}, cgiHopByHopHeaders...) {
			if v, ok := head.Header[http.CanonicalHeaderKey(name)]; ok {
				t.Fatalf("header %s = %q survived", name, v)
			}
		}
		for name, values := range head.Header {
			if !httpguts.ValidHeaderFieldName(name) || name != http.CanonicalHeaderKey(name) {
				t.Fatalf("invalid or non-canonical name %q", name)
			}
			for _, v := range values {
				if !httpguts.ValidHeaderFieldValue(v) {
					t.Fatalf("invalid value %q for %s", v, name)
				}
			}
		}

		body, err := io.ReadAll(br)
		if err != nil {
			t.Fatalf("reading body: %v", err)
		}
		consumed := len(input) - len(body)
		if consumed <= 0 || consumed > maxCGIHeaderBytes {
			t.Fatalf("header block consumed %d bytes", consumed)
		}
		if string(input[consumed:]) != string(body) {
			t.Fatal("body is not the remainder of the input")
		}
		if input[consumed-1] != '\n' {
			t.Fatalf("header block does not end in a newline: %q", input[:consumed])
		}
	})
}
