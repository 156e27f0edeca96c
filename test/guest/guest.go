//go:build linux

package guest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// ErrNotRoot is returned when the harness is used without root privileges.
var ErrNotRoot = errors.New("guest: tier-1 guests need root (mount, chroot and network namespaces)")

// SMBIOS holds the SMBIOS strings the guest's firmware reports (KubeVirt:
// spec.domain.firmware.serial and .uuid, spec.domain.chassis.*, and the
// cluster-wide SMBIOS defaults). Empty strings are reported as absent.
type SMBIOS struct {
	// Manufacturer, Product, Version, Family and SKU are the system strings.
	Manufacturer, Product, Version, Family, SKU string
	// Serial is the system serial number: cloud-init reads its NoCloud seed
	// (e.g. "ds=nocloud;s=http://169.254.169.254/nocloud/;dsmode=net") here.
	Serial string
	// UUID is the system UUID (KubeVirt's firmware.uuid).
	UUID string

	// ChassisManufacturer, ChassisVersion and ChassisSerial are chassis strings.
	ChassisManufacturer, ChassisVersion, ChassisSerial string
	// ChassisAsset is the chassis asset tag: "OpenStack Nova" makes cloud-init
	// identify the platform as OpenStack.
	ChassisAsset string
}

// KubeVirtSMBIOS returns the SMBIOS a KubeVirt VM gets with the default
// cluster-wide settings (manufacturer and family "KubeVirt", product "None")
// and the given firmware serial and UUID.
func KubeVirtSMBIOS(serial, uuid string) SMBIOS {
	return SMBIOS{Manufacturer: "KubeVirt", Family: "KubeVirt", Product: "None", Serial: serial, UUID: uuid}
}

// Config describes one guest boot.
type Config struct {
	// Root is the guest tree to boot, from EnsureRoot or OpenRoot.
	Root Root
	// NetNS is the guest's network namespace: a name under /run/netns (as
	// `ip netns add` makes) or an absolute path to a namespace file (e.g.
	// /proc/PID/ns/net). It is the only network the guest sees; one guest per
	// namespace at a time.
	NetNS string
	// SMBIOS is what the guest's dmidecode reports.
	SMBIOS SMBIOS
	// Files are extra files placed in the guest before it boots, by absolute
	// path (e.g. a cloud.cfg.d snippet); written with mode 0644.
	Files map[string]string
	// StageTimeout bounds each stage (cloud-init stage, network bring-up).
	// Zero means 2 minutes. ctx bounds the whole run.
	StageTimeout time.Duration
	// WorkDir is where the run's overlay and outputs live until Result.Close;
	// empty means the system's temporary directory. It must be on a file system
	// that can hold an overlay's upper layer (not overlayfs itself).
	WorkDir string
	// Log receives the harness's progress lines; nil discards them.
	Log io.Writer
}

// Stage is one step of a boot.
type Stage struct {
	// Name is generator (cloud-init's systemd generator, running
	// ds-identify), init-local, network, init, networkd-restart (trixie, when
	// cloud-init changed the network configuration), modules-config or
	// modules-final.
	Name     string
	ExitCode int
	Duration time.Duration
	// Output is what the step printed.
	Output string
}

// Result is what a guest boot left behind. Close it to delete the run's files.
type Result struct {
	Generation Generation
	// CloudInit is the guest's cloud-init package and version.
	CloudInit string
	// StatusCode is the exit status of `cloud-init status --long`: 0 done,
	// 1 error, 2 degraded (done with recoverable errors or deprecations).
	StatusCode int
	// Status is the output of `cloud-init status --long`.
	Status string
	// Datasource is the datasource cloud-init settled on, e.g.
	// "DataSourceNoCloudNet"; DatasourceDetail has the seed and mode as well.
	Datasource, DatasourceDetail string
	// Errors are the errors cloud-init recorded in result.json.
	Errors []string
	// InstanceID and LocalHostname are what cloud-init read from the datasource.
	InstanceID, LocalHostname string
	// Platform and CloudName are cloud-init's v1.platform and v1.cloud_name.
	Platform, CloudName string
	// InstanceData is `cloud-init query --all`.
	InstanceData map[string]any
	// Hostname is the guest kernel's hostname after the boot.
	Hostname string
	// NetworkConfig holds the network configuration files present after the
	// boot, by guest path: cloud-init's rendered ENI or netplan file and the
	// systemd-networkd files netplan generated.
	NetworkConfig map[string]string
	// CloudInitLog and CloudInitOutputLog are /var/log/cloud-init.log and
	// /var/log/cloud-init-output.log.
	CloudInitLog, CloudInitOutputLog string
	// NetworkdLog is what systemd-networkd logged (trixie only).
	NetworkdLog string
	// IPAddr and IPRoute are the guest's `ip addr` and `ip route` after the boot.
	IPAddr, IPRoute string
	// Stages are the boot's steps, in order.
	Stages []Stage
	// Duration is the whole of Run: mounts, boot, unmounts and collection.
	Duration time.Duration

	work, lower string
}

