package gc

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	runs        *prometheus.CounterVec // result
	blobs       prometheus.Counter
	bytes       prometheus.Counter
	manifests   prometheus.Counter
	uploads     prometheus.Counter
	duration    prometheus.Histogram
	lastSuccess prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	ns := "hermes_registry"
	m := &metrics{
		runs: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "gc_runs_total",
			Help: "Garbage collection runs by result (success, error)."}, []string{"result"}),
		blobs: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "gc_blobs_deleted_total",
			Help: "Blobs deleted by garbage collection."}),
		bytes: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "gc_bytes_deleted_total",
			Help: "Bytes of blob data deleted by garbage collection."}),
		manifests: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "gc_manifests_deleted_total",
			Help: "Untagged, unreferenced manifests deleted by garbage collection."}),
		uploads: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "gc_uploads_deleted_total",
			Help: "Abandoned uploads deleted by garbage collection."}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Name: "gc_duration_seconds",
			Help: "Duration of garbage collection runs.", Buckets: []float64{.1, .5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900}}),
		lastSuccess: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Name: "gc_last_success_timestamp_seconds",
			Help: "When the last successful garbage collection run ended (Unix time)."}),
	}
	m.runs.WithLabelValues("success")
	m.runs.WithLabelValues("error")
	if reg != nil {
		for _, c := range []prometheus.Collector{m.runs, m.blobs, m.bytes, m.manifests, m.uploads, m.duration, m.lastSuccess} {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return m, nil
}

func (m *metrics) done(rep Report, err error, now time.Time) {
	m.duration.Observe(rep.Duration.Seconds())
	if err != nil {
		m.runs.WithLabelValues("error").Inc()
		return
	}
	m.runs.WithLabelValues("success").Inc()
	m.lastSuccess.Set(float64(now.UnixNano()) / 1e9)
}
