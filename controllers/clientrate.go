package controllers

// The manager's client rate limit (--kube-api-qps, --kube-api-burst). Launcher
// Pod admission waits for the payload Secret, so the controller must write
// payloads as fast as KubeVirt starts VMs in a boot storm; virt-controller's
// own client defaults to the same 200/400.
const (
	DefaultKubeAPIQPS   = 200
	DefaultKubeAPIBurst = 400
)
