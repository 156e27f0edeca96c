package render

import (
	"bytes"
	"encoding/json"
	"flag"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"

	"sigs.k8s.io/yaml"

	"github.com/kubevirt-imds/kubevirt-imds/api/payload"
	"github.com/kubevirt-imds/kubevirt-imds/sidecar/store/storetest"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// goldenCases are the documents the golden files cover.
func goldenCases() map[string]*payload.Document {
	full := storetest.Document()

	linkLocal := storetest.Document()
	linkLocal.Network = &payload.Network{Interfaces: []payload.Interface{{
		Name: "default", MACAddress: "52:54:00:00:00:01", Binding: "bridge", Primary: true,
		Addresses: []string{"169.254.10.2/16"},
	}}}
	linkLocal.UserData = nil
	linkLocal.VendorData = nil

	dual := storetest.Document()
	dual.Instance.SSHAuthorizedKeys = append(dual.Instance.SSHAuthorizedKeys, "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQC0 second@example", "  ")
	dual.Network = &payload.Network{
		Interfaces: []payload.Interface{
			{
				Name: "default", MACAddress: "52:54:00:AA:BB:CC", Binding: "bridge", Primary: true, MTU: 1400,
				Addresses: []string{"10.1.2.3/24", "10.1.3.3/24", "fd00:1::3/64", "not-an-address"},
				Gateway4:  "10.1.2.1", Gateway6: "fd00:1::1",
				Routes: []payload.Route{
					{To: "172.16.0.0/12", Via: "10.1.2.254", Metric: 50},
					{To: "fd00:2::/48", Via: "fd00:1::fe"},
					{To: "192.0.2.0/24"},
					{To: "bogus", Via: "10.1.2.1"},
				},
				Nameservers: &payload.Nameservers{Addresses: []string{"10.1.2.53"}, Search: []string{"example.org", "bad domain\ninjected"}},
			},
			{Name: "nomac", Binding: "bridge", DHCP4: true, DHCP6: true},
		},
		Nameservers: &payload.Nameservers{Addresses: []string{"1.1.1.1", "2606:4700:4700::1111", "10.1.2.53"}},
	}

	inline := storetest.Document()
	inline.Network.NetplanV2 = "network:\n  version: 2\n  ethernets:\n    id0:\n      match:\n        macaddress: \"52:54:00:12:34:56\"\n      dhcp4: true\n"

	noNet := storetest.Document()
	noNet.Network = nil
	noNet.Instance.SSHAuthorizedKeys = nil
	noNet.Instance.Hostname = ""
	noNet.Instance.Labels, noNet.Instance.Annotations, noNet.Instance.Tags = nil, nil, nil
	noNet.VendorData = []byte{0x1f, 0x8b, 0x08, 0x00} // gzip: not representable in vendor_data.json

	masq := storetest.Document()
	masq.Network = &payload.Network{Interfaces: []payload.Interface{{
		Name: "default", MACAddress: "52:54:00:12:34:56", Binding: BindingMasquerade, Primary: true,
		Addresses: []string{"10.0.2.2/24"}, Gateway4: "10.0.2.1", // ignored: masquerade is DHCP
	}}}

	out := map[string]*payload.Document{
		"masquerade": masq, "full": full, "linklocal": linkLocal, "dualstack": dual, "inline-netplan": inline, "no-network": noNet,
	}
	for name, d := range out {
		if _, err := d.Seal(); err != nil {
			panic(name + ": " + err.Error())
		}
	}
	return out
}

// renderAll renders every file of d by golden file name.
func renderAll(t testing.TB, d *payload.Document) map[string][]byte {
	t.Helper()
	files := map[string][]byte{}
	add := func(name string, b []byte, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		files[name] = b
	}
	b, err := NoCloudMetaData(d)
	add("nocloud-meta-data.yaml", b, err)
	b, err = NetworkConfigV2(d)
	add("network-config-v2.yaml", b, err)
	b, err = NetworkConfigV1(d)
	add("network-config-v1.yaml", b, err)
	add("interfaces.eni", []byte(ENI(d)), nil)
	b, err = OpenStackMetaData(d)
	add("meta_data.json", indentJSON(t, b), err)
	b, err = OpenStackNetworkData(d)
	add("network_data.json", indentJSON(t, b), err)
	b, err = OpenStackVendorData(d)
	add("vendor_data.json", indentJSON(t, b), err)
	b, err = OpenStackVendorData2(d)
	add("vendor_data2.json", indentJSON(t, b), err)
	var tree bytes.Buffer
	for _, k := range slices.Sorted(maps.Keys(EC2MetaData(d))) {
		tree.WriteString("== meta-data/" + k + "\n")
		tree.Write(EC2MetaData(d)[k])
		tree.WriteString("\n")
	}
	files["ec2-meta-data.txt"] = tree.Bytes()
	return files
}

func indentJSON(t testing.TB, b []byte) []byte {
	t.Helper()
	var out bytes.Buffer
	if err := json.Indent(&out, b, "", "  "); err != nil {
		t.Fatalf("invalid JSON %q: %v", b, err)
	}
	out.WriteByte('\n')
	return out.Bytes()
}

func TestGolden(t *testing.T) {
	for name, d := range goldenCases() {
		t.Run(name, func(t *testing.T) {
			for file, got := range renderAll(t, d) {
				golden := filepath.Join("testdata", name, file)
				if *update {
					if err := os.MkdirAll(filepath.Dir(golden), 0o755); err != nil {
						t.Fatal(err)
					}
					if err := os.WriteFile(golden, got, 0o644); err != nil {
						t.Fatal(err)
					}
					continue
				}
				want, err := os.ReadFile(golden)
				if err != nil {
					t.Fatalf("%v (run go test -update to create it)", err)
				}
				if !bytes.Equal(got, want) {
					t.Errorf("%s differs from the golden file:\n--- got\n%s\n--- want\n%s", golden, got, want)
				}
			}
		})
	}
}

// TestDeterministic renders each document twice from independent copies:
// maps must not leak their iteration order into any output.
func TestDeterministic(t *testing.T) {
	for name, d := range goldenCases() {
		raw, err := json.Marshal(d)
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 5; i++ {
			d2, err := payload.Parse(raw)
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			a, b := renderAll(t, d), renderAll(t, d2)
			for f := range a {
				if !bytes.Equal(a[f], b[f]) {
					t.Fatalf("%s/%s is not deterministic", name, f)
				}
			}
		}
	}
}

// TestFallbackLeftOut: DHCP on one NIC is cloud-init's own fallback, so the
// meta-data carries no network-interfaces for it, while a static guest's does.
func TestFallbackLeftOut(t *testing.T) {
	cases := goldenCases()
	for name, want := range map[string]bool{"masquerade": false, "full": true, "linklocal": true, "no-network": false} {
		b, err := NoCloudMetaData(cases[name])
		if err != nil {
			t.Fatal(err)
		}
		if got := bytes.Contains(b, []byte("network-interfaces:")); got != want {
			t.Errorf("%s: network-interfaces present = %v, want %v", name, got, want)
		}
	}
}

func TestNetplanVerbatim(t *testing.T) {
	d := goldenCases()["inline-netplan"]
	got, err := NetworkConfigV2(d)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != d.Network.NetplanV2 {
		t.Fatalf("NetplanV2 not served verbatim: %q", got)
	}
}

func TestNoNetwork(t *testing.T) {
	d := goldenCases()["no-network"]
	for name, f := range map[string]func(*payload.Document) ([]byte, error){"v1": NetworkConfigV1, "v2": NetworkConfigV2} {
		if b, err := f(d); err != nil || b != nil {
			t.Errorf("%s without network = %q, %v; want nil, nil", name, b, err)
		}
	}
	if ENI(d) != "" {
		t.Error("ENI without network is not empty")
	}
}

func TestRandomSeed(t *testing.T) {
	d := goldenCases()["full"]
	a := RandomSeed(d)
	if a != RandomSeed(d) {
		t.Fatal("random_seed changes between calls")
	}
	d2 := *d
	d2.Hash = payload.HashPrefix + "00"
	if a == RandomSeed(&d2) {
		t.Fatal("random_seed does not depend on the hash")
	}
	var md struct {
		RandomSeed []byte `json:"random_seed"`
	}
	b, _ := OpenStackMetaData(d)
	if err := json.Unmarshal(b, &md); err != nil || len(md.RandomSeed) != RandomSeedBytes {
		t.Fatalf("random_seed: %d bytes, %v", len(md.RandomSeed), err)
	}
}

// fuzzDocument builds a document from fuzzed fields: one NIC with the
// interesting knobs, keys and metadata maps.
func fuzzDocument(id, host, key, mac, addr, gw, to, via, ns, search, binding, netplan string, mtu int, dhcp4, dhcp6, primary bool) *payload.Document {
	d := &payload.Document{
		Instance: payload.Instance{
			ID: id, Name: host, Namespace: search, Hostname: host,
			SSHAuthorizedKeys: []string{key, key + "\n" + host},
			Tags:              map[string]string{key: id},
			Labels:            map[string]string{host: key},
		},
		UserData:   []byte(netplan),
		VendorData: []byte(key),
		Dialects:   payload.AllDialects,
		Hash:       payload.HashPrefix + id,
	}
	if mac != "-" {
		d.Network = &payload.Network{
			Interfaces: []payload.Interface{
				{Name: id, MACAddress: mac, MTU: mtu, Binding: binding, Primary: primary, DHCP4: dhcp4, DHCP6: dhcp6,
					Addresses: []string{addr, to}, Gateway4: gw, Gateway6: via,
					Routes:      []payload.Route{{To: to, Via: via, Metric: mtu}, {To: addr, Via: gw}},
					Nameservers: &payload.Nameservers{Addresses: []string{ns, gw}, Search: []string{search}}},
				{Name: host, MACAddress: addr, DHCP4: !dhcp4, Addresses: []string{via + "/64"}},
			},
			Nameservers: &payload.Nameservers{Addresses: []string{ns}, Search: []string{search, host}},
			NetplanV2:   netplan,
		}
	}
	return d
}

func addFuzzSeeds(f *testing.F) {
	f.Add("i-1", "vm1", "ssh-ed25519 AAAA x", "52:54:00:12:34:56", "10.0.0.5/24", "10.0.0.1", "10.9.0.0/16", "10.0.0.254", "10.96.0.10", "svc.cluster.local", "bridge", "", 1500, false, false, true)
	f.Add("i-2", "host: x\n- y", "#k", "52:54:00:12:34:57", "fd00::5/64", "fd00::1", "::/0", "fd00::1", "2001:db8::53", "a.b", "masquerade", "network: {version: 2}", 0, true, true, false)
	f.Add("\"'{}[]", "yes", "no", "", "169.254.10.2/16", "", "0.0.0.0/0", "", "", "", "", "", -1, false, true, true)
	f.Add("x", "\x00\xff", "\u2028", "-", "", "", "", "", "", "", "", "", 0, false, false, false)
}

// checkYAML parses b back and returns the value.
func checkYAML(t *testing.T, what string, b []byte) map[string]any {
	t.Helper()
	var v map[string]any
	if err := yaml.Unmarshal(b, &v); err != nil {
		t.Fatalf("%s is not valid YAML: %v\n%s", what, err, b)
	}
	return v
}

func checkJSON(t *testing.T, what string, b []byte) {
	t.Helper()
	var v map[string]any
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("%s is not a JSON object: %v\n%s", what, err, b)
	}
}

