package controllers

import "fmt"

const (
	// PodSecurityEnforceLabel is the namespace label holding the Pod Security
	// level PodSecurity admission enforces there.
	PodSecurityEnforceLabel = "pod-security.kubernetes.io/enforce"
	// PodSecurityPrivileged is the level that enforces nothing.
	PodSecurityPrivileged = "privileged"
)

// EnforcedPodSecurityLevel is the level PodSecurity admission enforces in a
// namespace labelled nsLabels: its label, else defaultLevel (the API server's
// AdmissionConfiguration default; empty is privileged, as without one).
func EnforcedPodSecurityLevel(nsLabels map[string]string, defaultLevel string) string {
	if level, ok := nsLabels[PodSecurityEnforceLabel]; ok {
		return level
	}
	if defaultLevel != "" {
		return defaultLevel
	}
	return PodSecurityPrivileged
}

// PrivilegedSidecarForbidden explains why the privileged sidecar of
// --sidecar-network-setup=sidecar cannot go into a Pod of namespace, whose
// labels are nsLabels, or returns "": PodSecurity admission, which runs
// after the webhooks, would reject the whole Pod for the sidecar's
// capabilities, and with it the VM. An unknown level forbids it too:
// PodSecurity treats it as restricted.
func PrivilegedSidecarForbidden(namespace string, nsLabels map[string]string, defaultLevel string) string {
	level := EnforcedPodSecurityLevel(nsLabels, defaultLevel)
	if level == PodSecurityPrivileged {
		return ""
	}
	return fmt.Sprintf("namespace %s enforces Pod Security level %q, which rejects the privileged sidecar of --sidecar-network-setup=sidecar", namespace, level)
}
