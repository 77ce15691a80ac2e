package harness

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"

	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/hermes-oci/hermes/api/v1alpha1"
)

// Kube is a running kube-apiserver backed by its own etcd.
type Kube struct {
	APIServer  *Process
	Etcd       *Process
	URL        string // https://127.0.0.1:PORT
	Kubeconfig string // admin (system:masters) kubeconfig
	PKI        *PKI
	Dir        string
	// SAKey signs service-account tokens (kube-controller-manager needs it).
	SAKey   string
	kubectl string
}

// KubeOptions configures StartKubeWith.
type KubeOptions struct {
	// ServiceAccounts turns the ServiceAccount admission plugin on, so Pods
	// get a token of their ServiceAccount mounted: only when a
	// kube-controller-manager creates the ServiceAccounts (a whole cluster).
	ServiceAccounts bool
}

// StartKube starts etcd and kube-apiserver on free loopback ports with a
// generated PKI, and waits until the API server is ready. Pods need no
// ServiceAccount (there is no kube-controller-manager to make them).
func StartKube(t testing.TB) *Kube {
	t.Helper()
	return StartKubeWith(t, KubeOptions{})
}

// StartKubeWith is StartKube with options.
func StartKubeWith(t testing.TB, o KubeOptions) *Kube {
	t.Helper()
	etcdBin := Bin(t, "etcd")
	apiBin := Bin(t, "kube-apiserver")
	kubectl, _ := LookBin("kubectl")
	dir := TempDir(t, "kube")
	pki, err := NewPKI(filepath.Join(dir, "pki"))
	if err != nil {
		t.Fatal(err)
	}
	servCert, servKey, err := pki.Issue("apiserver", "kube-apiserver", nil, "127.0.0.1", "10.0.0.1", "localhost", "kubernetes.default.svc")
	if err != nil {
		t.Fatal(err)
	}
	adminCert, adminKey, err := pki.Issue("admin", "kubernetes-admin", []string{"system:masters"})
	if err != nil {
		t.Fatal(err)
	}
	saPub, saKey, err := pki.ServiceAccountKeys()
	if err != nil {
		t.Fatal(err)
	}

	clientPort, peerPort, apiPort := FreePort(t), FreePort(t), FreePort(t)
	etcdURL := fmt.Sprintf("http://127.0.0.1:%d", clientPort)
	peerURL := fmt.Sprintf("http://127.0.0.1:%d", peerPort)
	etcd := Start(t, "etcd", dir, etcdBin, []string{
		"--name", "node", "--data-dir", filepath.Join(dir, "etcd"), "--unsafe-no-fsync", "--log-level", "warn",
		"--listen-client-urls", etcdURL, "--advertise-client-urls", etcdURL,
		"--listen-peer-urls", peerURL, "--initial-advertise-peer-urls", peerURL,
		"--initial-cluster", "node=" + peerURL,
	})
	WaitFor(t, etcd, 30*time.Second, "etcd health", HTTPReady(etcdURL+"/health"))

	k := &Kube{Etcd: etcd, URL: fmt.Sprintf("https://127.0.0.1:%d", apiPort), PKI: pki, Dir: dir, kubectl: kubectl,
		Kubeconfig: filepath.Join(dir, "admin.kubeconfig"), SAKey: saKey}
	kubeletCert, kubeletKey, err := pki.Issue("apiserver-kubelet-client", "kube-apiserver-kubelet-client", []string{"system:masters"})
	if err != nil {
		t.Fatal(err)
	}
	admission := "--disable-admission-plugins=ServiceAccount"
	if o.ServiceAccounts {
		admission = "--enable-admission-plugins=ServiceAccount"
	}
	k.APIServer = Start(t, "kube-apiserver", dir, apiBin, []string{
		"--etcd-servers=" + etcdURL, "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1",
		fmt.Sprintf("--secure-port=%d", apiPort), "--cert-dir=" + filepath.Join(dir, "apiserver-certs"),
		"--tls-cert-file=" + servCert, "--tls-private-key-file=" + servKey, "--client-ca-file=" + pki.CACert,
		"--service-account-key-file=" + saPub, "--service-account-signing-key-file=" + saKey,
		"--service-account-issuer=https://kubernetes.default.svc", "--service-cluster-ip-range=10.0.0.0/24",
		"--authorization-mode=Node,RBAC", "--endpoint-reconciler-type=none",
		// As in real clusters: node agents (the snapshotter DaemonSet) run privileged.
		"--allow-privileged=true",
		admission, "--enable-priority-and-fairness=false",
		"--kubelet-preferred-address-types=InternalIP",
		"--kubelet-client-certificate=" + kubeletCert, "--kubelet-client-key=" + kubeletKey,
	})
	if err := k.writeKubeconfig(k.Kubeconfig, adminCert, adminKey); err != nil {
		t.Fatal(err)
	}
	client, err := k.httpClient(adminCert, adminKey)
	if err != nil {
		t.Fatal(err)
	}
	WaitFor(t, k.APIServer, 90*time.Second, "kube-apiserver /readyz", func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, k.URL+"/readyz", nil)
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("readyz: %s", resp.Status)
		}
		return nil
	})
	return k
}

