package render

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/kubevirt-imds/kubevirt-imds/api/payload"
)

// AvailabilityZone is the availability zone every instance reports: the
// document carries no placement, and a stable value keeps guests that record
// it from seeing a change.
const AvailabilityZone = "kubevirt"

// RandomSeedBytes is the length of meta_data.json's random_seed, as nova
// sends it.
const RandomSeedBytes = 512

// OpenStackMetaData renders nova's meta_data.json. uuid is the instance ID so
// that cloud-init sees the same instance-id in every dialect; project_id is
// the namespace. meta merges labels, then annotations, then tags (a later
// source wins on a key clash). random_seed is derived from the document hash
// so that it never changes across restarts; it is entropy for the guest's
// pool, not a secret.
func OpenStackMetaData(d *payload.Document) ([]byte, error) {
	type key struct {
		Name string `json:"name"`
		Type string `json:"type"`
		Data string `json:"data"`
	}
	type metaData struct {
		UUID             string            `json:"uuid"`
		Name             string            `json:"name"`
		Hostname         string            `json:"hostname"`
		AvailabilityZone string            `json:"availability_zone"`
		ProjectID        string            `json:"project_id"`
		LaunchIndex      int               `json:"launch_index"`
		Keys             []key             `json:"keys"`
		PublicKeys       map[string]string `json:"public_keys"`
		Meta             map[string]string `json:"meta"`
		Devices          []any             `json:"devices"`
		RandomSeed       string            `json:"random_seed"`
	}
	md := metaData{
		UUID:             d.Instance.ID,
		Name:             d.Instance.Name,
		Hostname:         d.Instance.Hostname,
		AvailabilityZone: AvailabilityZone,
		ProjectID:        d.Instance.Namespace,
		Keys:             []key{},
		PublicKeys:       map[string]string{},
		Meta:             map[string]string{},
		Devices:          []any{},
		RandomSeed:       RandomSeed(d),
	}
	for i, k := range publicKeys(d) {
		name := KeyName(i)
		md.Keys = append(md.Keys, key{Name: name, Type: "ssh", Data: k})
		md.PublicKeys[name] = k
	}
	for _, m := range []map[string]string{d.Instance.Labels, d.Instance.Annotations, d.Instance.Tags} {
		for k, v := range m {
			md.Meta[k] = v
		}
	}
	return marshalJSON(md)
}

// KeyName names the i-th SSH key in OpenStack keys[]/public_keys{} and in the
// EC2 public-keys listing.
func KeyName(i int) string { return "key-" + strconv.Itoa(i) }

// RandomSeed is meta_data.json's random_seed: RandomSeedBytes bytes of
// SHA-256 in counter mode over the document hash, base64-encoded.
func RandomSeed(d *payload.Document) string {
	seed := make([]byte, 0, RandomSeedBytes)
	var ctr [8]byte
	for i := uint64(0); len(seed) < RandomSeedBytes; i++ {
		binary.BigEndian.PutUint64(ctr[:], i)
		h := sha256.New()
		h.Write([]byte("kubevirt-imds random_seed\x00"))
		h.Write([]byte(d.Hash))
		h.Write(ctr[:])
		seed = h.Sum(seed)
	}
	return base64.StdEncoding.EncodeToString(seed[:RandomSeedBytes])
}

