//! The AWS Secrets Manager backend against a real moto server.
//!
//! The shared conformance suite, then what is particular to AWS: what the backend wrote is
//! read back by boto3 (the reference client) with its tags, a secret scheduled for deletion
//! is refused with the restore command, and a token already stored with another expiry only
//! has its tags updated. The SDK gets static test credentials in its config (not process-wide
//! environment), so it never probes the instance metadata address.

use std::net::{Ipv4Addr, TcpListener};
use std::process::Command;

use aws_config::{BehaviorVersion, SdkConfig};
use aws_sdk_secretsmanager::config::{Credentials, Region, SharedCredentialsProvider};
use secrecy::{ExposeSecret, SecretString};
use secret_backends::conformance::{self, Harness};
use secret_backends::{
    AwsOptions, AwsStore, ErrorKind, Format, SecretStore, TokenPayload, WriteOutcome,
};
use serde_json::Value;
use testkit::real::{Moto, python};
use time::OffsetDateTime;

const ACCESS_KEY: &str = "AKIDSECRETSYNCTEST";
const SECRET_KEY: &str = "secret-sync-test-secret-key";

fn sdk_config(access_key: &str, secret_key: &str) -> SdkConfig {
    SdkConfig::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("eu-west-1"))
        .credentials_provider(SharedCredentialsProvider::new(Credentials::new(
            access_key, secret_key, None, None, "test",
        )))
        .build()
}

fn store_at(endpoint_url: String, max_attempts: u32) -> AwsStore {
    let options = AwsOptions {
        endpoint_url: Some(endpoint_url),
        max_attempts,
        ..AwsOptions::default()
    };
    AwsStore::with_sdk_config("aws-test", options, &sdk_config(ACCESS_KEY, SECRET_KEY)).unwrap()
}

/// A loopback URL where nothing listens.
fn closed_endpoint() -> String {
    let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    format!("http://127.0.0.1:{port}")
}

struct Fixture {
    harness: Harness,
    store: AwsStore,
    moto: Moto,
}

fn fixture() -> Fixture {
    let moto = Moto::start();
    let store = store_at(moto.endpoint_url(), 3);
    Fixture {
        harness: Harness {
            store: Box::new(store.clone()),
            fresh_name: Box::new(|| format!("secret-sync/test/{}", uuid::Uuid::new_v4().simple())),
            formats: vec![Format::Raw, Format::Json],
            read_back: conformance::default_read_back,
            invalid_name: "graph token:with spaces".to_owned(),
        },
        store,
        moto,
    }
}

#[tokio::test]
async fn missing_secret_is_not_found() {
    conformance::missing_secret_is_not_found(&fixture().harness).await;
}

#[tokio::test]
async fn write_then_read_back() {
    conformance::write_then_read_back(&fixture().harness).await;
}

#[tokio::test]
async fn overwrite() {
    conformance::overwrite(&fixture().harness).await;
}

#[tokio::test]
async fn metadata_round_trip() {
    conformance::metadata_round_trip(&fixture().harness).await;
}

#[tokio::test]
async fn unchanged_write() {
    conformance::unchanged_write(&fixture().harness).await;
}

#[tokio::test]
async fn missing_field() {
    conformance::missing_field(&fixture().harness).await;
}

#[tokio::test]
async fn refused_before_network() {
    let f = fixture();
    let offline = store_at(closed_endpoint(), 1);
    conformance::refused_before_network(&f.harness, &offline).await;
}

#[tokio::test]
async fn server_unreachable() {
    let f = fixture();
    let unreachable = store_at(closed_endpoint(), 2);
    conformance::server_unreachable(&f.harness, &unreachable).await;
}

