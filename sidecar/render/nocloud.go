package render

import (
	"github.com/kubevirt-imds/kubevirt-imds/api/payload"
)

// NoCloudMetaData renders NoCloud's meta-data YAML: instance-id,
// local-hostname, hostname, public-keys and, when the document has a network
// configuration, the legacy network-interfaces ENI text. cloud-init before
// 24.3 only learns a static or link-local configuration from that key. It is
// left out when the configuration is just DHCPv4 on a single NIC, which is
// cloud-init's own fallback: ENI names the NIC eth0 with its MAC address, and
// cloud-init would try to rename a differently named (and already up) NIC to
// match, for nothing.
func NoCloudMetaData(d *payload.Document) ([]byte, error) {
	md := map[string]any{
		"instance-id": d.Instance.ID,
	}
	if d.Instance.Hostname != "" {
		md["local-hostname"] = d.Instance.Hostname
		md["hostname"] = d.Instance.Hostname
	}
	if keys := publicKeys(d); len(keys) > 0 {
		md["public-keys"] = keys
	}
	if eni := ENI(d); eni != "" && !fallbackEquivalent(d) {
		md["network-interfaces"] = eni
	}
	return marshalYAML(md)
}

// NoCloudNetworkConfig is NoCloud's network-config: version 2, or the user's
// own version 2 text verbatim. cloud-init 24.3 and later fetch it before
// meta-data and prefer it over network-interfaces.
func NoCloudNetworkConfig(d *payload.Document) ([]byte, error) {
	return NetworkConfigV2(d)
}

// publicKeys returns the document's SSH keys with blank entries dropped.
func publicKeys(d *payload.Document) []string {
	var keys []string
	for _, k := range d.Instance.SSHAuthorizedKeys {
		if k = trimKey(k); k != "" {
			keys = append(keys, k)
		}
	}
	return keys
}

// fallbackEquivalent reports whether the network configuration is what
// cloud-init configures by itself: DHCPv4 on one NIC and nothing else.
func fallbackEquivalent(d *payload.Document) bool {
	all := nics(d.Network)
	if len(all) != 1 || !globalDNS(d.Network).empty() {
		return false
	}
	c := all[0]
	return c.dhcp4 && !c.dhcp6 && len(c.v6) == 0 && len(c.routes) == 0 && c.mtu == 0 && c.dns.empty()
}
