package guestspecs

import "testing"

func TestParseStatus(t *testing.T) {
	for _, tc := range []struct{ name, out, status, ds string }{
		{"25.1", "status: done\nextended_status: done\nboot_status_code: enabled-by-generator\ndetail: DataSourceNoCloudNet [seed=http://169.254.169.254/nocloud/][dsmode=net]\nerrors: []\n",
			"status: done", "DataSourceNoCloudNet [seed=http://169.254.169.254/nocloud/][dsmode=net]"},
		{"22.4", "status: done\ntime: Fri, 27 Nov 2026 17:00:00 +0000\ndetail:\nDataSourceOpenStackLocal [net,ver=2]\n",
			"status: done", "DataSourceOpenStackLocal [net,ver=2]"},
		{"running", "status: running\n", "status: running", ""},
	} {
		status, ds := parseStatus(tc.out)
		if status != tc.status || ds != tc.ds {
			t.Errorf("%s: got %q, %q; want %q, %q", tc.name, status, ds, tc.status, tc.ds)
		}
	}
}

func TestIPv4Addresses(t *testing.T) {
	out := `1: lo: <LOOPBACK,UP,LOWER_UP> mtu 65536 qdisc noqueue state UNKNOWN group default qlen 1000
    inet 127.0.0.1/8 scope host lo
       valid_lft forever preferred_lft forever
2: enp0s1: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc fq_codel state UP group default qlen 1000
    inet 10.0.2.2/24 metric 100 brd 10.0.2.255 scope global dynamic enp0s1
       valid_lft 3597sec preferred_lft 3597sec
3: eth1@if9: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc noqueue state UP group default qlen 1000
    inet 169.254.7.9/16 scope link eth1
`
	got := IPv4Addresses(out)
	want := []string{"10.0.2.2/24 on enp0s1 (DHCP)", "169.254.7.9/16 on eth1"}
	if len(got) != len(want) || got[0] != want[0] || got[1] != want[1] {
		t.Errorf("got %q, want %q", got, want)
	}
}
