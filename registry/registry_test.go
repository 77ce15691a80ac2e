package registry_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"

	"github.com/distribution/distribution/v3/configuration"
	_ "github.com/distribution/distribution/v3/registry/storage/driver/inmemory"
	"github.com/go-logr/logr"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"oras.land/oras-go/v2/registry/remote"

	"github.com/hermes-oci/hermes/registry"
	"github.com/hermes-oci/hermes/registry/artifacts"
	"github.com/hermes-oci/hermes/registry/cli"
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
	return newServerWith(t, registry.Config{Auth: auth})
}

// newServerWith is newServer with more of the Config; metrics are filled
// in, and in-memory storage unless cfg names one.
func newServerWith(t testing.TB, cfg registry.Config) *server {
	t.Helper()
	m := prometheus.NewRegistry()
	if cfg.Storage == nil {
		cfg.Storage = configuration.Storage{"inmemory": {}}
	}
	cfg.Metrics = m
	reg, err := registry.New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = reg.Close() })
	s := &server{Server: httptest.NewServer(reg), reg: reg, metrics: m}
	t.Cleanup(s.Close)
	return s
}

// anonymousWrites is the auth of test servers that take writes from anyone:
// a registry never does unless told to, so tests opt out explicitly.
var anonymousWrites = registry.AuthConfig{AnonymousWrites: true}

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
	s := newServer(t, anonymousWrites)
	const repo, soci = "docker.io/library/nginx", artifacts.SOCIIndexV1
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
	s := newServer(t, anonymousWrites)
	const repo, n = "ghcr.io/org/app", 50
	subject := digest.FromString("subject")
	bodies := make([][]byte, n)
	for i := range n {
		bodies[i] = s.artifact(t, repo, subject, artifacts.SOCIIndexV1, fmt.Sprint(i))
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
	s := newServer(t, anonymousWrites)
	subject := digest.FromString("nginx manifest")
	a := s.artifact(t, "docker.io/library/nginx", subject, artifacts.SOCIIndexV1, "a")
	if resp := s.putManifest(t, "docker.io/library/nginx", "v1", a); resp.StatusCode != http.StatusCreated {
		t.Fatalf("PUT: %s", resp.Status)
	}
	da := digest.FromBytes(a).String()
	for _, path := range []string{
		"/v2/docker.io/library/nginx/manifests/v1",
		"/v2/index.docker.io/library/nginx/manifests/v1",
		"/v2/library/nginx/manifests/" + da + "?ns=docker.io",
		"/v2/nginx/manifests/" + da + "?ns=docker.io",
		"/v2/library/nginx/manifests/" + da + "?ns=registry-1.docker.io",
		"/v2/library/nginx/manifests/" + da + "?ns=index.docker.io",
	} {
		resp := s.do(t, http.MethodGet, path, nil, "Accept", ocispec.MediaTypeImageManifest)
		if b := readAll(t, resp); resp.StatusCode != http.StatusOK || !bytes.Equal(b, a) {
			t.Errorf("GET %s: %s %s", path, resp.Status, b)
		}
	}
	// A mirror never resolves a tag here: the origin's may be newer.
	for _, path := range []string{"/v2/library/nginx/manifests/v1?ns=docker.io", "/v2/nginx/manifests/v1?ns=index.docker.io"} {
		for _, method := range []string{http.MethodGet, http.MethodHead} {
			resp := s.do(t, method, path, nil, "Accept", ocispec.MediaTypeImageManifest)
			if method == http.MethodHead {
				if resp.StatusCode != http.StatusNotFound {
					t.Errorf("HEAD %s: %s, want 404", path, resp.Status)
				}
			} else if got := ociError(t, resp, http.StatusNotFound); got != "MANIFEST_UNKNOWN" {
				t.Errorf("GET %s: %s, want MANIFEST_UNKNOWN", path, got)
			}
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
	s := newServer(t, anonymousWrites)
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
	mem := configuration.Storage{"inmemory": {}}
	token := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(token, []byte("t"), 0o600); err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]struct {
		cfg  registry.Config
		want string
	}{
		"no storage":              {registry.Config{Auth: anonymousWrites}, "no storage driver"},
		"unknown driver":          {registry.Config{Storage: configuration.Storage{"nosuchdriver": {}}, Auth: anonymousWrites}, "nosuchdriver"},
		"no write credential":     {registry.Config{Storage: mem}, "set HtpasswdFile or TokenFile, or AnonymousWrites"},
		"anonymous with a token":  {registry.Config{Storage: mem, Auth: registry.AuthConfig{TokenFile: token, AnonymousWrites: true}}, "contradict"},
		"read auth without creds": {registry.Config{Storage: mem, Auth: registry.AuthConfig{RequireRead: true}}, "reads require auth"},
		"missing htpasswd":        {registry.Config{Storage: mem, Auth: registry.AuthConfig{HtpasswdFile: "/nonexistent/htpasswd"}}, "htpasswd file"},
		"missing token":           {registry.Config{Storage: mem, Auth: registry.AuthConfig{TokenFile: "/nonexistent/token"}}, "token file"},
	} {
		_, err := registry.New(ctx, c.cfg)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: New = %v, want an error about %q", name, err, c.want)
		}
	}
	if _, err := registry.New(ctx, registry.Config{Storage: mem}); !errors.Is(err, registry.ErrNoWriteCredential) || !errors.Is(err, registry.ErrAuthConfig) {
		t.Errorf("no write credential: %v, want ErrNoWriteCredential and ErrAuthConfig", err)
	}
	if _, err := os.Stat("/nonexistent/htpasswd"); err == nil {
		t.Error("New created the missing htpasswd file")
	}
}

