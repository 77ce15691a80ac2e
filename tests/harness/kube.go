package harness

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// Kube is a running kube-apiserver backed by its own etcd.
type Kube struct {
	APIServer  *Process
	Etcd       *Process
	URL        string // https://127.0.0.1:PORT
	Kubeconfig string // admin (system:masters) kubeconfig
	PKI        *PKI
	Dir        string
	kubectl    string
}

// StartKube starts etcd and kube-apiserver on free loopback ports with a
// generated PKI, and waits until the API server is ready.
func StartKube(t testing.TB) *Kube {
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
		Kubeconfig: filepath.Join(dir, "admin.kubeconfig")}
	k.APIServer = Start(t, "kube-apiserver", dir, apiBin, []string{
		"--etcd-servers=" + etcdURL, "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1",
		fmt.Sprintf("--secure-port=%d", apiPort), "--cert-dir=" + filepath.Join(dir, "apiserver-certs"),
		"--tls-cert-file=" + servCert, "--tls-private-key-file=" + servKey, "--client-ca-file=" + pki.CACert,
		"--service-account-key-file=" + saPub, "--service-account-signing-key-file=" + saKey,
		"--service-account-issuer=https://kubernetes.default.svc", "--service-cluster-ip-range=10.0.0.0/24",
		"--authorization-mode=Node,RBAC", "--endpoint-reconciler-type=none",
		"--disable-admission-plugins=ServiceAccount", "--enable-priority-and-fairness=false",
		"--kubelet-preferred-address-types=InternalIP",
	})
	kc := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: test
  cluster: {server: %q, certificate-authority: %q}
users:
- name: admin
  user: {client-certificate: %q, client-key: %q}
contexts:
- name: test
  context: {cluster: test, user: admin}
current-context: test
`, k.URL, pki.CACert, adminCert, adminKey)
	if err := os.WriteFile(k.Kubeconfig, []byte(kc), 0o600); err != nil {
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
// kubeconfig with a private cache dir, and returns its stdout.
func (k *Kube) Kubectl(t testing.TB, args ...string) string {
	t.Helper()
	if k.kubectl == "" {
		k.kubectl = Bin(t, "kubectl")
	}
	base := []string{"--kubeconfig", k.Kubeconfig, "--cache-dir", filepath.Join(k.Dir, "kubectl-cache")}
	return Run(t, 2*time.Minute, k.kubectl, append(base, args...)...)
}
