package vm

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/kubevirt-imds/kubevirt-imds/test/guest"
)

// Config describes one VM boot.
type Config struct {
	// Image is what to boot, from EnsureImage or OpenImage.
	Image Image
	// NetNS is the Pod's network namespace (a name under /run/netns): qemu
	// runs in it, as it does in virt-launcher.
	NetNS string
	// Tap is the tap device in NetNS the VM's NIC uses (KubeVirt's "tap0").
	// It must exist: like virt-handler, the caller plumbs the Pod before the
	// VM starts (podnet's PlumbTap).
	Tap string
	// MAC is the VM NIC's MAC address.
	MAC net.HardwareAddr
	// SMBIOS is what the VM's firmware reports, as for a namespace guest.
	SMBIOS guest.SMBIOS
	// CPUs and MemoryMiB size the VM; zero means 1 vCPU and 1024 MiB. One:
	// under TCG an idle second vCPU once missed its timer for good (an RCU
	// stall in the initramfs, the boot never reaching cloud-init).
	CPUs, MemoryMiB int
	// KernelArgs are appended to the kernel command line.
	KernelArgs []string
	// WorkDir receives the boot's qcow2 overlay (removed by Stop) and
	// console.log (kept). Empty means a temporary directory, removed by Stop
	// with everything in it.
	WorkDir string
	// Log receives the console as the VM prints it (e.g. GinkgoWriter); nil
	// discards it. Console and console.log have it either way.
	Log io.Writer
}

// ExitedError reports that qemu exited while a caller waited on the VM.
type ExitedError struct {
	// Err is how qemu exited (nil for exit status 0, as after poweroff).
	Err error
	// Stderr is what qemu printed on its standard error.
	Stderr string
}

func (e *ExitedError) Error() string {
	how := "exit status 0"
	if e.Err != nil {
		how = e.Err.Error()
	}
	return fmt.Sprintf("vm: qemu exited (%s): %s", how, strings.TrimSpace(e.Stderr))
}

func (e *ExitedError) Unwrap() error { return e.Err }

// NoDatasourceError reports that cloud-init finished without a datasource
// (DataSourceNone): it will not fetch anything, so waiting on is futile.
type NoDatasourceError struct {
	// Line is cloud-init's "finished at" line from the console.
	Line string
}

func (e *NoDatasourceError) Error() string {
	return "vm: cloud-init found no datasource: " + e.Line
}

// VM is a running qemu VM.
type VM struct {
	// Started is when qemu was started.
	Started time.Time
	// WorkDir is the boot's directory (Config.WorkDir or a temporary one).
	WorkDir string
	// ConsoleLog is the file in WorkDir the console is copied to as it
	// arrives.
	ConsoleLog string

	cfg        Config
	cmd        *exec.Cmd
	stdin      io.WriteCloser
	stderr     *lockedBuffer
	overlay    string
	ownWorkDir bool

	exited  chan struct{}
	exitErr error

	mu      sync.Mutex
	console []byte
	grew    chan struct{} // closed and replaced whenever console grows

	// run serializes Run: there is one console.
	run      sync.Mutex
	shellUp  bool
	stopOnce sync.Once
	stopErr  error
}

