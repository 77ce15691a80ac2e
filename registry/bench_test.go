package registry_test

import (
	"io"
	"net/http"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/hermes-oci/hermes/registry/artifacts"
)

// BenchmarkReferrersLookup is the in-process cost of a cached Referrers API
// answer over loopback HTTP (tools/bench/registry measures the binary).
func BenchmarkReferrersLookup(b *testing.B) {
	t := b
	s := newServer(t, anonymousWrites)
	const repo = "docker.io/library/nginx"
	subject := digest.FromString("subject")
	body := s.artifact(t, repo, subject, artifacts.SOCIIndexV1, "x")
	s.putManifest(t, repo, digest.FromBytes(body).String(), body)
	url := s.URL + "/v2/" + repo + "/referrers/" + subject.String() + "?artifactType=application/vnd.amazon.soci.index.v1%2Bjson"
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			resp, err := client.Get(url)
			if err != nil {
				b.Error(err)
				return
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	})
}