// checkENI asserts the text is made of ENI stanzas only: no field may inject
// a line of its own.
func checkENI(t *testing.T, eni string) {
	t.Helper()
	for _, line := range strings.Split(eni, "\n") {
		switch {
		case line == "",
			strings.HasPrefix(line, "auto "),
			strings.HasPrefix(line, "iface "),
			strings.HasPrefix(line, "    ") && !strings.HasPrefix(line, "     "):
		default:
			t.Fatalf("unexpected ENI line %q in\n%s", line, eni)
		}
		for _, r := range line {
			if r < 0x20 || r == 0x7f {
				t.Fatalf("control character in ENI line %q", line)
			}
		}
		if strings.HasPrefix(line, "    up ") || strings.HasPrefix(line, "    pre-up ") {
			t.Fatalf("command line in ENI: %q", line)
		}
	}
}

func FuzzNoCloud(f *testing.F) {
	addFuzzSeeds(f)
	f.Fuzz(func(t *testing.T, id, host, key, mac, addr, gw, to, via, ns, search, binding, netplan string, mtu int, dhcp4, dhcp6, primary bool) {
		d := fuzzDocument(id, host, key, mac, addr, gw, to, via, ns, search, binding, netplan, mtu, dhcp4, dhcp6, primary)
		b, err := NoCloudMetaData(d)
		if err != nil {
			t.Fatal(err)
		}
		md := checkYAML(t, "meta-data", b)
		if got, ok := md["instance-id"]; !ok || (utf8.ValidString(id) && got != id) {
			t.Fatalf("instance-id %q does not round-trip (%q):\n%s", id, got, b)
		}
		if eni := ENI(d); eni != "" && md["network-interfaces"] != eni {
			t.Fatalf("network-interfaces does not round-trip: %q != %q", md["network-interfaces"], eni)
		}
		nc, err := NoCloudNetworkConfig(d)
		if err != nil {
			t.Fatal(err)
		}
		if d.Network != nil && d.Network.NetplanV2 == "" {
			checkYAML(t, "network-config", nc)
		}
	})
}

