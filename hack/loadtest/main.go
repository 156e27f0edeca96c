// Command loadtest measures an HTTP endpoint on a loopback or pod-network
// address: N GET requests from C workers, once over keep-alive connections
// and once with a new connection per request, reporting requests/s and
// latency percentiles as JSON on stdout.
//
// With -reference ADDR it also starts a bare net/http handler on ADDR that
// answers every path with a fixed small body, and measures it with the same
// settings in the same run, as a baseline for the target:
//
//	loadtest -url http://169.254.169.254/nocloud/meta-data -reference 127.0.0.1:0 -n 20000 -c 8
//
// Without -url only the reference is measured. Every run is bounded by -n
// and -timeout; addresses outside loopback, link-local and private ranges are
// refused, so the tool cannot be pointed at someone else's service.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/kubevirt-imds/kubevirt-imds/hack/loadtest/measure"
)

const (
	maxRequests = 1_000_000
	maxWorkers  = 256
	maxTimeout  = 10 * time.Minute
	// referenceBody is what the reference handler answers: about the size
	// of a small metadata leaf.
	referenceBody = "i-0123456789abcdef0\n"
)

// headerFlags collects repeated -H "Name: value" flags.
type headerFlags []string

func (h *headerFlags) String() string     { return strings.Join(*h, ", ") }
func (h *headerFlags) Set(v string) error { *h = append(*h, v); return nil }

// Result is one measured (target, mode) pair.
type Result struct {
	Target     string         `json:"target"`
	URL        string         `json:"url"`
	Mode       string         `json:"mode"`
	Requests   int            `json:"requests"`
	Errors     int            `json:"errors"`
	Status     map[string]int `json:"status"`
	Seconds    float64        `json:"seconds"`
	RPS        float64        `json:"rps"`
	P50Millis  float64        `json:"p50_ms"`
	P99Millis  float64        `json:"p99_ms"`
	MaxMillis  float64        `json:"max_ms"`
	TimedOut   bool           `json:"timed_out,omitempty"`
	FirstError string         `json:"first_error,omitempty"`
}

// Report is the tool's output.
type Report struct {
	Requests int      `json:"requests_per_run"`
	Workers  int      `json:"workers"`
	Results  []Result `json:"results"`
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "loadtest:", err)
		os.Exit(1)
	}
}

func run() error {
	var (
		target    = flag.String("url", "", "URL to measure (loopback, link-local or private address)")
		reference = flag.String("reference", "", "start the reference handler on this address (host:port) and measure it too")
		n         = flag.Int("n", 10000, "requests per run")
		c         = flag.Int("c", 4, "concurrent workers")
		timeout   = flag.Duration("timeout", time.Minute, "upper bound for each run")
		reqTO     = flag.Duration("request-timeout", 5*time.Second, "timeout of a single request")
		modes     = flag.String("modes", "keepalive,newconn", "comma-separated modes: keepalive, newconn")
		headers   headerFlags
	)
	flag.Var(&headers, "H", `request header "Name: value" (repeatable), e.g. -H "Metadata: true"`)
	flag.Parse()

	switch {
	case *target == "" && *reference == "":
		return errors.New("give -url, -reference or both")
	case *n <= 0 || *n > maxRequests:
		return fmt.Errorf("-n must be in 1..%d", maxRequests)
	case *c <= 0 || *c > maxWorkers:
		return fmt.Errorf("-c must be in 1..%d", maxWorkers)
	case *timeout <= 0 || *timeout > maxTimeout:
		return fmt.Errorf("-timeout must be in (0, %v]", maxTimeout)
	}
	hdr := http.Header{}
	for _, h := range headers {
		name, value, ok := strings.Cut(h, ":")
		if !ok {
			return fmt.Errorf("header %q: want Name: value", h)
		}
		hdr.Add(strings.TrimSpace(name), strings.TrimSpace(value))
	}
	var runModes []string
	for _, m := range strings.Split(*modes, ",") {
		if m != "keepalive" && m != "newconn" {
			return fmt.Errorf("unknown mode %q", m)
		}
		runModes = append(runModes, m)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	type job struct{ name, url string }
	var jobs []job
	if *target != "" {
		if err := checkURL(*target); err != nil {
			return err
		}
		jobs = append(jobs, job{"target", *target})
	}
	if *reference != "" {
		refURL, shutdown, err := startReference(*reference)
		if err != nil {
			return err
		}
		defer shutdown()
		// Same path as the target, so request lines have the same size.
		if *target != "" {
			if u, err := url.Parse(*target); err == nil {
				refURL += u.RequestURI()
			}
		} else {
			refURL += "/"
		}
		jobs = append(jobs, job{"reference", refURL})
	}

	report := Report{Requests: *n, Workers: *c}
	for _, j := range jobs {
		for _, m := range runModes {
			res := measureURL(ctx, j.url, m, hdr, *n, *c, *timeout, *reqTO)
			res.Target = j.name
			report.Results = append(report.Results, res)
			if ctx.Err() != nil {
				break
			}
		}
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(report)
}

// checkURL refuses anything but http:// to a loopback, link-local or private
// IP literal (or localhost).
func checkURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("parsing -url: %w", err)
	}
	if u.Scheme != "http" {
		return fmt.Errorf("-url %q: only http:// is supported", raw)
	}
	return checkHost(u.Hostname())
}

