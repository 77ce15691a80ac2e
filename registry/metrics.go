package registry

import (
	"context"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// metrics are the registry's Prometheus collectors.
type metrics struct {
	requests  *prometheus.CounterVec   // route, method, code
	duration  *prometheus.HistogramVec // route
	bytes     *prometheus.CounterVec   // route
	referrers *prometheus.CounterVec   // cache, result

	// series remembers the children of the vectors per label set: looking
	// them up hashes every label on each request.
	series sync.Map // seriesKey -> *requestSeries
}

type seriesKey struct {
	route  routeKind
	method string
	code   int
}

type requestSeries struct {
	requests prometheus.Counter
	duration prometheus.Observer
	bytes    prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "hermes_registry", Name: "http_requests_total",
			Help: "HTTP requests by API route, method and status code.",
		}, []string{"route", "method", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "hermes_registry", Name: "http_request_duration_seconds",
			Help:    "HTTP request latency by API route.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}, []string{"route"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "hermes_registry", Name: "http_response_bytes_total",
			Help: "Response body bytes served by API route.",
		}, []string{"route"}),
		referrers: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "hermes_registry", Name: "referrers_lookups_total",
			Help: "Referrers API lookups by cache outcome (hit, miss) and result (found, empty, error).",
		}, []string{"cache", "result"}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.requests, m.duration, m.bytes, m.referrers} {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return m, nil
}

func (m *metrics) observe(rt routeKind, method string, code int, bytes int64, d time.Duration) {
	key := seriesKey{rt, method, code}
	v, ok := m.series.Load(key)
	if !ok {
		switch method { // bound the label values clients can create
		case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete, http.MethodOptions:
		default:
			key.method = "other"
		}
		v, _ = m.series.LoadOrStore(key, &requestSeries{
			requests: m.requests.WithLabelValues(string(rt), key.method, strconv.Itoa(code)),
			duration: m.duration.WithLabelValues(string(rt)),
			bytes:    m.bytes.WithLabelValues(string(rt)),
		})
	}
	s := v.(*requestSeries)
	s.requests.Inc()
	s.duration.Observe(d.Seconds())
	if bytes > 0 {
		s.bytes.Add(float64(bytes))
	}
}

func (m *metrics) referrerLookup(hit bool, count int, err error) {
	cache, result := "miss", "found"
	if hit {
		cache = "hit"
	}
	switch {
	case err != nil:
		result = "error"
	case count == 0:
		result = "empty"
	}
	m.referrers.WithLabelValues(cache, result).Inc()
}

// OpsHandler serves what operators and the kubelet poll, on its own port:
// /metrics from gatherer, /healthz (the process serves) and /readyz (ready
// returns nil, typically Registry.Ready).
func OpsHandler(gatherer prometheus.Gatherer, ready func(context.Context) error) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(gatherer, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
		defer cancel()
		if err := ready(ctx); err != nil {
			http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok\n"))
	})
	return mux
}
