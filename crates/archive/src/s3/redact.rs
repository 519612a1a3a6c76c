//! Endpoints as they may be shown: an endpoint URL can carry `user:password@` (S3 never
//! uses it, but admins paste URLs from elsewhere), and every place that logs or prints the
//! endpoint (the start-up line, errors naming the archive, `doctor`) shows it without.
//!
//! Hand-written rather than with the `url` crate: only the authority's userinfo is cut, and
//! the text must come back as given otherwise (a parser would normalise it), even when it
//! is not a valid URL (an invalid setting's error quotes it too).

use std::borrow::Cow;

/// `endpoint` with the userinfo of its authority (`user:password@`) replaced by `***@`.
pub fn redact_endpoint(endpoint: &str) -> Cow<'_, str> {
    let start = endpoint.find("://").map_or(0, |scheme| scheme + 3);
    let authority_len = endpoint[start..]
        .find(['/', '?', '#'])
        .unwrap_or(endpoint.len() - start);
    let authority = &endpoint[start..start + authority_len];
    match authority.rfind('@') {
        Some(at) => Cow::Owned(format!(
            "{}***{}",
            &endpoint[..start],
            &endpoint[start + at..]
        )),
        None => Cow::Borrowed(endpoint),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn userinfo_is_cut_and_the_rest_kept() {
        for (given, shown) in [
            (
                "https://admin:hunter2@s3.example.com",
                "https://***@s3.example.com",
            ),
            (
                "http://key:p@ss@127.0.0.1:9000/base?x=1",
                "http://***@127.0.0.1:9000/base?x=1",
            ),
            ("http://user@[::1]:9000", "http://***@[::1]:9000"),
            ("user:pw@host", "***@host"),
            ("https://s3.example.com/a@b", "https://s3.example.com/a@b"),
            ("http://127.0.0.1:9000", "http://127.0.0.1:9000"),
            ("", ""),
        ] {
            assert_eq!(redact_endpoint(given), shown, "{given}");
        }
    }

    /// Finding 8 of issue 12: the store's description (the start-up line, errors naming the
    /// archive), the endpoint `doctor` shows and an invalid setting's error never show the
    /// password of an endpoint with `user:password@`.
    #[tokio::test]
    async fn the_password_of_an_endpoint_never_shows() {
        use crate::{ObjectStore, S3Settings, S3Store};
        let mut settings = S3Settings::new("ci-logs");
        settings.endpoint = Some("http://admin:hunter2@127.0.0.1:9000".into());
        settings.path_style = true;
        settings.region = Some("us-east-1".into());
        let store = S3Store::connect(settings).await.unwrap();
        assert_eq!(
            store.describe(),
            "s3://ci-logs/ at http://***@127.0.0.1:9000"
        );
        let endpoint = store.probe_endpoint().await.unwrap();
        assert_eq!(endpoint.url, "http://***@127.0.0.1:9000/ci-logs");
        assert_eq!((endpoint.host.as_str(), endpoint.port), ("127.0.0.1", 9000));
        let err = super::super::variables::parse_endpoint(
            "WOODPECKER_LOG_STORE_S3_ENDPOINT",
            "ftp://admin:hunter2@s3.example.com",
        )
        .unwrap_err();
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }
}
