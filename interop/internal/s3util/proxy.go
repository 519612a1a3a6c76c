package s3util

import (
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"sync"

	"github.com/woodpecker-s3-logs/interop/s3op"
)

// Proxy is an HTTP reverse proxy on 127.0.0.1 in front of an S3 server. It counts the
// requests that reach it by operation, and it can be cut: Down closes the listener and
// every open connection, so the addon meets "connection refused" exactly as with a stopped
// server, without disturbing the server other tests share; Up listens on the same address
// again.
//
// Requests are forwarded with their Host header untouched, so SigV4 signatures made for
// the proxy's address still verify at the server.
type Proxy struct {
	URL     string
	addr    string
	handler http.Handler

	mu     sync.Mutex
	srv    *http.Server
	counts map[string]int
}

// StartProxy starts a proxy in front of backend (an http:// URL).
func StartProxy(backend string) (*Proxy, error) {
	target, err := url.Parse(backend)
	if err != nil {
		return nil, fmt.Errorf("S3 endpoint %q: %w", backend, err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("listen for the S3 proxy: %w", err)
	}
	p := &Proxy{addr: ln.Addr().String(), counts: map[string]int{}}
	p.URL = "http://" + p.addr
	rp := httputil.NewSingleHostReverseProxy(target)
	p.handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.mu.Lock()
		p.counts[s3op.Operation(r)]++
		p.mu.Unlock()
		rp.ServeHTTP(w, r)
	})
	p.serve(ln)
	return p, nil
}

func (p *Proxy) serve(ln net.Listener) {
	srv := &http.Server{Handler: p.handler}
	p.mu.Lock()
	p.srv = srv
	p.mu.Unlock()
	go func() { _ = srv.Serve(ln) }()
}

// Down refuses every connection from now on and cuts the open ones.
func (p *Proxy) Down() {
	p.mu.Lock()
	srv := p.srv
	p.srv = nil
	p.mu.Unlock()
	if srv != nil {
		_ = srv.Close()
	}
}

// Up serves again on the same address.
func (p *Proxy) Up() error {
	ln, err := net.Listen("tcp", p.addr)
	if err != nil {
		return fmt.Errorf("listen again on %s after the outage: %w", p.addr, err)
	}
	p.serve(ln)
	return nil
}

// Close stops the proxy for good.
func (p *Proxy) Close() { p.Down() }

// Counts returns the requests served so far by operation name.
func (p *Proxy) Counts() map[string]int {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make(map[string]int, len(p.counts))
	for k, v := range p.counts {
		out[k] = v
	}
	return out
}

// Reset forgets the counts.
func (p *Proxy) Reset() {
	p.mu.Lock()
	p.counts = map[string]int{}
	p.mu.Unlock()
}
