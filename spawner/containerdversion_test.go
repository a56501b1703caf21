package spawner

import (
	"errors"
	"strings"
	"testing"
)

func TestParseContainerdVersion(t *testing.T) {
	for _, tc := range []struct {
		in                  string
		major, minor, patch int
	}{
		{"1.7.35", 1, 7, 35},
		{"v2.4.2", 2, 4, 2},
		{"2.4.2+unknown", 2, 4, 2},
		{"1.6.20~ds1", 1, 6, 20}, // Debian's package
		{"2.1.0-rc.1", 2, 1, 0},  // a pre-release
		{"1.7.24-0ubuntu1", 1, 7, 24},
		{"2.0", 2, 0, 0},
		{" 1.7.0\n", 1, 7, 0},
	} {
		v, err := ParseContainerdVersion(tc.in)
		if err != nil {
			t.Errorf("%q: %v", tc.in, err)
			continue
		}
		if v.Major != tc.major || v.Minor != tc.minor || v.Patch != tc.patch {
			t.Errorf("%q: got %d.%d.%d, want %d.%d.%d", tc.in, v.Major, v.Minor, v.Patch, tc.major, tc.minor, tc.patch)
		}
		if v.String() != tc.in {
			t.Errorf("%q: String() = %q, want the version as reported", tc.in, v.String())
		}
	}
	for _, bad := range []string{"", "unknown", "v", "2", "x1.7.0", "1.x"} {
		if v, err := ParseContainerdVersion(bad); err == nil {
			t.Errorf("%q: parsed as %d.%d.%d, want an error", bad, v.Major, v.Minor, v.Patch)
		}
	}
}

func TestContainerdVersionLess(t *testing.T) {
	order := []string{"1.6.36", "1.7.0", "1.7.9", "1.7.10", "1.7.35", "2.0.0-rc.1", "2.0.1", "2.2.9", "2.4.2", "10.0.0"}
	for i, a := range order {
		va, _ := ParseContainerdVersion(a)
		for j, b := range order {
			vb, _ := ParseContainerdVersion(b)
			if got, want := va.Less(vb), i < j; got != want {
				t.Errorf("%s < %s: got %v, want %v", a, b, got, want)
			}
		}
	}
}

func TestContainerdVersionSupported(t *testing.T) {
	for _, tc := range []struct {
		version   string
		supported bool
		fast      bool
	}{
		{"1.5.18", false, false},
		{"1.6.20~ds1", false, false},
		{"1.6.36", false, false},
		{"1.7.0", true, false},
		{"1.7.35", true, false},
		{"2.0.0-rc.1", true, true},
		{"2.2.9", true, true},
		{"2.4.2+unknown", true, true},
	} {
		v, err := ParseContainerdVersion(tc.version)
		if err != nil {
			t.Fatal(err)
		}
		err = v.Supported()
		if (err == nil) != tc.supported {
			t.Errorf("%s: Supported() = %v, want supported %v", tc.version, err, tc.supported)
		}
		if err != nil {
			if !errors.Is(err, ErrContainerdTooOld) {
				t.Errorf("%s: %v is not ErrContainerdTooOld", tc.version, err)
			}
			// The message names the version found and the minimum.
			if msg := err.Error(); !strings.Contains(msg, "containerd "+tc.version) || !strings.Contains(msg, "1.7.0 or later") {
				t.Errorf("%s: message %q does not name the version found and the minimum", tc.version, msg)
			}
		}
		err = v.FastPathSupported()
		if (err == nil) != tc.fast {
			t.Errorf("%s: FastPathSupported() = %v, want fast path %v", tc.version, err, tc.fast)
		}
		if err != nil && (!errors.Is(err, ErrFastPathUnavailable) || !strings.Contains(err.Error(), "2.0.0 or later")) {
			t.Errorf("%s: fast path refusal %q is not ErrFastPathUnavailable naming 2.0.0", tc.version, err)
		}
	}
}
