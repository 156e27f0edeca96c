package network

// Status is the outcome of one reconciliation.
type Status struct {
	// Err is nil once the plan is applied; a *WaitError while the bridge or
	// the guest's port is missing; any other error when applying failed.
	Err error
	// Plan is the applied plan (valid when Err is nil).
	Plan Plan
	// LinkIndex, GuestPortIndex and BridgeIndex are the ifindexes of
	// LinkName, the guest's port and the bridge after applying.
	LinkIndex, GuestPortIndex, BridgeIndex int
	// Ingress are the ifindexes the listener may accept connections from.
	Ingress []int
}