func (k *Kube) httpClient(cert, key string) (*http.Client, error) {
	pair, err := tls.LoadX509KeyPair(cert, key)
	if err != nil {
		return nil, err
	}
	caPEM, err := os.ReadFile(k.PKI.CACert)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	return &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{
		Certificates: []tls.Certificate{pair}, RootCAs: pool, MinVersion: tls.VersionTLS12}}}, nil
}

// Kubectl runs kubectl (v1.34.4 from $HERMES_CACHE/bin) against the admin
// kubeconfig with a private cache dir, and returns its stdout; a failure
// fails the test.
func (k *Kube) Kubectl(t testing.TB, args ...string) string {
	t.Helper()
	out, err := k.KubectlErr(t, args...)
	if err != nil {
		t.Fatalf("kubectl %s: %v", strings.Join(args, " "), err)
	}
	return out
}

// KubectlErr is Kubectl for commands that may fail: it returns stdout, or an
// error that carries kubectl's stderr (what a user would read).
func (k *Kube) KubectlErr(t testing.TB, args ...string) (string, error) {
	t.Helper()
	if k.kubectl == "" {
		k.kubectl = Bin(t, "kubectl")
	}
	base := []string{"--kubeconfig", k.Kubeconfig, "--cache-dir", filepath.Join(k.Dir, "kubectl-cache")}
	return RunErr(2*time.Minute, k.kubectl, append(base, args...)...)
}

// Client returns a controller-runtime client for k as the admin, with the
// core types and Hermes' API in its scheme, and limits high enough for
// tests that create thousands of objects.
func (k *Kube) Client(t testing.TB) client.Client {
	t.Helper()
	// controller-runtime's client logs through a global logger it
	// complains about (with a stack) when nobody sets one.
	quietControllerRuntime.Do(func() { ctrllog.SetLogger(logr.Discard()) })
	cfg, err := clientcmd.BuildConfigFromFlags("", k.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	cfg.QPS, cfg.Burst = 5000, 5000
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	if err := v1alpha1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

var quietControllerRuntime sync.Once

// KubeconfigFor issues a client certificate for user cn in groups orgs and
// writes a kubeconfig for it (cluster components, the kubelet).
func (k *Kube) KubeconfigFor(t testing.TB, name, cn string, orgs ...string) string {
	t.Helper()
	cert, key, err := k.PKI.Issue(name, cn, orgs)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(k.Dir, name+".kubeconfig")
	if err := k.writeKubeconfig(path, cert, key); err != nil {
		t.Fatal(err)
	}
	return path
}

func (k *Kube) writeKubeconfig(path, cert, key string) error {
	kc := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: test
  cluster: {server: %q, certificate-authority: %q}
users:
- name: user
  user: {client-certificate: %q, client-key: %q}
contexts:
- name: test
  context: {cluster: test, user: user}
current-context: test
`, k.URL, k.PKI.CACert, cert, key)
	return os.WriteFile(path, []byte(kc), 0o600)
}
