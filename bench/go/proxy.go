package main

import (
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/woodpecker-s3-logs/interop/s3op"
)

// s3Counter is a reverse proxy on 127.0.0.1 in front of the S3 server that counts every
// request the addon makes, per object key and per operation, and keeps the size of each
// stored object (from the upload requests), so that requests per step and bytes at rest
// can be measured without trusting the addon's own figures.
//
// It forwards the request untouched, Host header included, so SigV4 signatures made for
// the proxy's address still verify at the server (SeaweedFS checks the signed Host).
//
// With a fault schedule in faults, it also breaks requests on that schedule (faults.go).
type s3Counter struct {
	bucket string
	srv    *http.Server
	URL    string
	faults atomic.Pointer[faultSchedule]

	mu       sync.Mutex
	perKey   map[string]int
	ops      map[string]int
	sizes    map[string]int64 // stored object sizes by key
	parts    map[string]int64 // multipart upload id -> bytes uploaded so far
	failures map[string]int   // "<op> <status>" of answers >= 400 (expected 404s and retries)
}

func startS3Counter(backend, bucket string) (*s3Counter, error) {
	target, err := url.Parse(backend)
	if err != nil {
		return nil, fmt.Errorf("S3 endpoint %q: %w", backend, err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("listen for the S3 counting proxy: %w", err)
	}
	c := &s3Counter{
		bucket: bucket, URL: "http://" + ln.Addr().String(),
		perKey: map[string]int{}, ops: map[string]int{}, failures: map[string]int{}, sizes: map[string]int64{}, parts: map[string]int64{},
	}
	proxy := httputil.NewSingleHostReverseProxy(target)
	proxy.ModifyResponse = func(resp *http.Response) error {
		c.record(resp.Request, resp.StatusCode)
		return nil
	}
	proxy.ErrorHandler = func(w http.ResponseWriter, r *http.Request, err error) {
		c.record(r, http.StatusBadGateway)
		http.Error(w, err.Error(), http.StatusBadGateway)
	}
	c.srv = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if f := c.faults.Load(); f != nil {
			if kind := f.next(r); kind != faultNone {
				f.inject(kind, proxy, w, r)
				return
			}
		}
		proxy.ServeHTTP(w, r)
	})}
	go func() { _ = c.srv.Serve(ln) }()
	return c, nil
}

func (c *s3Counter) Close() error {
	return c.srv.Close()
}

// bodySize is the payload size of an upload: the decoded length when the SDK streams with
// aws-chunked encoding, else Content-Length.
func bodySize(r *http.Request) int64 {
	if v := r.Header.Get("X-Amz-Decoded-Content-Length"); v != "" {
		if n, err := strconv.ParseInt(v, 10, 64); err == nil {
			return n
		}
	}
	return r.ContentLength
}

func (c *s3Counter) record(r *http.Request, status int) {
	path := strings.TrimPrefix(r.URL.Path, "/")
	key := strings.TrimPrefix(strings.TrimPrefix(path, c.bucket), "/")
	name := s3op.Operation(r)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.ops[name]++
	if status >= 400 {
		c.failures[fmt.Sprintf("%s %d", name, status)]++
	}
	if key != "" {
		c.perKey[key]++
	}
	if status >= 300 {
		return
	}
	q := r.URL.Query()
	switch name {
	case "PutObject":
		c.sizes[key] = bodySize(r)
	case "UploadPart":
		c.parts[q.Get("uploadId")] += bodySize(r)
	case "CompleteMultipartUpload":
		c.sizes[key] = c.parts[q.Get("uploadId")]
		delete(c.parts, q.Get("uploadId"))
	case "DeleteObject":
		delete(c.sizes, key)
	}
}

// s3Snapshot is what the proxy saw up to a point.
type s3Snapshot struct {
	PerKey   map[string]int `json:"-"`
	Ops      map[string]int `json:"ops"`
	Bytes    int64          `json:"bytes_at_rest"`
	Objects  int            `json:"objects"`
	Failures map[string]int `json:"failed_requests"`
}

func (c *s3Counter) snapshot() s3Snapshot {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := s3Snapshot{PerKey: map[string]int{}, Ops: map[string]int{}, Failures: map[string]int{}, Objects: len(c.sizes)}
	for k, v := range c.failures {
		s.Failures[k] = v
	}
	for k, v := range c.perKey {
		s.PerKey[k] = v
	}
	for k, v := range c.ops {
		s.Ops[k] = v
	}
	for _, v := range c.sizes {
		s.Bytes += v
	}
	return s
}
