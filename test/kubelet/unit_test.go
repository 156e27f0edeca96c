package kubelet

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
)

func TestRefreshAt(t *testing.T) {
	exp := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name    string
		seconds int64
		jitter  time.Duration
		want    time.Duration // before expiry
	}{
		// 80% of the lifetime: 600 s → refresh 120 s before expiry.
		{"short-lived", 600, 0, 120 * time.Second},
		{"one hour", 3600, 0, 12 * time.Minute},
		{"jitter brings it forward", 3600, 7 * time.Second, 12*time.Minute + 7*time.Second},
		// 48 h: 80% would be 38.4 h after issue; 24 h after issue comes first.
		{"capped at 24 h", 48 * 3600, 0, 24 * time.Hour},
		// A year-long (extended) token is still replaced after a day.
		{"year", 365 * 24 * 3600, 0, 364 * 24 * time.Hour},
		// Kubelet's 20% is in whole seconds: 20% of 601 s is 120 s.
		{"whole seconds", 601, 0, 120 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := exp.Sub(RefreshAt(exp, tc.seconds, tc.jitter)); got != tc.want {
				t.Errorf("RefreshAt(%ds, jitter %s) = expiry - %s, want expiry - %s", tc.seconds, tc.jitter, got, tc.want)
			}
		})
	}
}

func TestRewrite(t *testing.T) {
	r := &rewriter{
		rootfs:    "/r",
		mounts:    map[string]bool{"/var/run/imds/payload": true, "/var/run/imds/tokens/t1": true, "/etc/x": true},
		ancestors: map[string]bool{"/var/run/imds": true, "/var/run/imds/tokens": true, "/var/run": true, "/var": true, "/etc": true},
	}
	for in, want := range map[string]string{
		"--payload-dir=/var/run/imds/payload": "--payload-dir=/r/var/run/imds/payload",
		"/var/run/imds/payload/payload.json":  "/r/var/run/imds/payload/payload.json",
		"--token-dir=/var/run/imds/tokens":    "--token-dir=/r/var/run/imds/tokens",
		"/var/run/imds/tokens/t1/token":       "/r/var/run/imds/tokens/t1/token",
		"/var/run/other":                      "/var/run/other",         // below an ancestor, not a mount
		"/var/run/imds/payloadx":              "/var/run/imds/payloadx", // not a path boundary
		"x/var/run/imds/payload":              "x/var/run/imds/payload", // not at a value boundary
		"A=/etc/x:/etc/y":                     "A=/r/etc/x:/etc/y",      // list of paths
		"/etc/x,/var/run/imds/tokens":         "/r/etc/x,/r/var/run/imds/tokens",
		"serve":                               "serve",
		"--admin-address=127.0.0.2:8081":      "--admin-address=127.0.0.2:8081",
	} {
		if got := r.rewrite(in); got != want {
			t.Errorf("rewrite(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestExpand(t *testing.T) {
	vars := map[string]string{"A": "a", "POD": "p1"}
	for in, want := range map[string]string{
		"$(A)-$(POD)": "a-p1",
		"$(B)":        "$(B)",
		"$$(A)":       "$(A)",
		"cost $5":     "cost $5",
		"$(A":         "$(A",
		"end$":        "end$",
	} {
		if got := expand(in, vars); got != want {
			t.Errorf("expand(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestSetprivArgs(t *testing.T) {
	pod := &corev1.Pod{}
	c := &corev1.Container{SecurityContext: &corev1.SecurityContext{
		RunAsUser:                new(int64(0)),
		AllowPrivilegeEscalation: new(false),
		Capabilities: &corev1.Capabilities{
			Drop: []corev1.Capability{"ALL"},
			Add:  []corev1.Capability{"NET_ADMIN", "NET_RAW", "CAP_NET_BIND_SERVICE"},
		},
	}}
	got := strings.Join(effectiveSecurity(pod, c).setprivArgs(), " ")
	want := "--reuid=0 --regid=0 --clear-groups --inh-caps=-all,+net_admin,+net_bind_service,+net_raw --bounding-set=-all,+net_admin,+net_bind_service,+net_raw --no-new-privs"
	if got != want {
		t.Errorf("setpriv args:\n got %s\nwant %s", got, want)
	}
	// No securityContext: the runtime's defaults, as the current user.
	got = strings.Join(effectiveSecurity(pod, &corev1.Container{}).setprivArgs(), " ")
	if !strings.Contains(got, "+chown") || strings.Contains(got, "net_admin") || strings.Contains(got, "--reuid") {
		t.Errorf("default setpriv args: %s", got)
	}
}

func TestResourceValue(t *testing.T) {
	pod := &corev1.Pod{Spec: corev1.PodSpec{Containers: []corev1.Container{{
		Name: "c",
		Resources: corev1.ResourceRequirements{Limits: corev1.ResourceList{
			corev1.ResourceCPU:    resource.MustParse("250m"),
			corev1.ResourceMemory: resource.MustParse("64Mi"),
		}},
	}}}}
	for res, want := range map[string]string{"limits.cpu": "1", "limits.memory": "67108864"} {
		got, err := resourceValue(pod, "c", &corev1.ResourceFieldSelector{Resource: res, Divisor: resource.MustParse("1")})
		if err != nil || got != want {
			t.Errorf("%s = %q, %v; want %q", res, got, err, want)
		}
	}
	if got, err := resourceValue(pod, "c", &corev1.ResourceFieldSelector{Resource: "limits.memory", Divisor: resource.MustParse("1Mi")}); err != nil || got != "64" {
		t.Errorf("limits.memory in Mi = %q, %v", got, err)
	}
	if _, err := resourceValue(pod, "c", &corev1.ResourceFieldSelector{Resource: "requests.cpu"}); err == nil {
		t.Error("an unset request resolved")
	}
}

func TestWriteAtomic(t *testing.T) {
	dir := t.TempDir()
	if err := writeAtomic(dir, map[string]file{"a": {[]byte("1"), 0o600}, "sub/b": {[]byte("2"), 0o444}}); err != nil {
		t.Fatal(err)
	}
	first, _ := os.Readlink(filepath.Join(dir, "..data"))
	if l, _ := os.Readlink(filepath.Join(dir, "sub")); l != "..data/sub" {
		t.Errorf("sub links to %q", l)
	}
	if st, err := os.Stat(filepath.Join(dir, "sub", "b")); err != nil || st.Mode().Perm() != 0o444 {
		t.Errorf("sub/b: %v %v", st, err)
	}
	if err := writeAtomic(dir, map[string]file{"c": {[]byte("3"), 0o644}}); err != nil {
		t.Fatal(err)
	}
	entries, _ := os.ReadDir(dir)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	second, _ := os.Readlink(filepath.Join(dir, "..data"))
	if strings.Join(names, " ") != second+" ..data c" && strings.Join(names, " ") != "..data "+second+" c" {
		t.Errorf("after the update the directory holds %q (version %s)", names, second)
	}
	if first == second {
		t.Error("..data did not move")
	}
	if err := writeAtomic(dir, map[string]file{"../escape": {nil, 0o644}}); err == nil {
		t.Error("a path leaving the volume was written")
	}
}
