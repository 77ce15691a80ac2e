package builder

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"syscall"
	"testing"

	"github.com/awslabs/soci-snapshotter/soci"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/registry/remote/auth"
	"oras.land/oras-go/v2/registry/remote/errcode"

	"github.com/hermes-oci/hermes/registry/artifacts"
)

func TestLayerPlan(t *testing.T) {
	s := DefaultSettings()
	s.MinLayerSize = 100
	for _, tc := range []struct {
		mediaType string
		size      int64
		algo      string
		skip      string
	}{
		{ocispec.MediaTypeImageLayerGzip, 100, "gzip", ""},
		{"application/vnd.docker.image.rootfs.diff.tar.gzip", 1000, "gzip", ""},
		{ocispec.MediaTypeImageLayer, 1000, "uncompressed", ""},
		{"application/vnd.docker.image.rootfs.diff.tar", 1000, "unknown", ""},
		{ocispec.MediaTypeImageLayerGzip, 99, "", "less than min-layer-size"},
		{ocispec.MediaTypeImageLayerZstd, 1000, "", "compressed with zstd"},
		{"application/vnd.cncf.helm.chart.content.v1.tar+gzip", 1000, "", "is not a layer"},
		{ocispec.MediaTypeImageLayerGzip + "+encrypted", 1000, "", "encrypted"},
	} {
		algo, err := layerPlan(ocispec.Descriptor{MediaType: tc.mediaType, Size: tc.size}, s)
		if tc.skip == "" {
			if err != nil || algo != tc.algo {
				t.Errorf("%s/%d: got %q, %v; want %q", tc.mediaType, tc.size, algo, err, tc.algo)
			}
			continue
		}
		if !errors.Is(err, errSkip) || !strings.Contains(err.Error(), tc.skip) {
			t.Errorf("%s/%d: got %q, %v; want a skip with %q", tc.mediaType, tc.size, algo, err, tc.skip)
		}
	}
}

func TestSettings(t *testing.T) {
	s := DefaultSettings()
	if err := s.Validate(); err != nil {
		t.Fatal(err)
	}
	if got := s.Annotation(); got != "min-layer-size=10485760,span-size=4194304,align-files-from=1048576,optimizations=" {
		t.Errorf("annotation %q", got)
	}
	if s := s.WithSpanSize(1 << 20); s.AlignFilesFrom != 256<<10 || s.SpanSize != 1<<20 {
		t.Errorf("span 1 MiB: files aligned from %d, want a quarter span", s.AlignFilesFrom)
	}
	off := s
	off.AlignFilesFrom = 0
	if off.WithSpanSize(1<<20).AlignFilesFrom != 0 || strings.Contains(off.Annotation(), "align") {
		t.Errorf("alignment off: %d, annotation %q", off.AlignFilesFrom, off.Annotation())
	}
	zero := s
	zero.MinLayerSize = 0 // every layer: zero is a value, not "default"
	if err := zero.Validate(); err != nil || !strings.HasPrefix(zero.Annotation(), "min-layer-size=0,") {
		t.Errorf("min layer size 0: %v, %q", err, zero.Annotation())
	}
	s.XAttrOptimization = true
	if got := s.Annotation(); !strings.HasSuffix(got, "optimizations=xattr") {
		t.Errorf("annotation %q", got)
	}
	for _, bad := range []Settings{{MinLayerSize: -1, SpanSize: 1 << 20, BuildToolIdentifier: "x"}, {SpanSize: 100, BuildToolIdentifier: "x"}, {}, {SpanSize: 1 << 20}} {
		if err := bad.Validate(); !errors.Is(err, ErrInvalidRequest) {
			t.Errorf("%+v: got %v, want ErrInvalidRequest", bad, err)
		}
	}
}

