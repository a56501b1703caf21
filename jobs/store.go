package jobs

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"go.uber.org/zap"
)

// File names of a job in a Store's directory.
const (
	recordExt  = ".job"     // the Job record
	bodyExt    = ".body"    // the request body
	outputExt  = ".out"     // the response body of the final attempt
	tmpExt     = ".tmp"     // anything being written
	corruptExt = ".corrupt" // a record that failed to load, kept for the operator
)

// ErrBodyTooLarge is returned by WriteBody when the body is over the limit.
var ErrBodyTooLarge = errors.New("request body over the limit")

// Store keeps a route's jobs durably in one directory, as plain files:
// <id>.job (the record), <id>.body and <id>.out. Every file is written
// under a temporary name, fsynced, renamed into place, and the directory
// fsynced, so a file that has its name is whole. A job exists once its
// record exists; a body without a record is a job whose accept never
// finished (its client got no 202) and is removed at Load.
type Store struct {
	dir string
}

// NewStore returns the store in dir; it does no I/O (Load creates dir,
// private to our user).
func NewStore(dir string) *Store { return &Store{dir: dir} }

// Dir is the store's directory.
func (s *Store) Dir() string { return s.dir }

func (s *Store) path(id, ext string) string { return filepath.Join(s.dir, id+ext) }

// Load reads every job record. A record that is damaged (torn, truncated,
// zeroed) or whose body is missing or of the wrong size is logged, renamed
// to <id>.corrupt and skipped: it never stops the others from loading.
// Temporary files and bodies without a record are removed.
func (s *Store) Load(logger *zap.Logger) ([]*Job, error) {
	if err := os.MkdirAll(s.dir, 0o700); err != nil {
		return nil, fmt.Errorf("creating job store %s: %w", s.dir, err)
	}
	entries, err := os.ReadDir(s.dir)
	if err != nil {
		return nil, fmt.Errorf("reading job store %s: %w", s.dir, err)
	}
	records := map[string]bool{}
	for _, e := range entries {
		if id, ok := strings.CutSuffix(e.Name(), recordExt); ok && ValidID(id) {
			records[id] = true
		}
	}
	var jobs []*Job
	for _, e := range entries {
		name := e.Name()
		switch {
		case strings.HasSuffix(name, tmpExt):
			_ = os.Remove(filepath.Join(s.dir, name))
		case strings.HasSuffix(name, bodyExt) || strings.HasSuffix(name, outputExt):
			id := strings.TrimSuffix(strings.TrimSuffix(name, bodyExt), outputExt)
			if !records[id] {
				_ = os.Remove(filepath.Join(s.dir, name))
			}
		case strings.HasSuffix(name, recordExt):
			id := strings.TrimSuffix(name, recordExt)
			if !records[id] {
				continue
			}
			j, err := s.loadOne(id)
			if err != nil {
				logger.Error("skipping damaged job record",
					zap.String("dir", s.dir), zap.String("job", id), zap.Error(err))
				_ = os.Rename(s.path(id, recordExt), s.path(id, corruptExt))
				continue
			}
			jobs = append(jobs, j)
		}
	}
	return jobs, nil
}

// loadOne reads and checks one job's record against its files.
func (s *Store) loadOne(id string) (*Job, error) {
	b, err := os.ReadFile(s.path(id, recordExt))
	if err != nil {
		return nil, fmt.Errorf("reading job %s: %w", id, err)
	}
	j, err := decodeRecord(b)
	if err != nil {
		return nil, err
	}
	if j.ID != id {
		return nil, fmt.Errorf("%w: record of %s holds job %s", errCorrupt, id, j.ID)
	}
	if !j.State.Final() {
		fi, err := os.Stat(s.path(id, bodyExt))
		if err != nil {
			return nil, fmt.Errorf("%w: body: %w", errCorrupt, err)
		}
		if fi.Size() != j.BodySize {
			return nil, fmt.Errorf("%w: body is %d bytes, record says %d", errCorrupt, fi.Size(), j.BodySize)
		}
	} else if j.Result != nil && j.State == Succeeded {
		fi, err := os.Stat(s.path(id, outputExt))
		if err != nil || fi.Size() != j.Result.BodySize {
			return nil, fmt.Errorf("%w: stored response missing or of the wrong size", errCorrupt)
		}
	}
	return j, nil
}

// WriteBody stores id's request body, at most limit bytes (0: no limit),
// durably. It returns the body's size, or ErrBodyTooLarge.
func (s *Store) WriteBody(id string, r io.Reader, limit int64) (int64, error) {
	f, err := os.OpenFile(s.path(id, bodyExt+tmpExt), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return 0, fmt.Errorf("creating body of job %s: %w", id, err)
	}
	tmp := f.Name()
	src := r
	if limit > 0 {
		src = io.LimitReader(r, limit+1)
	}
	n, err := io.Copy(f, src)
	if err == nil && limit > 0 && n > limit {
		err = ErrBodyTooLarge
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, s.path(id, bodyExt))
	}
	if err != nil {
		_ = os.Remove(tmp)
		if errors.Is(err, ErrBodyTooLarge) {
			return n, err
		}
		return n, fmt.Errorf("writing body of job %s: %w", id, err)
	}
	return n, nil
}

// Save writes j's record durably, replacing the one before.
func (s *Store) Save(j *Job) error {
	b, err := encodeRecord(j)
	if err != nil {
		return err
	}
	tmp := s.path(j.ID, recordExt+tmpExt)
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("saving job %s: %w", j.ID, err)
	}
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, s.path(j.ID, recordExt))
	}
	if err == nil {
		err = s.syncDir()
	}
	if err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("saving job %s: %w", j.ID, err)
	}
	return nil
}

// OpenBody opens id's stored request body.
func (s *Store) OpenBody(id string) (*os.File, error) {
	return os.Open(s.path(id, bodyExt))
}

// CreateOutput starts id's stored response body; CommitOutput or
// DiscardOutput ends it.
func (s *Store) CreateOutput(id string) (*os.File, error) {
	return os.OpenFile(s.path(id, outputExt+tmpExt), os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
}

// CommitOutput makes the response body f durable under its name and closes
// f.
func (s *Store) CommitOutput(id string, f *os.File) error {
	err := f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), s.path(id, outputExt))
	}
	if err != nil {
		return fmt.Errorf("storing the response of job %s: %w", id, err)
	}
	return nil
}

// DiscardOutput closes and removes an output that is not kept.
func (s *Store) DiscardOutput(f *os.File) {
	_ = f.Close()
	_ = os.Remove(f.Name())
}

// OpenOutput opens id's stored response body.
func (s *Store) OpenOutput(id string) (*os.File, error) {
	return os.Open(s.path(id, outputExt))
}

// RemoveBody removes id's request body once no attempt needs it.
func (s *Store) RemoveBody(id string) {
	_ = os.Remove(s.path(id, bodyExt))
}

// Remove deletes job id: its record first, so a crash midway leaves only
// files that Load sweeps.
func (s *Store) Remove(id string) error {
	if err := os.Remove(s.path(id, recordExt)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("removing job %s: %w", id, err)
	}
	_ = s.syncDir()
	for _, ext := range []string{bodyExt, outputExt, outputExt + tmpExt} {
		_ = os.Remove(s.path(id, ext))
	}
	return nil
}

// syncDir makes the directory's entries (renames, removals) durable.
func (s *Store) syncDir() error {
	if runtime.GOOS == "windows" {
		return nil // directories can't be opened for syncing there; renames are durable on NTFS
	}
	d, err := os.Open(s.dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}
