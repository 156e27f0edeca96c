package render

import (
	"slices"
	"strconv"
	"strings"

	"github.com/kubevirt-imds/kubevirt-imds/api/payload"
)

// EC2MetaData renders the EC2-compatible meta-data tree nova serves under
// /<version>/meta-data/. Keys are paths relative to meta-data/: a key ending
// in "/" (and "", the tree's root) is a directory whose value lists its
// children one per line, sub-directories with a trailing "/"; every other key
// is a leaf value. public-keys/ lists "<index>=<name>" lines, the form EC2
// clients parse before fetching public-keys/<index>/openssh-key.
func EC2MetaData(d *payload.Document) map[string][]byte {
	leaves := map[string]string{
		"ami-launch-index":            "0",
		"instance-id":                 d.Instance.ID,
		"placement/availability-zone": AvailabilityZone,
	}
	if d.Instance.Hostname != "" {
		leaves["hostname"] = d.Instance.Hostname
		leaves["local-hostname"] = d.Instance.Hostname
	}
	for _, c := range nics(d.Network) {
		if c.primary && len(c.v4) > 0 {
			leaves["local-ipv4"] = c.v4[0].Addr().String()
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