// TestAnonymousWritesWarn checks that a registry open to anonymous writes
// says so in its log, at warning level.
func TestAnonymousWritesWarn(t *testing.T) {
	var buf bytes.Buffer
	ctx := logr.NewContext(context.Background(), logr.FromSlogHandler(slog.NewTextHandler(&buf, nil)))
	reg, err := registry.New(ctx, registry.Config{Storage: configuration.Storage{"inmemory": {}}, Auth: anonymousWrites})
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Close()
	if !strings.Contains(buf.String(), "level=WARN") || !strings.Contains(buf.String(), "anonymous writes are allowed") {
		t.Fatalf("log = %q, want a warning about anonymous writes", buf.String())
	}
}

func TestMain(m *testing.M) {
	// distribution logs every request through logrus; keep test output to
	// the failures.
	cli.RouteLibraryLogs(slog.DiscardHandler)
	os.Exit(m.Run())
}

// imageManifest is an image manifest whose config and layer are nowhere:
// the cache's copy of an image that lives upstream.
func imageManifest(t testing.TB, mediaType, note string, extra map[string]any) []byte {
	t.Helper()
	configType, layerType := ocispec.MediaTypeImageConfig, ocispec.MediaTypeImageLayerGzip
	if mediaType == "application/vnd.docker.distribution.manifest.v2+json" {
		configType, layerType = "application/vnd.docker.container.image.v1+json", "application/vnd.docker.image.rootfs.diff.tar.gzip"
	}
	m := map[string]any{
		"schemaVersion": 2,
		"mediaType":     mediaType,
		"config":        ocispec.Descriptor{MediaType: configType, Digest: digest.FromString("config " + note), Size: 100},
		"layers":        []ocispec.Descriptor{{MediaType: layerType, Digest: digest.FromString("layer " + note), Size: 1000}},
	}
	for k, v := range extra {
		m[k] = v
	}
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func imageIndex(t testing.TB, mediaType string, children ...[]byte) []byte {
	t.Helper()
	childType := ocispec.MediaTypeImageManifest
	if mediaType == "application/vnd.docker.distribution.manifest.list.v2+json" {
		childType = "application/vnd.docker.distribution.manifest.v2+json"
	}
	var descs []ocispec.Descriptor
	for i, c := range children {
		descs = append(descs, ocispec.Descriptor{MediaType: childType, Digest: digest.FromBytes(c), Size: int64(len(c)),
			Platform: &ocispec.Platform{OS: "linux", Architecture: []string{"amd64", "arm64"}[i%2]}})
	}
	b, err := json.Marshal(map[string]any{"schemaVersion": 2, "mediaType": mediaType, "manifests": descs})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestMirroredImages stores image manifests and indexes without what they
// reference, as the builder does for the images it indexes: they are
// served, whatever is missing is a plain 404, referrers and artifacts are
// still verified, and anonymous writers are refused.
func TestMirroredImages(t *testing.T) {
	s := newAuthServer(t, false)
	const repo = "ghcr.io/org/app"
	const dockerManifest, dockerList = "application/vnd.docker.distribution.manifest.v2+json", "application/vnd.docker.distribution.manifest.list.v2+json"
	put := func(ref, mediaType string, body []byte) *http.Response {
		t.Helper()
		return s.do(t, http.MethodPut, "/v2/"+repo+"/manifests/"+ref, body, "Content-Type", mediaType)
	}
	get := func(path, accept string) (*http.Response, []byte) {
		t.Helper()
		resp := s.do(t, http.MethodGet, path, nil, "Accept", accept)
		return resp, readAll(t, resp)
	}

	amd := imageManifest(t, ocispec.MediaTypeImageManifest, "amd64", nil)
	arm := imageManifest(t, ocispec.MediaTypeImageManifest, "arm64", nil) // never stored
	index := imageIndex(t, ocispec.MediaTypeImageIndex, amd, arm)
	docker := imageManifest(t, dockerManifest, "docker", nil)
	list := imageIndex(t, dockerList, docker, imageManifest(t, dockerManifest, "docker arm64", nil))
	for _, c := range []struct {
		ref, mediaType string
		body           []byte
	}{
		{"v1", ocispec.MediaTypeImageManifest, amd},
		{digest.FromBytes(index).String(), ocispec.MediaTypeImageIndex, index},
		{"docker", dockerManifest, docker},
		{digest.FromBytes(list).String(), dockerList, list},
	} {
		// Anonymous: refused, and nothing stored.
		resp := s.do(t, http.MethodPut, "/v2/"+repo+"/manifests/"+c.ref, c.body, "Content-Type", c.mediaType, "Authorization", "Basic eDp5")
		if ociError(t, resp, http.StatusUnauthorized) != "UNAUTHORIZED" {
			t.Fatalf("anonymous PUT %s", c.ref)
		}
		if resp, _ := get("/v2/"+repo+"/manifests/"+digest.FromBytes(c.body).String(), c.mediaType); resp.StatusCode != http.StatusNotFound {
			t.Fatalf("a refused anonymous PUT stored %s: %s", c.ref, resp.Status)
		}
		if resp := put(c.ref, c.mediaType, c.body); resp.StatusCode != http.StatusCreated {
			t.Fatalf("PUT %s (%s) without its references: %s %s", c.ref, c.mediaType, resp.Status, readAll(t, resp))
		}
		resp, b := get("/v2/"+repo+"/manifests/"+c.ref, c.mediaType)
		if resp.StatusCode != http.StatusOK || !bytes.Equal(b, c.body) || resp.Header.Get("Docker-Content-Digest") != digest.FromBytes(c.body).String() {
			t.Fatalf("GET %s: %s %s", c.ref, resp.Status, b)
		}
	}

	// What they reference and the cache lacks: plain 404s.
	for path, code := range map[string]string{
		"/v2/" + repo + "/blobs/" + digest.FromString("layer amd64").String():  "BLOB_UNKNOWN",
		"/v2/" + repo + "/blobs/" + digest.FromString("config amd64").String(): "BLOB_UNKNOWN",
		"/v2/" + repo + "/manifests/" + digest.FromBytes(arm).String():         "MANIFEST_UNKNOWN",
	} {
		resp := s.do(t, http.MethodGet, path, nil, "Accept", ocispec.MediaTypeImageManifest)
		if got := ociError(t, resp, http.StatusNotFound); got != code {
			t.Errorf("GET %s: %s, want %s", path, got, code)
		}
	}
	// As a mirror: by digest served, by tag never.
	if resp, b := get("/v2/org/app/manifests/"+digest.FromBytes(amd).String()+"?ns=ghcr.io", ocispec.MediaTypeImageManifest); resp.StatusCode != http.StatusOK || !bytes.Equal(b, amd) {
		t.Errorf("mirror GET by digest: %s", resp.Status)
	}
	if resp, _ := get("/v2/org/app/manifests/v1?ns=ghcr.io", ocispec.MediaTypeImageManifest); resp.StatusCode != http.StatusNotFound {
		t.Errorf("mirror GET by tag: %s, want 404", resp.Status)
	}

	// Referrers of the stored image, and artifacts, are the cache's own
	// content: their blobs must be here.
	missing := ocispec.Descriptor{MediaType: "application/octet-stream", Digest: digest.FromString("ztoc"), Size: 4}
	referrer := imageManifest(t, ocispec.MediaTypeImageManifest, "referrer", map[string]any{
		"artifactType": artifacts.SOCIIndexV1,
		"layers":       []ocispec.Descriptor{missing},
		"subject":      ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.FromBytes(amd), Size: int64(len(amd))},
	})
	artifact := imageManifest(t, ocispec.MediaTypeImageManifest, "artifact", map[string]any{"artifactType": "application/vnd.hermes.test"})
	for name, body := range map[string][]byte{"referrer": referrer, "artifact": artifact} {
		if got := ociError(t, put(digest.FromBytes(body).String(), ocispec.MediaTypeImageManifest, body), http.StatusBadRequest); got != "MANIFEST_BLOB_UNKNOWN" {
			t.Errorf("%s with missing blobs: %s, want MANIFEST_BLOB_UNKNOWN", name, got)
		}
	}
	if ix, _ := s.referrers(t, "/v2/"+repo+"/referrers/"+digest.FromBytes(amd).String()); len(ix.Manifests) != 0 {
		t.Errorf("a refused referrer is listed: %+v", ix.Manifests)
	}
	good := s.artifact(t, repo, digest.FromBytes(amd), artifacts.SOCIIndexV1, "good")
	if resp := s.putManifest(t, repo, digest.FromBytes(good).String(), good); resp.StatusCode != http.StatusCreated {
		t.Fatalf("PUT referrer with its blobs: %s %s", resp.Status, readAll(t, resp))
	}
	if ix, _ := s.referrers(t, "/v2/"+repo+"/referrers/"+digest.FromBytes(amd).String()); len(ix.Manifests) != 1 || ix.Manifests[0].Digest != digest.FromBytes(good) {
		t.Errorf("referrers of the stored image: %+v", ix.Manifests)
	}
}

// TestReferrersPagination lists more referrers than fit a page: pages are
// bounded, linked with the spec's Link header (keeping the filter, the
// mirror namespace and n), filtered on every page, and oras-go follows them;
// a marker a client tampered with is a clear 400.
func TestReferrersPagination(t *testing.T) {
	const pageSize, soci, other = 3, artifacts.SOCIIndexV1, "application/vnd.hermes.other"
	s := newServerWith(t, registry.Config{Auth: anonymousWrites, ReferrersPageSize: pageSize})
	const repo = "docker.io/library/app"
	subject := digest.FromString("app manifest")
	want := map[string]int{"": 10, soci: 7, other: 3}
	for i := range want[""] {
		at := soci
		if i >= want[soci] {
			at = other
		}
		b := s.artifact(t, repo, subject, at, fmt.Sprint(i))
		if resp := s.putManifest(t, repo, digest.FromBytes(b).String(), b); resp.StatusCode != http.StatusCreated {
			t.Fatalf("PUT: %s", resp.Status)
		}
	}
	link := regexp.MustCompile(`^<(/v2/[^>]+)>; rel="next"$`)
	walk := func(first string, limit int) (seen map[digest.Digest]bool, pages int) {
		t.Helper()
		seen = map[digest.Digest]bool{}
		filtered := strings.Contains(first, "artifactType=")
		for path := first; path != ""; pages++ {
			if pages > want[""] {
				t.Fatalf("%s: pagination does not end", first)
			}
			ix, resp := s.referrers(t, path)
			if len(ix.Manifests) == 0 || len(ix.Manifests) > limit {
				t.Fatalf("GET %s: page of %d, want 1 to %d", path, len(ix.Manifests), limit)
			}
			if got := resp.Header.Get("OCI-Filters-Applied"); (got == "artifactType") != filtered {
				t.Fatalf("GET %s: OCI-Filters-Applied %q", path, got)
			}
			for _, d := range ix.Manifests {
				if seen[d.Digest] {
					t.Fatalf("GET %s: %s listed twice", path, d.Digest)
				}
				seen[d.Digest] = true
			}
			path = ""
			if l := resp.Header.Get("Link"); l != "" {
				m := link.FindStringSubmatch(l)
				if m == nil {
					t.Fatalf("GET %s: Link %q is not <path>; rel=\"next\"", first, l)
				}
				path = m[1]
			}
		}
		return seen, pages
	}
	base := "/v2/" + repo + "/referrers/" + subject.String()
	mirror := "/v2/library/app/referrers/" + subject.String() + "?ns=docker.io"
	for first, c := range map[string]struct {
		artifactType string
		limit        int
	}{
		base: {"", pageSize},
		base + "?artifactType=" + url.QueryEscape(soci):  {soci, pageSize},
		base + "?artifactType=" + soci:                   {soci, pageSize}, // "+" unencoded, as typed
		base + "?artifactType=" + url.QueryEscape(other): {other, pageSize},
		mirror: {"", pageSize},
		mirror + "&artifactType=" + url.QueryEscape(soci): {soci, pageSize},
		base + "?n=2": {"", 2},
		base + "?n=2&artifactType=" + url.QueryEscape(soci): {soci, 2},
		base + "?n=1000": {"", pageSize},
	} {
		seen, pages := walk(first, c.limit)
		if len(seen) != want[c.artifactType] || pages != (want[c.artifactType]+c.limit-1)/c.limit {
			t.Errorf("%s: %d referrers in %d pages, want %d in pages of %d", first, len(seen), pages, want[c.artifactType], c.limit)
		}
	}

	// oras-go, as oras discover and the snapshotter use it, follows the Link.
	r, err := remote.NewRepository(strings.TrimPrefix(s.URL, "http://") + "/" + repo)
	if err != nil {
		t.Fatal(err)
	}
	r.PlainHTTP = true
	for at, n := range want {
		var got, calls int
		if err := r.Referrers(context.Background(), ocispec.Descriptor{Digest: subject}, at, func(refs []ocispec.Descriptor) error {
			got, calls = got+len(refs), calls+1
			return nil
		}); err != nil || got != n || calls != (n+pageSize-1)/pageSize {
			t.Errorf("oras-go Referrers(%q) = %d referrers in %d pages, %v; want %d in pages of %d", at, got, calls, err, n, pageSize)
		}
	}

	// Markers: any digest starts after itself; anything else is a 400.
	if ix, _ := s.referrers(t, base+"?last=sha256:"+strings.Repeat("f", 64)); len(ix.Manifests) != 0 {
		t.Errorf("after the last possible digest: %+v", ix.Manifests)
	}
	for q, code := range map[string]string{
		"?last=garbage":    "DIGEST_INVALID",
		"?last=sha256:zzz": "DIGEST_INVALID",
		"?last=sha256:" + strings.Repeat("a", 10000): "DIGEST_INVALID",
		"?last=..%2F..%2Fetc":                        "DIGEST_INVALID",
		"?n=0":                                       "PAGINATION_NUMBER_INVALID",
		"?n=-3":                                      "PAGINATION_NUMBER_INVALID",
		"?n=lots":                                    "PAGINATION_NUMBER_INVALID",
		"?n=" + strings.Repeat("9", 40):              "PAGINATION_NUMBER_INVALID",
	} {
		resp := s.do(t, http.MethodGet, base+q, nil)
		if got := ociError(t, resp, http.StatusBadRequest); got != code {
			t.Errorf("GET %.80s: %s, want %s", q, got, code)
		}
	}
}
