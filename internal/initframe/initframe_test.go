package initframe

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"testing/iotest"
)

// frame builds a frame by hand, independently of Encode.
func frame(version byte, length uint32, payload string) []byte {
	b := []byte(Magic)
	b = append(b, version, byte(length>>24), byte(length>>16), byte(length>>8), byte(length))
	return append(b, payload...)
}

func TestEncode(t *testing.T) {
	tests := []struct {
		name    string
		env     []string
		want    []byte
		wantErr error
	}{
		{name: "nil", env: nil, want: frame(1, 0, "")},
		{name: "empty", env: []string{}, want: frame(1, 0, "")},
		{name: "one", env: []string{"A=1"}, want: frame(1, 4, "A=1\x00")},
		{
			name: "several",
			env:  []string{"FOO=bar", "EMPTY=", "EQ=a=b", "UTF8=é"},
			want: frame(1, 30, "FOO=bar\x00EMPTY=\x00EQ=a=b\x00UTF8=é\x00"),
		},
		{name: "missing equals", env: []string{"A=1", "FOO"}, wantErr: ErrMalformed},
		{name: "empty entry", env: []string{""}, wantErr: ErrMalformed},
		{name: "empty key", env: []string{"=x"}, wantErr: ErrMalformed},
		{name: "NUL in key", env: []string{"A\x00B=1"}, wantErr: ErrMalformed},
		{name: "NUL in value", env: []string{"A=1\x002"}, wantErr: ErrMalformed},
		{name: "max payload", env: []string{"K=" + strings.Repeat("v", MaxPayload-3)}, want: frame(1, MaxPayload, "K="+strings.Repeat("v", MaxPayload-3)+"\x00")},
		{name: "too large", env: []string{"K=" + strings.Repeat("v", MaxPayload-2)}, wantErr: ErrTooLarge},
		{name: "too large in total", env: slices.Repeat([]string{"K=" + strings.Repeat("v", 1000)}, 1100), wantErr: ErrTooLarge},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Encode(tc.env)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("Encode() error = %v, want %v", err, tc.wantErr)
			}
			if !bytes.Equal(got, tc.want) {
				t.Fatalf("Encode() = %q, want %q", trim(got), trim(tc.want))
			}
		})
	}
}

func TestEncodeErrorHidesValue(t *testing.T) {
	_, err := Encode([]string{"SECRET=hunter2\x00"})
	if err == nil || strings.Contains(err.Error(), "hunter2") {
		t.Fatalf("Encode() error = %v, want an error that names the key only", err)
	}
}

