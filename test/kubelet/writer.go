package kubelet

import (
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// file is one file of a volume: its content and permission bits.
type file struct {
	data []byte
	mode fs.FileMode
}

// equalFiles reports whether two volume contents are the same, so that an
// unchanged object causes no new version (kubelet skips such writes too).
func equalFiles(a, b map[string]file) bool {
	return maps.EqualFunc(a, b, func(x, y file) bool {
		return x.mode == y.mode && string(x.data) == string(y.data)
	})
}

const (
	dataDirName    = "..data"
	newDataDirName = "..data_tmp"
)

// writeAtomic replaces the content of dir with files the way kubelet's
// atomic writer does: a new "..<timestamp>" directory, a "..data_tmp"
// symlink to it renamed over "..data", and one symlink per top-level entry
// into "..data". Paths may contain directories ("sub/key"); only the first
// component gets a visible symlink, as with kubelet. sidecar/store/storetest
// writes the same layout but only plain names with a fixed mode, and a Pod
// spec's items and defaultMode need both.
func writeAtomic(dir string, files map[string]file) error {
	tops := map[string]bool{}
	for p := range files {
		clean := filepath.Clean(p)
		if p == "" || filepath.IsAbs(p) || clean != p || strings.HasPrefix(p, "..") || strings.Contains(p, "/..") {
			return fmt.Errorf("volume path %q: want a relative path without '..'", p)
		}
		top, _, _ := strings.Cut(p, "/")
		tops[top] = true
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("creating %s: %w", dir, err)
	}
	ts, err := os.MkdirTemp(dir, time.Now().UTC().Format("..2006_01_02_15_04_05."))
	if err != nil {
		return fmt.Errorf("creating version directory: %w", err)
	}
	// MkdirTemp makes 0700 directories; the container's user need not be
	// the one writing.
	if err := os.Chmod(ts, 0o755); err != nil {
		return fmt.Errorf("creating version directory: %w", err)
	}
	for _, p := range slices.Sorted(maps.Keys(files)) {
		f := files[p]
		full := filepath.Join(ts, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			return fmt.Errorf("creating directory for %s: %w", p, err)
		}
		if err := os.WriteFile(full, f.data, f.mode); err != nil {
			return fmt.Errorf("writing %s: %w", p, err)
		}
		// WriteFile's mode passes through the umask; kubelet's does not.
		if err := os.Chmod(full, f.mode); err != nil {
			return fmt.Errorf("setting mode of %s: %w", p, err)
		}
	}
	oldTS, err := os.Readlink(filepath.Join(dir, dataDirName))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("reading %s: %w", dataDirName, err)
	}
	tmp := filepath.Join(dir, newDataDirName)
	if err := os.Remove(tmp); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("removing stale %s: %w", newDataDirName, err)
	}
	if err := os.Symlink(filepath.Base(ts), tmp); err != nil {
		return fmt.Errorf("linking %s: %w", newDataDirName, err)
	}
	// The rename is the one atomic step: a reader resolving "..data" sees
	// either the whole old version or the whole new one.
	if err := os.Rename(tmp, filepath.Join(dir, dataDirName)); err != nil {
		return fmt.Errorf("swapping %s: %w", dataDirName, err)
	}
	for top := range tops {
		link := filepath.Join(dir, top)
		if _, err := os.Lstat(link); err == nil {
			continue
		}
		if err := os.Symlink(filepath.Join(dataDirName, top), link); err != nil {
			return fmt.Errorf("linking %s: %w", top, err)
		}
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("listing %s: %w", dir, err)
	}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), "..") || tops[e.Name()] || e.Type()&fs.ModeSymlink == 0 {
			continue
		}
		if err := os.Remove(filepath.Join(dir, e.Name())); err != nil {
			return fmt.Errorf("removing %s: %w", e.Name(), err)
		}
	}
	if oldTS != "" && oldTS != filepath.Base(ts) {
		if err := os.RemoveAll(filepath.Join(dir, oldTS)); err != nil {
			return fmt.Errorf("removing old version %s: %w", oldTS, err)
		}
	}
	return nil
}
