package harness

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"sync"
	"testing"
	"time"
)

// Proxy is a reverse proxy in front of a real registry that a test makes
// misbehave on purpose: answer the next requests with an error status, or
// send response bodies slowly. It runs in the test process on loopback.
type Proxy struct {
	Host string // 127.0.0.1:PORT, as used in image references
	URL  string

	srv *http.Server

	mu       sync.Mutex
	faults   []fault
	rate     int64 // body bytes per second; 0: unlimited
	requests []ProxyRequest
}

type fault struct {
	status int
	left   int
	match  func(*http.Request) bool
}

// ProxyRequest is one request the proxy saw and what it answered.
type ProxyRequest struct {
	Method, Path string
	Status       int
	Injected     bool // answered by a fault, not the registry
}

// StartProxy starts a Proxy for the registry at target (http://host:port).
func StartProxy(t testing.TB, target string) *Proxy {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &Proxy{Host: l.Addr().String(), URL: "http://" + l.Addr().String()}
	rp := httputil.NewSingleHostReverseProxy(u)
	rp.FlushInterval = -1
	p.srv = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if status, ok := p.fault(r); ok {
			p.record(r, status, true)
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(status)
			fmt.Fprintf(w, `{"errors":[{"code":"UNAVAILABLE","message":"injected by the test proxy: %d"}]}`, status)
			return
		}
		rec := &statusRecorder{ResponseWriter: w, p: p}
		rp.ServeHTTP(rec, r)
		p.record(r, rec.status, false)
	}), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = p.srv.Serve(l) }()
	t.Cleanup(func() { _ = p.srv.Close() })
	return p
}

// FailNext answers the next n requests that match (nil: every request)
// with status.
func (p *Proxy) FailNext(status, n int, match func(*http.Request) bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.faults = append(p.faults, fault{status: status, left: n, match: match})
}

// Throttle sends response bodies at about bytesPerSecond (0: full speed).
func (p *Proxy) Throttle(bytesPerSecond int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.rate = bytesPerSecond
}

// Requests returns what the proxy has seen so far.
func (p *Proxy) Requests() []ProxyRequest {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]ProxyRequest(nil), p.requests...)
}

func (p *Proxy) fault(r *http.Request) (int, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for i := range p.faults {
		f := &p.faults[i]
		if f.left > 0 && (f.match == nil || f.match(r)) {
			f.left--
			return f.status, true
		}
	}
	return 0, false
}

func (p *Proxy) record(r *http.Request, status int, injected bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.requests = append(p.requests, ProxyRequest{Method: r.Method, Path: r.URL.Path, Status: status, Injected: injected})
}

func (p *Proxy) bytesPerSecond() int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.rate
}

// statusRecorder remembers the status and paces the body when throttled.
type statusRecorder struct {
	http.ResponseWriter
	p      *Proxy
	status int
}

func (s *statusRecorder) WriteHeader(code int) {
	s.status = code
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusRecorder) Write(b []byte) (int, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	rate := s.p.bytesPerSecond()
	if rate <= 0 {
		return s.ResponseWriter.Write(b)
	}
	written := 0
	for len(b) > 0 {
		n := min(len(b), 32<<10)
		m, err := s.ResponseWriter.Write(b[:n])
		written += m
		if err != nil {
			return written, err
		}
		if f, ok := s.ResponseWriter.(http.Flusher); ok {
			f.Flush()
		}
		time.Sleep(time.Duration(float64(n) / float64(rate) * float64(time.Second)))
		b = b[n:]
	}
	return written, nil
}

var _ io.Writer = (*statusRecorder)(nil)
