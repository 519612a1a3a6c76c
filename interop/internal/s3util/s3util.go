// Package s3util holds what the interop suite's S3 tests need besides the addon: the test
// servers scripts/s3/start.sh announces, a Go S3 client (minio-go, independent of the
// addon's Rust SDK) to look at the bucket directly, the archive format's key and body
// decoding (crates/engine/FORMAT.md), and a counting proxy that can be cut to simulate an
// S3 outage.
package s3util

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"strconv"

	"github.com/klauspost/compress/zstd"
	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/woodpecker-s3-logs/interop/woodpecker"
)

// Server is one S3-compatible test server: endpoint URL, credentials and a bucket that
// exists.
type Server struct {
	Name      string
	Endpoint  string
	AccessKey string
	SecretKey string
	Bucket    string
}

// FromEnv reads the ARCHIVE_TEST_<NAME>_{ENDPOINT,ACCESS_KEY,SECRET_KEY,BUCKET} variables
// scripts/s3/start.sh prints (NAME is SEAWEEDFS or MOTO). The second result names the
// first missing variable, so a skipped test says what to set.
func FromEnv(name string) (Server, string) {
	prefix := "ARCHIVE_TEST_" + name + "_"
	s := Server{Name: name}
	for _, v := range []struct {
		key string
		dst *string
	}{{"ENDPOINT", &s.Endpoint}, {"ACCESS_KEY", &s.AccessKey}, {"SECRET_KEY", &s.SecretKey}, {"BUCKET", &s.Bucket}} {
		*v.dst = os.Getenv(prefix + v.key)
		if *v.dst == "" {
			return s, prefix + v.key
		}
	}
	return s, ""
}

// AddonEnv is the addon's environment for this server's bucket, reached at endpoint (the
// server itself or a proxy in front of it), with every key below folder.
func (s Server) AddonEnv(endpoint, folder string) []string {
	return []string{
		"WOODPECKER_LOG_STORE_S3_BUCKET=" + s.Bucket,
		"WOODPECKER_LOG_STORE_S3_ENDPOINT=" + endpoint,
		"WOODPECKER_LOG_STORE_S3_PATH_STYLE=true",
		"WOODPECKER_LOG_STORE_S3_BUCKET_FOLDER=" + folder,
		"AWS_ACCESS_KEY_ID=" + s.AccessKey,
		"AWS_SECRET_ACCESS_KEY=" + s.SecretKey,
		"AWS_REGION=us-east-1",
	}
}

// Client is a path-style S3 client for the server itself (never through a proxy, so that
// what the tests see does not depend on the proxy being up).
func (s Server) Client() (*minio.Client, error) {
	u, err := url.Parse(s.Endpoint)
	if err != nil {
		return nil, fmt.Errorf("%s endpoint %q: %w", s.Name, s.Endpoint, err)
	}
	c, err := minio.New(u.Host, &minio.Options{
		Creds:        credentials.NewStaticV4(s.AccessKey, s.SecretKey, ""),
		Secure:       u.Scheme == "https",
		Region:       "us-east-1",
		BucketLookup: minio.BucketLookupPath,
	})
	if err != nil {
		return nil, fmt.Errorf("S3 client for %s at %s: %w", s.Name, s.Endpoint, err)
	}
	return c, nil
}

// Key is the object key of a step's archive: [folder/]v1/<id%1000 as 3 digits>/<id>.ndjson.zst.
func Key(folder string, stepID int64) string {
	key := fmt.Sprintf("v1/%03d/%d.ndjson.zst", stepID%1000, stepID)
	if folder != "" {
		key = folder + "/" + key
	}
	return key
}

// Archive is an archive object as stored: its headers and its decoded entries.
type Archive struct {
	Info       minio.ObjectInfo
	Compressed int64 // bytes at rest
	NDJSON     []byte
	Entries    []*woodpecker.LogEntry
}

// Meta returns the x-amz-meta-<name> value of the object.
func (a *Archive) Meta(name string) string {
	return a.Info.Metadata.Get("X-Amz-Meta-" + name)
}

// LineCount is the object's line-count metadata, -1 when absent or not a number.
func (a *Archive) LineCount() int {
	n, err := strconv.Atoi(a.Meta("Line-Count"))
	if err != nil {
		return -1
	}
	return n
}

// ErrNoObject is returned by ReadArchive when the key does not exist.
var ErrNoObject = errors.New("no such object")

// Stat returns the object's headers, ErrNoObject when it does not exist.
func Stat(ctx context.Context, c *minio.Client, bucket, key string) (minio.ObjectInfo, error) {
	info, err := c.StatObject(ctx, bucket, key, minio.StatObjectOptions{})
	if err != nil {
		if minio.ToErrorResponse(err).Code == "NoSuchKey" || minio.ToErrorResponse(err).StatusCode == 404 {
			return info, fmt.Errorf("%s/%s: %w", bucket, key, ErrNoObject)
		}
		return info, fmt.Errorf("HEAD %s/%s: %w", bucket, key, err)
	}
	return info, nil
}

// ReadArchive downloads an archive object and decodes it: one zstd frame of NDJSON
// LogEntry lines, each ending in "\n". Decoding is strict (unknown fields are allowed by
// the format, but this version of the addon writes none, so they would be a finding).
func ReadArchive(ctx context.Context, c *minio.Client, bucket, key string) (*Archive, error) {
	info, err := Stat(ctx, c, bucket, key)
	if err != nil {
		return nil, err
	}
	obj, err := c.GetObject(ctx, bucket, key, minio.GetObjectOptions{})
	if err != nil {
		return nil, fmt.Errorf("GET %s/%s: %w", bucket, key, err)
	}
	defer obj.Close()
	body, err := io.ReadAll(obj)
	if err != nil {
		return nil, fmt.Errorf("GET %s/%s: %w", bucket, key, err)
	}
	dec, err := zstd.NewReader(nil)
	if err != nil {
		return nil, err
	}
	defer dec.Close()
	ndjson, err := dec.DecodeAll(body, nil)
	if err != nil {
		return nil, fmt.Errorf("%s: %d bytes are no zstd frame: %w", key, len(body), err)
	}
	a := &Archive{Info: info, Compressed: int64(len(body)), NDJSON: ndjson}
	if len(ndjson) == 0 {
		return a, nil
	}
	if ndjson[len(ndjson)-1] != '\n' {
		return nil, fmt.Errorf("%s: NDJSON does not end in a newline", key)
	}
	for i, line := range bytes.Split(ndjson[:len(ndjson)-1], []byte("\n")) {
		var e woodpecker.LogEntry
		d := json.NewDecoder(bytes.NewReader(line))
		d.DisallowUnknownFields()
		if err := d.Decode(&e); err != nil {
			return nil, fmt.Errorf("%s: NDJSON line %d %.200q: %w", key, i+1, line, err)
		}
		a.Entries = append(a.Entries, &e)
	}
	return a, nil
}