// Boot starts a VM for cfg and returns at once; use WaitFor or
// WaitCloudInit to follow the boot. ctx bounds the VM's life: cancelling it
// kills qemu. Stop it when done.
func Boot(ctx context.Context, cfg Config) (*VM, error) {
	if cfg.Image.Disk == "" || cfg.NetNS == "" || cfg.Tap == "" || len(cfg.MAC) != 6 {
		return nil, errors.New("vm: Config needs Image, NetNS, Tap and MAC")
	}
	if cfg.CPUs == 0 {
		cfg.CPUs = 1
	}
	if cfg.MemoryMiB == 0 {
		cfg.MemoryMiB = 1024
	}
	if cfg.Log == nil {
		cfg.Log = io.Discard
	}
	qemu, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		return nil, fmt.Errorf("vm: qemu-system-x86_64 (package qemu-system-x86): %w", err)
	}
	if out, err := exec.CommandContext(ctx, "ip", "-n", cfg.NetNS, "link", "show", "dev", cfg.Tap).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("vm: tap %s in netns %s: %w: %s", cfg.Tap, cfg.NetNS, err, out)
	}

	v := &VM{cfg: cfg, WorkDir: cfg.WorkDir, exited: make(chan struct{}), grew: make(chan struct{}), stderr: &lockedBuffer{}}
	if v.WorkDir == "" {
		if v.WorkDir, err = os.MkdirTemp("", "kubevirt-imds-vm-"); err != nil {
			return nil, fmt.Errorf("vm: %w", err)
		}
		v.ownWorkDir = true
	}
	fail := func(err error) (*VM, error) {
		v.cleanup()
		return nil, err
	}
	// Every boot writes to its own overlay: the image stays pristine and
	// boots can run side by side.
	v.overlay = filepath.Join(v.WorkDir, "overlay.qcow2")
	if out, err := exec.CommandContext(ctx, "qemu-img", "create", "-q", "-f", "qcow2",
		"-F", "qcow2", "-b", cfg.Image.Disk, v.overlay).CombinedOutput(); err != nil {
		return fail(fmt.Errorf("vm: creating the overlay: %w: %s", err, out))
	}
	v.ConsoleLog = filepath.Join(v.WorkDir, "console.log")
	log, err := os.Create(v.ConsoleLog)
	if err != nil {
		return fail(fmt.Errorf("vm: %w", err))
	}

	args := append([]string{"netns", "exec", cfg.NetNS, qemu}, v.qemuArgs()...)
	v.cmd = exec.CommandContext(ctx, "ip", args...)
	v.cmd.Stderr = v.stderr
	// qemu shuts down cleanly on SIGTERM; the context's kill is the last resort.
	v.cmd.Cancel = func() error { return v.cmd.Process.Signal(syscall.SIGTERM) }
	v.cmd.WaitDelay = 10 * time.Second
	stdout, err := v.cmd.StdoutPipe()
	if err != nil {
		log.Close()
		return fail(fmt.Errorf("vm: %w", err))
	}
	if v.stdin, err = v.cmd.StdinPipe(); err != nil {
		log.Close()
		return fail(fmt.Errorf("vm: %w", err))
	}
	v.Started = time.Now()
	if err := v.cmd.Start(); err != nil {
		log.Close()
		return fail(fmt.Errorf("vm: starting qemu: %w", err))
	}
	// The console reader ends when qemu exits (its stdout closes), which
	// Stop or the context's cancellation bring about.
	go func() {
		defer close(v.exited)
		defer log.Close()
		buf := make([]byte, 32<<10)
		for {
			n, err := stdout.Read(buf)
			if n > 0 {
				_, _ = log.Write(buf[:n])
				_, _ = cfg.Log.Write(buf[:n])
				v.mu.Lock()
				v.console = append(v.console, buf[:n]...)
				close(v.grew)
				v.grew = make(chan struct{})
				v.mu.Unlock()
			}
			if err != nil {
				break
			}
		}
		v.exitErr = v.cmd.Wait()
	}()
	return v, nil
}

