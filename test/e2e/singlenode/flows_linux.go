package singlenode

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/kubevirt-imds/kubevirt-imds/test/e2e/guestspecs"
)

// SidecarMetric reads one unlabelled sample from the sidecar's /metrics.
func (l *Launcher) SidecarMetric(ctx context.Context, name string) (float64, error) {
	code, body, err := l.Net.AdminGet(ctx, "http://127.0.0.2:8081/metrics")
	if err != nil {
		return 0, err
	}
	if code != http.StatusOK {
		return 0, fmt.Errorf("/metrics: %d", code)
	}
	sc := bufio.NewScanner(strings.NewReader(body))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			return strconv.ParseFloat(strings.TrimSpace(v), 64)
		}
	}
	return 0, fmt.Errorf("/metrics has no sample %s", name)
}

// LongPollResult is what a guest's long poll returned.
type LongPollResult struct {
	Code int
	Body string
	// AfterEdit is the time from the end of the edit to the answer.
	AfterEdit time.Duration
}

// LongPollDuring starts a long poll of the /v1 URL url from inside g, waits
// until the sidecar holds it, runs edit, and returns the poll's answer.
func (l *Launcher) LongPollDuring(ctx context.Context, g guestspecs.Guest, url string, edit func(context.Context) error) (LongPollResult, error) {
	type answer struct {
		code int
		body string
		err  error
		at   time.Time
	}
	pctx, cancel := context.WithCancel(ctx)
	defer cancel()
	answered := make(chan answer, 1)
	go func() {
		code, body, err := g.Get(pctx, url, "Metadata: true")
		answered <- answer{code, body, err, time.Now()}
	}()
	// The sidecar's gauge says when the poll is parked: an edit before that
	// would be the poll's starting point, not a change.
	err := wait.PollUntilContextTimeout(ctx, 20*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		select {
		case a := <-answered:
			return false, fmt.Errorf("the long poll answered before any edit: %d %s %v", a.code, a.body, a.err) //nolint:errorlint // usually nil: shown, not wrapped
		default:
		}
		n, err := l.SidecarMetric(ctx, "kubevirt_imds_sidecar_long_polls")
		return err == nil && n >= 1, nil
	})
	if err != nil {
		return LongPollResult{}, fmt.Errorf("waiting for the guest's long poll to reach the sidecar: %w", err)
	}
	if err := edit(ctx); err != nil {
		return LongPollResult{}, err
	}
	edited := time.Now()
	select {
	case a := <-answered:
		if a.err != nil {
			return LongPollResult{}, a.err
		}
		return LongPollResult{Code: a.code, Body: a.body, AfterEdit: a.at.Sub(edited)}, nil
	case <-ctx.Done():
		return LongPollResult{}, ctx.Err()
	}
}

// ReviewToken asks the API server who token belongs to, for audience.
func (n *Node) ReviewToken(ctx context.Context, token, audience string) (authenticationv1.TokenReviewStatus, error) {
	tr, err := n.Clientset.AuthenticationV1().TokenReviews().Create(ctx, &authenticationv1.TokenReview{
		Spec: authenticationv1.TokenReviewSpec{Token: token, Audiences: []string{audience}},
	}, metav1.CreateOptions{})
	if err != nil {
		return authenticationv1.TokenReviewStatus{}, err
	}
	return tr.Status, nil
}
