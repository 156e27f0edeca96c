// Package store keeps the sidecar's current payload document. It watches the
// mounted payload volume, reloads it within a second of kubelet swapping in a
// new version, validates it with payload.Parse and keeps serving the last good
// document when a new one is missing or invalid. A document that leaves its
// user-data and vendor-data to its MetadataService's shared document is
// completed with the one beside it (payload.SharedKey), which is held to the
// same rules: one copy per service keeps 10,000 instances' Secrets small, but
// what the guest is served is still one whole document, and it changes, with
// its hash, when either file does. ServiceAccount tokens are read from their
// projected files on every request, since kubelet rotates them without any
// change to the document.
package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/go-logr/logr"

	"github.com/kubevirt-imds/kubevirt-imds/api/payload"
)

const (
	// debounce groups the burst of events one kubelet update produces (new
	// directory, ..data_tmp, rename) into a single reload, well inside the
	// one-second reload budget.
	debounce = 50 * time.Millisecond
	// resyncInterval is the safety re-read for events the watch may miss
	// (an overflowed queue, a directory that appeared late).
	resyncInterval = 30 * time.Second
	// maxPayloadBytes bounds what is read from each payload file. A Secret
	// holds at most 1 MiB.
	maxPayloadBytes = 2 << 20
	// maxTokenBytes bounds what is read from a token file.
	maxTokenBytes = 64 << 10
)

var (
	// ErrNotLoaded is returned while no valid document has been loaded yet.
	ErrNotLoaded = errors.New("no payload document loaded yet")
	// ErrUnknownAudience is returned for an audience the document does not
	// configure.
	ErrUnknownAudience = errors.New("audience not configured")
)

// Options configure a Store.
type Options struct {
	// PayloadDir is the mounted payload volume; the document is the file
	// payload.SecretKey in it and, for a document that refers to one, its
	// service's shared document the file payload.SharedKey beside it.
	PayloadDir string
	// TokenDir is the root below which Token.Path names token files.
	TokenDir string
}

// Stats counts reload attempts.
type Stats struct {
	// Reloads is the number of times a new valid document became current.
	Reloads uint64
	// Failures is the number of reads that found a missing or invalid file
	// (the payload, or the shared document it needs) and kept the previous
	// document.
	Failures uint64
}

// Store holds the current document. Its methods are safe for concurrent use.
type Store struct {
	opts Options
	log  logr.Logger

	cur atomic.Pointer[payload.Document]

	// mu guards changed and last, and serializes Load whole, reads
	// included, so that a slow Load cannot make current a document older
	// than the one a concurrent Load just did.
	mu      sync.Mutex
	changed chan struct{}
	last    lastRead

	reloads  atomic.Uint64
	failures atomic.Uint64
}

// lastRead is what Load last read, good or bad, so that input unchanged since
// is neither parsed again nor reported again: Run re-reads on every event in
// the directory and every resync, and a bad file would otherwise be logged
// and counted each time.
type lastRead struct {
	payload fileRead
	// doc is payload's parse, nil when it did not parse.
	doc *payload.Document
	// shared is read only for a doc that needs it, and forgotten with a new
	// payload, whose outcome is reported whatever the shared document's.
	shared fileRead
}

// fileRead is what one read of a file found.
type fileRead struct {
	// read says raw holds the file's bytes; miss that the file was not there.
	read, miss bool
	raw        []byte
}

// is reports whether raw is what was read before.
func (f fileRead) is(raw []byte) bool { return f.read && bytes.Equal(f.raw, raw) }

// New returns a Store for o. Nothing is read until Load or Run.
func New(o Options, log logr.Logger) *Store {
	return &Store{opts: o, log: log, changed: make(chan struct{})}
}

// Current returns the current document, or nil before the first valid one:
// the document served, completed with its shared document if it has one.
// Every caller gets the same value, so callers must not modify it.
func (s *Store) Current() *payload.Document { return s.cur.Load() }