func FuzzOpenStack(f *testing.F) {
	addFuzzSeeds(f)
	f.Fuzz(func(t *testing.T, id, host, key, mac, addr, gw, to, via, ns, search, binding, netplan string, mtu int, dhcp4, dhcp6, primary bool) {
		d := fuzzDocument(id, host, key, mac, addr, gw, to, via, ns, search, binding, netplan, mtu, dhcp4, dhcp6, primary)
		for name, fn := range map[string]func(*payload.Document) ([]byte, error){
			"meta_data.json": OpenStackMetaData, "network_data.json": OpenStackNetworkData,
			"vendor_data.json": OpenStackVendorData, "vendor_data2.json": OpenStackVendorData2,
		} {
			b, err := fn(d)
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			checkJSON(t, name, b)
		}
		for k, v := range EC2MetaData(d) {
			if k != "" && strings.HasSuffix(k, "/") && bytes.Contains(v, []byte("//")) {
				t.Fatalf("listing %q has an empty entry: %q", k, v)
			}
		}
	})
}

func FuzzENI(f *testing.F) {
	addFuzzSeeds(f)
	f.Fuzz(func(t *testing.T, id, host, key, mac, addr, gw, to, via, ns, search, binding, netplan string, mtu int, dhcp4, dhcp6, primary bool) {
		d := fuzzDocument(id, host, key, mac, addr, gw, to, via, ns, search, binding, netplan, mtu, dhcp4, dhcp6, primary)
		checkENI(t, ENI(d))
	})
}