// Run boots cloud-init once in a fresh overlay of cfg.Root inside the network
// namespace cfg.NetNS and returns what it did. A cloud-init failure is not an
// error: it shows in the Result (StatusCode, Errors, logs). An error means the
// harness could not boot the guest or ctx ended first; everything the run set
// up is gone by then. Otherwise the caller must Close the Result.
func Run(ctx context.Context, cfg Config) (res *Result, err error) {
	start := time.Now()
	if os.Geteuid() != 0 {
		return nil, ErrNotRoot
	}
	if !known(cfg.Root.Generation) || cfg.Root.Dir == "" {
		return nil, errors.New("guest: Config.Root is not a guest tree (use EnsureRoot)")
	}
	nsPath := cfg.NetNS
	if !filepath.IsAbs(nsPath) {
		if nsPath == "" || strings.ContainsRune(nsPath, '/') {
			return nil, fmt.Errorf("guest: Config.NetNS %q is neither a network namespace name nor an absolute path", cfg.NetNS)
		}
		nsPath = filepath.Join("/run/netns", nsPath)
	}
	nsID, err := netnsID(nsPath)
	if err != nil {
		return nil, fmt.Errorf("guest: network namespace %q: %w", cfg.NetNS, err)
	}
	stageTimeout := cfg.StageTimeout
	if stageTimeout <= 0 {
		stageTimeout = 2 * time.Minute
	}
	logw := cfg.Log
	if logw == nil {
		logw = io.Discard
	}

	work, err := os.MkdirTemp(cfg.WorkDir, "kubevirt-imds-guest-")
	if err != nil {
		return nil, fmt.Errorf("guest: %w", err)
	}
	r := &Result{Generation: cfg.Root.Generation, CloudInit: cfg.Root.CloudInit, work: work, lower: cfg.Root.Dir}
	defer func() {
		if err != nil {
			_ = r.Close()
			res = nil
		}
	}()
	out := filepath.Join(work, "out")
	for _, d := range []string{"upper", "work", "merged", "out/stages", "out/run/kubevirt-imds/seed", "out/run/kubevirt-imds/dmi", "out/tmp"} {
		if err := os.MkdirAll(filepath.Join(work, d), 0o755); err != nil {
			return nil, fmt.Errorf("guest: %w", err)
		}
	}
	if err := os.Chmod(filepath.Join(out, "tmp"), 0o777|fs.ModeSticky); err != nil {
		return nil, fmt.Errorf("guest: %w", err)
	}
	if err := writeSeed(out, cfg); err != nil {
		return nil, err
	}

	driver := filepath.Join(work, "driver.sh")
	if err := os.WriteFile(driver, []byte(driverScript), 0o644); err != nil {
		return nil, fmt.Errorf("guest: %w", err)
	}
	fmt.Fprintf(logw, "guest: booting %s (%s) in netns %s\n", cfg.Root.Generation, cfg.Root.CloudInit, cfg.NetNS)
	var console bytes.Buffer
	// nsenter (entering no PID namespace) execs unshare, which forks the
	// driver as PID 1 of the new PID namespace and, with --kill-child, takes
	// it (and with it every guest process and mount) down when unshare itself
	// is killed on ctx's end.
	cmd := exec.CommandContext(ctx, "nsenter", "--net="+nsPath, "--",
		"unshare", "--uts", "--mount", "--pid", "--ipc", "--fork", "--kill-child", "--", "/bin/sh", driver)
	// A clean environment: the guest's cloud-init reads PID 1's environment
	// (container=…) to tell whether it runs in a container.
	cmd.Env = []string{
		"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		"HOME=/root", "LANG=C.UTF-8", "TERM=dumb",
		"GUEST_MERGED=" + filepath.Join(work, "merged"),
		"GUEST_OUT=" + out,
		"GUEST_LOWER=" + cfg.Root.Dir,
		"GUEST_UPPER=" + filepath.Join(work, "upper"),
		"GUEST_WORK=" + filepath.Join(work, "work"),
		"GUEST_GENERATION=" + string(cfg.Root.Generation),
		// Whole seconds, at least one: timeout(1) takes 0 as "no limit".
		"GUEST_STAGE_TIMEOUT=" + strconv.Itoa(max(1, int(math.Ceil(stageTimeout.Seconds())))),
	}
	w := io.MultiWriter(&console, logw)
	cmd.Stdout, cmd.Stderr = w, w
	cmd.WaitDelay = 10 * time.Second
	runErr := cmd.Run()
	if runErr != nil {
		// Killed with unshare, the guest's PID 1 takes its namespace down
		// asynchronously: wait for the guest's processes to be gone so that
		// nothing outlives Run.
		waitNetnsIdle(nsID, 10*time.Second)
	}
	r.readOutputs(out)
	if ctx.Err() != nil || runErr != nil {
		// The logs explain most failures; ctx may be over, so read them on a
		// short leash of their own.
		rctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		r.collectFiles(rctx)
		cancel()
	}
	if ctx.Err() != nil {
		return nil, fmt.Errorf("guest: %s boot did not finish: %w\n%s", cfg.Root.Generation, ctx.Err(), r.report(console.String()))
	}
	if runErr != nil {
		return nil, fmt.Errorf("guest: %s boot failed: %w\n%s", cfg.Root.Generation, runErr, r.report(console.String()))
	}
	r.collectFiles(ctx)
	r.Duration = time.Since(start)
	fmt.Fprintf(logw, "guest: %s finished in %v: status exit %d, %s\n", cfg.Root.Generation,
		r.Duration.Round(time.Millisecond), r.StatusCode, r.DatasourceDetail)
	return r, nil
}