// qemuArgs is qemu's command line for v, shaped like virt-launcher's where
// that matters to the guest (q35, virtio disk and NIC on a tap, SMBIOS).
func (v *VM) qemuArgs() []string {
	cfg := v.cfg
	// The kernel's messages go to the serial console too: tests read the
	// boot there. An oops should end the VM rather than hang it (panic=-1
	// reboots at once, -no-reboot turns that into qemu's exit).
	cmdline := append([]string{"root=/dev/vda", "rw", "console=ttyS0,115200n8", "panic=-1"}, cfg.KernelArgs...)
	args := []string{
		"-name", "kubevirt-imds-vm",
		"-machine", "q35",
		// /dev/kvm cannot run stock kernels here; a 64 MiB translation
		// cache keeps qemu's RSS near 400 MB instead of over 1 GB.
		"-accel", "tcg,tb-size=64",
		"-smp", strconv.Itoa(cfg.CPUs),
		"-m", strconv.Itoa(cfg.MemoryMiB),
		"-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
		"-kernel", cfg.Image.Kernel,
		"-initrd", cfg.Image.Initrd,
		"-append", strings.Join(cmdline, " "),
		// The overlay is discarded after the boot: no flushes needed.
		"-drive", "file=" + qemuEscape(v.overlay) + ",format=qcow2,if=virtio,cache=unsafe",
		"-netdev", "tap,id=n0,ifname=" + cfg.Tap + ",script=no,downscript=no",
		"-device", "virtio-net-pci,netdev=n0,mac=" + cfg.MAC.String(),
		// The serial console on qemu's stdin and stdout: nothing of the
		// boot is lost before a reader connects.
		"-chardev", "stdio,id=console,signal=off",
		"-serial", "chardev:console",
	}
	if cfg.SMBIOS.UUID != "" {
		args = append(args, "-uuid", cfg.SMBIOS.UUID)
	}
	if t1 := smbiosOption("type=1", map[string]string{
		"manufacturer": cfg.SMBIOS.Manufacturer, "product": cfg.SMBIOS.Product, "version": cfg.SMBIOS.Version,
		"family": cfg.SMBIOS.Family, "sku": cfg.SMBIOS.SKU, "serial": cfg.SMBIOS.Serial,
	}); t1 != "" {
		args = append(args, "-smbios", t1)
	}
	if t3 := smbiosOption("type=3", map[string]string{
		"manufacturer": cfg.SMBIOS.ChassisManufacturer, "version": cfg.SMBIOS.ChassisVersion,
		"serial": cfg.SMBIOS.ChassisSerial, "asset": cfg.SMBIOS.ChassisAsset,
	}); t3 != "" {
		args = append(args, "-smbios", t3)
	}
	return args
}

// smbiosOption renders one -smbios value from the non-empty fields, or "".
func smbiosOption(kind string, fields map[string]string) string {
	var parts []string
	for _, k := range []string{"manufacturer", "product", "version", "serial", "sku", "family", "asset"} {
		if v := fields[k]; v != "" {
			parts = append(parts, k+"="+qemuEscape(v))
		}
	}
	if len(parts) == 0 {
		return ""
	}
	return kind + "," + strings.Join(parts, ",")
}

// qemuEscape doubles commas, qemu's escape inside option values.
func qemuEscape(s string) string { return strings.ReplaceAll(s, ",", ",,") }

// snapshot returns the console from offset on, and a channel closed when it
// grows.
func (v *VM) snapshot(offset int) (string, chan struct{}) {
	v.mu.Lock()
	defer v.mu.Unlock()
	return string(v.console[offset:]), v.grew
}

// consoleLen is the console's current length, for waits on what comes later.
func (v *VM) consoleLen() int {
	v.mu.Lock()
	defer v.mu.Unlock()
	return len(v.console)
}

// rescan is how much already searched console output a wait searches again
// when more arrives: more than any one match (a console line) spans.
const rescan = 16 << 10

// finishedLine is cloud-init's last word on the console (submatch 1), with
// the datasource it used (2). Only a whole line counts: a read may end
// mid-word.
var finishedLine = regexp.MustCompile(`(Cloud-init v\. \S+ finished at [^\r\n]*Datasource (DataSource[A-Za-z0-9]+)[^\r\n]*)\r?\n`)

// WaitFor waits until the console, from the start of the boot, matches re and
// returns the match; a match may span at most 16 KiB. It fails fast with *ExitedError when qemu exits and with
// *NoDatasourceError when cloud-init finishes on DataSourceNone (unless re
// matched first), and with ctx's error when ctx ends.
func (v *VM) WaitFor(ctx context.Context, re *regexp.Regexp) (string, error) {
	m, err := v.waitFrom(ctx, 0, re, true)
	if err != nil {
		return "", err
	}
	return m[0], nil
}

