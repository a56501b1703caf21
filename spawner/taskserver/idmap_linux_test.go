package taskserver

import (
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/containerd/containerd/v2/core/mount"
)

func TestCommonDir(t *testing.T) {
	for _, tc := range []struct {
		name  string
		paths []string
		want  string
	}{
		{name: "one layer", paths: []string{"/var/lib/sn/snapshots/7/fs"}, want: "/var/lib/sn/snapshots/7"},
		{name: "layers of one snapshotter", paths: []string{"/var/lib/sn/snapshots/12/fs", "/var/lib/sn/snapshots/3/fs"}, want: "/var/lib/sn/snapshots"},
		{name: "a prefix that is not a directory", paths: []string{"/a/bc/fs", "/a/b/fs"}, want: "/a"},
		{name: "nothing shared", paths: []string{"/a/fs", "/b/fs"}, want: "/"},
		{name: "none", want: ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := commonDir(tc.paths); got != tc.want {
				t.Errorf("commonDir(%q) = %q, want %q", tc.paths, got, tc.want)
			}
		})
	}
}

func TestTakeIDMapOptions(t *testing.T) {
	uid, gid, rest := takeIDMapOptions([]string{"index=off", "uidmap=0:100:65536", "lowerdir=/l", "gidmap=0:200:65536"})
	if uid != "0:100:65536" || gid != "0:200:65536" || !slices.Equal(rest, []string{"index=off", "lowerdir=/l"}) {
		t.Errorf("got uid %q gid %q rest %q", uid, gid, rest)
	}
}

func TestParseIDMaps(t *testing.T) {
	got, err := parseIDMaps("0:1879048192:65536,70000:5:1")
	if err != nil {
		t.Fatal(err)
	}
	want := []syscall.SysProcIDMap{{ContainerID: 0, HostID: 1879048192, Size: 65536}, {ContainerID: 70000, HostID: 5, Size: 1}}
	if !slices.Equal(got, want) {
		t.Errorf("parseIDMaps = %+v, want %+v", got, want)
	}
	for _, bad := range []string{"", "0:1", "0:x:1", "0:1:2:3", "0:-1:5", "0:4294967296:1"} {
		if _, err := parseIDMaps(bad); err == nil {
			t.Errorf("parseIDMaps(%q) succeeded", bad)
		}
	}
}

// TestIDMapLowersRefusals covers the rootfs shapes the server does not
// id-map; making real views needs root and is covered end to end.
func TestIDMapLowersRefusals(t *testing.T) {
	s := &Server{}
	plain := mount.Mount{Type: "overlay", Source: "overlay", Options: []string{"lowerdir=/a/1/fs:/a/2/fs", "upperdir=/u", "workdir=/w"}}
	got, err := s.idmapLowers(plain)
	if err != nil || !slices.Equal(got.Options, plain.Options) {
		t.Errorf("a mount without mappings: %+v, %v; want it unchanged", got, err)
	}
	for _, tc := range []struct {
		name    string
		m       mount.Mount
		wantErr string
	}{
		{
			name:    "uid mapping only",
			m:       mount.Mount{Type: "overlay", Options: []string{"uidmap=0:100:10", "lowerdir=/a/1/fs"}},
			wantErr: "but not both",
		},
		{
			name:    "bind rootfs",
			m:       mount.Mount{Type: "bind", Options: []string{"uidmap=0:100:10", "gidmap=0:100:10", "rbind"}},
			wantErr: "only overlay",
		},
		{
			name:    "no lower layers",
			m:       mount.Mount{Type: "overlay", Options: []string{"uidmap=0:100:10", "gidmap=0:100:10"}},
			wantErr: "without lower layers",
		},
		{
			name:    "layers sharing no directory",
			m:       mount.Mount{Type: "overlay", Options: []string{"uidmap=0:100:10", "gidmap=0:100:10", "lowerdir=/a/fs:/b/fs"}},
			wantErr: "share no directory",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := s.idmapLowers(tc.m); err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("idmapLowers = %v, want an error containing %q", err, tc.wantErr)
			}
		})
	}
}
