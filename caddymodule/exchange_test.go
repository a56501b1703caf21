package caddymodule

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"
)

func TestLimitedBody(t *testing.T) {
	for _, tc := range []struct {
		name    string
		body    string
		limit   int64
		oneByte bool // read through iotest.OneByteReader
		want    string
		wantErr error
	}{
		{name: "under the limit", body: "hello", limit: 10, want: "hello"},
		{name: "exactly the limit", body: "hello", limit: 5, want: "hello"},
		{name: "exactly the limit, byte by byte", body: "hello", limit: 5, oneByte: true, want: "hello"},
		{name: "one byte over", body: "hello!", limit: 5, want: "hello", wantErr: errBodyTooLarge},
		{name: "one byte over, byte by byte", body: "hello!", limit: 5, oneByte: true, want: "hello", wantErr: errBodyTooLarge},
		{name: "far over", body: strings.Repeat("x", 100_000), limit: 1000, want: strings.Repeat("x", 1000), wantErr: errBodyTooLarge},
		{name: "empty body", body: "", limit: 1, want: ""},
		{name: "limit of one byte", body: "ab", limit: 1, want: "a", wantErr: errBodyTooLarge},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var r io.Reader = strings.NewReader(tc.body)
			if tc.oneByte {
				r = iotest.OneByteReader(r)
			}
			var out bytes.Buffer
			buf := make([]byte, 4096)
			_, err := io.CopyBuffer(writerOnly{&out}, &limitedBody{r: r, left: tc.limit}, buf)
			if !errors.Is(err, tc.wantErr) {
				t.Errorf("error %v, want %v", err, tc.wantErr)
			}
			if out.String() != tc.want {
				t.Errorf("passed %d bytes %.20q, want %d bytes %.20q", out.Len(), out.String(), len(tc.want), tc.want)
			}
		})
	}
}

func TestDescribeExit(t *testing.T) {
	for _, tc := range []struct {
		code uint32
		want string
	}{
		{0, "exit code 0"},
		{3, "exit code 3"},
		{128, "exit code 128"},
		{137, "exit code 137: killed by signal 9 (killed)"},
		{143, "exit code 143: killed by signal 15 (terminated)"},
		{255, "exit code 255"},
	} {
		if got := describeExit(tc.code); got != tc.want {
			t.Errorf("describeExit(%d) = %q, want %q", tc.code, got, tc.want)
		}
	}
}