func TestParsePlatforms(t *testing.T) {
	ps, all, err := ParsePlatforms("linux/amd64, linux/arm64/v8")
	if err != nil || all || len(ps) != 2 || ps[1].Architecture != "arm64" || ps[1].Variant != "v8" {
		t.Fatalf("got %v %v %v", ps, all, err)
	}
	if _, all, err := ParsePlatforms("all"); err != nil || !all {
		t.Fatalf("all: %v %v", all, err)
	}
	if _, _, err := ParsePlatforms("linux/amd64/v1/x"); !errors.Is(err, ErrInvalidRequest) {
		t.Fatalf("bad platform: %v", err)
	}
}

func TestVerifyingReader(t *testing.T) {
	data := bytes.Repeat([]byte("hermes"), 1000)
	desc := ocispec.Descriptor{Digest: digest.FromBytes(data), Size: int64(len(data))}
	read := func(r io.Reader, d ocispec.Descriptor) error {
		v := newVerifyingReader(r, d, nil)
		if _, err := io.Copy(io.Discard, v); err != nil {
			return err
		}
		return v.verify()
	}
	if err := read(bytes.NewReader(data), desc); err != nil {
		t.Fatalf("good blob: %v", err)
	}
	bad := bytes.Clone(data)
	bad[10] ^= 1
	if err := read(bytes.NewReader(bad), desc); !errors.Is(err, ErrDigestMismatch) {
		t.Errorf("corrupt blob: %v", err)
	}
	if err := read(bytes.NewReader(append(data, 'x')), desc); !errors.Is(err, ErrDigestMismatch) {
		t.Errorf("long blob: %v", err)
	}
	if err := read(bytes.NewReader(data[:100]), desc); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("short blob: %v", err)
	}
}