// netnsID identifies the namespace file at path as the kernel names network
// namespaces in /proc/PID/ns/net links ("net:[inode]").
func netnsID(path string) (string, error) {
	var fsInfo unix.Statfs_t
	if err := unix.Statfs(path, &fsInfo); err != nil {
		return "", err
	}
	if fsInfo.Type != unix.NSFS_MAGIC {
		return "", fmt.Errorf("%s is not a namespace file", path)
	}
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return "", err
	}
	return fmt.Sprintf("net:[%d]", st.Ino), nil
}

// waitNetnsIdle waits, at most for limit, until no process is left in the
// network namespace id (see netnsID).
func waitNetnsIdle(id string, limit time.Duration) {
	deadline := time.Now().Add(limit)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for time.Now().Before(deadline) && netnsBusy(id) {
		<-tick.C
	}
}

// netnsBusy reports whether any process is in the network namespace id.
func netnsBusy(id string) bool {
	procs, _ := os.ReadDir("/proc")
	for _, p := range procs {
		if p.Name()[0] < '0' || p.Name()[0] > '9' {
			continue
		}
		if link, err := os.Readlink("/proc/" + p.Name() + "/ns/net"); err == nil && link == id {
			return true
		}
	}
	return false
}

// writeSeed lays out what the guest needs before boot in its (still empty)
// /run: the DMI strings in sysfs form for ds-identify under
// /run/kubevirt-imds/dmi, and the files the driver places in the guest under
// /run/kubevirt-imds/seed (N holds the content; list has "N<TAB>mode<TAB>path"
// lines).
func writeSeed(out string, cfg Config) error {
	run := filepath.Join(out, "run", "kubevirt-imds")
	for name, value := range dmiFiles(cfg.SMBIOS) {
		if value == "" {
			continue
		}
		if err := os.WriteFile(filepath.Join(run, "dmi", name), []byte(value+"\n"), 0o444); err != nil {
			return fmt.Errorf("guest: %w", err)
		}
	}
	machineID := make([]byte, 16)
	if _, err := rand.Read(machineID); err != nil {
		return fmt.Errorf("guest: %w", err)
	}
	type file struct{ path, mode, content string }
	files := []file{
		{"/usr/sbin/dmidecode", "0755", dmidecodeStub(cfg.SMBIOS)},
		{"/usr/bin/systemd-detect-virt", "0755", detectVirtStub},
		{"/etc/cloud/cloud.cfg.d/90-kubevirt-imds-guest.cfg", "0644", cloudConfig},
		{"/etc/hostname", "0644", "localhost\n"},
		// Every image boots with its own machine ID (systemd-networkd derives
		// its DHCP client identity from it).
		{"/etc/machine-id", "0444", hex.EncodeToString(machineID) + "\n"},
	}
	extra := make([]string, 0, len(cfg.Files))
	for p := range cfg.Files {
		extra = append(extra, p)
	}
	sort.Strings(extra)
	for _, p := range extra {
		if !path.IsAbs(p) || path.Clean(p) != p || strings.ContainsAny(p, "\t\n") {
			return fmt.Errorf("guest: Config.Files: %q is not a clean absolute path", p)
		}
		files = append(files, file{p, "0644", cfg.Files[p]})
	}
	var list strings.Builder
	for i, f := range files {
		if err := os.WriteFile(filepath.Join(run, "seed", strconv.Itoa(i)), []byte(f.content), 0o600); err != nil {
			return fmt.Errorf("guest: %w", err)
		}
		fmt.Fprintf(&list, "%d\t%s\t%s\n", i, f.mode, f.path)
	}
	if err := os.WriteFile(filepath.Join(run, "seed", "list"), []byte(list.String()), 0o600); err != nil {
		return fmt.Errorf("guest: %w", err)
	}
	return nil
}

