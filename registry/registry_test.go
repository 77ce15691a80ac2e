package registry_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/distribution/distribution/v3/configuration"
	_ "github.com/distribution/distribution/v3/registry/storage/driver/inmemory"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/hermes-oci/hermes/registry"
	"github.com/hermes-oci/hermes/registry/names"
)

// server is a Registry on in-memory storage behind httptest.
type server struct {
	*httptest.Server
	reg     *registry.Registry
	metrics *prometheus.Registry
	token   string // write credential, when auth is on
}

func newServer(t testing.TB, auth registry.AuthConfig) *server {
	t.Helper()
	m := prometheus.NewRegistry()
	reg, err := registry.New(context.Background(), registry.Config{
		Storage: configuration.Storage{"inmemory": {}}, Auth: auth, Metrics: m,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = reg.Close() })
	s := &server{Server: httptest.NewServer(reg), reg: reg, metrics: m}
	t.Cleanup(s.Close)
	return s
}

func newAuthServer(t *testing.T, requireRead bool) *server {
	t.Helper()
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte("s3cret-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s := newServer(t, registry.AuthConfig{TokenFile: tokenFile, RequireRead: requireRead})
	s.token = "s3cret-token"
	return s
}

func (s *server) do(t testing.TB, method, path string, body []byte, header ...string) *http.Response {
	t.Helper()
	req, err := http.NewRequest(method, s.URL+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	if s.token != "" && req.Header.Get("Authorization") == "" && method != http.MethodGet && method != http.MethodHead {
		req.Header.Set("Authorization", "Bearer "+s.token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

func readAll(t testing.TB, r *http.Response) []byte {
	t.Helper()
	b, err := io.ReadAll(r.Body)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// pushBlob uploads content with POST then PUT.
func (s *server) pushBlob(t testing.TB, repo string, content []byte) digest.Digest {
	t.Helper()
	d := digest.FromBytes(content)
	resp := s.do(t, http.MethodPost, "/v2/"+repo+"/blobs/uploads/", nil)
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("start upload: %s %s", resp.Status, readAll(t, resp))
	}
	loc := resp.Header.Get("Location")
	sep := "?"
	if strings.Contains(loc, "?") {
		sep = "&"
	}
	loc = strings.TrimPrefix(loc, s.URL)
	resp = s.do(t, http.MethodPut, loc+sep+"digest="+d.String(), content, "Content-Type", "application/octet-stream")
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("finish upload: %s %s", resp.Status, readAll(t, resp))
	}
	return d
}

var emptyJSON = []byte("{}")

// artifact returns an artifact manifest with subject, pushing its config.
func (s *server) artifact(t testing.TB, repo string, subject digest.Digest, artifactType, note string) []byte {
	t.Helper()
	cfg := s.pushBlob(t, repo, emptyJSON)
	m := map[string]any{
		"schemaVersion": 2,
		"mediaType":     ocispec.MediaTypeImageManifest,
		"config":        ocispec.Descriptor{MediaType: "application/vnd.oci.empty.v1+json", Digest: cfg, Size: 2},
		"layers":        []ocispec.Descriptor{},
		"annotations":   map[string]string{"note": note},
	}
	if artifactType != "" {
		m["artifactType"] = artifactType
	}
	if subject != "" {
		m["subject"] = ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: subject, Size: 1234}
	}
	b, _ := json.Marshal(m)
	return b
}

func (s *server) putManifest(t testing.TB, repo, ref string, body []byte) *http.Response {
	t.Helper()
	return s.do(t, http.MethodPut, "/v2/"+repo+"/manifests/"+ref, body, "Content-Type", ocispec.MediaTypeImageManifest)
}

func (s *server) referrers(t *testing.T, path string) (ocispec.Index, *http.Response) {
	t.Helper()
	resp := s.do(t, http.MethodGet, path, nil)
	b := readAll(t, resp)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s %s", path, resp.Status, b)
	}
	if ct := resp.Header.Get("Content-Type"); ct != ocispec.MediaTypeImageIndex {
		t.Fatalf("GET %s: Content-Type %q", path, ct)
	}
	var ix ocispec.Index
	if err := json.Unmarshal(b, &ix); err != nil || ix.Manifests == nil {
		t.Fatalf("GET %s: %v: %s", path, err, b)
	}
	return ix, resp
}

// ociError checks an OCI error answer and returns its first code.
func ociError(t *testing.T, resp *http.Response, status int) string {
	t.Helper()
	b := readAll(t, resp)
	var body struct {
		Errors []struct{ Code, Message string } `json:"errors"`
	}
	if resp.StatusCode != status || json.Unmarshal(b, &body) != nil || len(body.Errors) == 0 {
		t.Fatalf("%s %s: got %s %s, want %d with an OCI error body", resp.Request.Method, resp.Request.URL.Path, resp.Status, b, status)
	}
	return body.Errors[0].Code
}

func TestReferrersAPI(t *testing.T) {
	s := newServer(t, registry.AuthConfig{})
	const repo, soci = "docker.io/library/nginx", names.SOCIIndexV1ArtifactType
	// The subject lives upstream: it is never pushed here.
	subject := digest.FromString("an image manifest upstream")

	ix, resp := s.referrers(t, "/v2/"+repo+"/referrers/"+subject.String())
	if len(ix.Manifests) != 0 || resp.Header.Get("OCI-Filters-Applied") != "" {
		t.Fatalf("empty subject: %+v", ix)
	}

	a := s.artifact(t, repo, subject, soci, "a")
	resp = s.putManifest(t, repo, digest.FromBytes(a).String(), a)
	if resp.StatusCode != http.StatusCreated || resp.Header.Get("OCI-Subject") != subject.String() {
		t.Fatalf("PUT referrer: %s OCI-Subject %q %s", resp.Status, resp.Header.Get("OCI-Subject"), readAll(t, resp))
	}
	// No artifactType field: typed by its config (an image used as an artifact).
	b := s.artifact(t, repo, subject, "", "b")
	if resp := s.putManifest(t, repo, "b-tag", b); resp.StatusCode != http.StatusCreated {
		t.Fatalf("PUT b: %s", resp.Status)
	}
	// Not a referrer: no OCI-Subject.
	c := s.artifact(t, repo, "", soci, "c")
	if resp := s.putManifest(t, repo, "c", c); resp.StatusCode != http.StatusCreated || resp.Header.Get("OCI-Subject") != "" {
		t.Fatalf("PUT c: %s %q", resp.Status, resp.Header.Get("OCI-Subject"))
	}

	ix, _ = s.referrers(t, "/v2/"+repo+"/referrers/"+subject.String())
	if len(ix.Manifests) != 2 {
		t.Fatalf("referrers = %+v, want a and b", ix.Manifests)
	}
	byDigest := map[digest.Digest]ocispec.Descriptor{}
	for _, d := range ix.Manifests {
		byDigest[d.Digest] = d
	}
	da, db := byDigest[digest.FromBytes(a)], byDigest[digest.FromBytes(b)]
	if da.ArtifactType != soci || da.Annotations["note"] != "a" || da.Size != int64(len(a)) || da.MediaType != ocispec.MediaTypeImageManifest {
		t.Errorf("descriptor of a = %+v", da)
	}
	if db.ArtifactType != "application/vnd.oci.empty.v1+json" {
		t.Errorf("descriptor of b = %+v, want the config media type as artifactType", db)
	}

	ix, resp = s.referrers(t, "/v2/"+repo+"/referrers/"+subject.String()+"?artifactType="+soci)
	if len(ix.Manifests) != 1 || ix.Manifests[0].Digest != digest.FromBytes(a) || resp.Header.Get("OCI-Filters-Applied") != "artifactType" {
		t.Fatalf("filtered referrers = %+v, header %q", ix.Manifests, resp.Header.Get("OCI-Filters-Applied"))
	}
	// Encoded as clients do, and with a bare "+" as typed in a shell.
	ix, _ = s.referrers(t, "/v2/"+repo+"/referrers/"+subject.String()+"?artifactType="+url.QueryEscape(soci))
	if len(ix.Manifests) != 1 {
		t.Fatalf("filtered referrers (encoded) = %+v", ix.Manifests)
	}
	ix, _ = s.referrers(t, "/v2/"+repo+"/referrers/"+subject.String()+"?artifactType=application/none")
	if len(ix.Manifests) != 0 {
		t.Fatalf("filter matching nothing: %+v", ix.Manifests)
	}
	// Other repositories have their own sets.
	if ix, _ := s.referrers(t, "/v2/ghcr.io/library/nginx/referrers/"+subject.String()); len(ix.Manifests) != 0 {
		t.Fatalf("other repository: %+v", ix.Manifests)
	}

	// Deleting a referrer takes it out.
	if resp := s.do(t, http.MethodDelete, "/v2/"+repo+"/manifests/"+digest.FromBytes(a).String(), nil); resp.StatusCode != http.StatusAccepted {
		t.Fatalf("DELETE: %s %s", resp.Status, readAll(t, resp))
	}
	ix, _ = s.referrers(t, "/v2/"+repo+"/referrers/"+subject.String())
	if len(ix.Manifests) != 1 || ix.Manifests[0].Digest != digest.FromBytes(b) {
		t.Fatalf("after delete: %+v", ix.Manifests)
	}

	if got := testutil.ToFloat64(metric(t, s, "hermes_registry_referrers_lookups_total")); got < 7 {
		t.Errorf("referrers lookups counted %v, want at least 7", got)
	}
}

// metric sums a counter family from the server's registry.
func metric(t *testing.T, s *server, name string) prometheus.Collector {
	t.Helper()
	families, err := s.metrics.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, f := range families {
		if f.GetName() == name {
			for _, m := range f.GetMetric() {
				sum += m.GetCounter().GetValue()
			}
		}
	}
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "sum"})
	c.Add(sum)
	return c
}

