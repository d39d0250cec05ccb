package loadgen

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func ms(v ...int) []time.Duration {
	out := make([]time.Duration, len(v))
	for i, x := range v {
		out[i] = time.Duration(x) * time.Millisecond
	}
	return out
}

func TestPercentile(t *testing.T) {
	hundred := make([]time.Duration, 100)
	for i := range hundred {
		hundred[i] = time.Duration(i+1) * time.Millisecond
	}
	tests := []struct {
		name   string
		sorted []time.Duration
		p      float64
		want   time.Duration
	}{
		{"empty", nil, 50, 0},
		{"single p50", ms(7), 50, 7 * time.Millisecond},
		{"single p99", ms(7), 99, 7 * time.Millisecond},
		{"p0 is the minimum", ms(1, 2, 3), 0, 1 * time.Millisecond},
		{"p100 is the maximum", ms(1, 2, 3), 100, 3 * time.Millisecond},
		{"above 100 is the maximum", ms(1, 2, 3), 150, 3 * time.Millisecond},
		{"p50 of two is the lower", ms(1, 2), 50, 1 * time.Millisecond},
		{"p51 of two is the upper", ms(1, 2), 51, 2 * time.Millisecond},
		{"p50 of four", ms(10, 20, 30, 40), 50, 20 * time.Millisecond},
		{"p75 of four", ms(10, 20, 30, 40), 75, 30 * time.Millisecond},
		{"p76 of four", ms(10, 20, 30, 40), 76, 40 * time.Millisecond},
		{"p50 of five is the median", ms(1, 2, 3, 4, 5), 50, 3 * time.Millisecond},
		{"p90 of ten", ms(1, 2, 3, 4, 5, 6, 7, 8, 9, 10), 90, 9 * time.Millisecond},
		{"p99 of ten is the maximum", ms(1, 2, 3, 4, 5, 6, 7, 8, 9, 10), 99, 10 * time.Millisecond},
		{"p1 of 1..100", hundred, 1, 1 * time.Millisecond},
		{"p29 of 1..100 despite float error", hundred, 29, 29 * time.Millisecond},
		{"p50 of 1..100", hundred, 50, 50 * time.Millisecond},
		{"p99 of 1..100", hundred, 99, 99 * time.Millisecond},
		{"p99.5 of 1..100", hundred, 99.5, 100 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := percentile(tt.sorted, tt.p); got != tt.want {
				t.Errorf("percentile(%v, %v) = %v, want %v", tt.sorted, tt.p, got, tt.want)
			}
		})
	}
}

func TestSummarize(t *testing.T) {
	tests := []struct {
		name string
		in   []time.Duration
		want summary
	}{
		{"empty", nil, summary{}},
		{"unsorted input", ms(5, 1, 4, 2, 3), summary{p50: 3 * time.Millisecond, p90: 5 * time.Millisecond, p99: 5 * time.Millisecond, mean: 3 * time.Millisecond, max: 5 * time.Millisecond}},
		{"all equal", ms(2, 2, 2), summary{p50: 2 * time.Millisecond, p90: 2 * time.Millisecond, p99: 2 * time.Millisecond, mean: 2 * time.Millisecond, max: 2 * time.Millisecond}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := summarize(tt.in); got != tt.want {
				t.Errorf("summarize = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestRunConfigErrors(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{"no URL", Config{Duration: time.Second}, "no URL"},
		{"no duration", Config{URL: "http://127.0.0.1:1/"}, "duration"},
		{"negative warmup", Config{URL: "http://127.0.0.1:1/", Duration: time.Second, Warmup: -1}, "warmup"},
		{"bad URL", Config{URL: "http://[::1", Duration: time.Second}, "loadgen"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Run(context.Background(), tt.cfg)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Run error = %v, want one mentioning %q", err, tt.want)
			}
		})
	}
}

func tlsClient(t *testing.T, srv *httptest.Server, concurrency int) *http.Client {
	t.Helper()
	tr, ok := srv.Client().Transport.(*http.Transport)
	if !ok {
		t.Fatalf("httptest client transport is %T", srv.Client().Transport)
	}
	c := NewClient(concurrency, tr.TLSClientConfig.Clone())
	t.Cleanup(c.CloseIdleConnections)
	return c
}

func TestRunTLS(t *testing.T) {
	body := strings.Repeat("x", 300)
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer t" {
			http.Error(w, "no token", http.StatusUnauthorized)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, body)
	}))
	defer srv.Close()

	const conc = 4
	res, err := Run(context.Background(), Config{
		URL:         srv.URL + "/x",
		Header:      http.Header{"Authorization": {"Bearer t"}},
		Concurrency: conc,
		// Long enough that TLS handshakes finish within the warm-up even
		// on a loaded 2-core CI machine under the race detector.
		Duration: 1500 * time.Millisecond,
		Warmup:   500 * time.Millisecond,
		Client:   tlsClient(t, srv, conc),
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Requests <= 0 {
		t.Fatalf("Requests = %d, want > 0", res.Requests)
	}
	if res.Errors != 0 {
		t.Fatalf("Errors = %d (%s), want 0", res.Errors, res.ErrorSample)
	}
	if !(0 < res.P50 && res.P50 <= res.P90 && res.P90 <= res.P99 && res.P99 <= res.Max) {
		t.Fatalf("percentiles not ordered: p50 %v p90 %v p99 %v max %v", res.P50, res.P90, res.P99, res.Max)
	}
	if res.Throughput <= 0 || res.Elapsed != 1500*time.Millisecond {
		t.Fatalf("Throughput %v over %v", res.Throughput, res.Elapsed)
	}
}

func TestRunCountsErrors(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "nope", http.StatusServiceUnavailable)
	}))
	defer srv.Close()
	res, err := Run(context.Background(), Config{
		URL: srv.URL, Concurrency: 2, Duration: time.Second, Warmup: 300 * time.Millisecond,
		Client: tlsClient(t, srv, 2),
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Requests == 0 || res.Errors != res.Requests {
		t.Fatalf("Requests %d Errors %d, want all failed", res.Requests, res.Errors)
	}
	if !strings.Contains(res.ErrorSample, "503") {
		t.Fatalf("ErrorSample = %q, want the status", res.ErrorSample)
	}
}

func TestRunCancelled(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err := Run(ctx, Config{URL: srv.URL, Duration: time.Minute, Client: tlsClient(t, srv, 1)})
	if err == nil {
		t.Fatal("Run returned no error after its context ended")
	}
}
