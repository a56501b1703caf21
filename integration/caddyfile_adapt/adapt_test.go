// Package caddyfile_adapt holds golden tests of the Caddyfile adapter with
// caddy-spawn's directive and global option, modeled on Caddy's
// caddytest/integration/caddyfile_adapt_test.go.
//
// Each spawn_<case>.caddyfiletest file is a Caddyfile, a line of ten dashes,
// then either the JSON the adapter must produce or, for a case that must
// fail, one line with a substring of the expected error. Rewrite the JSON of
// the passing cases from the current adapter with
//
//	go test ./integration/caddyfile_adapt/ -update
//
// and review the diff: goldens change only on purpose.
package caddyfile_adapt

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig"
	_ "github.com/caddyserver/caddy/v2/modules/standard"

	_ "github.com/caddy-spawn/caddy-spawn/caddymodule"
)

var update = flag.Bool("update", false, "rewrite the JSON of the golden files from the adapter's output")

const separator = "----------"

var winNewlines = regexp.MustCompile(`\r?\n`)

func TestCaddyfileAdaptToJSON(t *testing.T) {
	files, err := filepath.Glob("spawn_*.caddyfiletest")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatal("no spawn_*.caddyfiletest files found")
	}
	for _, filename := range files {
		t.Run(strings.TrimSuffix(filename, ".caddyfiletest"), func(t *testing.T) {
			data, err := os.ReadFile(filename)
			if err != nil {
				t.Fatal(err)
			}
			text := winNewlines.ReplaceAllString(string(data), "\n")
			caddyfilePart, expected, ok := strings.Cut(text, "\n"+separator+"\n")
			if !ok {
				t.Fatalf("%s: no line of ten dashes separating the Caddyfile from the expectation", filename)
			}
			// The formatter expects a trailing newline.
			caddyfileText := strings.TrimSpace(caddyfilePart) + "\n"
			expected = strings.TrimSpace(expected)

			adapter := caddyconfig.GetAdapter("caddyfile")
			if adapter == nil {
				t.Fatal("caddyfile adapter not registered")
			}
			result, warnings, adaptErr := adapter.Adapt([]byte(caddyfileText), map[string]any{"filename": "Caddyfile"})
			for _, w := range warnings {
				t.Logf("warning: %s:%d: %s: %s", filename, w.Line, w.Directive, w.Message)
			}

			// Error case: the expectation is a substring of the error.
			if !strings.HasPrefix(expected, "{") {
				if expected == "" {
					t.Fatalf("%s: nothing after the dashes: want JSON or an error substring", filename)
				}
				if adaptErr == nil {
					t.Fatalf("adapting succeeded, want an error containing %q; got JSON:\n%s", expected, result)
				}
				if got := winNewlines.ReplaceAllString(adaptErr.Error(), "\n"); !strings.Contains(got, expected) {
					t.Errorf("error does not contain the expected text\nwant substring: %s\ngot:            %s", expected, got)
				}
				return
			}

			if adaptErr != nil {
				t.Fatalf("adapting: %v", adaptErr)
			}
			got, err := indentJSON(result)
			if err != nil {
				t.Fatalf("adapter output is not JSON: %v\n%s", err, result)
			}

			if *update {
				if got != expected {
					out := strings.TrimSpace(caddyfilePart) + "\n" + separator + "\n" + got + "\n"
					if err := os.WriteFile(filename, []byte(out), 0o644); err != nil {
						t.Fatal(err)
					}
					t.Logf("updated %s", filename)
				}
				return
			}

			want, err := indentJSON([]byte(expected))
			if err != nil {
				t.Fatalf("expected part of %s is not JSON: %v", filename, err)
			}
			if got != want {
				t.Errorf("adapted JSON differs from %s (run with -update to rewrite, then review the diff)\n%s",
					filename, lineDiff(want, got))
			}
		})
	}
}

// indentJSON normalizes JSON: compact, then indented with tabs, as Caddy's
// goldens are.
func indentJSON(b []byte) (string, error) {
	var compact bytes.Buffer
	if err := json.Compact(&compact, b); err != nil {
		return "", err
	}
	var out bytes.Buffer
	if err := json.Indent(&out, compact.Bytes(), "", "\t"); err != nil {
		return "", err
	}
	return out.String(), nil
}

// lineDiff shows want and got side by side from the first differing line,
// with a few lines of context: enough to spot a change in a golden.
func lineDiff(want, got string) string {
	wl, gl := strings.Split(want, "\n"), strings.Split(got, "\n")
	first := 0
	for first < len(wl) && first < len(gl) && wl[first] == gl[first] {
		first++
	}
	start := max(first-3, 0)
	var b strings.Builder
	fmt.Fprintf(&b, "first difference at line %d:\n--- want\n", first+1)
	for _, l := range wl[start:min(first+8, len(wl))] {
		b.WriteString("  " + l + "\n")
	}
	b.WriteString("+++ got\n")
	for _, l := range gl[start:min(first+8, len(gl))] {
		b.WriteString("  " + l + "\n")
	}
	return b.String()
}

// TestExampleAdaptsToItsJSON keeps examples/Caddyfile.json in step with
// examples/Caddyfile (rewrite it with -update).
func TestExampleAdaptsToItsJSON(t *testing.T) {
	src, err := os.ReadFile("../../examples/Caddyfile")
	if err != nil {
		t.Fatal(err)
	}
	result, _, err := caddyconfig.GetAdapter("caddyfile").Adapt(src, map[string]any{"filename": "Caddyfile"})
	if err != nil {
		t.Fatalf("adapting examples/Caddyfile: %v", err)
	}
	got, err := indentJSON(result)
	if err != nil {
		t.Fatal(err)
	}
	const jsonPath = "../../examples/Caddyfile.json"
	if *update {
		if err := os.WriteFile(jsonPath, []byte(got+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	wantRaw, err := os.ReadFile(jsonPath)
	if err != nil {
		t.Fatal(err)
	}
	want, err := indentJSON(wantRaw)
	if err != nil {
		t.Fatalf("%s: %v", jsonPath, err)
	}
	if got != want {
		t.Errorf("examples/Caddyfile.json is stale (run make golden)\n%s", lineDiff(want, got))
	}
}
