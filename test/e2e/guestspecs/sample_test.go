package guestspecs

import (
	"slices"
	"strings"
	"testing"
)

// TestSampleMatchesConfig keeps the expectations in step with the sample
// they describe: an edit of config/samples must fail here, not on a cluster.
func TestSampleMatchesConfig(t *testing.T) {
	const path = "config/samples"
	mds, err := ReadSampleService()
	if err != nil {
		t.Fatal(err)
	}
	if keys := mds.Spec.SSHAuthorizedKeys; keys == nil || !slices.Contains(keys.Inline, SSHKey) {
		t.Errorf("%s: spec.sshAuthorizedKeys.inline does not hold %q", path, SSHKey)
	}
	var ud string
	if mds.Spec.UserData != nil && mds.Spec.UserData.Inline != nil {
		ud = *mds.Spec.UserData.Inline
	}
	for _, want := range []string{"path: " + MotdFile, `content: "` + strings.TrimSuffix(MotdContent, "\n") + `\n"`, TokenFile, "audience=" + TokenAudience} {
		if !strings.Contains(ud, want) {
			t.Errorf("%s: spec.userData.inline does not hold %q", path, want)
		}
	}
	if ids := mds.Spec.Identity; ids == nil || len(ids.ServiceAccountTokens) == 0 || ids.ServiceAccountTokens[0].Audience != TokenAudience {
		t.Errorf("%s: spec.identity.serviceAccountTokens[0].audience is not %q", path, TokenAudience)
	}
}