func TestConcurrentReferrerPushes(t *testing.T) {
	s := newServer(t, registry.AuthConfig{})
	const repo, n = "ghcr.io/org/app", 50
	subject := digest.FromString("subject")
	bodies := make([][]byte, n)
	for i := range n {
		bodies[i] = s.artifact(t, repo, subject, names.SOCIIndexV1ArtifactType, fmt.Sprint(i))
	}
	var wg sync.WaitGroup
	codes := make([]int, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, _ := http.NewRequest(http.MethodPut, s.URL+"/v2/"+repo+"/manifests/"+digest.FromBytes(bodies[i]).String(), bytes.NewReader(bodies[i]))
			req.Header.Set("Content-Type", ocispec.MediaTypeImageManifest)
			resp, err := http.DefaultClient.Do(req)
			if err == nil {
				codes[i] = resp.StatusCode
				resp.Body.Close()
			}
		}()
	}
	wg.Wait()
	for i, c := range codes {
		if c != http.StatusCreated {
			t.Fatalf("push %d: %d", i, c)
		}
	}
	ix, _ := s.referrers(t, "/v2/"+repo+"/referrers/"+subject.String())
	if len(ix.Manifests) != n {
		t.Fatalf("%d referrers listed after %d concurrent pushes", len(ix.Manifests), n)
	}
}

