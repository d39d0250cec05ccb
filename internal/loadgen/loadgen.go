// Package loadgen is a small closed-loop HTTP load generator for berth's
// benchmarks. A fixed number of workers each send one request, read the
// whole answer, and send the next, over keep-alive connections, for a fixed
// time. Every latency is recorded, so the percentiles it reports are exact
// rather than estimated from buckets.
package loadgen

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"slices"
	"sync"
	"time"
)

// Config describes one load run.
type Config struct {
	// URL is requested with GET by every worker.
	URL string
	// Header is sent with every request; it is copied, not modified.
	Header http.Header
	// Concurrency is the number of workers, each with at most one request
	// in flight; values below one mean one.
	Concurrency int
	// Duration is how long requests are measured; it must be positive.
	Duration time.Duration
	// Warmup is how long requests are sent, but not measured, before
	// Duration starts, so that connections and caches are warm.
	Warmup time.Duration
	// Client sends the requests. When nil, NewClient(Concurrency, nil) is
	// used. A client given here is used as is, so its transport should keep
	// at least Concurrency idle connections per host.
	Client *http.Client
}

// Result summarises the requests that completed in the measured window.
type Result struct {
	// Requests counts the requests that completed in the measured window,
	// failed ones included.
	Requests int
	// Errors counts transport errors, body read errors and answers whose
	// status is not 2xx.
	Errors int
	// Elapsed is the length of the measured window.
	Elapsed time.Duration
	// Throughput is Requests divided by Elapsed, in requests per second.
	Throughput float64
	// P50, P90 and P99 are exact nearest-rank percentiles of the latencies
	// of all requests that got an answer; Mean and Max are their mean and
	// maximum.
	P50, P90, P99, Mean, Max time.Duration
	// ErrorSample describes the first error seen, to say what went wrong.
	ErrorSample string
}

// NewClient returns a client whose transport keeps concurrency idle
// connections per host alive, uses tlsConfig (which may be nil) and speaks
// HTTP/1.1, so that each worker holds one connection of its own.
func NewClient(concurrency int, tlsConfig *tls.Config) *http.Client {
	if concurrency < 1 {
		concurrency = 1
	}
	tr := &http.Transport{
		Proxy:               nil,
		TLSClientConfig:     tlsConfig,
		MaxIdleConns:        concurrency,
		MaxIdleConnsPerHost: concurrency,
		IdleConnTimeout:     90 * time.Second,
		TLSHandshakeTimeout: 10 * time.Second,
		DisableCompression:  true,
	}
	return &http.Client{Transport: tr}
}

// worker holds what one worker measured.
type worker struct {
	latencies []time.Duration
	requests  int
	errors    int
	sample    string
}

// Run sends load as cfg says and returns what it measured. It returns an
// error for an invalid configuration or when ctx ends before the run does;
// failed requests are counted in the result, not returned.
func Run(ctx context.Context, cfg Config) (Result, error) {
	if cfg.URL == "" {
		return Result{}, errors.New("loadgen: no URL")
	}
	if cfg.Duration <= 0 {
		return Result{}, errors.New("loadgen: the duration must be positive")
	}
	if cfg.Warmup < 0 {
		return Result{}, errors.New("loadgen: the warmup must not be negative")
	}
	if cfg.Concurrency < 1 {
		cfg.Concurrency = 1
	}
	if cfg.Client == nil {
		cfg.Client = NewClient(cfg.Concurrency, nil)
		defer cfg.Client.CloseIdleConnections()
	}
	// Check the URL once so that a bad one is an error, not a run of
	// failed requests.
	if _, err := http.NewRequestWithContext(ctx, http.MethodGet, cfg.URL, nil); err != nil {
		return Result{}, fmt.Errorf("loadgen: %w", err)
	}

	start := time.Now()
	measure := start.Add(cfg.Warmup)
	end := measure.Add(cfg.Duration)
	workers := make([]worker, cfg.Concurrency)
	var wg sync.WaitGroup
	for i := range workers {
		wg.Go(func() { workers[i].run(ctx, cfg, measure, end) })
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return Result{}, err
	}

	res := Result{Elapsed: end.Sub(measure)}
	var all []time.Duration
	for _, w := range workers {
		res.Requests += w.requests
		res.Errors += w.errors
		if res.ErrorSample == "" {
			res.ErrorSample = w.sample
		}
		all = append(all, w.latencies...)
	}
	res.Throughput = float64(res.Requests) / res.Elapsed.Seconds()
	s := summarize(all)
	res.P50, res.P90, res.P99, res.Mean, res.Max = s.p50, s.p90, s.p99, s.mean, s.max
	return res, nil
}

// run is one worker's closed loop. Requests that complete before measure
// (warmup) or after end are not counted; no new request starts after end,
// and the one in flight then is allowed to finish so that it does not turn
// into a spurious error.
func (w *worker) run(ctx context.Context, cfg Config, measure, end time.Time) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, cfg.URL, nil)
	if err != nil {
		return // checked by Run
	}
	req.Header = cfg.Header.Clone()
	if req.Header == nil {
		req.Header = http.Header{}
	}
	for ctx.Err() == nil {
		t0 := time.Now()
		if !t0.Before(end) {
			return
		}
		status, err := do(cfg.Client, req)
		t1 := time.Now()
		if t1.Before(measure) || !t1.Before(end) {
			continue
		}
		w.requests++
		if err == nil {
			w.latencies = append(w.latencies, t1.Sub(t0))
			if status < 200 || status > 299 {
				err = fmt.Errorf("HTTP status %d", status)
			}
		}
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			w.errors++
			if w.sample == "" {
				w.sample = err.Error()
			}
		}
	}
}

// do sends req and reads and discards the whole body, so that the
// connection can be reused. The request may be reused once do returns,
// because the response body is closed by then.
func do(c *http.Client, req *http.Request) (int, error) {
	resp, err := c.Do(req)
	if err != nil {
		return 0, err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	if cerr := resp.Body.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return resp.StatusCode, fmt.Errorf("read body: %w", err)
	}
	return resp.StatusCode, nil
}

// summary holds the statistics of a set of latencies.
type summary struct {
	p50, p90, p99, mean, max time.Duration
}

// summarize sorts latencies in place and computes their statistics; all
// are zero for an empty set.
func summarize(latencies []time.Duration) summary {
	if len(latencies) == 0 {
		return summary{}
	}
	slices.Sort(latencies)
	var sum float64
	for _, d := range latencies {
		sum += float64(d)
	}
	return summary{
		p50:  percentile(latencies, 50),
		p90:  percentile(latencies, 90),
		p99:  percentile(latencies, 99),
		mean: time.Duration(sum / float64(len(latencies))),
		max:  latencies[len(latencies)-1],
	}
}

// percentile returns the p-th percentile (0 < p ≤ 100) of sorted by the
// nearest-rank method: the smallest value such that at least p percent of
// the values are less than or equal to it. It returns zero for an empty
// slice; p at or below zero gives the minimum.
func percentile(sorted []time.Duration, p float64) time.Duration {
	n := len(sorted)
	if n == 0 {
		return 0
	}
	// Shrink p*n/100 by a relative 1e-12 before rounding up so that float
	// error (29*100/100 computed as 29.000000000000004) does not move the
	// rank past an exact one.
	rank := int(math.Ceil(p * float64(n) / 100 * (1 - 1e-12)))
	rank = max(1, min(rank, n))
	return sorted[rank-1]
}
