package main

import (
	"bufio"
	"fmt"
	"os"
	"runtime/debug"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// releaseExecutablePages drops this process's mappings of the executable's
// read-only pages. The binary also holds the manager, whose dependencies'
// package initialisers touch some 30 MiB of code and read-only data at start;
// the sidecar never runs that code again, yet those pages would count towards
// its resident memory for the VM's whole life. The sidecar calls it at start
// and then periodically (sidecar_cmd.go). MADV_DONTNEED on a read-only
// private file mapping only unmaps the pages (they stay in the page cache and
// fault back in on use), so it is safe; writable mappings are left alone.
func releaseExecutablePages() error {
	// Garbage (the package initialisers' at start), too, need not stay
	// resident.
	debug.FreeOSMemory()
	exe, err := os.Readlink("/proc/self/exe")
	if err != nil {
		return err
	}
	f, err := os.Open("/proc/self/maps")
	if err != nil {
		return err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// address perms offset dev inode path
		fields := strings.Fields(sc.Text())
		if len(fields) < 6 || fields[5] != exe || strings.ContainsRune(fields[1], 'w') {
			continue
		}
		lo, hi, ok := strings.Cut(fields[0], "-")
		if !ok {
			continue
		}
		start, err1 := strconv.ParseUint(lo, 16, 64)
		end, err2 := strconv.ParseUint(hi, 16, 64)
		if err1 != nil || err2 != nil || end <= start {
			continue
		}
		// The raw syscall takes the range as integers: no Go pointer to memory
		// the runtime does not own is ever formed.
		if _, _, errno := unix.Syscall(unix.SYS_MADVISE, uintptr(start), uintptr(end-start), unix.MADV_DONTNEED); errno != 0 {
			return fmt.Errorf("madvise %s: %w", fields[0], errno)
		}
	}
	return sc.Err()
}
