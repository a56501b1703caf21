package spawner

import (
	"os"
	"strings"
	"testing"
)

// TestFavorDynMods agrees with what the kernel lists in /proc/self/mounts.
func TestFavorDynMods(t *testing.T) {
	b, err := os.ReadFile("/proc/self/mounts")
	if err != nil {
		t.Fatal(err)
	}
	want := false
	for line := range strings.SplitSeq(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 4 && strings.HasPrefix(f[2], "cgroup") && strings.Contains(f[3], "favordynmods") {
			want = true
		}
	}
	if got := favorDynMods(); got != want {
		t.Errorf("favorDynMods() = %v, /proc/self/mounts says %v", got, want)
	}
}
