package harness

import (
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// InstallCRDs applies Hermes' CRDs (manifests/crd) and waits until they
// are Established. Create them once per API server: the first custom
// resource created within ~2 s of its CRD waits server-side.
func (k *Kube) InstallCRDs(t testing.TB) {
	t.Helper()
	root, err := RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	k.Kubectl(t, "apply", "--server-side", "-k", filepath.Join(root, "manifests", "crd"))
	WaitFor(t, k.APIServer, time.Minute, "HermesPolicy CRD Established", func() error {
		out, err := k.KubectlErr(t, "get", "crd", "hermespolicies.hermes.dev", "-o", `jsonpath={.status.conditions[?(@.type=="Established")].status}`)
		if err == nil && out != "True" {
			err = fmt.Errorf("Established=%q", out)
		}
		return err
	})
}

// ControllerOptions configures StartController.
type ControllerOptions struct {
	// Args are extra flags (e.g. --build-concurrency 4).
	Args []string
	// Env is extra environment.
	Env []string
	// LogLevel defaults to "debug".
	LogLevel string
	// Port of the embedded registry; 0 picks a free one. Keep it to
	// restart at the same address.
	Port int
	// Root is the embedded registry's storage; empty makes one.
	Root string
}

// Controller is a running hermes-controller (built from the working tree)
// with its embedded cache registry.
type Controller struct {
	*Process
	RegistryHost string // 127.0.0.1:PORT of the embedded cache registry
	RegistryURL  string // http://RegistryHost
	MetricsURL   string // http://127.0.0.1:PORT/metrics
	HealthURL    string // http://127.0.0.1:PORT (/healthz, /readyz)
	Root         string // the registry's storage directory
	Dir          string

	bin  string
	args []string
	env  []string
}

// StartController starts hermes-controller against k (admin kubeconfig)
// with the embedded registry on loopback, short intervals fit for tests,
// and waits until it is ready.
func StartController(t testing.TB, k *Kube, o ControllerOptions) *Controller {
	t.Helper()
	c := &Controller{bin: HermesBin(t, "hermes-controller"), Dir: TempDir(t, "ctl"), Root: o.Root, env: o.Env}
	if c.Root == "" {
		c.Root = filepath.Join(c.Dir, "registry")
	}
	port := o.Port
	if port == 0 {
		port = FreePort(t)
	}
	mport, hport := FreePort(t), FreePort(t)
	c.RegistryHost = fmt.Sprintf("127.0.0.1:%d", port)
	c.RegistryURL = "http://" + c.RegistryHost
	c.MetricsURL = fmt.Sprintf("http://127.0.0.1:%d/metrics", mport)
	c.HealthURL = fmt.Sprintf("http://127.0.0.1:%d", hport)
	level := o.LogLevel
	if level == "" {
		level = "debug"
	}
	c.args = append([]string{"--kubeconfig", k.Kubeconfig, "--addr", c.RegistryHost, "--root", c.Root,
		"--metrics-addr", fmt.Sprintf("127.0.0.1:%d", mport), "--health-addr", fmt.Sprintf("127.0.0.1:%d", hport),
		"--log-level", level, "--log-format", "text", "--temp-dir", filepath.Join(c.Dir, "tmp"),
		"--status-interval", "500ms", "--retry-base", "500ms", "--retry-max", "5s", "--platforms", "linux/amd64",
		// One replica unless a test elects a leader (a later
		// --leader-elect in Args wins).
		"--leader-elect=false"}, o.Args...)
	c.start(t)
	return c
}

func (c *Controller) start(t testing.TB) {
	t.Helper()
	c.Process = StartServer(t, "hermes-controller", c.Dir, c.bin, c.args, c.env, c.HealthURL+"/readyz", c.RegistryHost, 60*time.Second)
}

// Restart stops the controller (SIGTERM, or SIGKILL when crash is set) and
// starts it again with the same flags and storage.
func (c *Controller) Restart(t testing.TB, crash bool) {
	t.Helper()
	c.End(crash, 20*time.Second)
	c.start(t)
}

// Metrics returns the controller's Prometheus exposition text.
func (c *Controller) Metrics(t testing.TB) string {
	t.Helper()
	return Scrape(t, c.MetricsURL)
}

// Scrape returns the Prometheus exposition text served at url.
func Scrape(t testing.TB, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("metrics: %v", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("metrics %s: %s %v", url, resp.Status, err)
	}
	return string(b)
}

// Metric returns the value of the series whose line starts with prefix
// (name and labels, e.g. `hermes_controller_builds_total{outcome="built"}`),
// or 0 when the controller has not exported it.
func Metric(text, prefix string) float64 {
	for _, line := range strings.Split(text, "\n") {
		if rest, ok := strings.CutPrefix(line, prefix+" "); ok {
			var v float64
			fmt.Sscan(rest, &v)
			return v
		}
	}
	return 0
}