// readOutputs fills in what the driver wrote to out; missing files (a boot that
// ended early) leave fields empty.
func (r *Result) readOutputs(out string) {
	read := func(name string) string {
		b, _ := os.ReadFile(filepath.Join(out, name))
		return string(b)
	}
	if tsv := read("stages.tsv"); tsv != "" {
		for _, line := range strings.Split(strings.TrimSpace(tsv), "\n") {
			f := strings.Split(line, "\t")
			if len(f) != 3 {
				continue
			}
			rc, _ := strconv.Atoi(f[1])
			ms, _ := strconv.Atoi(f[2])
			r.Stages = append(r.Stages, Stage{Name: f[0], ExitCode: rc,
				Duration: time.Duration(ms) * time.Millisecond, Output: read(filepath.Join("stages", f[0]+".log"))})
		}
	}
	r.Status = read("status.txt")
	r.StatusCode = -1
	if rc, err := strconv.Atoi(strings.TrimSpace(read("status.rc"))); err == nil {
		r.StatusCode = rc
	}
	r.Hostname = strings.TrimSpace(read("hostname"))
	r.NetworkdLog = read("networkd.log")
	r.IPAddr = read("ip-addr.txt")
	r.IPRoute = read("ip-route.txt")

	var data map[string]any
	if json.Unmarshal([]byte(read("query.json")), &data) == nil {
		r.InstanceData = data
		if v1, ok := data["v1"].(map[string]any); ok {
			str := func(k string) string { s, _ := v1[k].(string); return s }
			r.InstanceID = str("instance_id")
			r.LocalHostname = str("local_hostname")
			r.Platform = str("platform")
			r.CloudName = str("cloud_name")
		}
	}
}

// networkConfigFiles are where each generation's cloud-init renders.
var networkConfigFiles = map[Generation][]string{
	Bookworm: {"/etc/network/interfaces", "/etc/network/interfaces.d/50-cloud-init"},
	Trixie:   {"/etc/netplan/50-cloud-init.yaml"},
}

// collectFiles reads the logs and network configuration out of the guest.
func (r *Result) collectFiles(ctx context.Context) {
	r.NetworkConfig = map[string]string{}
	for _, p := range networkConfigFiles[r.Generation] {
		if b, err := r.readFile(ctx, p); err == nil {
			r.NetworkConfig[p] = string(b)
		}
	}
	generated, _ := filepath.Glob(filepath.Join(r.work, "out/run/systemd/network/*"))
	for _, g := range generated {
		if b, err := os.ReadFile(g); err == nil {
			r.NetworkConfig["/run/systemd/network/"+filepath.Base(g)] = string(b)
		}
	}
	// result.json is a link from /run into /var/lib/cloud: read it in the guest.
	if b, err := r.readFile(ctx, "/run/cloud-init/result.json"); err == nil {
		var result struct {
			V1 struct {
				Datasource string   `json:"datasource"`
				Errors     []string `json:"errors"`
			} `json:"v1"`
		}
		if json.Unmarshal(b, &result) == nil {
			r.DatasourceDetail = result.V1.Datasource
			r.Datasource, _, _ = strings.Cut(result.V1.Datasource, " ")
			r.Errors = result.V1.Errors
		}
	}
	if b, err := r.readFile(ctx, "/var/log/cloud-init.log"); err == nil {
		r.CloudInitLog = string(b)
	}
	if b, err := r.readFile(ctx, "/var/log/cloud-init-output.log"); err == nil {
		r.CloudInitOutputLog = string(b)
	}
}

