package harness

import (
	"bufio"
	"net/http"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// Request is one line of distribution's access log.
type Request struct {
	Method, Path string
	Status       int
	Bytes        int64
	Range        bool   // a 206: part of a blob
	UserAgent    string // the client's
}

var accessLine = regexp.MustCompile(`"(GET|HEAD|PUT|POST|PATCH|DELETE) (\S+) HTTP/[0-9.]+" (\d{3}) (\d+|-) "[^"]*" "([^"]*)"`)

// Requests parses the registry's access log from byte offset from on
// (len(Output()) before an action gives what the action caused).
func (r *Registry) Requests(from int) []Request {
	out := r.Output()
	if from > len(out) {
		from = len(out)
	}
	var reqs []Request
	sc := bufio.NewScanner(strings.NewReader(out[from:]))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		m := accessLine.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		st, _ := strconv.Atoi(m[3])
		b, _ := strconv.ParseInt(m[4], 10, 64)
		reqs = append(reqs, Request{Method: m[1], Path: m[2], Status: st, Bytes: b, Range: st == http.StatusPartialContent, UserAgent: m[5]})
	}
	return reqs
}

// BlobGets sums the GETs of blob digest (sha256:…) in reqs: bytes and
// requests answered in part (206) and whole (200).
func BlobGets(reqs []Request, digest string) (ranged, whole int64, rangeReqs, wholeReqs int) {
	for _, r := range reqs {
		if r.Method != http.MethodGet || !strings.HasSuffix(r.Path, "/blobs/"+digest) {
			continue
		}
		if r.Range {
			ranged += r.Bytes
			rangeReqs++
		} else if r.Status == http.StatusOK {
			whole += r.Bytes
			wholeReqs++
		}
	}
	return
}

// FuseMounts lists the FUSE mount points below dir.
func FuseMounts(t testing.TB, dir string) []string {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		// mount ID, parent, major:minor, root, mount point, options,
		// optional fields..., "-", fs type, source, super options
		for i := 6; i < len(f)-1; i++ {
			if f[i] == "-" {
				if strings.HasPrefix(f[i+1], "fuse") && strings.HasPrefix(f[4], dir+"/") {
					out = append(out, f[4])
				}
				break
			}
		}
	}
	return out
}
