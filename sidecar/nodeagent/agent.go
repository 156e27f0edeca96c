package nodeagent

import (
	"slices"
	"sync"
	"time"

	"github.com/go-logr/logr"
)

// DefaultScanInterval is how often /proc is scanned for new sidecars. A
// sidecar starts before KubeVirt builds the VM's bridge (after the Pod runs),
// and the plumbing then follows the bridge by netlink events, so a scan
// every second costs a VM nothing at boot.
const DefaultScanInterval = time.Second

// Agent plumbs the network namespace of every node-mode sidecar it finds.
type Agent struct {
	// Proc is the host's /proc (the agent runs with hostPID).
	Proc string
	// Executable, if set, admits only processes whose /proc/<pid>/exe is this
	// path (as the process's own mount namespace names it).
	Executable string
	// ScanInterval defaults to DefaultScanInterval.
	ScanInterval time.Duration
	Log          logr.Logger

	workers map[nsID]*worker
	// rejected remembers command lines already logged as unusable.
	rejected map[nsID]string

	// mu guards scraped, the sidecars the metrics endpoint scrapes, which
	// each scan replaces.
	mu          sync.Mutex
	scraped     []target
	metricsOnce sync.Once
	metrics     *agentMetrics
}

// targets is the sidecars to scrape now.
func (a *Agent) targets() []target {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.scraped)
}
