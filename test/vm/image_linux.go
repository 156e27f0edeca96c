package vm

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/kubevirt-imds/kubevirt-imds/test/controlplane"
)

// Image is a built VM image: a qcow2 root disk, used read-only as the
// backing file of every boot's overlay, and the kernel and initramfs qemu
// boots directly.
type Image struct {
	// Dir holds the files, under the repository's tmp/guest-vm/.
	Dir string
	// Disk is the qcow2 base image: ext4 on the whole disk.
	Disk string
	// Kernel and Initrd are for qemu's -kernel and -initrd.
	Kernel, Initrd string
	// Suite is the Debian release, e.g. "trixie".
	Suite string
	// KernelVersion is the kernel's release, e.g. "6.12.57+deb13-cloud-amd64".
	KernelVersion string
	// CloudInit is the installed cloud-init package and version, e.g.
	// "cloud-init 25.1.4-1".
	CloudInit string
}

// imageScript is the builder, relative to the repository root.
const imageScript = "hack/guest-vm-image.sh"

// EnsureImage returns the VM image, building it first with
// hack/guest-vm-image.sh when it is not already built for the script's
// current recipe (minutes; a warm call returns at once). The script's
// progress goes to progress, which may be nil. Needs root.
func EnsureImage(ctx context.Context, progress io.Writer) (Image, error) {
	if progress == nil {
		progress = io.Discard
	}
	script := filepath.Join(controlplane.RepoRoot(), imageScript)
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, "bash", script)
	cmd.Stdout = &out
	cmd.Stderr = progress
	if err := cmd.Run(); err != nil {
		return Image{}, fmt.Errorf("vm: %s: %w", script, err)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	return OpenImage(lines[len(lines)-1])
}

// OpenImage returns the image already built in dir.
func OpenImage(dir string) (Image, error) {
	img := Image{
		Dir:    dir,
		Disk:   filepath.Join(dir, "disk.qcow2"),
		Kernel: filepath.Join(dir, "vmlinuz"),
		Initrd: filepath.Join(dir, "initrd.img"),
	}
	for _, f := range []string{img.Disk, img.Kernel, img.Initrd} {
		if _, err := os.Stat(f); err != nil {
			return Image{}, fmt.Errorf("vm: %s is not a complete VM image: %w", dir, err)
		}
	}
	manifest, err := os.Open(filepath.Join(dir, "manifest"))
	if err != nil {
		return Image{}, fmt.Errorf("vm: %w", err)
	}
	defer manifest.Close()
	sc := bufio.NewScanner(manifest)
	for sc.Scan() {
		key, value, _ := strings.Cut(sc.Text(), " ")
		switch key {
		case "suite":
			img.Suite = value
		case "kernel":
			img.KernelVersion = value
		case "cloud-init":
			img.CloudInit = sc.Text()
		}
	}
	return img, sc.Err()
}
