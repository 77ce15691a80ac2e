package nodedisk

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics count what the janitor reclaims.
type Metrics struct {
	Evictions      prometheus.Counter
	EvictedBytes   prometheus.Counter
	CollectedBlobs prometheus.Counter
	CollectedBytes prometheus.Counter
}

// NewMetrics registers the janitor's counters, the span cache's cap and
// hermes_snapshotter_disk_bytes{kind}, measured under l at most every
// maxAge (a scrape walks the root otherwise).
func NewMetrics(reg prometheus.Registerer, l Layout, spanCacheMaxBytes int64, maxAge time.Duration) *Metrics {
	m := &Metrics{
		Evictions: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "hermes_snapshotter_span_evictions_total",
			Help: "Idle lazily mounted layers whose cached spans were dropped to keep the span cache within span_cache_max_bytes.",
		}),
		EvictedBytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "hermes_snapshotter_span_evicted_bytes_total",
			Help: "Bytes of cached spans dropped by evictions.",
		}),
		CollectedBlobs: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "hermes_snapshotter_content_removed_blobs_total",
			Help: "Blobs (SOCI indexes, zTOCs, layers soci unpacked) removed from the local store once no snapshot needed them.",
		}),
		CollectedBytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "hermes_snapshotter_content_removed_bytes_total",
			Help: "Bytes of the blobs removed from the local store.",
		}),
	}
	reg.MustRegister(m.Evictions, m.EvictedBytes, m.CollectedBlobs, m.CollectedBytes,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "hermes_snapshotter_span_cache_max_bytes",
			Help: "The span cache's cap ([hermes] span_cache_max_bytes); 0 is none.",
		}, func() float64 { return float64(spanCacheMaxBytes) }),
		&usageCollector{l: l, maxAge: maxAge, desc: prometheus.NewDesc("hermes_snapshotter_disk_bytes",
			"Bytes hermes-snapshotter keeps on the node's disk under its root, by kind: spans (fetched spans), content (SOCI indexes, zTOCs, layers soci unpacked), metadata (soci's file-tree store), snapshots (soci's snapshots: unpacked layers and writable layers).",
			[]string{"kind"}, nil)})
	return m
}

type usageCollector struct {
	l      Layout
	maxAge time.Duration
	desc   *prometheus.Desc

	mu   sync.Mutex
	at   time.Time
	last map[Kind]int64
}

func (c *usageCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *usageCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	if c.last == nil || time.Since(c.at) > c.maxAge {
		c.last, c.at = c.l.Usage(), time.Now()
	}
	u := c.last
	c.mu.Unlock()
	for _, k := range Kinds {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(u[k]), string(k))
	}
}
