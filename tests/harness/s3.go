package harness

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// StartS3 runs versitygw (an S3 server over a directory) with one bucket
// and returns a distribution configuration file using it: the shared
// object storage of registry replicas in tests.
func StartS3(t testing.TB) string {
	t.Helper()
	bin := Bin(t, "versitygw")
	dir := TempDir(t, "s3")
	if err := os.MkdirAll(filepath.Join(dir, "data", "hermes"), 0o755); err != nil { // the bucket
		t.Fatal(err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", FreePort(t))
	p := Start(t, "versitygw", dir, bin, []string{"--port", addr, "posix", filepath.Join(dir, "data")},
		"ROOT_ACCESS_KEY=hermes", "ROOT_SECRET_KEY=hermes-secret")
	WaitFor(t, p, 15*time.Second, "versitygw", HTTPReady("http://"+addr+"/"))
	conf := filepath.Join(dir, "registry.yml")
	if err := os.WriteFile(conf, []byte(fmt.Sprintf(`version: 0.1
storage:
  s3:
    accesskey: hermes
    secretkey: hermes-secret
    region: us-east-1
    regionendpoint: http://%s
    bucket: hermes
    forcepathstyle: true
    secure: false
  redirect:
    disable: true
`, addr)), 0o644); err != nil {
		t.Fatal(err)
	}
	return conf
}