func TestMirrorNames(t *testing.T) {
	s := newServer(t, registry.AuthConfig{})
	subject := digest.FromString("nginx manifest")
	a := s.artifact(t, "docker.io/library/nginx", subject, names.SOCIIndexV1ArtifactType, "a")
	if resp := s.putManifest(t, "docker.io/library/nginx", "v1", a); resp.StatusCode != http.StatusCreated {
		t.Fatalf("PUT: %s", resp.Status)
	}
	for _, path := range []string{
		"/v2/docker.io/library/nginx/manifests/v1",
		"/v2/library/nginx/manifests/v1?ns=docker.io",
		"/v2/nginx/manifests/v1?ns=docker.io",
		"/v2/library/nginx/manifests/v1?ns=registry-1.docker.io",
		"/v2/library/nginx/manifests/v1?ns=index.docker.io",
		"/v2/index.docker.io/library/nginx/manifests/v1",
	} {
		resp := s.do(t, http.MethodGet, path, nil, "Accept", ocispec.MediaTypeImageManifest)
		if b := readAll(t, resp); resp.StatusCode != http.StatusOK || !bytes.Equal(b, a) {
			t.Errorf("GET %s: %s %s", path, resp.Status, b)
		}
	}
	ix, _ := s.referrers(t, "/v2/library/nginx/referrers/"+subject.String()+"?ns=docker.io")
	if len(ix.Manifests) != 1 {
		t.Errorf("referrers through ns: %+v", ix.Manifests)
	}
	// What the cache lacks is a plain 404 with an OCI error body, so a
	// client falls through to the next mirror.
	for path, code := range map[string]string{
		"/v2/library/nginx/manifests/v2?ns=docker.io":                          "MANIFEST_UNKNOWN",
		"/v2/library/redis/manifests/latest?ns=docker.io":                      "NAME_UNKNOWN",
		"/v2/org/app/blobs/" + digest.FromString("x").String() + "?ns=ghcr.io": "BLOB_UNKNOWN",
	} {
		resp := s.do(t, http.MethodGet, path, nil)
		if got := ociError(t, resp, http.StatusNotFound); got != code && !(code == "NAME_UNKNOWN" && got == "MANIFEST_UNKNOWN") {
			t.Errorf("GET %s: %s, want %s", path, got, code)
		}
	}
}

