package imagegen

import (
	"io"
	"syscall"
	"testing"
	"time"
)

// cpuTime is the process's user+system CPU time: the machine running the
// benchmarks is shared, so throughput per CPU second is the stable number.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// benchLayer measures generating l's tar (generate=false: no compression,
// no cache) or its full gzip blob (generate=true, into a temp cache).
func benchLayer(b *testing.B, l Layer, compress bool) {
	b.SetBytes(l.Size)
	start := cpuTime()
	for i := 0; i < b.N; i++ {
		if compress {
			l.Seed = int64(i) // defeat the cache
			if _, err := buildLayer(l, &buildEnv{}, b.TempDir()); err != nil {
				b.Fatal(err)
			}
		} else if err := writeLayerTar(io.Discard, l, &buildEnv{}); err != nil {
			b.Fatal(err)
		}
	}
	cpu := cpuTime() - start
	b.ReportMetric(float64(l.Size)*float64(b.N)/cpu.Seconds()/1e6, "MB/cpu-s")
}

func BenchmarkGenerateRandom(b *testing.B) {
	benchLayer(b, Layer{Kind: Random, Size: 256 << 20}, false)
}

func BenchmarkGenerateCompressible(b *testing.B) {
	benchLayer(b, Layer{Kind: Compressible, Size: 256 << 20}, false)
}

func BenchmarkBuildRandom(b *testing.B) {
	benchLayer(b, Layer{Kind: Random, Size: 256 << 20}, true)
}

func BenchmarkBuildCompressible(b *testing.B) {
	benchLayer(b, Layer{Kind: Compressible, Size: 256 << 20}, true)
}
