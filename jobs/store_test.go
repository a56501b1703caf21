package jobs

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

// storeWith returns a loaded store in a temp dir holding n accepted jobs.
func storeWith(t *testing.T, n int) (*Store, []*Job) {
	t.Helper()
	s := NewStore(filepath.Join(t.TempDir(), "jobs"))
	if _, err := s.Load(zap.NewNop()); err != nil {
		t.Fatal(err)
	}
	var out []*Job
	for i := range n {
		j := &Job{ID: NewID(), Method: "POST", URI: "/x", Env: []string{"A=1"}, State: Queued}
		body := strings.Repeat("b", i+1)
		size, err := s.WriteBody(j.ID, strings.NewReader(body), 0)
		if err != nil {
			t.Fatal(err)
		}
		j.BodySize = size
		if err := s.Save(j); err != nil {
			t.Fatal(err)
		}
		out = append(out, j)
	}
	return s, out
}

func TestStoreLoadRoundTrip(t *testing.T) {
	s, want := storeWith(t, 3)
	got, err := s.Load(zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Fatalf("loaded %d jobs, want %d", len(got), len(want))
	}
	byID := map[string]*Job{}
	for _, j := range got {
		byID[j.ID] = j
	}
	for _, w := range want {
		g, ok := byID[w.ID]
		if !ok || g.BodySize != w.BodySize || g.Env[0] != "A=1" || g.State != Queued {
			t.Errorf("job %s loaded as %+v, want %+v", w.ID, g, w)
		}
	}
}

// TestStoreSkipsDamagedRecords: a truncated, a zeroed and a bit-flipped
// record, and one whose body lost bytes, are each skipped, logged and set
// aside; the good job still loads; leftovers of unfinished writes go.
func TestStoreSkipsDamagedRecords(t *testing.T) {
	s, jobs := storeWith(t, 5)
	rec := func(j *Job) string { return filepath.Join(s.Dir(), j.ID+recordExt) }
	b, err := os.ReadFile(rec(jobs[0]))
	if err != nil {
		t.Fatal(err)
	}
	damage := []struct {
		name string
		do   func() error
	}{
		{"truncated", func() error { return os.WriteFile(rec(jobs[0]), b[:len(b)/2], 0o600) }},
		{"zeroed", func() error { return os.WriteFile(rec(jobs[1]), make([]byte, 300), 0o600) }},
		{"bit flipped", func() error {
			c, err := os.ReadFile(rec(jobs[2]))
			if err != nil {
				return err
			}
			i := bytes.LastIndex(c, []byte(`"POST"`))
			c[i+1] = 'Q' // still valid JSON: only the checksum tells
			return os.WriteFile(rec(jobs[2]), c, 0o600)
		}},
		{"body truncated", func() error { return os.Truncate(filepath.Join(s.Dir(), jobs[3].ID+bodyExt), 0) }},
	}
	for _, d := range damage {
		if err := d.do(); err != nil {
			t.Fatalf("%s: %v", d.name, err)
		}
	}
	orphan := filepath.Join(s.Dir(), NewID()+bodyExt)
	tmp := filepath.Join(s.Dir(), NewID()+recordExt+tmpExt)
	for _, p := range []string{orphan, tmp} {
		if err := os.WriteFile(p, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}

	core, logs := observer.New(zap.ErrorLevel)
	got, err := s.Load(zap.New(core))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].ID != jobs[4].ID {
		t.Fatalf("loaded %v, want only the undamaged job %s", got, jobs[4].ID)
	}
	if n := logs.FilterMessage("skipping damaged job record").Len(); n != 4 {
		t.Errorf("%d damaged records logged, want 4", n)
	}
	for _, j := range jobs[:4] {
		if _, err := os.Stat(filepath.Join(s.Dir(), j.ID+corruptExt)); err != nil {
			t.Errorf("damaged record of %s not set aside: %v", j.ID, err)
		}
	}
	for _, p := range []string{orphan, tmp} {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("%s left behind (err %v)", filepath.Base(p), err)
		}
	}
	// A second load sees the same single job and logs nothing new.
	core2, logs2 := observer.New(zap.ErrorLevel)
	if got, _ := s.Load(zap.New(core2)); len(got) != 1 || logs2.Len() != 0 {
		t.Errorf("second load: %d jobs, %d errors; want 1 and 0", len(got), logs2.Len())
	}
}

func TestWriteBodyLimit(t *testing.T) {
	s, _ := storeWith(t, 0)
	id := NewID()
	if _, err := s.WriteBody(id, strings.NewReader("12345"), 4); err != ErrBodyTooLarge {
		t.Fatalf("err = %v, want ErrBodyTooLarge", err)
	}
	if entries, _ := os.ReadDir(s.Dir()); len(entries) != 0 {
		t.Errorf("files left after a refused body: %v", entries)
	}
	if n, err := s.WriteBody(id, strings.NewReader("1234"), 4); err != nil || n != 4 {
		t.Errorf("body at the limit: n=%d err=%v", n, err)
	}
}