func TestDecode(t *testing.T) {
	tests := []struct {
		name    string
		in      []byte
		want    []string
		wantErr error
	}{
		{name: "empty payload", in: frame(1, 0, ""), want: nil},
		{name: "one", in: frame(1, 4, "A=1\x00"), want: []string{"A=1"}},
		{
			name: "several",
			in:   frame(1, 30, "FOO=bar\x00EMPTY=\x00EQ=a=b\x00UTF8=é\x00"),
			want: []string{"FOO=bar", "EMPTY=", "EQ=a=b", "UTF8=é"},
		},
		{name: "duplicates kept", in: frame(1, 8, "A=1\x00A=2\x00"), want: []string{"A=1", "A=2"}},
		{name: "no input", in: nil, wantErr: io.ErrUnexpectedEOF},
		{name: "short header", in: []byte("SPWN\x01\x00\x00"), wantErr: io.ErrUnexpectedEOF},
		{name: "short payload", in: frame(1, 10, "A=1\x00"), wantErr: io.ErrUnexpectedEOF},
		{name: "bad magic", in: []byte("GET / HTTP/1.1\r\n"), wantErr: ErrBadMagic},
		{name: "lowercase magic", in: append([]byte("spwn"), frame(1, 0, "")[4:]...), wantErr: ErrBadMagic},
		{name: "version 0", in: frame(0, 0, ""), wantErr: ErrBadVersion},
		{name: "version 2", in: frame(2, 0, ""), wantErr: ErrBadVersion},
		{name: "too large", in: frame(1, MaxPayload+1, ""), wantErr: ErrTooLarge},
		{name: "length 4GiB-1", in: frame(1, 1<<32-1, ""), wantErr: ErrTooLarge},
		{name: "max payload, short", in: frame(1, MaxPayload, "A=1\x00"), wantErr: io.ErrUnexpectedEOF},
		{name: "no trailing NUL", in: frame(1, 3, "A=1"), wantErr: ErrMalformed},
		{name: "lone NUL", in: frame(1, 1, "\x00"), wantErr: ErrMalformed},
		{name: "empty entry", in: frame(1, 5, "A=1\x00\x00"), wantErr: ErrMalformed},
		{name: "missing equals", in: frame(1, 6, "A=1\x00B\x00"), wantErr: ErrMalformed},
		{name: "empty key", in: frame(1, 3, "=1\x00"), wantErr: ErrMalformed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Decode(bytes.NewReader(tc.in))
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("Decode() error = %v, want %v", err, tc.wantErr)
			}
			if !slices.Equal(got, tc.want) {
				t.Fatalf("Decode() = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestDecodeErrorMessages(t *testing.T) {
	tests := []struct {
		name string
		in   []byte
		want string
	}{
		{name: "eof", in: nil, want: "initframe: reading header: unexpected EOF"},
		{name: "short payload", in: frame(1, 8, "A=1\x00"), want: "initframe: reading payload: unexpected EOF"},
		{name: "bad magic", in: []byte("GET / HTTP/1.1\r\n"), want: `initframe: bad magic: got "GET "`},
		{name: "bad version", in: frame(7, 0, ""), want: "initframe: unsupported version: got 7, want 1"},
		{name: "too large", in: frame(1, MaxPayload+1, ""), want: "initframe: payload too large: 1048577 bytes, max 1048576"},
		{name: "malformed", in: frame(1, 6, "A=1\x00B\x00"), want: "initframe: malformed payload: entry 1: missing '='"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Decode(bytes.NewReader(tc.in))
			if err == nil || err.Error() != tc.want {
				t.Fatalf("Decode() error = %v, want %q", err, tc.want)
			}
		})
	}
}

// exactReader fails the test if Decode ever asks for a byte past limit:
// reading fd 0 that way would swallow the start of the request body.
type exactReader struct {
	t     *testing.T
	r     io.Reader
	pos   int
	limit int
}

func (e *exactReader) Read(p []byte) (int, error) {
	if e.pos+len(p) > e.limit {
		e.t.Errorf("Read of %d bytes at offset %d asks past the frame end %d", len(p), e.pos, e.limit)
	}
	n, err := e.r.Read(p)
	e.pos += n
	return n, err
}

func TestDecodeLeavesBodyUnread(t *testing.T) {
	const body = "body-bytes\x00SPWN and more"
	tests := []struct {
		name string
		env  []string
		wrap func(io.Reader) io.Reader
	}{
		{name: "empty frame", env: nil, wrap: func(r io.Reader) io.Reader { return r }},
		{name: "entries", env: []string{"FOO=frame", "X=y"}, wrap: func(r io.Reader) io.Reader { return r }},
		{name: "one byte reads", env: []string{"FOO=frame", "X=y"}, wrap: iotest.OneByteReader},
		{name: "half reads", env: []string{"FOO=frame", "X=y"}, wrap: iotest.HalfReader},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f, err := Encode(tc.env)
			if err != nil {
				t.Fatal(err)
			}
			src := bytes.NewReader(append(f, body...))
			got, err := Decode(&exactReader{t: t, r: tc.wrap(src), limit: len(f)})
			if err != nil {
				t.Fatalf("Decode() error = %v", err)
			}
			if !slices.Equal(got, tc.env) {
				t.Fatalf("Decode() = %q, want %q", got, tc.env)
			}
			rest, _ := io.ReadAll(src)
			if string(rest) != body {
				t.Fatalf("left in reader = %q, want %q", rest, body)
			}
		})
	}
}

