package vm

import (
	"context"
	"regexp"
)

// WaitCloudInit waits for cloud-init's final stage to finish ("Cloud-init v.
// … finished at … Datasource …" on the console) and returns the datasource
// it names, e.g. "DataSourceNoCloudNet". It fails with *NoDatasourceError
// when that is DataSourceNone, and fast with *ExitedError when qemu exits.
func (v *VM) WaitCloudInit(ctx context.Context) (string, error) {
	m, err := v.waitFrom(ctx, 0, finishedLine, false)
	if err != nil {
		return "", err
	}
	if m[2] == "DataSourceNone" {
		return m[2], &NoDatasourceError{Line: m[1]}
	}
	return m[2], nil
}

// upSeconds reads "Up N seconds" from cloud-init's finished line: the guest's
// own uptime when its final stage ended.
var upSeconds = regexp.MustCompile(`Up ([0-9.]+) seconds`)

// CloudInitUptime returns the guest uptime cloud-init reported when it
// finished (its "Up N seconds"), or "" before it has.
func (v *VM) CloudInitUptime() string {
	text, _ := v.snapshot(0)
	line := finishedLine.FindString(text)
	if m := upSeconds.FindStringSubmatch(line); m != nil {
		return m[1] + "s"
	}
	return ""
}
