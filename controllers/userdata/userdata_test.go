package userdata

import (
	"errors"
	"strings"
	"testing"
)

func TestClassify(t *testing.T) {
	for _, tc := range []struct {
		name string
		data string
		want Format
		err  string // substring; "" means no error
	}{
		{"empty", "", FormatEmpty, ""},
		{"blank", " \n\t", FormatEmpty, ""},
		{"cloud-config", "#cloud-config\npackages: [nginx]\n", FormatCloudConfig, ""},
		{"cloud-config with CRLF and BOM", "\ufeff#cloud-config\r\nruncmd: [ls]\r\n", FormatCloudConfig, ""},
		{"empty cloud-config", "#cloud-config\n", FormatCloudConfig, ""},
		{"cloud-config that is a list", "#cloud-config\n- a\n", "", "must be a YAML mapping"},
		{"cloud-config that is not YAML", "#cloud-config\na: [b\n", "", "not valid YAML"},
		{"shell script", "#!/bin/sh\necho hi\n", FormatScript, ""},
		{"mime", "Content-Type: multipart/mixed; boundary=x\n\n--x--\n", FormatMIMEMultipart, ""},
		{"mime version first", "MIME-Version: 1.0\nContent-Type: multipart/mixed\n", FormatMIMEMultipart, ""},
		{"gzip", "\x1f\x8b\x08\x00", FormatGzip, ""},
		{"include", "#include\nhttps://example.invalid/ud\n", FormatInclude, ""},
		{"jinja", "## template: jinja\n#cloud-config\n", FormatJinja, ""},
		{"boothook", "#cloud-boothook\necho\n", FormatOther, ""},
		{"cloudbase-init powershell", "#ps1_sysnative\nWrite-Host hi\n", FormatCloudbaseInit, ""},
		{"cloudbase-init ec2 style", "<powershell>\nWrite-Host hi\n</powershell>\n", FormatCloudbaseInit, ""},
		{"plain text", "hello world\n", "", "not a format"},
		{"json", `{"a": 1}`, "", "not a format"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Classify([]byte(tc.data))
			if tc.err == "" {
				if err != nil || got != tc.want {
					t.Fatalf("Classify = %q, %v; want %q", got, err, tc.want)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Fatalf("Classify error = %v; want one containing %q", err, tc.err)
			}
			if tc.err == "not a format" && !errors.Is(err, ErrUnrecognised) {
				t.Errorf("error %v does not wrap ErrUnrecognised", err)
			}
		})
	}
}
