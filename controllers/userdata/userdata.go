// Package userdata recognises the user-data and vendor-data formats that
// cloud-init and cloudbase-init accept, so a MetadataService whose data no
// guest could use is reported instead of served.
package userdata

import (
	"bytes"
	"errors"
	"fmt"

	"sigs.k8s.io/yaml"
)

// Format is a recognised user-data format.
type Format string

// Recognised formats.
const (
	FormatEmpty         Format = "empty"
	FormatCloudConfig   Format = "cloud-config"
	FormatScript        Format = "script"
	FormatMIMEMultipart Format = "mime-multipart"
	FormatGzip          Format = "gzip"
	FormatInclude       Format = "include"
	FormatJinja         Format = "jinja-template"
	FormatOther         Format = "cloud-init-directive"
	FormatCloudbaseInit Format = "cloudbase-init"
)

// ErrUnrecognised is wrapped by Classify for data of no known format.
var ErrUnrecognised = errors.New("not a format cloud-init or cloudbase-init accepts (#cloud-config, a #! script, MIME multipart, gzip, #include, a cloudbase-init #ps1/rem cmd/<powershell> script)")

// prefixes map the first line's start to the format it announces, as
// cloud-init's and cloudbase-init's user-data handlers do.
var prefixes = []struct {
	prefix string
	format Format
}{
	{"#cloud-config-archive", FormatOther},
	{"#cloud-config-jsonp", FormatOther},
	{"#cloud-config", FormatCloudConfig},
	{"#cloud-boothook", FormatOther},
	{"#part-handler", FormatOther},
	{"#upstart-job", FormatOther},
	{"#include-once", FormatInclude},
	{"#include", FormatInclude},
	{"## template: jinja", FormatJinja},
	{"#!", FormatScript},
	{"#ps1", FormatCloudbaseInit},
	{"rem cmd", FormatCloudbaseInit},
	{"<powershell>", FormatCloudbaseInit},
	{"<script>", FormatCloudbaseInit},
	{"content-type: multipart/", FormatMIMEMultipart},
	{"mime-version:", FormatMIMEMultipart},
}

// Classify returns the format of data, or an error wrapping ErrUnrecognised,
// or an error saying why a #cloud-config document is not a YAML mapping.
func Classify(data []byte) (Format, error) {
	if len(bytes.TrimSpace(data)) == 0 {
		return FormatEmpty, nil
	}
	if len(data) >= 2 && data[0] == 0x1f && data[1] == 0x8b {
		return FormatGzip, nil
	}
	head := data
	if i := bytes.IndexByte(head, '\n'); i >= 0 {
		head = head[:i]
	}
	lower := bytes.ToLower(bytes.TrimLeft(head, " \t\r\ufeff"))
	for _, p := range prefixes {
		if !bytes.HasPrefix(lower, []byte(p.prefix)) {
			continue
		}
		if p.format == FormatCloudConfig {
			if err := checkCloudConfig(data); err != nil {
				return "", err
			}
		}
		return p.format, nil
	}
	return "", ErrUnrecognised
}

func checkCloudConfig(data []byte) error {
	var doc any
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return fmt.Errorf("#cloud-config is not valid YAML: %w", err)
	}
	if doc == nil {
		return nil
	}
	if _, ok := doc.(map[string]any); !ok {
		return errors.New("#cloud-config must be a YAML mapping")
	}
	return nil
}