func TestBadInput(t *testing.T) {
	s := newServer(t, registry.AuthConfig{})
	const repo = "docker.io/library/app"
	good := s.artifact(t, repo, digest.FromString("s"), "t", "good")
	if resp := s.putManifest(t, repo, "good", good); resp.StatusCode != http.StatusCreated {
		t.Fatalf("PUT good: %s", resp.Status)
	}
	badSubject := bytes.Replace(s.artifact(t, repo, digest.FromString("s2"), "t", "bad"),
		[]byte(digest.FromString("s2").String()), []byte("sha256:not-a-digest"), 1)
	for name, c := range map[string]struct {
		method, path string
		body         []byte
		status       int
		code         string
	}{
		"malformed manifest":   {http.MethodPut, "/v2/" + repo + "/manifests/bad", []byte(`{"schemaVersion":2,`), 400, "MANIFEST_INVALID"},
		"malformed subject":    {http.MethodPut, "/v2/" + repo + "/manifests/bad", badSubject, 400, "MANIFEST_INVALID"},
		"digest mismatch":      {http.MethodPut, "/v2/" + repo + "/manifests/" + digest.FromString("other").String(), good, 400, "DIGEST_INVALID"},
		"dot-dot name":         {http.MethodGet, "/v2/docker.io/../etc/manifests/good", nil, 400, "NAME_INVALID"},
		"dot-dot ns":           {http.MethodGet, "/v2/library/app/manifests/good?ns=..", nil, 400, "NAME_INVALID"},
		"upper case name":      {http.MethodGet, "/v2/docker.io/Library/app/manifests/good", nil, 400, "NAME_INVALID"},
		"upper case write":     {http.MethodPut, "/v2/Docker.io/library/app/manifests/x", good, 400, "NAME_INVALID"},
		"bad referrers digest": {http.MethodGet, "/v2/" + repo + "/referrers/sha256:zzz", nil, 400, "DIGEST_INVALID"},
		"referrers algorithm":  {http.MethodGet, "/v2/" + repo + "/referrers/md5:d41d8cd98f00b204e9800998ecf8427e", nil, 400, "DIGEST_INVALID"},
		"huge n":               {http.MethodGet, "/v2/" + repo + "/tags/list?n=99999999999999999999999999", nil, 400, "PAGINATION_NUMBER_INVALID"},
		"negative n":           {http.MethodGet, "/v2/" + repo + "/tags/list?n=-1", nil, 400, "PAGINATION_NUMBER_INVALID"},
		"huge catalog n":       {http.MethodGet, "/v2/_catalog?n=99999999999999999999", nil, 400, "PAGINATION_NUMBER_INVALID"},
		"referrers PUT":        {http.MethodPut, "/v2/" + repo + "/referrers/" + digest.FromString("s").String(), nil, 405, "UNSUPPORTED"},
	} {
		t.Run(name, func(t *testing.T) {
			resp := s.do(t, c.method, c.path, c.body, "Content-Type", ocispec.MediaTypeImageManifest)
			if got := ociError(t, resp, c.status); got != c.code {
				t.Errorf("code %s, want %s", got, c.code)
			}
		})
	}
	// Big but valid numbers are clamped, not refused; a "last" that cannot
	// be a tag or a repository is refused.
	for q, code := range map[string]string{
		"/v2/" + repo + "/tags/list?n=2147483647":                       "",
		"/v2/" + repo + "/tags/list?n=1&last=zz":                        "",
		"/v2/" + repo + "/tags/list?last=" + strings.Repeat("z", 10000): "TAG_INVALID",
		"/v2/" + repo + "/tags/list?last=../../x":                       "TAG_INVALID",
		"/v2/_catalog?last=" + strings.Repeat("a/", 200):                "NAME_INVALID",
		"/v2/_catalog?last=docker.io":                                   "",
	} {
		resp := s.do(t, http.MethodGet, q, nil)
		if code == "" {
			if b := readAll(t, resp); resp.StatusCode != http.StatusOK {
				t.Errorf("%.60s: %s %s", q, resp.Status, b)
			}
		} else if got := ociError(t, resp, http.StatusBadRequest); got != code {
			t.Errorf("%.60s: %s, want %s", q, got, code)
		}
	}
	// Nothing else changed: only the good manifest, its tag and its referrer.
	resp := s.do(t, http.MethodGet, "/v2/"+repo+"/tags/list", nil)
	var tags struct{ Tags []string }
	if err := json.Unmarshal(readAll(t, resp), &tags); err != nil || len(tags.Tags) != 1 || tags.Tags[0] != "good" {
		t.Errorf("tags after bad input: %+v %v", tags, err)
	}
	if ix, _ := s.referrers(t, "/v2/"+repo+"/referrers/"+digest.FromString("s2").String()); len(ix.Manifests) != 0 {
		t.Errorf("a refused manifest was recorded as a referrer: %+v", ix.Manifests)
	}
	resp = s.do(t, http.MethodGet, "/v2/_catalog", nil)
	if b := readAll(t, resp); !strings.Contains(string(b), `"repositories":["docker.io/library/app"]`) {
		t.Errorf("catalog after bad input: %s", b)
	}
}

