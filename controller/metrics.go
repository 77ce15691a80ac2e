package controller

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the controller's Prometheus collectors.
type metrics struct {
	builds        *prometheus.CounterVec   // outcome
	buildDuration *prometheus.HistogramVec // outcome
	bytesRead     prometheus.Counter
	resolves      *prometheus.CounterVec // outcome
	statusWrites  *prometheus.CounterVec // result

	gcDeleted      *prometheus.CounterVec // reason
	gcRuns         *prometheus.CounterVec // result
	gcDuration     prometheus.Histogram
	gcRecords      prometheus.Gauge
	gcRecordWrites prometheus.Counter
}

// Build outcomes, the "outcome" label of hermes_controller_builds_total.
const (
	outcomeBuilt   = "built"   // an index was pushed
	outcomeExisted = "existed" // the cache already had it
	outcomeSkipped = "skipped" // every layer below the minimum size
	outcomeRetry   = "retry"   // failed, will be retried
	outcomeFailed  = "failed"  // failed for good (until something changes)
)

func newMetrics(reg prometheus.Registerer, t *tracker, queueDepth func() (resolve, build int)) (*metrics, error) {
	m := &metrics{
		builds: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "hermes_controller", Name: "builds_total",
			Help: "Builds by outcome: built (index pushed), existed (already in the cache), skipped (nothing to index), retry, failed.",
		}, []string{"outcome"}),
		buildDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "hermes_controller", Name: "build_duration_seconds",
			Help:    "Time from a build's start to its end, by outcome.",
			Buckets: prometheus.ExponentialBuckets(0.01, 2.5, 14), // 10 ms .. ~40 min
		}, []string{"outcome"}),
		bytesRead: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "hermes_controller", Name: "build_read_bytes_total",
			Help: "Compressed layer bytes read from image registries by builds.",
		}),
		resolves: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "hermes_controller", Name: "resolves_total",
			Help: "Image references resolved at their registries, by outcome (ok, retry, failed).",
		}, []string{"outcome"}),
		statusWrites: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "hermes_controller", Name: "status_writes_total",
			Help: "HermesPolicy status updates, by result (ok, conflict, error).",
		}, []string{"result"}),
		gcDeleted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "hermes_controller", Name: "gc_artifacts_deleted_total",
			Help: "SOCI indexes deleted from the cache registry, by reason: unused (past the retention of the policies matching it), unmatched (no policy matches it any more, past its last retention), superseded (a newer index of the same manifest and platform).",
		}, []string{"reason"}),
		gcRuns: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "hermes_controller", Name: "gc_runs_total",
			Help: "Artifact garbage collection passes, by result (ok, error).",
		}, []string{"result"}),
		gcDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: "hermes_controller", Name: "gc_duration_seconds",
			Help:    "Time one artifact garbage collection pass took.",
			Buckets: prometheus.ExponentialBuckets(0.01, 3, 10), // 10 ms .. ~3 min
		}),
		gcRecords: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "hermes_controller", Name: "gc_usage_records",
			Help: "Image manifests with a usage record in the cache (hermes/usage) at the last pass.",
		}),
		gcRecordWrites: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "hermes_controller", Name: "gc_usage_record_writes_total",
			Help: "Usage records written to the cache (an image starts or stops being used, or its retention changes).",
		}),
	}
	queue := func(which string, pick func(r, b int) int) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: "hermes_controller", Name: "queue_depth", ConstLabels: prometheus.Labels{"queue": which},
			Help: "Keys waiting in the controller's queues (resolve: image references; build: manifests).",
		}, func() float64 { r, b := queueDepth(); return float64(pick(r, b)) })
	}
	artifacts := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: "hermes_controller", Name: "artifacts",
		Help: "Indexes in the cache registry for manifests that Pods use now (builds Ready).",
	}, func() float64 { return float64(t.readyBuilds()) })
	images := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: "hermes_controller", Name: "images",
		Help: "Images (reference, platform, settings) that policies want for Pods now.",
	}, func() float64 { return float64(t.imageCount()) })
	for _, c := range []prometheus.Collector{m.builds, m.buildDuration, m.bytesRead, m.resolves, m.statusWrites,
		m.gcDeleted, m.gcRuns, m.gcDuration, m.gcRecords, m.gcRecordWrites,
		queue("resolve", func(r, _ int) int { return r }), queue("build", func(_, b int) int { return b }), artifacts, images} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

func (m *metrics) build(outcome string, took time.Duration, read int64) {
	m.builds.WithLabelValues(outcome).Inc()
	m.buildDuration.WithLabelValues(outcome).Observe(took.Seconds())
	if read > 0 {
		m.bytesRead.Add(float64(read))
	}
}
