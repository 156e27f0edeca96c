// Package render turns a payload document into the files each metadata
// dialect serves: cloud-init NoCloud meta-data, network-config version 1 and
// 2, ENI text, OpenStack (nova) meta_data.json, network_data.json and vendor
// data, and the EC2-compatible tree nova serves beside them.
//
// Every function is pure: the output depends only on the document, so a
// restarted sidecar serves byte-identical files (and therefore identical
// ETags). Maps are rendered with sorted keys for the same reason.
//
// Guest NICs are named eth0, eth1, … in the document's interface order. Where
// a NIC's MAC address is known the formats that can match on it do so (v1
// mac_address, v2 match/set-name, ENI hwaddress, network_data.json
// ethernet_mac_address), so the guest's own naming does not matter. Values
// that cannot be rendered safely (an address that does not parse, a search
// domain with characters outside a host name) are left out rather than
// passed through, so no field can inject lines into ENI text or YAML.
package render