// OpenStackNetworkData renders nova's network_data.json: one phy link per NIC
// whose MAC address is known (cloud-init maps links to NICs by MAC and fails
// on a link it cannot place), ipv4_dhcp/ipv6_dhcp networks for DHCP, ipv4/ipv6
// networks with routes for static addresses, and the resolvers as dns
// services. Without network configuration it has no links, which leaves the
// guest's fallback alone.
func OpenStackNetworkData(d *payload.Document) ([]byte, error) {
	type link struct {
		ID                 string `json:"id"`
		Type               string `json:"type"`
		EthernetMACAddress string `json:"ethernet_mac_address"`
		MTU                *int   `json:"mtu"`
		VIFID              string `json:"vif_id,omitempty"`
	}
	type osRoute struct {
		Network string `json:"network"`
		Netmask string `json:"netmask"`
		Gateway string `json:"gateway"`
	}
	type service struct {
		Type    string `json:"type"`
		Address string `json:"address"`
	}
	type network struct {
		ID        string    `json:"id"`
		Link      string    `json:"link"`
		Type      string    `json:"type"`
		IPAddress string    `json:"ip_address,omitempty"`
		Netmask   string    `json:"netmask,omitempty"`
		Routes    []osRoute `json:"routes,omitempty"`
		NetworkID string    `json:"network_id,omitempty"`
		Services  []service `json:"services,omitempty"`
	}
	type networkData struct {
		Links    []link    `json:"links"`
		Networks []network `json:"networks"`
		Services []service `json:"services"`
	}
	nd := networkData{Links: []link{}, Networks: []network{}, Services: []service{}}
	dnsServices := func(x dns) []service {
		var out []service
		for _, a := range x.addrs {
			out = append(out, service{Type: "dns", Address: a.String()})
		}
		return out
	}
	if d.Network != nil {
		vmiNames := d.Network.Interfaces
		for _, c := range nics(d.Network) {
			if c.mac == "" {
				continue
			}
			l := link{ID: c.name, Type: "phy", EthernetMACAddress: c.mac, VIFID: vmiNames[c.index].Name}
			if c.mtu > 0 {
				mtu := c.mtu
				l.MTU = &mtu
			}
			nd.Links = append(nd.Links, l)
			add := func(n network) {
				n.ID = "network" + strconv.Itoa(len(nd.Networks))
				n.Link = l.ID
				n.NetworkID = vmiNames[c.index].Network
				n.Services = dnsServices(c.dns)
				nd.Networks = append(nd.Networks, n)
			}
			var r4, r6 []osRoute
			if c.gw4.IsValid() {
				r4 = append(r4, osRoute{Network: "0.0.0.0", Netmask: "0.0.0.0", Gateway: c.gw4.String()})
			}
			if c.gw6.IsValid() {
				r6 = append(r6, osRoute{Network: "::", Netmask: "::", Gateway: c.gw6.String()})
			}
			for _, r := range c.routes {
				if !r.via.IsValid() {
					// network_data.json routes always have a gateway.
					continue
				}
				if r.to.Addr().Is4() {
					r4 = append(r4, osRoute{Network: r.to.Addr().String(), Netmask: netmask4(r.to.Bits()), Gateway: r.via.String()})
				} else {
					r6 = append(r6, osRoute{Network: r.to.Addr().String(), Netmask: netmask6(r.to.Bits()), Gateway: r.via.String()})
				}
			}
			if c.dhcp4 {
				add(network{Type: "ipv4_dhcp"})
			} else {
				for i, p := range c.v4 {
					n := network{Type: "ipv4", IPAddress: p.Addr().String(), Netmask: netmask4(p.Bits())}
					if i == 0 {
						n.Routes = r4
					}
					add(n)
				}
			}
			if c.dhcp6 {
				add(network{Type: "ipv6_dhcp"})
			} else {
				for i, p := range c.v6 {
					n := network{Type: "ipv6", IPAddress: p.Addr().String(), Netmask: netmask6(p.Bits())}
					if i == 0 {
						n.Routes = r6
					}
					add(n)
				}
			}
		}
		nd.Services = append(nd.Services, dnsServices(globalDNS(d.Network))...)
		if nd.Services == nil {
			nd.Services = []service{}
		}
	}
	return marshalJSON(nd)
}

// OpenStackVendorData renders vendor_data.json. cloud-init uses the value of
// its "cloud-init" key as vendor-data, so the document's vendor data goes
// there as a string. JSON cannot carry arbitrary bytes in a string, so vendor
// data that is not UTF-8 text (gzip) is left out here; NoCloud and /v1 still
// serve it.
func OpenStackVendorData(d *payload.Document) ([]byte, error) {
	vd := map[string]string{}
	if len(d.VendorData) > 0 && utf8.Valid(d.VendorData) {
		vd["cloud-init"] = string(d.VendorData)
	}
	return marshalJSON(vd)
}

// OpenStackVendorData2 renders vendor_data2.json, nova's dynamic vendor data.
// It is always an empty object: cloud-init applies vendor_data2.json in
// addition to vendor_data.json, and repeating the vendor data there would run
// it twice.
func OpenStackVendorData2(*payload.Document) ([]byte, error) {
	return []byte("{}"), nil
}

// marshalJSON encodes v without HTML escaping: the guest reads these files
// as data, and "<" in a key comment should stay readable.
func marshalJSON(v any) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, fmt.Errorf("encoding JSON: %w", err)
	}
	return bytes.TrimSuffix(b.Bytes(), []byte("\n")), nil
}

func trimKey(k string) string { return strings.TrimSpace(k) }
