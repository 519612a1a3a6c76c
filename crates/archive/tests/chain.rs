//! Credentials through the standard AWS chain, against moto (S3 and STS): static keys in the
//! environment, a shared credentials file with AWS_PROFILE, and a web identity token file
//! (IRSA) exchanged at moto's STS. The environment is process-wide, so each case runs this
//! test binary again as a child process with exactly the variables of that case.

mod common;

use std::path::Path;
use std::process::Command;

use archive::{ObjectStore, S3Settings, S3Store};
use aws_credential_types::provider::ProvideCredentials;
use common::{External, external, log_meta, write};
use settings::ProcessEnv;

const CHILD: &str = "ARCHIVE_CHAIN_CHILD";

/// The child: the binary's own path from settings to a verified round trip, with whatever
/// credentials the chain finds. Prints the access key id it used.
#[tokio::test]
#[ignore = "run by the other tests of this file in a child process"]
async fn chain_child() {
    if std::env::var_os(CHILD).is_none() {
        return;
    }
    let settings = S3Settings::from_source(&ProcessEnv)
        .unwrap()
        .expect("bucket set");
    let store = S3Store::connect(settings).await.unwrap();
    let work = tempfile::tempdir().unwrap();
    let key = common::unique_prefix("chain") + "object";
    store
        .put_file(
            &key,
            &write(work.path(), "x", b"through the chain"),
            &log_meta("1"),
        )
        .await
        .unwrap();
    assert_eq!(
        store.get(&key).await.unwrap().unwrap().0,
        b"through the chain"
    );
    store.delete(&key).await.unwrap();

    let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let credentials = sdk
        .credentials_provider()
        .unwrap()
        .provide_credentials()
        .await
        .unwrap();
    println!("CHAIN_ACCESS_KEY={}", credentials.access_key_id());
}

/// Runs the child with only `vars` (plus PATH, a private HOME and no IMDS) set.
fn run_child(server: &External, home: &Path, vars: &[(&str, String)]) -> (bool, String) {
    let output = Command::new(std::env::current_exe().unwrap())
        .args(["chain_child", "--exact", "--ignored", "--nocapture"])
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home)
        .env(CHILD, "1")
        // Never ask 169.254.169.254: nothing of ours is there.
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_CONFIG_FILE", home.join("aws-config"))
        .env("AWS_SHARED_CREDENTIALS_FILE", home.join("aws-credentials"))
        .env("WOODPECKER_LOG_STORE_S3_BUCKET", &server.bucket)
        .env("WOODPECKER_LOG_STORE_S3_ENDPOINT", &server.endpoint)
        .env("WOODPECKER_LOG_STORE_S3_PATH_STYLE", "true")
        .envs(vars.iter().map(|(k, v)| (k, v)))
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

fn used_key(output: &str) -> &str {
    output
        .lines()
        .find_map(|l| l.strip_prefix("CHAIN_ACCESS_KEY="))
        .unwrap_or_else(|| panic!("child printed no key:\n{output}"))
}

#[test]
fn static_keys_in_the_environment() {
    let Some(server) = external("MOTO") else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let (ok, out) = run_child(
        &server,
        home.path(),
        &[
            ("AWS_ACCESS_KEY_ID", "AKIAFROMENVIRONMENT".into()),
            ("AWS_SECRET_ACCESS_KEY", "secret".into()),
        ],
    );
    assert!(ok, "{out}");
    assert_eq!(used_key(&out), "AKIAFROMENVIRONMENT");
}

#[test]
fn shared_credentials_file_and_profile() {
    let Some(server) = external("MOTO") else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    std::fs::write(
        home.path().join("aws-credentials"),
        "[default]\naws_access_key_id = AKIADEFAULTPROFILE\naws_secret_access_key = x\n\n\
         [ci]\naws_access_key_id = AKIACIPROFILE\naws_secret_access_key = y\n",
    )
    .unwrap();
    std::fs::write(
        home.path().join("aws-config"),
        "[profile ci]\nregion = eu-west-1\n",
    )
    .unwrap();
    let (ok, out) = run_child(&server, home.path(), &[("AWS_PROFILE", "ci".into())]);
    assert!(ok, "{out}");
    assert_eq!(used_key(&out), "AKIACIPROFILE");
}

#[test]
fn web_identity_token_file_through_sts() {
    let Some(server) = external("MOTO") else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let token = write(
        home.path(),
        "token",
        b"eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJjaSJ9.c2ln",
    );
    let (ok, out) = run_child(
        &server,
        home.path(),
        &[
            ("AWS_WEB_IDENTITY_TOKEN_FILE", token.display().to_string()),
            (
                "AWS_ROLE_ARN",
                "arn:aws:iam::123456789012:role/woodpecker-logs".into(),
            ),
            ("AWS_ROLE_SESSION_NAME", "woodpecker".into()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_ENDPOINT_URL_STS", server.endpoint.clone()),
        ],
    );
    assert!(ok, "{out}");
    // Temporary credentials issued by STS, not anything we configured.
    assert!(used_key(&out).starts_with("ASIA"), "{out}");
}

#[test]
fn no_credentials_at_all_is_a_clear_error() {
    let Some(server) = external("MOTO") else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let (ok, out) = run_child(&server, home.path(), &[]);
    assert!(!ok, "{out}");
    assert!(out.contains("no usable AWS credentials"), "{out}");
}
