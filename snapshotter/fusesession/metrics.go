package fusesession

import "github.com/prometheus/client_golang/prometheus"

// Metrics count what surviving restarts took.
type Metrics struct {
	RestartsSurvived prometheus.Counter
	MountsRestored   prometheus.Counter
	MountsRefused    prometheus.Counter
	RequestsWaited   prometheus.Counter
	Wait             prometheus.Histogram
	RestoreSeconds   prometheus.Gauge
	Reattached       *prometheus.CounterVec
}

// NewMetrics registers the metrics in reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		RestartsSurvived: prometheus.NewCounter(prometheus.CounterOpts{Name: "hermes_snapshotter_restarts_survived_total",
			Help: "Starts that took over lazily mounted layers a previous process served."}),
		MountsRestored: prometheus.NewCounter(prometheus.CounterOpts{Name: "hermes_snapshotter_mounts_restored_total",
			Help: "Lazily mounted layers served again after a restart, from their held FUSE connection."}),
		MountsRefused: prometheus.NewCounter(prometheus.CounterOpts{Name: "hermes_snapshotter_mounts_refused_total",
			Help: "Held FUSE connections not served again (state unreadable, layer unresolvable, snapshot gone); the log says why."}),
		RequestsWaited: prometheus.NewCounter(prometheus.CounterOpts{Name: "hermes_snapshotter_restart_waited_requests_total",
			Help: "FUSE requests (reads, lookups) that were waiting in the kernel when a restarted snapshotter took their mount over."}),
		Wait: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "hermes_snapshotter_restart_wait_seconds",
			Help:    "How long the snapshotter was away, once per request that waited for it.",
			Buckets: []float64{.05, .1, .25, .5, 1, 2, 5, 10, 30, 60, 120, 300}}),
		RestoreSeconds: prometheus.NewGauge(prometheus.GaugeOpts{Name: "hermes_snapshotter_restore_seconds",
			Help: "Time the last start took to serve every held mount again."}),
		Reattached: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "hermes_snapshotter_reattached_total",
			Help: "Kernel node IDs (kind=node) and open file handles (kind=handle) of an earlier process resolved by this one."}, []string{"kind"}),
	}
	reg.MustRegister(m.RestartsSurvived, m.MountsRestored, m.MountsRefused, m.RequestsWaited, m.Wait, m.RestoreSeconds, m.Reattached)
	return m
}