/// Runs a boto3 script against moto with `args`, returning its stdout parsed as JSON.
fn boto3(moto: &Moto, script: &str, args: &[&str]) -> Value {
    let prelude = format!(
        "import sys, json, boto3\nsm = boto3.client('secretsmanager', endpoint_url=sys.argv[1], \
         region_name='eu-west-1', aws_access_key_id='{ACCESS_KEY}', aws_secret_access_key='{SECRET_KEY}')\n"
    );
    let out = Command::new(python())
        .arg("-c")
        .arg(prelude + script)
        .arg(moto.endpoint_url())
        .args(args)
        .output()
        .expect("the venv python runs");
    assert!(
        out.status.success(),
        "boto3 script failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "boto3 printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

const READ_BACK: &str = "
d = sm.describe_secret(SecretId=sys.argv[2])
v = sm.get_secret_value(SecretId=sys.argv[2])
print(json.dumps({'value': v['SecretString'], 'tags': {t['Key']: t['Value'] for t in d.get('Tags', [])},
                  'versions': len(d['VersionIdsToStages'])}))
";

fn payload(token: &str, expires_on: OffsetDateTime, format: Format) -> TokenPayload {
    TokenPayload::new(
        SecretString::from(token),
        "Bearer",
        expires_on,
        "secret-sync-test",
        format,
    )
    .unwrap()
}

#[tokio::test]
async fn boto3_reads_back_what_the_backend_wrote() {
    let f = fixture();
    let expires = OffsetDateTime::from_unix_timestamp(1_795_500_000).unwrap();
    for (name, format) in [("graph/raw", Format::Raw), ("graph/json", Format::Json)] {
        let written = payload("eyJ0eXAiOiJKV1QifQ.interop.sig", expires, format);
        let outcome = f.store.write(name, &written).await.unwrap();
        assert_eq!(outcome, WriteOutcome::Created, "{name}");

        let seen = boto3(&f.moto, READ_BACK, &[name]);
        assert_eq!(
            seen["value"].as_str(),
            Some(written.encode().expose_secret()),
            "{name}: value seen by boto3"
        );
        assert_eq!(
            seen["tags"],
            serde_json::json!({
                "secret-sync:expires-on": "1795500000",
                "secret-sync:expires-at": "2026-11-24T06:00:00Z",
                "secret-sync:managed-by": "secret-sync-test",
            }),
            "{name}: tags seen by boto3"
        );
    }
}

#[tokio::test]
async fn a_secret_written_by_someone_else_is_read_and_has_no_marker() {
    let f = fixture();
    boto3(
        &f.moto,
        "sm.create_secret(Name='apps/graph', SecretString=json.dumps({'client_id': 'cid', 'client_secret': 'cs'}))\nprint('{}')",
        &[],
    );
    let secret = f
        .store
        .read("apps/graph", Some("client_secret"))
        .await
        .unwrap();
    assert_eq!(secret.expose_secret(), "cs");
    let meta = f.store.metadata("apps/graph").await.unwrap().unwrap();
    assert_eq!(meta.managed_by, None, "no marker on a foreign secret");
    assert_eq!(meta.expires_on, None);
    assert!(
        meta.version.is_some() && meta.updated_on.is_some(),
        "{meta:?}"
    );
}

#[tokio::test]
async fn same_token_with_a_new_expiry_only_retags() {
    let f = fixture();
    let now = OffsetDateTime::now_utc();
    let token = "eyJ0eXAiOiJKV1QifQ.retag.sig";
    let first = payload(token, now + time::Duration::minutes(30), Format::Raw);
    let later = payload(token, now + time::Duration::minutes(60), Format::Raw);
    f.store.write("graph/retag", &first).await.unwrap();
    let before = f.store.metadata("graph/retag").await.unwrap().unwrap();

    let outcome = f.store.write("graph/retag", &later).await.unwrap();
    assert_eq!(outcome, WriteOutcome::Updated);
    let after = f.store.metadata("graph/retag").await.unwrap().unwrap();
    assert_eq!(after.expires_on, Some(later.expires_on()));
    assert_eq!(
        after.version, before.version,
        "retagging made a new version"
    );
    let seen = boto3(&f.moto, READ_BACK, &["graph/retag"]);
    assert_eq!(seen["versions"], 1, "versions seen by boto3: {seen}");
}

#[tokio::test]
async fn a_secret_scheduled_for_deletion_is_explained() {
    let f = fixture();
    let token = "eyJ0eXAiOiJKV1QifQ.deleted.sig";
    let written = payload(token, OffsetDateTime::now_utc(), Format::Raw);
    f.store.write("graph/deleted", &written).await.unwrap();
    boto3(
        &f.moto,
        "sm.delete_secret(SecretId=sys.argv[2], RecoveryWindowInDays=7)\nprint('{}')",
        &["graph/deleted"],
    );

    let write = f.store.write("graph/deleted", &written).await.unwrap_err();
    let meta = f.store.metadata("graph/deleted").await.unwrap_err();
    for err in [&write, &meta] {
        assert_eq!(err.kind(), ErrorKind::Conflict, "{err}");
        let text = err.to_string();
        assert!(
            text.contains("scheduled for deletion")
                && text.contains("aws secretsmanager restore-secret --secret-id graph/deleted"),
            "{text}"
        );
        conformance::assert_no_leak(err, &[token]);
    }
}

#[tokio::test]
async fn options_are_checked_before_any_request() {
    let plain_http = AwsOptions {
        endpoint_url: Some("http://secretsmanager.example.com".to_owned()),
        ..AwsOptions::default()
    };
    let err =
        AwsStore::with_sdk_config("aws-test", plain_http, &sdk_config(ACCESS_KEY, SECRET_KEY))
            .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidConfig);
    assert!(err.to_string().contains("must use https"), "{err}");

    let no_region = SdkConfig::builder()
        .behavior_version(BehaviorVersion::latest())
        .build();
    let err = AwsStore::with_sdk_config("aws-test", AwsOptions::default(), &no_region).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidConfig);
    assert!(err.to_string().contains("no AWS region"), "{err}");
}

#[tokio::test]
async fn the_store_debug_shows_no_credentials() {
    let store = store_at(closed_endpoint(), 1);
    let debug = format!("{store:?}");
    assert!(
        !debug.contains(SECRET_KEY),
        "Debug leaks the secret key: {debug}"
    );
    assert!(debug.contains("aws-test"), "{debug}");
}
