package snapshotter_test

import (
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hermes-oci/hermes/tests/harness"
	"github.com/hermes-oci/hermes/tools/imagegen"
)

func TestZZDebugPull(t *testing.T) {
	if os.Getenv("ZZ") == "" {
		t.Skip()
	}
	n := startNode(t, nodeOptions{})
	im := pushImage(t, n, "dbg", imagegen.PresetRandom(4, 270_000_000))
	buildIndex(t, n.cache.Host, im)
	port, _ := strconv.Atoi(n.origin.Host[strings.LastIndex(n.origin.Host, ":")+1:])
	harness.ShapePort(t, port, "100mbit")
	from := len(n.origin.Output())
	snFrom := len(n.sn.Output())
	t0 := time.Now()
	_, took := pull(t, n, im.ref, snName)
	t.Logf("pull %s (%s since t0)", took, time.Since(t0))
	for _, r := range accessLog(n.origin, from) {
		t.Logf("%s %s %d %d", r.Method, r.Path[len(r.Path)-20:], r.Status, r.Bytes)
	}
	out := n.sn.Output()[snFrom:]
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, "level=INFO") || strings.Contains(l, "level=WARN") {
			if len(l) > 300 {
				l = l[:300]
			}
			t.Log(l)
		}
	}
}
