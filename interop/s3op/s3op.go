// Package s3op names S3 requests by the API operation they are, for the counting proxies of
// the interop suite and the benchmark (request counts per archived step are a product
// target).
package s3op

import (
	"net/http"
	"strings"
)

// Operation names a path-style S3 request the way the API reference does.
func Operation(r *http.Request) string {
	q := r.URL.Query()
	// Path style: /<bucket>[/<key>].
	parts := strings.SplitN(strings.TrimPrefix(r.URL.Path, "/"), "/", 2)
	hasKey := len(parts) == 2 && parts[1] != ""
	switch {
	case !hasKey && r.Method == http.MethodGet:
		return "ListObjects"
	case !hasKey && r.Method == http.MethodHead:
		return "HeadBucket"
	case !hasKey && r.Method == http.MethodPost && q.Has("delete"):
		return "DeleteObjects"
	case !hasKey:
		return r.Method + " bucket"
	case r.Method == http.MethodPut && q.Has("partNumber"):
		return "UploadPart"
	case r.Method == http.MethodPut:
		return "PutObject"
	case r.Method == http.MethodPost && q.Has("uploads"):
		return "CreateMultipartUpload"
	case r.Method == http.MethodPost && q.Has("uploadId"):
		return "CompleteMultipartUpload"
	case r.Method == http.MethodDelete && q.Has("uploadId"):
		return "AbortMultipartUpload"
	case r.Method == http.MethodDelete:
		return "DeleteObject"
	case r.Method == http.MethodHead:
		return "HeadObject"
	case r.Method == http.MethodGet:
		return "GetObject"
	default:
		return r.Method + " object"
	}
}