// Loaded reports whether a valid document has been loaded; the sidecar is
// ready once it is.
func (s *Store) Loaded() bool { return s.cur.Load() != nil }

// Changed returns a channel that is closed when Current changes. Each change
// closes the channel handed out before it; call Changed again for the next.
func (s *Store) Changed() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.changed
}

// Stats returns the reload counters.
func (s *Store) Stats() Stats {
	return Stats{Reloads: s.reloads.Load(), Failures: s.failures.Load()}
}

// Reloads is the number of times a new valid document became current.
func (s *Store) Reloads() uint64 { return s.reloads.Load() }

// Audiences returns the configured token audiences in document order, or nil
// when no document is loaded.
func (s *Store) Audiences() []string {
	d := s.Current()
	if d == nil {
		return nil
	}
	out := make([]string, 0, len(d.Tokens))
	for _, t := range d.Tokens {
		out = append(out, t.Audience)
	}
	return out
}

// Token returns the current token for audience, read from its file on every
// call because kubelet replaces it as it nears expiry. Errors wrap
// ErrNotLoaded, ErrUnknownAudience or the file's error (fs.ErrNotExist while
// kubelet has not written it yet).
func (s *Store) Token(audience string) ([]byte, error) {
	d := s.Current()
	if d == nil {
		return nil, ErrNotLoaded
	}
	i := slices.IndexFunc(d.Tokens, func(t payload.Token) bool { return t.Audience == audience })
	if i < 0 {
		return nil, fmt.Errorf("token for %q: %w", audience, ErrUnknownAudience)
	}
	rel := filepath.FromSlash(d.Tokens[i].Path)
	if !filepath.IsLocal(rel) {
		return nil, fmt.Errorf("token for %q: path %q leaves the token directory: %w", audience, d.Tokens[i].Path, fs.ErrInvalid)
	}
	data, err := readLimited(filepath.Join(s.opts.TokenDir, rel), maxTokenBytes)
	if err != nil {
		return nil, fmt.Errorf("token for %q: %w", audience, err)
	}
	return bytes.TrimSpace(data), nil
}

// Load reads the payload file once, and the shared document beside it when
// the payload refers to one. It returns whether a new document became
// current, and an error when either file is missing or invalid, or the shared
// document is another service's; the previous document stays current then.
// A missing shared document's error wraps both payload.ErrSharedMissing and
// fs.ErrNotExist, so that callers asking whether the document can be
// completed need not tell an absent file from another service's. A missing
// or invalid file is reported (and counted) once: while the files stay as
// they were, Load returns no change and no error.
func (s *Store) Load() (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()

	file := filepath.Join(s.opts.PayloadDir, payload.SecretKey)
	raw, err := readLimited(file, maxPayloadBytes)
	if err != nil {
		miss := errors.Is(err, fs.ErrNotExist)
		if miss && s.last.payload.miss {
			return false, nil
		}
		// Another read error is not remembered: without the bytes, there is
		// nothing to tell a retry's outcome from this one's.
		s.last = lastRead{payload: fileRead{miss: miss}}
		s.failures.Add(1)
		return false, fmt.Errorf("reading payload: %w", err)
	}

	doc, samePayload := s.last.doc, s.last.payload.is(raw)
	if !samePayload {
		s.last = lastRead{payload: fileRead{read: true, raw: raw}}
		if doc, err = payload.Parse(raw); err != nil {
			s.failures.Add(1)
			return false, fmt.Errorf("payload %s: %w", file, err)
		}
		s.last.doc = doc
	}
	if doc == nil || (samePayload && doc.Shared == nil) {
		// Bytes already reported invalid, or a document that needs nothing
		// more and was stored already.
		return false, nil
	}
	if doc.Shared == nil {
		// The document holds its own user-data: whatever shared.json says
		// does not concern it, and is not read.
		return s.store(doc), nil
	}

	sharedFile := filepath.Join(s.opts.PayloadDir, payload.SharedKey)
	sraw, err := readLimited(sharedFile, maxPayloadBytes)
	if err != nil {
		miss := errors.Is(err, fs.ErrNotExist)
		if miss && s.last.shared.miss {
			return false, nil
		}
		s.last.shared = fileRead{miss: miss}
		s.failures.Add(1)
		if miss {
			return false, fmt.Errorf("reading the shared payload of MetadataService %q: %w: %w",
				doc.Shared.MetadataService, payload.ErrSharedMissing, err)
		}
		return false, fmt.Errorf("reading shared payload: %w", err)
	}
	if s.last.shared.is(sraw) {
		return false, nil
	}
	s.last.shared = fileRead{read: true, raw: sraw}
	shared, err := payload.ParseShared(sraw)
	if err != nil {
		s.failures.Add(1)
		return false, fmt.Errorf("shared payload %s: %w", sharedFile, err)
	}
	served, err := doc.WithShared(shared)
	if err != nil {
		s.failures.Add(1)
		return false, fmt.Errorf("shared payload %s is MetadataService %q's: %w", sharedFile, shared.MetadataService, err)
	}
	return s.store(served), nil
}

