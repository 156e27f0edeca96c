// Package guestspecs holds what the end-to-end suites check from inside a
// guest, whatever the guest is and wherever it runs: the Guest interface the
// hermetic suite (namespace guests, qemu VMs) and the cluster suite (VMs reached
// through their serial console) implement, and the expectations every guest
// of the sample MetadataService must meet, so both suites assert the same
// things.
package guestspecs
