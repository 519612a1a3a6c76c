package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/woodpecker-s3-logs/interop/s3op"
)

// faultKind is one way the counting proxy breaks a request (issue 12, "faults on the
// wire"): what an overloaded or failing S3 server, a load balancer or a flaky network does.
type faultKind int

const (
	faultNone faultKind = iota
	// faultSlowDown answers 503 SlowDown without forwarding (S3's throttling answer).
	faultSlowDown
	// faultInternal answers 500 InternalError without forwarding.
	faultInternal
	// faultReset resets the TCP connection (RST) in the middle of a body: half-way through
	// an upload's request body (not forwarded), or half-way through the server's response
	// (the request took effect at the server; the client cannot know).
	faultReset
	// faultTruncated forwards, then sends the response with its full Content-Length but
	// only half of its body, and closes the connection.
	faultTruncated
	// faultWrongLength forwards, then declares a Content-Length the body does not have:
	// half the body's length for a body (the client sees a shorter body, complete as far as
	// HTTP can tell), 64 bytes more for an empty one (a HEAD then reports a wrong object
	// size; other empty answers end early).
	faultWrongLength
	// faultStall holds the request for the schedule's stall time, then forwards it.
	faultStall
)

var faultNames = map[faultKind]string{
	faultSlowDown:    "503 SlowDown",
	faultInternal:    "500 InternalError",
	faultReset:       "reset mid-body",
	faultTruncated:   "truncated body",
	faultWrongLength: "wrong Content-Length",
	faultStall:       "stall",
}

// faultRotation is the order faults take turns in; the stall comes once per schedule.
var faultRotation = []faultKind{faultSlowDown, faultInternal, faultReset, faultTruncated, faultWrongLength, faultStall}

// faultSchedule breaks one request in every `every`, taking the kinds in turn.
type faultSchedule struct {
	every int
	stall time.Duration

	mu       sync.Mutex
	seen     int
	turn     int
	stalled  bool
	injected map[string]int // "<operation>: <fault>" -> count
}

func newFaultSchedule(every int, stall time.Duration) *faultSchedule {
	return &faultSchedule{every: every, stall: stall, injected: map[string]int{}}
}

// next is the fault for the next request, faultNone for most.
func (f *faultSchedule) next(r *http.Request) faultKind {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.seen++
	if f.seen%f.every != 0 {
		return faultNone
	}
	for {
		kind := faultRotation[f.turn%len(faultRotation)]
		f.turn++
		if kind == faultStall {
			if f.stalled {
				continue
			}
			f.stalled = true
		}
		f.injected[s3op.Operation(r)+": "+faultNames[kind]]++
		return kind
	}
}

// report lists the faults injected so far, one "<operation>: <fault> ×n" per kind.
func (f *faultSchedule) report() (total int, lines []string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for k, n := range f.injected {
		total += n
		lines = append(lines, fmt.Sprintf("%s ×%d", k, n))
	}
	sort.Strings(lines)
	return total, lines
}

// inject answers r with the fault kind; forward is the proxy to the real server.
func (f *faultSchedule) inject(kind faultKind, forward *httputil.ReverseProxy, w http.ResponseWriter, r *http.Request) {
	switch kind {
	case faultSlowDown:
		s3Error(w, r, http.StatusServiceUnavailable, "SlowDown", "Please reduce your request rate.")
	case faultInternal:
		s3Error(w, r, http.StatusInternalServerError, "InternalError", "We encountered an internal error. Please try again.")
	case faultStall:
		select {
		case <-time.After(f.stall):
			forward.ServeHTTP(w, r)
		case <-r.Context().Done(): // the client gave up first
		}
	case faultReset:
		if r.ContentLength > 0 {
			_, _ = io.CopyN(io.Discard, r.Body, r.ContentLength/2)
			hijack(w, func(conn net.Conn, _ *bufio.ReadWriter) { reset(conn) })
			return
		}
		rec := record(forward, r)
		hijack(w, func(conn net.Conn, _ *bufio.ReadWriter) {
			body := rec.Body.Bytes()
			writeResponse(conn, rec, len(body), body[:len(body)/2])
			reset(conn)
		})
	case faultTruncated:
		rec := record(forward, r)
		hijack(w, func(conn net.Conn, _ *bufio.ReadWriter) {
			body := rec.Body.Bytes()
			writeResponse(conn, rec, len(body), body[:len(body)/2])
			_ = conn.Close()
		})
	case faultWrongLength:
		rec := record(forward, r)
		hijack(w, func(conn net.Conn, _ *bufio.ReadWriter) {
			body := rec.Body.Bytes()
			if len(body) > 0 {
				writeResponse(conn, rec, len(body)/2, body[:len(body)/2])
			} else {
				declared, _ := strconv.Atoi(rec.Header().Get("Content-Length"))
				writeResponse(conn, rec, declared+64, nil)
			}
			_ = conn.Close()
		})
	}
}

// s3Error answers as S3 does when it refuses a request.
func s3Error(w http.ResponseWriter, r *http.Request, status int, code, message string) {
	_, _ = io.Copy(io.Discard, r.Body)
	w.Header().Set("Content-Type", "application/xml")
	w.WriteHeader(status)
	fmt.Fprintf(w, `<?xml version="1.0" encoding="UTF-8"?>`+"\n"+
		`<Error><Code>%s</Code><Message>%s</Message><Resource>%s</Resource><RequestId>fault-proxy</RequestId></Error>`,
		code, message, r.URL.Path)
}

// record forwards r to the server and keeps its whole answer.
func record(forward *httputil.ReverseProxy, r *http.Request) *httptest.ResponseRecorder {
	rec := httptest.NewRecorder()
	forward.ServeHTTP(rec, r)
	return rec
}

// hijack takes the client's connection over from the HTTP server.
func hijack(w http.ResponseWriter, then func(net.Conn, *bufio.ReadWriter)) {
	conn, rw, err := w.(http.Hijacker).Hijack()
	if err != nil {
		http.Error(w, "fault proxy cannot hijack: "+err.Error(), http.StatusBadGateway)
		return
	}
	then(conn, rw)
}

// writeResponse writes rec's status and headers with Content-Length declared, then body.
func writeResponse(conn net.Conn, rec *httptest.ResponseRecorder, declared int, body []byte) {
	out := bufio.NewWriter(conn)
	fmt.Fprintf(out, "HTTP/1.1 %d %s\r\n", rec.Code, http.StatusText(rec.Code))
	h := rec.Header().Clone()
	h.Del("Transfer-Encoding")
	h.Set("Content-Length", strconv.Itoa(declared))
	h.Set("Connection", "close")
	_ = h.Write(out)
	_, _ = out.WriteString("\r\n")
	_, _ = out.Write(body)
	_ = out.Flush()
}

// reset closes the connection with a TCP RST instead of a FIN.
func reset(conn net.Conn) {
	if tcp, ok := conn.(*net.TCPConn); ok {
		_ = tcp.SetLinger(0)
	}
	_ = conn.Close()
}