// store makes d current unless it is what is current already, comparing
// served hashes: an edit of the shared document alone is a new document to
// the guest, and the same payload read again is none. s.mu is held.
func (s *Store) store(d *payload.Document) bool {
	if old := s.cur.Load(); old != nil && old.Hash == d.Hash {
		return false
	}
	s.cur.Store(d)
	s.reloads.Add(1)
	close(s.changed)
	s.changed = make(chan struct{})
	return true
}

// Run loads the document and then watches PayloadDir until ctx is done,
// reloading after every change. It returns nil when ctx is cancelled, and an
// error only when the watch cannot be created at all.
func (s *Store) Run(ctx context.Context) error {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("watching payload directory: %w", err)
	}
	defer w.Close()

	watching := false
	watch := func() {
		if watching {
			return
		}
		// The directory itself is watched, not the file: kubelet replaces
		// the ..data symlink, and the file's own inode never changes.
		if err := w.Add(s.opts.PayloadDir); err != nil {
			s.log.Error(err, "cannot watch payload directory, relying on periodic re-reads", "dir", s.opts.PayloadDir)
			return
		}
		watching = true
	}
	reload := func(reason string) {
		changed, err := s.Load()
		switch {
		case err != nil:
			s.log.Error(err, "payload not loaded, keeping the last good document", "reason", reason, "serving", s.hash())
		case changed:
			s.log.Info("payload loaded", "reason", reason, "hash", s.hash())
		}
	}

	watch()
	reload("start")

	resync := time.NewTicker(resyncInterval)
	defer resync.Stop()
	pending := time.NewTimer(debounce)
	pending.Stop()
	defer pending.Stop()

	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-w.Events:
			if !ok {
				return nil
			}
			if ev.Has(fsnotify.Remove) && filepath.Clean(ev.Name) == filepath.Clean(s.opts.PayloadDir) {
				watching = false
			}
			pending.Reset(debounce)
		case err, ok := <-w.Errors:
			if !ok {
				return nil
			}
			// An overflow means events were lost: re-read now.
			s.log.Error(err, "payload directory watch error")
			pending.Reset(debounce)
		case <-pending.C:
			reload("change")
		case <-resync.C:
			watch()
			reload("resync")
		}
	}
}

func (s *Store) hash() string {
	if d := s.Current(); d != nil {
		return d.Hash
	}
	return ""
}

// readLimited reads at most limit bytes of name and fails on a longer file,
// so a runaway file cannot exhaust the sidecar's memory.
func readLimited(name string, limit int64) ([]byte, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var b bytes.Buffer
	n, err := b.ReadFrom(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", name, err)
	}
	if n > limit {
		return nil, fmt.Errorf("reading %s: larger than %d bytes: %w", name, limit, errTooLarge)
	}
	return b.Bytes(), nil
}

var errTooLarge = errors.New("file too large")
