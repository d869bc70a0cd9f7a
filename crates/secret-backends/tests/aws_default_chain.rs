//! `AwsStore::new` takes region and credentials from the SDK's default chain and a named
//! profile, as it does in production.
//!
//! The chain reads the process environment, which a test must not change for its neighbours,
//! so the test runs itself again as a child process with `AWS_CONFIG_FILE` and
//! `AWS_SHARED_CREDENTIALS_FILE` pointing at files it wrote, and the child talks to moto.

use std::process::Command;

use secrecy::SecretString;
use secret_backends::WritePrecondition;
use secret_backends::{AwsOptions, AwsStore, Format, SecretStore, TokenPayload, WriteOutcome};
use testkit::real::Moto;
use time::OffsetDateTime;

/// Set in the child: the moto endpoint to use.
const CHILD_ENDPOINT: &str = "SECRET_SYNC_TEST_AWS_CHILD_ENDPOINT";

#[tokio::test]
async fn a_profile_supplies_region_and_credentials() {
    if let Ok(endpoint) = std::env::var(CHILD_ENDPOINT) {
        return write_with_profile(endpoint).await;
    }
    let moto = Moto::start();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config");
    let credentials = dir.path().join("credentials");
    std::fs::write(&config, "[profile sync]\nregion = ap-southeast-2\n").unwrap();
    std::fs::write(
        &credentials,
        "[sync]\naws_access_key_id = AKIDPROFILETEST\naws_secret_access_key = profile-secret\n",
    )
    .unwrap();
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "a_profile_supplies_region_and_credentials",
            "--nocapture",
        ])
        .env(CHILD_ENDPOINT, moto.endpoint_url())
        .env("AWS_CONFIG_FILE", &config)
        .env("AWS_SHARED_CREDENTIALS_FILE", &credentials)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_REGION")
        .env_remove("AWS_DEFAULT_REGION")
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env_remove("AWS_SESSION_TOKEN")
        .env_remove("AWS_ENDPOINT_URL")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "the child test failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // moto keeps secrets per region: the secret is where the profile's region says.
    let seen = Command::new(testkit::real::python())
        .args([
            "-c",
            "import sys, boto3\n\
             sm = boto3.client('secretsmanager', endpoint_url=sys.argv[1], region_name='ap-southeast-2', \
             aws_access_key_id='a', aws_secret_access_key='b')\n\
             print(sm.describe_secret(SecretId='graph/profile')['Name'])",
            &moto.endpoint_url(),
        ])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&seen.stdout).trim(),
        "graph/profile",
        "boto3 in ap-southeast-2: {}",
        String::from_utf8_lossy(&seen.stderr)
    );
}

/// The child's half: a store from the default chain with `profile = "sync"`.
async fn write_with_profile(endpoint: String) {
    let options = AwsOptions {
        endpoint_url: Some(endpoint),
        profile: Some("sync".to_owned()),
        ..AwsOptions::default()
    };
    let store = AwsStore::new("aws-profile", options).await.unwrap();
    let payload = TokenPayload::new(
        SecretString::from("eyJ0eXAiOiJKV1QifQ.profile.sig"),
        "Bearer",
        OffsetDateTime::now_utc() + time::Duration::hours(1),
        "secret-sync-test",
        Format::Raw,
    )
    .unwrap();
    let outcome = store
        .write("graph/profile", &payload, &WritePrecondition::unread(false))
        .await
        .unwrap();
    assert_eq!(outcome, WriteOutcome::Created);
}