func FuzzNetworkConfigV1(f *testing.F) {
	addFuzzSeeds(f)
	f.Fuzz(func(t *testing.T, id, host, key, mac, addr, gw, to, via, ns, search, binding, netplan string, mtu int, dhcp4, dhcp6, primary bool) {
		d := fuzzDocument(id, host, key, mac, addr, gw, to, via, ns, search, binding, netplan, mtu, dhcp4, dhcp6, primary)
		b, err := NetworkConfigV1(d)
		if err != nil {
			t.Fatal(err)
		}
		if d.Network != nil && b == nil && len(matchable(nics(d.Network))) > 0 {
			t.Fatal("no configuration although the primary NIC's MAC is known")
		}
		if b != nil {
			v := checkYAML(t, "network-config v1", b)
			if n, _ := v["network"].(map[string]any); n == nil || n["version"] != float64(1) {
				t.Fatalf("not version 1: %s", b)
			}
		}
	})
}

func FuzzNetworkConfigV2(f *testing.F) {
	addFuzzSeeds(f)
	f.Fuzz(func(t *testing.T, id, host, key, mac, addr, gw, to, via, ns, search, binding, netplan string, mtu int, dhcp4, dhcp6, primary bool) {
		d := fuzzDocument(id, host, key, mac, addr, gw, to, via, ns, search, binding, "", mtu, dhcp4, dhcp6, primary)
		b, err := NetworkConfigV2(d)
		if err != nil {
			t.Fatal(err)
		}
		if d.Network != nil && b == nil && len(matchable(nics(d.Network))) > 0 {
			t.Fatal("no configuration although the primary NIC's MAC is known")
		}
		if b != nil {
			v := checkYAML(t, "network-config v2", b)
			if n, _ := v["network"].(map[string]any); n == nil || n["version"] != float64(2) {
				t.Fatalf("not version 2: %s", b)
			}
		}
	})
}

