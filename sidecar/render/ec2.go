package render

import (
	"crypto/sha256"
	"encoding/hex"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/kubevirt-imds/kubevirt-imds/api/payload"
)

// DefaultRegion is placement/region when the Node the VM runs on has no
// topology.kubernetes.io/region label: AWS clients (the SDKs' GetRegion,
// botocore) fail without one, and a fixed name says "unknown" plainly.
const DefaultRegion = "kubevirt"

// EC2MetaData renders the EC2 meta-data tree served under
// /<version>/meta-data/. Keys are paths relative to meta-data/: a key ending
// in "/" (and "", the tree's root) is a directory whose value lists its
// children one per line, sub-directories with a trailing "/"; every other key
// is a leaf value. public-keys/ lists "<index>=<name>" lines, the form EC2
// clients parse before fetching public-keys/<index>/openssh-key.
//
// The NICs come from the document's EC2 member when the operator wrote one,
// else from its network configuration (a document from an operator that
// predates it).
func EC2MetaData(d *payload.Document) map[string][]byte {
	leaves := map[string]string{
		"ami-launch-index":            "0",
		"instance-id":                 d.Instance.ID,
		"placement/availability-zone": AvailabilityZone,
		"placement/region":            DefaultRegion,
	}
	if e := d.EC2; e != nil {
		if e.AvailabilityZone != "" {
			leaves["placement/availability-zone"] = e.AvailabilityZone
		}
		if e.Region != "" {
			leaves["placement/region"] = e.Region
		}
		if e.InstanceType != "" {
			leaves["instance-type"] = e.InstanceType
		}
	}
	if d.Instance.Hostname != "" {
		leaves["hostname"] = d.Instance.Hostname
		leaves["local-hostname"] = d.Instance.Hostname
	}
	for i, n := range ec2Interfaces(d) {
		if n.mac == "" {
			continue
		}
		base := "network/interfaces/macs/" + n.mac + "/"
		leaves[base+"mac"] = n.mac
		leaves[base+"device-number"] = strconv.Itoa(n.device)
		leaves[base+"interface-id"] = "eni-" + strings.ReplaceAll(n.mac, ":", "")
		if d.Instance.Hostname != "" {
			leaves[base+"local-hostname"] = d.Instance.Hostname
		}
		// Every NIC is in a "VPC": the VM's namespace. cloud-init treats a
		// NIC without vpc-id as EC2-Classic and re-crawls the service on
		// every boot stage (22.4 then fails its ephemeral DHCP on an
		// address the guest already has).
		leaves[base+"vpc-id"] = awsID("vpc", d.Instance.Namespace)
		if len(n.v4) > 0 {
			addrs := make([]string, 0, len(n.v4))
			for _, p := range n.v4 {
				addrs = append(addrs, p.Addr().String())
			}
			subnet := n.v4[0].Masked().String()
			leaves[base+"local-ipv4s"] = strings.Join(addrs, "\n")
			leaves[base+"subnet-ipv4-cidr-block"] = subnet
			leaves[base+"subnet-id"] = awsID("subnet", d.Instance.Namespace+"/"+subnet)
			leaves[base+"vpc-ipv4-cidr-block"] = subnet
			leaves[base+"vpc-ipv4-cidr-blocks"] = subnet
		}
		if i == 0 {
			leaves["mac"] = n.mac
			if len(n.v4) > 0 {
				leaves["local-ipv4"] = n.v4[0].Addr().String()
			}
		}
	}
	keys := publicKeys(d)
	for i, k := range keys {
		leaves["public-keys/"+strconv.Itoa(i)+"/openssh-key"] = k
	}

	tree := map[string][]byte{}
	children := map[string][]string{"": nil}
	for p, v := range leaves {
		tree[p] = []byte(v)
		// Register every ancestor directory with its child entry.
		for {
			dir, base := splitEntry(p)
			if !slices.Contains(children[dir], base) {
				children[dir] = append(children[dir], base)
			}
			if dir == "" {
				break
			}
			p = dir
		}
	}
	for dir, entries := range children {
		slices.Sort(entries)
		if dir == "public-keys/" {
			// EC2 lists keys as index=name.
			entries = entries[:0]
			for i := range keys {
				entries = append(entries, strconv.Itoa(i)+"="+KeyName(i))
			}
		}
		tree[dir] = []byte(strings.Join(entries, "\n"))
	}
	return tree
}

// awsID is an AWS-shaped resource ID ("vpc-" and 17 hex digits) derived
// from name, so the same name always gives the same ID.
func awsID(kind, name string) string {
	sum := sha256.Sum256([]byte(kind + "/" + name))
	return kind + "-" + hex.EncodeToString(sum[:])[:17]
}

// ec2NIC is one NIC as the EC2 tree shows it; the primary one comes first.
type ec2NIC struct {
	mac    string
	device int
	v4     []netip.Prefix
}

// ec2Interfaces lists the document's NICs, the primary first (EC2's device
// 0, whose MAC is meta-data/mac). Addresses that do not parse are left out.
func ec2Interfaces(d *payload.Document) []ec2NIC {
	var out []ec2NIC
	if d.EC2 != nil && len(d.EC2.Interfaces) > 0 {
		for _, in := range d.EC2.Interfaces {
			n := ec2NIC{mac: cleanMAC(in.MACAddress), device: in.DeviceNumber}
			for _, a := range in.IPv4 {
				if p, err := netip.ParsePrefix(a); err == nil && p.Addr().Is4() {
					n.v4 = append(n.v4, p)
				}
			}
			out = append(out, n)
		}
		return out
	}
	cs := nics(d.Network)
	// The primary NIC first, then the others in document order.
	slices.SortStableFunc(cs, func(a, b nic) int { return payload.PrimaryFirst(a.primary, b.primary) })
	for i, c := range cs {
		out = append(out, ec2NIC{mac: cleanMAC(c.mac), device: i, v4: c.v4})
	}
	return out
}

// cleanMAC returns mac lower-cased when it is six colon-separated hex
// octets, else "": it becomes a path segment.
func cleanMAC(mac string) string {
	mac = strings.ToLower(mac)
	parts := strings.Split(mac, ":")
	if len(parts) != 6 {
		return ""
	}
	for _, p := range parts {
		if len(p) != 2 || strings.Trim(p, "0123456789abcdef") != "" {
			return ""
		}
	}
	return mac
}

// splitEntry splits a tree key into its parent directory key and its entry in
// the parent's listing: "a/b/c" → ("a/b/", "c"), "a/b/" → ("a/", "b/").
func splitEntry(p string) (dir, entry string) {
	trimmed := strings.TrimSuffix(p, "/")
	i := strings.LastIndexByte(trimmed, '/')
	entry = p[i+1:]
	if i < 0 {
		return "", entry
	}
	return trimmed[:i+1], entry
}
