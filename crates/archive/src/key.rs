//! Object keys: validated once, the same way for every backend.
//!
//! Keys are built by this product from validated step ids, never from host input, so a bad
//! key is a bug. It is still refused at the store boundary because the local backend turns
//! keys into paths: a key with `..` or a leading `/` would escape the root directory.

use crate::StoreError;

/// The longest key S3 accepts, in bytes.
const MAX_KEY_LEN: usize = 1024;

/// Checks that `key` is `segment/segment/...` where each segment is non-empty, does not start
/// with `.` (so `.`/`..` and the local backend's hidden temp files are impossible) and uses
/// only `A-Z a-z 0-9 . _ -`. That set is safe as a file name and needs no URL escaping.
pub(crate) fn validate_key(key: &str) -> Result<(), StoreError> {
    let bad = |why: &str| {
        Err(StoreError::InvalidKey {
            key: key.to_owned(),
            reason: why.to_owned(),
        })
    };
    if key.is_empty() {
        return bad("empty");
    }
    if key.len() > MAX_KEY_LEN {
        return bad("longer than 1024 bytes");
    }
    for segment in key.split('/') {
        if segment.is_empty() {
            return bad("empty path segment (leading, trailing or double '/')");
        }
        if segment.starts_with('.') {
            return bad("a path segment starts with '.'");
        }
        if let Some(c) = segment.chars().find(|c| !is_key_char(*c)) {
            return bad(&format!(
                "character {c:?} not allowed (use A-Z a-z 0-9 . _ -)"
            ));
        }
    }
    Ok(())
}

/// Checks a listing prefix: any leading part of a valid key (it may end with `/` or stop in
/// the middle of a segment), or empty for "everything".
pub(crate) fn validate_prefix(prefix: &str) -> Result<(), StoreError> {
    if prefix.is_empty() {
        return Ok(());
    }
    // A prefix is valid when completing it with one more character makes a valid key.
    let probe = if prefix.ends_with('/') {
        format!("{prefix}x")
    } else {
        prefix.to_owned()
    };
    validate_key(&probe).map_err(|_| StoreError::InvalidPrefix {
        prefix: prefix.to_owned(),
    })
}

fn is_key_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn product_keys_pass() {
        for key in ["a", "logs/v1/000/123.ndjson.zst", "x-y_z/1.2"] {
            validate_key(key).unwrap();
        }
    }

    #[test]
    fn escaping_keys_are_refused() {
        for key in [
            "",
            "/abs",
            "a/../b",
            "..",
            ".",
            "a//b",
            "a/",
            "a/.hidden",
            "a\\b",
            "a b",
            "ä",
            "a\0b",
        ] {
            let err = validate_key(key).unwrap_err();
            assert!(
                matches!(err, StoreError::InvalidKey { .. }),
                "{key:?}: {err}"
            );
            assert_eq!(err.kind(), crate::ErrorKind::Denied, "{key:?}: {err}");
        }
        validate_key(&"a".repeat(1025)).unwrap_err();
    }

    #[test]
    fn prefixes() {
        for prefix in ["", "logs/", "logs/v1/0", "logs"] {
            validate_prefix(prefix).unwrap();
        }
        for prefix in ["/", "../", "a//", "a/."] {
            validate_prefix(prefix).unwrap_err();
        }
    }
}
