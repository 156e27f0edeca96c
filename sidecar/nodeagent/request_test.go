package nodeagent

import (
	"errors"
	"strings"
	"testing"
)

func TestParseCommandLine(t *testing.T) {
	for _, tc := range []struct {
		name    string
		argv    string
		want    Request
		wantErr string // substring; "not" for errNotNodeMode
	}{
		{name: "the webhook's node-mode args", argv: "/kubevirt-imds-sidecar serve --payload-dir=/p --admin-address=127.0.0.2:8081 --network-setup=node --listen-port=8775 --bridge=k6t-eth0 --mac-seed=uid-1 --instance=ns/vm",
			want: Request{Bridge: "k6t-eth0", MACSeed: "uid-1", ListenPort: 8775, AdminAddress: "127.0.0.2:8081", Instance: "ns/vm"}},
		{name: "another loopback admin address", argv: "/kubevirt-imds-sidecar serve --network-setup=node --mac-seed=u --admin-address=127.0.0.9:9000",
			want: Request{Bridge: "k6t-eth0", MACSeed: "u", ListenPort: ServicePort, AdminAddress: "127.0.0.9:9000"}},
		{name: "an admin address off loopback", argv: "/kubevirt-imds-sidecar serve --network-setup=node --mac-seed=u --admin-address=10.0.0.1:80", wantErr: "--admin-address"},
		{name: "separate values and a secondary bridge", argv: "/kubevirt-imds-sidecar serve --network-setup node --bridge k6t-a1b2c3d4e5f --guest-port tapx -mac-seed uid-2",
			want: Request{Bridge: "k6t-a1b2c3d4e5f", GuestPort: "tapx", MACSeed: "uid-2", ListenPort: ServicePort, AdminAddress: DefaultAdminAddress}},
		{name: "defaults: primary bridge, port 80", argv: "/kubevirt-imds-sidecar serve --network-setup=node --mac-seed=u",
			want: Request{Bridge: "k6t-eth0", MACSeed: "u", ListenPort: ServicePort, AdminAddress: DefaultAdminAddress}},
		{name: "flags of a newer sidecar are skipped", argv: "/kubevirt-imds-sidecar serve --future-flag=1 --future-value x --network-setup=node --mac-seed=u",
			want: Request{Bridge: "k6t-eth0", MACSeed: "u", ListenPort: ServicePort, AdminAddress: DefaultAdminAddress}},
		{name: "a sidecar plumbing itself", argv: "/kubevirt-imds-sidecar serve --network-setup=sidecar --mac-seed=u", wantErr: "not"},
		{name: "the default mode is the sidecar's", argv: "/kubevirt-imds-sidecar serve --mac-seed=u", wantErr: "not"},
		{name: "another subcommand", argv: "/kubevirt-imds-sidecar probe --network-setup=node", wantErr: "not"},
		{name: "another program's serve", argv: "/usr/bin/webserver serve --network-setup=node --mac-seed=u", wantErr: "not"},
		{name: "the operator's binary", argv: "/kubevirt-imds manager --network-setup=node", wantErr: "not"},
		{name: "the binary run by a relative path", argv: "kubevirt-imds-sidecar serve --network-setup=node --mac-seed=u",
			want: Request{Bridge: "k6t-eth0", MACSeed: "u", ListenPort: ServicePort, AdminAddress: DefaultAdminAddress}},
		{name: "another program", argv: "sh", wantErr: "not"},
		{name: "values of flags the agent does not need are skipped", argv: "/kubevirt-imds-sidecar serve --payload-dir /p --token-dir /t --log-level debug --network-setup node --mac-seed u",
			want: Request{Bridge: "k6t-eth0", MACSeed: "u", ListenPort: ServicePort, AdminAddress: DefaultAdminAddress}},
		{name: "not a KubeVirt bridge", argv: "/kubevirt-imds-sidecar serve --network-setup=node --mac-seed=u --bridge=eth0", wantErr: `--bridge "eth0"`},
		{name: "no MAC seed", argv: "/kubevirt-imds-sidecar serve --network-setup=node", wantErr: "--mac-seed"},
		{name: "bad port", argv: "/kubevirt-imds-sidecar serve --network-setup=node --mac-seed=u --listen-port=70000", wantErr: "--listen-port"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseCommandLine(strings.Fields(tc.argv))
			switch {
			case tc.wantErr == "not":
				if !errors.Is(err, errNotNodeMode) {
					t.Fatalf("err = %v, want errNotNodeMode", err)
				}
			case tc.wantErr != "":
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want one naming %s", err, tc.wantErr)
				}
			case err != nil:
				t.Fatal(err)
			case got != tc.want:
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}
