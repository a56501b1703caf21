package spawner

import (
	"testing"

	"github.com/pelletier/go-toml/v2"
)

// TestDaemonConfigNoSync checks the managed containerd's config as
// containerd's own TOML decoder reads it: bbolt's no_sync on by default,
// off with SyncMetadata, and the directories where they were asked for.
func TestDaemonConfigNoSync(t *testing.T) {
	for _, tc := range []struct {
		sync bool
		want bool // no_sync
	}{{false, true}, {true, false}} {
		cfg := DaemonConfig{Root: "/var/lib/x", State: "/run/x", SyncMetadata: tc.sync}
		var doc struct {
			Version int                       `toml:"version"`
			Root    string                    `toml:"root"`
			State   string                    `toml:"state"`
			Plugins map[string]map[string]any `toml:"plugins"`
		}
		if err := toml.Unmarshal([]byte(daemonConfigTOML(cfg)), &doc); err != nil {
			t.Fatalf("SyncMetadata %v: config does not decode: %v", tc.sync, err)
		}
		if doc.Version != 3 || doc.Root != cfg.Root || doc.State != cfg.State {
			t.Errorf("SyncMetadata %v: version %d root %q state %q", tc.sync, doc.Version, doc.Root, doc.State)
		}
		got, ok := doc.Plugins["io.containerd.metadata.v1.bolt"]["no_sync"].(bool)
		if !ok || got != tc.want {
			t.Errorf("SyncMetadata %v: bolt no_sync = %v (set %v), want %v", tc.sync, got, ok, tc.want)
		}
	}
}
