package snapshotter

import (
	"errors"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the snapshotter's Prometheus metrics. soci's own metrics
// (soci_fs_*) register themselves in the default registry.
type Metrics struct {
	Resolutions   *prometheus.CounterVec
	LookupSeconds *prometheus.HistogramVec
	Prepares      *prometheus.CounterVec
	OriginBytes   *prometheus.CounterVec
}

var (
	_ Observer        = (*Metrics)(nil)
	_ PrepareObserver = (*Metrics)(nil)
)

// NewMetrics creates the metrics and registers them with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Resolutions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "hermes_snapshotter_resolutions_total",
			Help: "SOCI index lookups per image manifest, by outcome (cache_hit, upstream, none, error).",
		}, []string{"outcome"}),
		LookupSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "hermes_snapshotter_lookup_duration_seconds",
			Help:    "Time to ask one index source and copy what it had, by source and result (found, none, error).",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2, 5, 10, 30},
		}, []string{"source", "result"}),
		Prepares: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "hermes_snapshotter_layer_prepares_total",
			Help: "Layer unpack Prepares, by mode: lazy (FUSE mount from a zTOC), soci_unpack (indexed image, layer without a zTOC, unpacked by soci) or local (no index, containerd unpacks).",
		}, []string{"mode"}),
		OriginBytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "hermes_snapshotter_origin_blob_bytes_total",
			Help: "Layer bytes soci read from image registries: kind=range for lazily fetched spans, kind=full for whole layers.",
		}, []string{"kind"}),
	}
	for _, o := range []Outcome{OutcomeCacheHit, OutcomeUpstream, OutcomeNone, OutcomeError} {
		m.Resolutions.WithLabelValues(string(o))
	}
	for _, mode := range []string{PrepareLazy, PrepareSociUnpack, PrepareLocal} {
		m.Prepares.WithLabelValues(mode)
	}
	m.OriginBytes.WithLabelValues("range")
	m.OriginBytes.WithLabelValues("full")
	reg.MustRegister(m.Resolutions, m.LookupSeconds, m.Prepares, m.OriginBytes)
	return m
}

// Resolved implements Observer.
func (m *Metrics) Resolved(res Resolution) { m.Resolutions.WithLabelValues(string(res.Outcome)).Inc() }

// SourceDone implements Observer.
func (m *Metrics) SourceDone(source string, err error, took time.Duration) {
	result := "found"
	switch {
	case errors.Is(err, ErrNoIndex):
		result = "none"
	case err != nil:
		result = "error"
	}
	m.LookupSeconds.WithLabelValues(source, result).Observe(took.Seconds())
}

// Prepared implements PrepareObserver.
func (m *Metrics) Prepared(mode string) { m.Prepares.WithLabelValues(mode).Inc() }

// CountBlobBytes wraps a registry transport so that the bytes of every blob
// response read through it count in OriginBytes.
func (m *Metrics) CountBlobBytes(rt http.RoundTripper) http.RoundTripper {
	return &countingTransport{base: rt, m: m}
}

type countingTransport struct {
	base http.RoundTripper
	m    *Metrics
}

func (t *countingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.base.RoundTrip(req)
	if err != nil || req.Method != http.MethodGet || !strings.Contains(req.URL.Path, "/blobs/") {
		return resp, err
	}
	var kind string
	switch resp.StatusCode {
	case http.StatusPartialContent:
		kind = "range"
	case http.StatusOK:
		kind = "full"
	default:
		return resp, err
	}
	resp.Body = &countingBody{ReadCloser: resp.Body, c: t.m.OriginBytes.WithLabelValues(kind)}
	return resp, nil
}

type countingBody struct {
	io.ReadCloser
	c prometheus.Counter
}

func (b *countingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.c.Add(float64(n))
	return n, err
}

// MetadataStore is what WatchMetadata reports on: how many file-tree
// entries of mounted layers are held in memory, and the most that may be.
type MetadataStore interface {
	Entries() int64
	Budget() int64
}

// WatchMetadata registers gauges of the in-memory file trees with reg.
func WatchMetadata(reg prometheus.Registerer, s MetadataStore) {
	reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "hermes_snapshotter_metadata_memory_entries",
			Help: "File-tree entries of lazily mounted layers held in memory.",
		}, func() float64 { return float64(s.Entries()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "hermes_snapshotter_metadata_memory_budget_entries",
			Help: "The most file-tree entries held in memory ([hermes] memory_metadata_entries); further layers' trees are kept on disk.",
		}, func() float64 { return float64(s.Budget()) }),
	)
}
