//! One bucket prefix, one Woodpecker: the marker written for a database's instance, and
//! refused for another's.

use archive::{LocalDirStore, ObjectStore};
use woodpecker_db::instance::{Claim, MarkerError, SIGNATURE_KEY, claim_prefix, marker_key};
use woodpecker_db::testing::TestDb;

const ADOPT: &str = "WOODPECKER_LOG_STORE_S3_ADOPT_PREFIX";

/// A key as Woodpecker stores it: hex of the 64-byte ed25519 private key.
fn signing_key(seed: u8, public: u8) -> String {
    format!("{}{}", hex(seed, 32), hex(public, 32))
}

fn hex(byte: u8, n: usize) -> String {
    format!("{byte:02x}").repeat(n)
}

#[tokio::test]
async fn the_prefix_belongs_to_the_first_instance_until_adopted() {
    for db in TestDb::every().await {
        let other = TestDb::sqlite().await;
        db.set_server_config(SIGNATURE_KEY, &signing_key(1, 0xaa))
            .await;
        other
            .set_server_config(SIGNATURE_KEY, &signing_key(2, 0xbb))
            .await;
        let ours = db.database().instance_id().await.unwrap().unwrap();
        assert_eq!(ours.0, hex(0xaa, 32), "{:?}: the public half", db.driver);
        let theirs = other.database().instance_id().await.unwrap().unwrap();

        let dir = tempfile::tempdir().unwrap();
        let store = LocalDirStore::new(dir.path().join("archive")).unwrap();
        let claim = |id, adopt| {
            let store = &store;
            let scratch = dir.path().to_path_buf();
            async move { claim_prefix(store, "logs", id, "sqlite3", adopt, ADOPT, &scratch).await }
        };
        assert_eq!(claim(&ours, false).await.unwrap(), Claim::Written);
        assert_eq!(claim(&ours, false).await.unwrap(), Claim::Ours);
        let marker = store.get(&marker_key("logs")).await.unwrap().unwrap().0;
        assert!(String::from_utf8_lossy(&marker).contains(&ours.0));

        let refused = claim(&theirs, false).await.unwrap_err();
        assert!(matches!(refused, MarkerError::OtherInstance { .. }));
        let text = refused.to_string();
        for needle in [
            ADOPT,
            "WOODPECKER_LOG_STORE_S3_BUCKET_FOLDER",
            &ours.0,
            &theirs.0,
        ] {
            assert!(text.contains(needle), "{needle}: {text}");
        }
        assert_eq!(
            claim(&theirs, true).await.unwrap(),
            Claim::Adopted {
                previous: ours.0.clone()
            }
        );
        assert_eq!(claim(&theirs, false).await.unwrap(), Claim::Ours);
        assert!(claim(&ours, false).await.is_err(), "now the other's");
    }
}

#[tokio::test]
async fn a_database_before_the_servers_first_start_has_no_identity() {
    let db = TestDb::sqlite().await;
    assert_eq!(db.database().instance_id().await.unwrap(), None);
    db.set_server_config(SIGNATURE_KEY, "not hex").await;
    assert!(matches!(
        db.database().instance_id().await,
        Err(MarkerError::BadKey { .. })
    ));
}
