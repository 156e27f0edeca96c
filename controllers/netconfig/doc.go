// Package netconfig turns a VirtualMachineInstance, or a user's cloud-init
// network-config version 2 document, into the payload document's neutral
// network model.
package netconfig
