package snapshots

import "testing"

func TestLabelFilter(t *testing.T) {
	if got, want := LabelFilter(LabelManaged, "true"), `labels."dev.caddy-spawn/managed"==true`; got != want {
		t.Errorf("LabelFilter = %s, want %s", got, want)
	}
}

func TestLeftover(t *testing.T) {
	tests := []struct {
		name      string
		labels    map[string]string
		keepOwner string
		want      bool
	}{
		{name: "not ours", labels: map[string]string{LabelOwner: "old"}, want: false},
		{name: "ours, any owner", labels: map[string]string{LabelManaged: "true", LabelOwner: "me"}, want: true},
		{name: "ours, kept owner", labels: map[string]string{LabelManaged: "true", LabelOwner: "me"}, keepOwner: "me", want: false},
		{name: "ours, other owner", labels: map[string]string{LabelManaged: "true", LabelOwner: "old"}, keepOwner: "me", want: true},
		{name: "ours, no owner", labels: map[string]string{LabelManaged: "true"}, keepOwner: "me", want: true},
		{name: "managed not true", labels: map[string]string{LabelManaged: "false", LabelOwner: "old"}, keepOwner: "me", want: false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := Leftover(tc.labels, tc.keepOwner); got != tc.want {
				t.Errorf("Leftover(%v, %q) = %v, want %v", tc.labels, tc.keepOwner, got, tc.want)
			}
		})
	}
}