// waitFrom waits until the console from offset on matches re and returns the
// submatches.
func (v *VM) waitFrom(ctx context.Context, offset int, re *regexp.Regexp, failOnNone bool) ([]string, error) {
	from := offset
	for {
		text, grew := v.snapshot(from)
		if m := re.FindStringSubmatch(text); m != nil {
			return m, nil
		}
		if failOnNone {
			if f := finishedLine.FindStringSubmatch(text); f != nil && f[2] == "DataSourceNone" {
				return nil, &NoDatasourceError{Line: f[1]}
			}
		}
		// Scan only new output next time, with an overlap for a match
		// that the last read cut in two.
		from = max(from, from+len(text)-rescan)
		select {
		case <-grew:
		case <-v.exited:
			// The reader has stored all output before closing exited.
			if text, _ := v.snapshot(from); re.MatchString(text) {
				continue
			}
			return nil, &ExitedError{Err: v.exitErr, Stderr: v.stderr.String()}
		case <-ctx.Done():
			return nil, fmt.Errorf("vm: waiting for %q on the console: %w", re, context.Cause(ctx))
		}
	}
}

// typeText writes s to the serial console as if typed.
func (v *VM) typeText(s string) error {
	if _, err := io.WriteString(v.stdin, s); err != nil {
		select {
		case <-v.exited:
			return &ExitedError{Err: v.exitErr, Stderr: v.stderr.String()}
		default:
		}
		return fmt.Errorf("vm: typing on the console: %w", err)
	}
	return nil
}

// shellPoll is how often the shell setup is typed again until the
// autologin shell answers: characters typed before it runs are lost.
const shellPoll = 2 * time.Second

// shellSetup prepares the autologin root shell for Run. The terminal stops
// echoing and prompting (and bash's line editor, which echoes by itself,
// goes), the kernel stops printing to the console, and two
// functions do the work: _r NONCE SCRIPT-BASE64 runs the script with sh,
// capturing its output, and _p NONCE EXIT prints the captured output as
// numbered base64 lines "NONCE N CHUNK", then "NONCE-end EXIT COUNT". Output
// that other writers (systemd, getty) interleave with a line breaks only that
// line, which the reader notices by its number and has _p print again.
// Markers are printed with printf %s so the typed text never contains them.
const shellSetup = `stty -echo; set +o emacs +o vi; dmesg -n 1; PS1= PS2=; unset PROMPT_COMMAND; ` +
	`_p() { base64 -w 60 /tmp/.vm-run.out > /tmp/.vm-run.b64; i=0; ` +
	`while IFS= read -r l; do i=$((i+1)); printf '%s %s %s\n' "$1" $i "$l"; done < /tmp/.vm-run.b64; ` +
	`printf '%s-%s %s %s\n' "$1" end "$2" $i; }; ` +
	`_r() { printf %s "$2" | base64 -d > /tmp/.vm-run.sh; sh /tmp/.vm-run.sh > /tmp/.vm-run.out 2>&1 < /dev/null; _p "$1" $?; }; `

// ensureShell waits for the autologin shell and sets it up for Run.
func (v *VM) ensureShell(ctx context.Context) error {
	if v.shellUp {
		return nil
	}
	nonce := newNonce()
	ready := regexp.MustCompile(regexp.QuoteMeta(nonce) + `-ready`)
	line := shellSetup + `printf '%s-%s\n' ` + nonce + ` ready` + "\n"
	offset := v.consoleLen()
	for {
		if err := v.typeText(line); err != nil {
			return err
		}
		try, cancel := context.WithTimeout(ctx, shellPoll)
		_, err := v.waitFrom(try, offset, ready, false)
		cancel()
		if err == nil {
			v.shellUp = true
			return nil
		}
		if ctx.Err() != nil || !errors.Is(err, context.DeadlineExceeded) {
			return err
		}
	}
}

// maxTyped bounds a typed line: the terminal's canonical mode holds 4095
// characters.
const maxTyped = 3800

