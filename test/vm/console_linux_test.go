package vm

import (
	"context"
	"errors"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// fakeVM is a VM whose console holds text, without qemu.
func fakeVM(text string) *VM {
	return &VM{console: []byte(text), grew: make(chan struct{}), exited: make(chan struct{}), stderr: &lockedBuffer{}}
}

// listing is what _p prints for out, as numbered base64 lines.
func listing(nonce, out string, exit int) []string {
	b64 := base64Encode(out)
	var lines []string
	for i := 0; len(b64) > 0; i++ {
		n := min(60, len(b64))
		lines = append(lines, nonce+" "+strconv.Itoa(i+1)+" "+b64[:n]+"\r\n")
		b64 = b64[n:]
	}
	return append(lines, nonce+"-end "+strconv.Itoa(exit)+" "+strconv.Itoa(len(lines))+"\r\n")
}

func TestCollectReadsAListingAmongOtherOutput(t *testing.T) {
	out := "instance-id: 1234\nsome more output, long enough for two lines of base64\n"
	lines := listing("vmabc", out, 3)
	// The typed command (were it echoed), a systemd line between two of
	// the listing's lines, and a prompt before it.
	text := "_r vmabc c2xlZXA=\r\n# " + lines[0] + "[  OK  ] Started something.\r\n" + strings.Join(lines[1:], "")
	got, exit, err := fakeVM(text).collect(context.Background(), 0, "vmabc")
	if err != nil || exit != 3 || got != out {
		t.Fatalf("collect = %q, %d, %v; want %q, 3, nil", got, exit, err, out)
	}
}

func TestCollectNoticesALineBrokenByOtherOutput(t *testing.T) {
	out := "first line of output that spans more than one base64 line of sixty\n"
	lines := listing("vmabc", out, 0)
	lines[0] = lines[0][:20] + "[ 12.345] kernel says hi\r\n" + lines[0][20:]
	_, _, err := fakeVM(strings.Join(lines, "")).collect(context.Background(), 0, "vmabc")
	if !errors.Is(err, errGarbled) {
		t.Fatalf("collect error = %v, want errGarbled", err)
	}
}

func TestWaitCloudInitReadsTheDatasource(t *testing.T) {
	for line, want := range map[string]string{
		// cloud-init 25.1 and 22.4, as they print on the console.
		"[   88.1] cloud-init[612]: Cloud-init v. 25.1.4 finished at Fri, 27 Nov 2026 17:05:54 +0000. Datasource DataSourceNoCloudNet [seed=http://169.254.169.254/nocloud/][dsmode=net].  Up 88.01 seconds\r\n": "DataSourceNoCloudNet",
		"Cloud-init v. 22.4.2 finished at Fri, 27 Nov 2026 17:05:54 +0000. Datasource DataSourceOpenStackLocal [net,ver=2].  Up 40.50 seconds\n":                                                                 "DataSourceOpenStackLocal",
	} {
		v := fakeVM("boot noise\r\n" + line)
		got, err := v.WaitCloudInit(context.Background())
		if err != nil || got != want {
			t.Errorf("WaitCloudInit = %q, %v; want %q", got, err, want)
		}
		if up := v.CloudInitUptime(); up == "" {
			t.Errorf("no uptime read from %q", line)
		}
	}
}

func TestWaitForFailsFastOnDataSourceNone(t *testing.T) {
	v := fakeVM("Cloud-init v. 25.1.4 finished at Fri, 27 Nov 2026 17:05:54 +0000. Datasource DataSourceNone.  Up 60.00 seconds\r\n")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, err := v.WaitFor(ctx, regexp.MustCompile(`login:`))
	var none *NoDatasourceError
	if !errors.As(err, &none) {
		t.Fatalf("WaitFor error = %v, want *NoDatasourceError", err)
	}
}

func TestWaitForFailsFastWhenQemuExits(t *testing.T) {
	v := fakeVM("[    4.1] Kernel panic - not syncing: VFS: Unable to mount root fs\r\n")
	v.exitErr = errors.New("exit status 1")
	close(v.exited)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, err := v.WaitFor(ctx, regexp.MustCompile(`login:`))
	var exited *ExitedError
	if !errors.As(err, &exited) {
		t.Fatalf("WaitFor error = %v, want *ExitedError", err)
	}
}
