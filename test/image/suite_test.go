// Package image_test checks the operator image without a container engine:
// the Dockerfile's stages, and the binary its build stage produces, built
// with the same command from the same build context.
package image_test

import (
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
)

func TestImage(t *testing.T) {
	RegisterFailHandler(Fail)
	// Generous: the build and the control plane share two cores in CI.
	SetDefaultEventuallyTimeout(60 * time.Second)
	SetDefaultEventuallyPollingInterval(200 * time.Millisecond)
	RunSpecs(t, "Image Suite")
}
