package harness

import (
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// ShapePort limits what a server on 127.0.0.1:port sends (its responses:
// source port = port) to rate, a tc rate such as "100mbit", with an htb
// class on the loopback device; other loopback traffic is not slowed. The
// cleanup removes the class and filter, and the root qdisc when no other
// shaped port is left. netem (latency, loss) is not in this kernel.
//
// Layout on lo:
//
//	root qdisc 1: htb (no default: unmatched traffic is not shaped)
//	├── class 1:<port in hex>  rate=ceil=rate
//	└── filter prio <port>, u32 match ip sport <port> -> 1:<port in hex>
func ShapePort(t testing.TB, port int, rate string) {
	t.Helper()
	RequireRoot(t)
	if _, err := exec.LookPath("tc"); err != nil {
		Missing(t, "tc (Debian iproute2) not in $PATH")
	}
	if err := ShapeLoopbackPort(port, rate); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := UnshapeLoopbackPort(port); err != nil {
			t.Logf("remove shaping of port %d: %v", port, err)
		}
	})
}

// ShapeLoopbackPort is ShapePort without a test: the caller removes it
// with UnshapeLoopbackPort.
func ShapeLoopbackPort(port int, rate string) error {
	if port <= 0 || port > 0xffff {
		return fmt.Errorf("shape: port %d out of range", port)
	}
	out, _ := exec.Command("tc", "qdisc", "show", "dev", "lo").Output()
	switch {
	case strings.Contains(string(out), "qdisc htb 1: root"):
		// Another shaped port; share the root qdisc.
	case strings.Contains(string(out), " root") && !strings.Contains(string(out), "qdisc noqueue 0: root"):
		return fmt.Errorf("shape: lo has a root qdisc that is not ours:\n%s", out)
	default:
		if err := tc("qdisc", "add", "dev", "lo", "root", "handle", "1:", "htb"); err != nil {
			return err
		}
	}
	class := fmt.Sprintf("1:%x", port)
	if err := tc("class", "add", "dev", "lo", "parent", "1:", "classid", class, "htb", "rate", rate, "ceil", rate, "quantum", "65536"); err != nil {
		return err
	}
	return tc("filter", "add", "dev", "lo", "parent", "1:", "protocol", "ip", "prio", fmt.Sprint(port),
		"u32", "match", "ip", "sport", fmt.Sprint(port), "0xffff", "flowid", class)
}

// UnshapeLoopbackPort removes what ShapeLoopbackPort added for port, and
// the root qdisc once no shaped port is left.
func UnshapeLoopbackPort(port int) error {
	err := tc("filter", "del", "dev", "lo", "parent", "1:", "protocol", "ip", "prio", fmt.Sprint(port))
	// The class may still be busy for a moment after its last packet.
	for i := 0; i < 20; i++ {
		if cerr := tc("class", "del", "dev", "lo", "classid", fmt.Sprintf("1:%x", port)); cerr == nil {
			break
		} else if i == 19 && err == nil {
			err = cerr
		}
		time.Sleep(50 * time.Millisecond)
	}
	classes, _ := exec.Command("tc", "class", "show", "dev", "lo").Output()
	if strings.TrimSpace(string(classes)) == "" {
		if qerr := tc("qdisc", "del", "dev", "lo", "root"); qerr != nil && err == nil {
			err = qerr
		}
	}
	return err
}

func tc(args ...string) error {
	if out, err := exec.Command("tc", args...).CombinedOutput(); err != nil {
		return fmt.Errorf("tc %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}