func TestAuth(t *testing.T) {
	s := newAuthServer(t, false)
	const repo = "docker.io/library/app"
	body := s.artifact(t, repo, "", "t", "x") // pushes its config with the token

	// A write without a credential, or with a wrong one: 401, challenge, OCI body.
	for _, h := range [][]string{nil, {"Authorization", "Bearer wrong"}, {"Authorization", "Basic eDp3cm9uZw=="}} {
		resp := s.do(t, http.MethodPut, "/v2/"+repo+"/manifests/v1", body, append([]string{"Content-Type", ocispec.MediaTypeImageManifest, "Authorization", "none"}, h...)...)
		if ociError(t, resp, http.StatusUnauthorized) != "UNAUTHORIZED" || !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Basic realm=") {
			t.Fatalf("write with %v: %s %q", h, resp.Status, resp.Header.Get("WWW-Authenticate"))
		}
	}
	if resp := s.do(t, http.MethodGet, "/v2/"+repo+"/manifests/v1", nil); resp.StatusCode != http.StatusNotFound {
		t.Fatalf("a refused write stored something: %s", resp.Status)
	}
	// The token as a bearer token or as a Basic password.
	if resp := s.putManifest(t, repo, "v1", body); resp.StatusCode != http.StatusCreated {
		t.Fatalf("write with bearer token: %s", resp.Status)
	}
	req, _ := http.NewRequest(http.MethodDelete, s.URL+"/v2/"+repo+"/manifests/v1", nil)
	req.SetBasicAuth("anyone", s.token)
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != http.StatusAccepted {
		t.Fatalf("delete with token as Basic password: %v %v", resp, err)
	}
	// Reads are anonymous; the API root asks anonymous clients to log in so
	// that clients which probe it send credentials when they push.
	if resp := s.do(t, http.MethodGet, "/v2/"+repo+"/tags/list", nil); resp.StatusCode != http.StatusOK {
		t.Fatalf("anonymous read: %s", resp.Status)
	}
	if resp := s.do(t, http.MethodGet, "/v2/", nil); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("anonymous /v2/: %s", resp.Status)
	}
	if resp := s.do(t, http.MethodGet, "/v2/", nil, "Authorization", "Bearer "+s.token); resp.StatusCode != http.StatusOK {
		t.Fatalf("/v2/ with token: %s", resp.Status)
	}

	// Reads can require a credential too.
	r := newAuthServer(t, true)
	if resp := r.do(t, http.MethodGet, "/v2/"+repo+"/tags/list", nil); ociError(t, resp, http.StatusUnauthorized) != "UNAUTHORIZED" {
		t.Fatal("anonymous read allowed with RequireRead")
	}
	if resp := r.do(t, http.MethodGet, "/v2/"+repo+"/referrers/"+digest.FromString("x").String(), nil); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("anonymous referrers read with RequireRead: %s", resp.Status)
	}
	if resp := r.do(t, http.MethodGet, "/v2/"+repo+"/referrers/"+digest.FromString("x").String(), nil, "Authorization", "Bearer "+r.token); resp.StatusCode != http.StatusOK {
		t.Fatalf("referrers read with token: %s", resp.Status)
	}
}

func TestConfigErrors(t *testing.T) {
	ctx := context.Background()
	for name, cfg := range map[string]registry.Config{
		"no storage":              {},
		"unknown driver":          {Storage: configuration.Storage{"nosuchdriver": {}}},
		"read auth without creds": {Storage: configuration.Storage{"inmemory": {}}, Auth: registry.AuthConfig{RequireRead: true}},
		"missing htpasswd":        {Storage: configuration.Storage{"inmemory": {}}, Auth: registry.AuthConfig{HtpasswdFile: "/nonexistent/htpasswd"}},
		"missing token":           {Storage: configuration.Storage{"inmemory": {}}, Auth: registry.AuthConfig{TokenFile: "/nonexistent/token"}},
	} {
		if _, err := registry.New(ctx, cfg); err == nil {
			t.Errorf("%s: New succeeded", name)
		}
	}
	if _, err := os.Stat("/nonexistent/htpasswd"); err == nil {
		t.Error("New created the missing htpasswd file")
	}
}

func TestMain(m *testing.M) {
	// distribution logs every request through logrus; keep test output to
	// the failures.
	registry.RouteDistributionLogs(slog.New(slog.DiscardHandler))
	os.Exit(m.Run())
}