// Run runs command with sh in the VM, as root at the serial console's
// autologin shell, and returns its combined output and exit status. It waits
// for the shell first (it starts late in the boot). err reports only failure
// to run: the VM exited, ctx ended, or the command is too long to type.
// Commands run one at a time, with stdin from /dev/null.
func (v *VM) Run(ctx context.Context, command string) (output string, exit int, err error) {
	v.run.Lock()
	defer v.run.Unlock()
	if err := v.ensureShell(ctx); err != nil {
		return "", 0, err
	}
	nonce := newNonce()
	typed := "_r " + nonce + " " + base64Encode(command) + "\n"
	if len(typed) > maxTyped {
		return "", 0, fmt.Errorf("vm: command too long to type at the console (%d bytes)", len(command))
	}
	offset := v.consoleLen()
	if err := v.typeText(typed); err != nil {
		return "", 0, err
	}
	for attempt := 0; ; attempt++ {
		out, exit, err := v.collect(ctx, offset, nonce)
		if err == nil || attempt == 3 || !errors.Is(err, errGarbled) {
			return out, exit, err
		}
		// Something wrote into the middle of a line: print it again.
		nonce, offset = newNonce(), v.consoleLen()
		if err := v.typeText("_p " + nonce + " " + strconv.Itoa(exit) + "\n"); err != nil {
			return "", 0, err
		}
	}
}

// errGarbled means a Run's output lines were interleaved with other output.
var errGarbled = errors.New("vm: console output garbled")

// collect reads one _p listing for nonce from the console after offset.
func (v *VM) collect(ctx context.Context, offset int, nonce string) (string, int, error) {
	q := regexp.QuoteMeta(nonce)
	m, err := v.waitFrom(ctx, offset, regexp.MustCompile(q+`-end (\d+) (\d+)\r?\n`), false)
	if err != nil {
		return "", 0, err
	}
	exit, _ := strconv.Atoi(m[1])
	count, _ := strconv.Atoi(m[2])
	text, _ := v.snapshot(offset)
	chunks := make([]string, count+1)
	for _, l := range regexp.MustCompile(q+` (\d+) ([A-Za-z0-9+/=]*)\r*\n`).FindAllStringSubmatch(text, -1) {
		if n, _ := strconv.Atoi(l[1]); n >= 1 && n <= count {
			chunks[n] = l[2]
		}
	}
	for n := 1; n <= count; n++ {
		if chunks[n] == "" {
			return "", exit, errGarbled
		}
	}
	out, err := base64Decode(strings.Join(chunks, ""))
	if err != nil {
		return "", exit, errGarbled
	}
	return out, exit, nil
}

// Stop kills the VM (the overlay is thrown away, so there is nothing to shut
// down cleanly), waits for qemu to exit, and removes the overlay, and the
// work directory if Boot made it. When ctx ends first, qemu is killed
// outright. Safe to call more than once.
func (v *VM) Stop(ctx context.Context) error {
	v.stopOnce.Do(func() {
		select {
		case <-v.exited:
		default:
			_ = v.cmd.Process.Signal(syscall.SIGTERM)
			grace := time.NewTimer(stopGrace)
			defer grace.Stop()
			select {
			case <-v.exited:
			case <-grace.C:
				_ = v.cmd.Process.Kill()
				<-v.exited
			case <-ctx.Done():
				_ = v.cmd.Process.Kill()
				<-v.exited
				v.stopErr = fmt.Errorf("vm: killed qemu: %w", context.Cause(ctx))
			}
		}
		v.cleanup()
	})
	return v.stopErr
}

// stopGrace is how long Stop lets qemu act on SIGTERM before killing it.
const stopGrace = 10 * time.Second

// cleanup removes the overlay, or the whole work directory if it is Boot's.
func (v *VM) cleanup() {
	if v.ownWorkDir {
		_ = os.RemoveAll(v.WorkDir)
		return
	}
	if v.overlay != "" {
		_ = os.Remove(v.overlay)
	}
}

func base64Encode(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

func base64Decode(s string) (string, error) {
	b, err := base64.StdEncoding.DecodeString(s)
	return string(b), err
}

func newNonce() string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return "vm" + hex.EncodeToString(b)
}

// lockedBuffer collects qemu's stderr while callers read it.
type lockedBuffer struct {
	mu  sync.Mutex
	buf []byte
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf = append(b.buf, p...)
	return len(p), nil
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return string(b.buf)
}