// ReadFile returns a file from the guest as the guest saw it at the end of the
// boot (e.g. one that user-data wrote). path is a guest path; symbolic links
// resolve inside the guest. A missing file gives an error satisfying
// errors.Is(err, fs.ErrNotExist).
func (r *Result) ReadFile(path string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return r.readFile(ctx, path)
}

// readFile mounts the run's layers read-only in a private mount namespace that
// dies with the command, and reads path chrooted there.
func (r *Result) readFile(ctx context.Context, p string) ([]byte, error) {
	if r.work == "" {
		return nil, errors.New("guest: result is closed")
	}
	const script = `mount -t overlay overlay -o "lowerdir=$1/upper:$2" "$1/merged" &&
mount --bind "$1/out/run" "$1/merged/run" && mount --bind "$1/out/tmp" "$1/merged/tmp" &&
if chroot "$1/merged" test -e "$3"; then exec chroot "$1/merged" cat -- "$3"; else exit 66; fi`
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, "unshare", "--mount", "--", "/bin/sh", "-c", script, "sh", r.work, r.lower, p)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var exit *exec.ExitError
	if errors.As(err, &exit) && exit.ExitCode() == 66 {
		return nil, &fs.PathError{Op: "read", Path: p, Err: fs.ErrNotExist}
	}
	if err != nil {
		return nil, fmt.Errorf("guest: reading %s: %w: %s", p, err, strings.TrimSpace(stderr.String()))
	}
	return stdout.Bytes(), nil
}

// Stage returns the named stage, or nil when the boot did not run it.
func (r *Result) Stage(name string) *Stage {
	for i := range r.Stages {
		if r.Stages[i].Name == name {
			return &r.Stages[i]
		}
	}
	return nil
}

// Report summarises the boot for a failure message: stages, status, warnings
// and the tail of cloud-init's log.
func (r *Result) Report() string {
	return r.report("")
}

func (r *Result) report(console string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "guest %s (%s)\n", r.Generation, r.CloudInit)
	for _, s := range r.Stages {
		fmt.Fprintf(&b, "  stage %-16s exit %d in %v\n", s.Name, s.ExitCode, s.Duration)
		if s.ExitCode != 0 {
			b.WriteString(indent(tail(s.Output, 20)))
		}
	}
	if console != "" {
		b.WriteString("driver output:\n" + indent(tail(console, 20)))
	}
	fmt.Fprintf(&b, "cloud-init status exit %d:\n%s", r.StatusCode, indent(r.Status))
	if r.NetworkdLog != "" {
		b.WriteString("systemd-networkd log (tail):\n" + indent(tail(r.NetworkdLog, 20)))
	}
	b.WriteString("ip addr:\n" + indent(r.IPAddr) + "ip route:\n" + indent(r.IPRoute))
	if r.CloudInitLog != "" {
		var warn []string
		for _, l := range strings.Split(r.CloudInitLog, "\n") {
			if strings.Contains(l, "[WARNING]") || strings.Contains(l, "[ERROR]") || strings.Contains(l, "[CRITICAL]") {
				warn = append(warn, l)
			}
		}
		if len(warn) > 0 {
			b.WriteString("cloud-init.log warnings and errors:\n" + indent(tail(strings.Join(warn, "\n"), 30)))
		}
		b.WriteString("cloud-init.log (tail):\n" + indent(tail(r.CloudInitLog, 30)))
	}
	return b.String()
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func indent(s string) string {
	if strings.TrimSpace(s) == "" {
		return ""
	}
	return "    " + strings.ReplaceAll(strings.TrimRight(s, "\n"), "\n", "\n    ") + "\n"
}

// Close deletes the run's overlay and outputs. ReadFile fails afterwards.
func (r *Result) Close() error {
	if r == nil || r.work == "" {
		return nil
	}
	err := os.RemoveAll(r.work)
	r.work = ""
	return err
}