func TestMerge(t *testing.T) {
	tests := []struct {
		name string
		base []string
		over []string
		want []string
	}{
		{name: "both empty", want: []string{}},
		{name: "base only", base: []string{"A=1", "B=2"}, want: []string{"A=1", "B=2"}},
		{name: "over only", over: []string{"A=1", "B=2"}, want: []string{"A=1", "B=2"}},
		{
			name: "replace in place, append new in over order",
			base: []string{"PATH=/bin", "FOO=base", "BAR=base"},
			over: []string{"ZED=z", "FOO=frame", "ALPHA=a"},
			want: []string{"PATH=/bin", "FOO=frame", "BAR=base", "ZED=z", "ALPHA=a"},
		},
		{name: "empty value wins", base: []string{"A=1"}, over: []string{"A="}, want: []string{"A="}},
		{name: "key prefix is not the key", base: []string{"AB=1"}, over: []string{"A=2"}, want: []string{"AB=1", "A=2"}},
		{name: "value with equals", base: []string{"A=x=y"}, over: []string{"A=z=w"}, want: []string{"A=z=w"}},
		{
			name: "duplicates: last wins at first position",
			base: []string{"A=1", "B=1", "A=2"},
			over: []string{"C=1", "B=2", "C=2"},
			want: []string{"A=2", "B=2", "C=2"},
		},
		{name: "entry without equals", base: []string{"WEIRD", "A=1"}, over: []string{"WEIRD"}, want: []string{"WEIRD", "A=1"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			base := slices.Clone(tc.base)
			over := slices.Clone(tc.over)
			got := Merge(base, over)
			if !slices.Equal(got, tc.want) {
				t.Fatalf("Merge() = %q, want %q", got, tc.want)
			}
			if !slices.Equal(base, tc.base) || !slices.Equal(over, tc.over) {
				t.Fatal("Merge() modified its inputs")
			}
		})
	}
}

func FuzzDecode(f *testing.F) {
	for _, env := range [][]string{nil, {"A=1"}, {"FOO=bar", "EMPTY=", "EQ=a=b"}} {
		b, err := Encode(env)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
		f.Add(append(b, "body"...))
	}
	f.Add([]byte("SPWN\x01\x00\x00\x00\x03A=1"))
	f.Fuzz(func(t *testing.T, data []byte) {
		r := bytes.NewReader(data)
		env, err := Decode(r)
		if err != nil {
			for _, known := range []error{ErrBadMagic, ErrBadVersion, ErrTooLarge, ErrMalformed, io.ErrUnexpectedEOF} {
				if errors.Is(err, known) {
					return
				}
			}
			t.Fatalf("Decode() error %v wraps no documented error", err)
		}
		consumed := data[:len(data)-r.Len()]
		enc, err := Encode(env)
		if err != nil {
			t.Fatalf("Encode(Decode()) error = %v", err)
		}
		if !bytes.Equal(enc, consumed) {
			t.Fatalf("Encode(Decode(x)) = %q, want the %d bytes Decode consumed %q", enc, len(consumed), consumed)
		}
	})
}

// TestFuzzSeeds checks that the committed seed corpus says what its file
// names claim: valid-* frames decode, the others fail.
func TestFuzzSeeds(t *testing.T) {
	paths, err := filepath.Glob(filepath.Join("testdata", "fuzz", "FuzzDecode", "*"))
	if err != nil || len(paths) == 0 {
		t.Fatalf("no seed corpus: %v", err)
	}
	for _, p := range paths {
		t.Run(filepath.Base(p), func(t *testing.T) {
			raw, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			lines := strings.Split(strings.TrimSpace(string(raw)), "\n")
			if len(lines) != 2 || lines[0] != "go test fuzz v1" {
				t.Fatalf("not a one-value fuzz corpus file: %q", raw)
			}
			lit, ok := strings.CutPrefix(lines[1], "[]byte(")
			lit, ok2 := strings.CutSuffix(lit, ")")
			data, err := strconv.Unquote(lit)
			if !ok || !ok2 || err != nil {
				t.Fatalf("not a []byte literal: %q", lines[1])
			}
			_, err = Decode(strings.NewReader(data))
			if valid := strings.HasPrefix(filepath.Base(p), "valid-"); valid != (err == nil) {
				t.Fatalf("Decode() error = %v, valid = %v", err, valid)
			}
		})
	}
}

// trim shortens large frames in failure messages.
func trim(b []byte) []byte {
	if len(b) > 64 {
		return b[:64]
	}
	return b
}
