package webhooks

import (
	"context"
	"testing"

	admissionv1 "k8s.io/api/admission/v1"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"
)

// A panicking mutating webhook admits the object unchanged: an error
// response would be a denial, which failurePolicy Ignore does not forgive.
func TestPanicAdmitsUnchanged(t *testing.T) {
	wh := mutating(admission.HandlerFunc(func(context.Context, admission.Request) admission.Response { panic("boom") }))
	resp := wh.Handle(context.Background(), admission.Request{AdmissionRequest: admissionv1.AdmissionRequest{UID: "1", Operation: admissionv1.Create}})
	if !resp.Allowed || len(resp.Patches) != 0 {
		t.Fatalf("panic answered with %+v", resp)
	}
}