func TestClassify(t *testing.T) {
	ctx := context.Background()
	resp := func(code int) error {
		return &errcode.ErrorResponse{Method: "GET", URL: &url.URL{Path: "/v2/"}, StatusCode: code}
	}
	for _, tc := range []struct {
		s    side
		err  error
		want error
	}{
		{origin, resp(http.StatusUnauthorized), ErrUnauthorized},
		{origin, resp(http.StatusForbidden), ErrUnauthorized},
		{origin, resp(http.StatusNotFound), ErrNotFound},
		{origin, resp(http.StatusBadGateway), ErrUnavailable},
		{cacheWrite, resp(http.StatusUnauthorized), ErrCacheWriteRefused},
		{cacheWrite, resp(http.StatusMethodNotAllowed), ErrCacheWriteRefused},
		{origin, fmt.Errorf("x: %w", context.Canceled), ErrCancelled},
	} {
		if got := classify(ctx, tc.s, tc.err); !errors.Is(got, tc.want) {
			t.Errorf("classify(%v, %v) = %v, want %v", tc.s, tc.err, got, tc.want)
		}
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if got := classify(cctx, origin, io.ErrUnexpectedEOF); !errors.Is(got, ErrCancelled) {
		t.Errorf("cancelled context: %v", got)
	}
}

func TestSecretCredentials(t *testing.T) {
	ctx := context.Background()
	cfg := fmt.Sprintf(`{"auths":{"https://index.docker.io/v1/":{"auth":%q},"127.0.0.1:5000":{"username":"u","password":"p"}}}`,
		base64.StdEncoding.EncodeToString([]byte("hub:secret")))
	secret, _ := json.Marshal(map[string]any{
		"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/dockerconfigjson",
		"data": map[string][]byte{".dockerconfigjson": []byte(cfg)},
	})
	for name, data := range map[string][]byte{"secret": secret, "config": []byte(cfg)} {
		creds, err := SecretCredentials(data)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		for host, want := range map[string]auth.Credential{
			"registry-1.docker.io": {Username: "hub", Password: "secret"},
			"docker.io":            {Username: "hub", Password: "secret"},
			"127.0.0.1:5000":       {Username: "u", Password: "p"},
			"ghcr.io":              auth.EmptyCredential,
		} {
			got, err := creds(ctx, host)
			if err != nil || got != want {
				t.Errorf("%s: %s: got %+v, %v; want %+v", name, host, got, err, want)
			}
		}
	}
	if _, err := SecretCredentials([]byte(`{"kind":"Secret","type":"Opaque","data":{}}`)); !errors.Is(err, ErrInvalidRequest) {
		t.Errorf("opaque secret: %v", err)
	}
}

// TestArtifactNames: the cgo-free registry/artifacts spells soci's names
// itself; they must stay soci's.
func TestArtifactNames(t *testing.T) {
	if artifacts.SOCIIndexV1 != soci.SociIndexArtifactTypeV1 || artifacts.SOCIIndexV2 != soci.SociIndexArtifactTypeV2 ||
		artifacts.AnnotationBuildTool != soci.IndexAnnotationBuildToolIdentifier {
		t.Fatal("registry/artifacts and soci disagree on artifact types or annotations")
	}
}

func TestRetryable(t *testing.T) {
	ctx := context.Background()
	resp := func(code int) error {
		return &errcode.ErrorResponse{Method: http.MethodGet, URL: &url.URL{Host: "r"}, StatusCode: code}
	}
	coded := func(status int, code string) error {
		return &errcode.ErrorResponse{Method: http.MethodPut, URL: &url.URL{Host: "r"}, StatusCode: status, Errors: errcode.Errors{{Code: code}}}
	}
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	for name, c := range map[string]struct {
		err  error
		want bool
	}{
		"503":                {classify(ctx, origin, resp(http.StatusServiceUnavailable)), true},
		"500 from cache":     {classify(ctx, cacheWrite, resp(http.StatusInternalServerError)), true},
		"429":                {classify(ctx, origin, resp(http.StatusTooManyRequests)), true},
		"connection reset":   {classify(ctx, origin, &net.OpError{Op: "read", Err: syscall.ECONNRESET}), true},
		"timeout":            {classify(ctx, origin, &net.DNSError{IsTimeout: true}), true},
		"cancelled":          {classify(cancelled, origin, context.Canceled), true},
		"deadline":           {classify(ctx, origin, context.DeadlineExceeded), true},
		"cut body":           {fetchError(ctx, io.ErrUnexpectedEOF), true},
		"disk full":          {fmt.Errorf("temp file: %w", syscall.ENOSPC), true},
		"401":                {classify(ctx, origin, resp(http.StatusUnauthorized)), false},
		"403":                {classify(ctx, origin, resp(http.StatusForbidden)), false},
		"404":                {classify(ctx, origin, resp(http.StatusNotFound)), false},
		"no credential":      {classify(ctx, origin, auth.ErrBasicCredentialNotFound), false},
		"cache refuses 401":  {classify(ctx, cacheWrite, resp(http.StatusUnauthorized)), false},
		"cache refuses 400":  {classify(ctx, cacheWrite, resp(http.StatusBadRequest)), false},
		"blob collected":     {classify(ctx, cacheWrite, coded(http.StatusBadRequest, "MANIFEST_BLOB_UNKNOWN")), true},
		"upload collected":   {classify(ctx, cacheWrite, coded(http.StatusNotFound, "BLOB_UPLOAD_UNKNOWN")), true},
		"unsupported media":  {fmt.Errorf("%w: helm chart", ErrUnsupportedMediaType), false},
		"invalid request":    {fmt.Errorf("%w: bad reference", ErrInvalidRequest), false},
		"corrupt at origin":  {fmt.Errorf("blob: %w", ErrDigestMismatch), false},
		"not a tar":          {fmt.Errorf("%w: header", ErrInvalidLayer), false},
		"nil is not a retry": {nil, false},
	} {
		if got := Retryable(c.err); got != c.want {
			t.Errorf("%s (%v): Retryable = %v, want %v", name, c.err, got, c.want)
		}
	}
}