// Before KubeVirt reports a MAC the VMI's spec leaves out, the payload has
// none: no configuration is served rather than one keyed by a name the guest
// may not use, so the guest keeps cloud-init's fallback (DHCP on its first
// NIC) instead of losing its network.
func TestNetworkConfigWaitsForThePrimaryMAC(t *testing.T) {
	d := &payload.Document{Instance: payload.Instance{ID: "i-1"}, Network: &payload.Network{Interfaces: []payload.Interface{
		{Name: "default", Binding: BindingMasquerade, Primary: true, DHCP4: true},
		{Name: "secondary", MACAddress: "52:54:00:00:00:02", DHCP4: true, Optional: true},
	}}}
	for name, render := range map[string]func(*payload.Document) ([]byte, error){
		"v1": NetworkConfigV1, "v2": NetworkConfigV2, "nocloud": NoCloudNetworkConfig,
	} {
		if b, err := render(d); err != nil || b != nil {
			t.Errorf("%s without the primary MAC: %q, %v; want none", name, b, err)
		}
	}
	d.Network.Interfaces[0].MACAddress = "52:54:00:00:00:01"
	b, err := NetworkConfigV2(d)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`macaddress: "52:54:00:00:00:01"`, `macaddress: "52:54:00:00:00:02"`} {
		if !strings.Contains(string(b), want) {
			t.Errorf("v2 once the MAC is known lacks %q:\n%s", want, b)
		}
	}
}

// TestAnyStringRenders: the YAML dialects render every string the document
// can hold, control characters and YAML's own line breaks included, and a
// YAML reader gets it back unchanged.
func TestAnyStringRenders(t *testing.T) {
	for _, s := range []string{"tab\there", "ctl\x01\x7f", "nel\u0085line", "bom\ufeff", "line\u2028sep", "😀", "yes", "0x1F", "- a", "multi\nline\n"} {
		d := storetest.Document()
		d.Instance.Hostname = s
		out, err := NoCloudMetaData(d)
		if err != nil {
			t.Fatalf("%q: %v", s, err)
		}
		var md map[string]any
		if err := yaml.Unmarshal(out, &md); err != nil {
			t.Fatalf("%q: reading it back: %v\n%s", s, err, out)
		}
		if md["hostname"] != s {
			t.Errorf("hostname %q came back as %q\n%s", s, md["hostname"], out)
		}
	}
}