func checkHost(host string) error {
	if host == "localhost" {
		return nil
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return fmt.Errorf("host %q: want an IP address or localhost", host)
	}
	ip = ip.Unmap()
	if ip.IsLoopback() || ip.IsLinkLocalUnicast() || ip.IsPrivate() || ip.IsUnspecified() {
		return nil
	}
	return fmt.Errorf("host %s is not a loopback, link-local or private address", ip)
}

// startReference serves the fixed body on addr and returns its base URL.
func startReference(addr string) (string, func(), error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return "", nil, fmt.Errorf("-reference %q: %w", addr, err)
	}
	if err := checkHost(host); err != nil {
		return "", nil, fmt.Errorf("-reference: %w", err)
	}
	ln, err := (&net.ListenConfig{}).Listen(context.Background(), "tcp", addr)
	if err != nil {
		return "", nil, fmt.Errorf("-reference: %w", err)
	}
	body := []byte(referenceBody)
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			w.Header().Set("Content-Length", strconv.Itoa(len(body)))
			_, _ = w.Write(body)
		}),
		ReadHeaderTimeout: 5 * time.Second,
		IdleTimeout:       time.Minute,
	}
	go func() { _ = srv.Serve(ln) }()
	shutdown := func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	}
	return "http://" + ln.Addr().String(), shutdown, nil
}

// measureURL runs n requests against u with c workers.
func measureURL(ctx context.Context, u, mode string, hdr http.Header, n, c int, timeout, reqTimeout time.Duration) Result {
	tr := &http.Transport{
		Proxy:               nil,
		DisableKeepAlives:   mode == "newconn",
		MaxIdleConns:        c,
		MaxIdleConnsPerHost: c,
		IdleConnTimeout:     30 * time.Second,
		DialContext:         (&net.Dialer{Timeout: reqTimeout}).DialContext,
	}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: reqTimeout}

	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	var (
		next     atomic.Int64
		mu       sync.Mutex
		status   = map[string]int{}
		errCount int
		firstErr string
		wg       sync.WaitGroup
	)
	lat := make([][]time.Duration, c)
	start := time.Now()
	for w := 0; w < c; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			mine := make([]time.Duration, 0, n/c+1)
			local := map[string]int{}
			var errs int
			var first string
			for next.Add(1) <= int64(n) && ctx.Err() == nil {
				req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
				if err != nil {
					errs++
					first = err.Error()
					continue
				}
				req.Header = hdr.Clone()
				// net/http sends req.Host, not a Host header: -H "Host: …"
				// names the address the server expects (the sidecar answers
				// only requests addressed to 169.254.169.254).
				if h := hdr.Get("Host"); h != "" {
					req.Host = h
				}
				t0 := time.Now()
				resp, err := client.Do(req)
				if err == nil {
					_, err = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
				d := time.Since(t0)
				if err != nil {
					if ctx.Err() != nil {
						break
					}
					errs++
					if first == "" {
						first = err.Error()
					}
					continue
				}
				mine = append(mine, d)
				local[strconv.Itoa(resp.StatusCode)]++
			}
			mu.Lock()
			defer mu.Unlock()
			lat[w] = mine
			for k, v := range local {
				status[k] += v
			}
			errCount += errs
			if firstErr == "" {
				firstErr = first
			}
		}(w)
	}
	wg.Wait()
	elapsed := time.Since(start)

	all := slices.Concat(lat...)
	slices.Sort(all)
	res := Result{
		URL:        u,
		Mode:       mode,
		Requests:   len(all),
		Errors:     errCount,
		Status:     status,
		Seconds:    elapsed.Seconds(),
		TimedOut:   ctx.Err() != nil,
		FirstError: firstErr,
	}
	if elapsed > 0 {
		res.RPS = float64(len(all)) / elapsed.Seconds()
	}
	if len(all) > 0 {
		res.P50Millis = measure.Millis(measure.Percentile(all, 0.50))
		res.P99Millis = measure.Millis(measure.Percentile(all, 0.99))
		res.MaxMillis = measure.Millis(all[len(all)-1])
	}
	return res
}
