//! Upload integrity: every PutObject and UploadPart carries `Content-MD5` in a header (not the
//! SDK's `aws-chunked` trailer, which many S3-compatible servers refuse), so a server that
//! checks it refuses a body damaged on the way (400 BadDigest) and nothing is stored. What
//! the server stored is then proven from its answer where it can be: an ETag that is the MD5
//! of the body (single PUT, and each part of a multipart upload, without SSE-KMS). Where it
//! cannot (SSE-KMS, servers with other ETags), an object of at most [`READ_BACK_LIMIT`] bytes
//! is read back and compared before the caller drops its copy.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use aws_smithy_types::base64;
use md5::{Digest, Md5};

use super::store::S3Store;
use crate::{ErrorKind, StoreError};

/// Objects up to this size whose ETag proves nothing are read back and compared after the
/// upload. Step logs are small once compressed (most are a few KiB; 64 MiB is a log of
/// several hundred MiB), so this is one more GET of a small object; larger ones rely on the
/// server's `Content-MD5` check (AWS, Ceph, MinIO, SeaweedFS, Garage and moto do it).
pub const READ_BACK_LIMIT: u64 = 64 * 1024 * 1024;

/// The S3 error codes of a body refused because it does not match its digest: sending the
/// same file again passes.
const DIGEST_CODES: &[&str] = &[
    "BadDigest",
    "InvalidDigest",
    "XAmzContentSHA256Mismatch",
    "IncompleteBody",
];

/// The MD5 of a file's slice, as raw bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Md5Sum([u8; 16]);

impl Md5Sum {
    /// MD5 of `length` bytes of `path` from `offset`, read on a blocking thread.
    pub(super) async fn of_file(path: &Path, offset: u64, length: u64) -> Result<Self, StoreError> {
        let owned = path.to_owned();
        let digest = tokio::task::spawn_blocking(move || -> std::io::Result<[u8; 16]> {
            let mut file = std::fs::File::open(&owned)?;
            file.seek(SeekFrom::Start(offset))?;
            let mut hasher = Md5::new();
            let copied = std::io::copy(&mut file.take(length), &mut HashWriter(&mut hasher))?;
            if copied != length {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!("{copied} bytes read, {length} expected"),
                ));
            }
            Ok(hasher.finalize().into())
        })
        .await
        .map_err(|source| StoreError::Task { source })?
        .map_err(|e| StoreError::UploadSource {
            operation: "checksum",
            path: path.to_owned(),
            source: Box::new(e),
        })?;
        Ok(Self(digest))
    }

    /// The `Content-MD5` header value.
    pub(super) fn header(&self) -> String {
        base64::encode(self.0)
    }

    /// Whether an S3 ETag (`"hex"`, quotes optional) is this MD5: the server hashed what it
    /// stored and got what we sent.
    pub(super) fn is_etag(&self, etag: Option<&str>) -> bool {
        let Some(etag) = etag else { return false };
        let hex = etag.trim().trim_matches('"');
        hex.len() == 32
            && hex.as_bytes().chunks(2).zip(self.0).all(|(pair, byte)| {
                std::str::from_utf8(pair)
                    .ok()
                    .and_then(|p| u8::from_str_radix(p, 16).ok())
                    == Some(byte)
            })
    }
}

/// Feeds `io::copy` into a hasher.
struct HashWriter<'a>(&'a mut Md5);

impl std::io::Write for HashWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Whether a failed write was refused for a damaged body (worth sending again at once).
pub(super) fn is_digest_mismatch(error: &StoreError) -> bool {
    DIGEST_CODES.contains(&error.code())
}

/// What reading an object back found.
pub(super) enum ReadBack {
    /// Same size and MD5 as the file uploaded.
    Equal,
    /// Too large to read back; the server's `Content-MD5` check is all there is.
    Skipped,
    /// The stored bytes differ: what differs.
    Differs(String),
}

impl S3Store {
    /// Reads `full_key` back (streamed, bounded memory) and compares it with `expected`, when
    /// it is at most [`READ_BACK_LIMIT`] bytes.
    pub(super) async fn read_back(
        &self,
        full_key: &str,
        size: u64,
        expected: Md5Sum,
    ) -> Result<ReadBack, StoreError> {
        if size > READ_BACK_LIMIT {
            return Ok(ReadBack::Skipped);
        }
        let output = self
            .client
            .get_object()
            .bucket(&self.settings.bucket)
            .key(full_key)
            .send()
            .await
            .map_err(|e| self.error(full_key, "GetObject (read back)", e))?;
        let mut body = output.body;
        let mut hasher = Md5::new();
        let mut read = 0u64;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| StoreError::Request {
                kind: ErrorKind::Transient,
                request: "GetObject (read back)".to_owned(),
                target: self.target(full_key),
                detail: format!("reading the body: {}", super::error::error_chain(&e)),
                code: "response",
                source: Box::new(e),
            })?;
            read += chunk.len() as u64;
            hasher.update(&chunk);
        }
        let digest = Md5Sum(hasher.finalize().into());
        Ok(if read != size {
            ReadBack::Differs(format!("{read} bytes read back, {size} uploaded"))
        } else if digest != expected {
            ReadBack::Differs("the bytes read back differ from those uploaded (MD5)".to_owned())
        } else {
            ReadBack::Equal
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn etags_prove_the_md5_only_when_equal() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("body");
        std::fs::write(&path, b"hello world body").unwrap();
        let sum = Md5Sum::of_file(&path, 0, 16).await.unwrap();
        // What SeaweedFS answered for these bytes (and `md5sum` prints).
        assert!(sum.is_etag(Some("\"add838e9082a2940e3acdba4908ec445\"")));
        assert!(sum.is_etag(Some("ADD838E9082A2940E3ACDBA4908EC445")));
        assert!(!sum.is_etag(Some("\"add838e9082a2940e3acdba4908ec446\"")));
        assert!(!sum.is_etag(Some("\"add838e9082a2940e3acdba4908ec445-2\"")));
        assert!(!sum.is_etag(None));
        assert_eq!(sum.header(), "rdg46QgqKUDjrNukkI7ERQ==");
        let part = Md5Sum::of_file(&path, 6, 5).await.unwrap();
        assert_eq!(part, Md5Sum(Md5::digest(b"world").into()));
        assert!(Md5Sum::of_file(&path, 10, 10).await.is_err());
    }
}
