package controlplane

import (
	"os"
	"testing"

	"github.com/onsi/ginkgo/v2"
)

// InCI reports whether the tests run in CI (CI=true), which runs as root with
// everything `make test` installs: there a suite that cannot run is a broken
// CI, and must fail rather than skip, since a skipped suite reports "ok".
func InCI() bool { return os.Getenv("CI") == "true" }

// Unavailable skips the current Ginkgo spec or suite because reason keeps
// it from running here — or fails it in CI.
func Unavailable(reason string) {
	ginkgo.GinkgoHelper()
	if InCI() {
		ginkgo.Fail("CI must run this suite, but: " + reason)
	}
	ginkgo.Skip(reason)
}

// UnavailableT is Unavailable for a plain test.
func UnavailableT(t testing.TB, reason string) {
	t.Helper()
	if InCI() {
		t.Fatal("CI must run this test, but: " + reason)
	}
	t.Skip(reason)
}
