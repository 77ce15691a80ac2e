package snapshotter_test

import (
	"net/http"
	"strings"
	"testing"

	"oras.land/oras-go/v2/registry/remote/auth"
)

// TestPrivateOrigin: the origin requires a login. With it in the node's
// docker config.json ([hermes] docker_config), the snapshotter reads layer
// spans with it and the image starts lazily. Without it, the start still
// succeeds with the right content (containerd pulls with the Pod's login),
// and the snapshotter's log says why the layers were not mounted lazily.
func TestPrivateOrigin(t *testing.T) {
	const user, password = "node", "s3cret"
	for _, tc := range []struct {
		name            string
		nodeCredentials bool
	}{
		{"NodeCredentials", true},
		{"NoNodeCredentials", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := startNode(t, nodeOptions{user: user, password: password, nodeCredentials: tc.nodeCredentials})
			im := pushImage(t, n, "private", lazySpec(71))
			p := buildIndexAs(t, n.cache.Host, im, everyLayer(),
				auth.StaticCredential(n.origin.Host, auth.Credential{Username: user, Password: password}))
			indexed := indexedLayers(p)
			from := len(n.origin.Output())
			img, took := pull(t, n, im.ref, snName)
			args, want := sumCommand(t, im, append([]string{"data/hello.txt", "data/small.bin"}, largestFiles(im, "data/random/", 2)...)...)
			if out := run(t, n, img, snName, "private", args...); out != want {
				t.Fatalf("container printed\n%s\nwant\n%s", out, want)
			}
			reqs := accessLog(n.origin, from)
			unauthorized := 0
			for _, r := range reqs {
				if r.Status == http.StatusUnauthorized && strings.Contains(r.Path, "/blobs/") {
					unauthorized++
				}
			}
			mounts := len(fuseMounts(t, n.sn.Root))
			t.Logf("pull took %s; %d FUSE mounts; %d blob requests refused", took, mounts, unauthorized)
			if tc.nodeCredentials {
				if mounts != len(indexed) {
					t.Errorf("%d FUSE mounts, want %d", mounts, len(indexed))
				}
				checkOriginLazy(t, reqs, im, indexed, p.Index.Digest)
				return
			}
			if mounts != 0 {
				t.Errorf("%d FUSE mounts without a login for the origin", mounts)
			}
			if !strings.Contains(n.sn.Output(), "401") && !strings.Contains(strings.ToLower(n.sn.Output()), "unauthorized") {
				t.Errorf("the snapshotter's log does not say the origin refused it:\n%s", n.sn.Output())
			}
		})
	}
}
