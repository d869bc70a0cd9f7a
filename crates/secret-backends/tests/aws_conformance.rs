//! The AWS Secrets Manager backend against a real moto server.
//!
//! The shared conformance suite, then what is particular to AWS: what the backend wrote is
//! read back by boto3 (the reference client) with its tags, a secret scheduled for deletion
//! is refused with the restore command, and a token already stored with another expiry only
//! has its tags updated. The SDK gets static test credentials in its config (not process-wide
//! environment), so it never probes the instance metadata address.

use std::net::{Ipv4Addr, TcpListener};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use aws_config::{BehaviorVersion, SdkConfig};
use aws_sdk_secretsmanager::config::{Credentials, Region, SharedCredentialsProvider};
use secrecy::{ExposeSecret, SecretString};
use secret_backends::WritePrecondition;
use secret_backends::conformance::{self, Harness};
use secret_backends::{
    AwsOptions, AwsStore, ErrorKind, Format, SecretStore, TokenPayload, WriteOutcome,
};
use serde_json::Value;
use testkit::real::{Moto, python};
use time::OffsetDateTime;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

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
    store_with_keys(endpoint_url, max_attempts, ACCESS_KEY, SECRET_KEY)
}

fn store_with_keys(
    endpoint_url: String,
    max_attempts: u32,
    access_key: &str,
    secret_key: &str,
) -> AwsStore {
    let options = AwsOptions {
        endpoint_url: Some(endpoint_url),
        max_attempts,
        ..AwsOptions::default()
    };
    AwsStore::with_sdk_config("aws-test", options, &sdk_config(access_key, secret_key)).unwrap()
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
    fixture_on(Moto::start(), store_at)
}

fn fixture_on(moto: Moto, make_store: impl FnOnce(String, u32) -> AwsStore) -> Fixture {
    let store = make_store(moto.endpoint_url(), 3);
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

/// Another client (boto3) creates the secret between the read and the write: CreateSecret's
/// ResourceExistsException makes the write describe it again and refuse it.
#[tokio::test]
async fn created_since_read_is_not_overwritten() {
    let f = fixture();
    conformance::created_since_read_is_not_overwritten(&f.harness, &|name| {
        boto3(
            &f.moto,
            "sm.create_secret(Name=sys.argv[2], SecretString=\"someone else's value\")\nprint('{}')",
            &[name],
        );
    })
    .await;
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

#[tokio::test]
async fn authentication_refused() {
    // moto checks credentials against its IAM after the first three requests, which create
    // the user, its access key and its policy.
    let moto = Moto::start_with_env(&[("INITIAL_NO_AUTH_ACTION_COUNT", "3")]);
    let keys = boto3(
        &moto,
        "iam = boto3.client('iam', endpoint_url=sys.argv[1], region_name='eu-west-1', \
         aws_access_key_id='x', aws_secret_access_key='x')
iam.create_user(UserName='sync')
k = iam.create_access_key(UserName='sync')['AccessKey']
iam.put_user_policy(UserName='sync', PolicyName='sm', PolicyDocument=json.dumps({'Version': '2012-10-17',
    'Statement': [{'Effect': 'Allow', 'Action': 'secretsmanager:*', 'Resource': '*'}]}))
print(json.dumps({'id': k['AccessKeyId'], 'secret': k['SecretAccessKey']}))
",
        &[],
    );
    let access_key = keys["id"].as_str().unwrap().to_owned();
    let secret_key = keys["secret"].as_str().unwrap().to_owned();
    let wrong_secret = "wrong-secret-key-0123456789abcdefghij";
    let bad = store_with_keys(moto.endpoint_url(), 3, &access_key, wrong_secret);
    let f = fixture_on(moto, |url, attempts| {
        store_with_keys(url, attempts, &access_key, &secret_key)
    });
    conformance::authentication_refused(&f.harness, &bad, wrong_secret).await;
    // The good credentials work on the same server, so the refusal was about the key.
    conformance::write_then_read_back(&f.harness).await;
}

#[tokio::test]
async fn throttling_retried() {
    let f = fixture();
    let proxy = ThrottlingProxy::start(f.moto.endpoint_url(), 2).await;
    let throttled = store_at(proxy.endpoint_url(), 3);
    conformance::throttling_retried(&f.harness, &throttled).await;
    assert_eq!(
        proxy.throttled(),
        2,
        "requests answered with ThrottlingException"
    );
}

#[tokio::test]
async fn throttling_beyond_max_attempts_is_reported() {
    let f = fixture();
    let proxy = ThrottlingProxy::start(f.moto.endpoint_url(), 100).await;
    let throttled = store_at(proxy.endpoint_url(), 2);
    let err = throttled.metadata("graph/token").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Throttled, "{err}");
    assert!(err.is_retryable(), "{err}");
    assert!(err.to_string().contains("ThrottlingException"), "{err}");
    assert_eq!(proxy.throttled(), 2, "attempts made");
}

/// A proxy in front of moto that answers the first `throttle` requests with a Secrets Manager
/// `ThrottlingException` (then closes that connection) and forwards every later connection.
struct ThrottlingProxy {
    port: u16,
    throttled: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl ThrottlingProxy {
    async fn start(upstream: String, throttle: usize) -> ThrottlingProxy {
        let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .unwrap();
        let port = listener.local_addr().unwrap().port();
        let upstream = upstream.trim_start_matches("http://").to_owned();
        let throttled = Arc::new(AtomicUsize::new(0));
        let counter = throttled.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    return;
                };
                let upstream = upstream.clone();
                let counter = counter.clone();
                tokio::spawn(async move {
                    if counter.load(Ordering::SeqCst) < throttle {
                        read_request(&mut client).await;
                        counter.fetch_add(1, Ordering::SeqCst);
                        let body = r#"{"__type":"ThrottlingException","message":"Rate exceeded"}"#;
                        let answer = format!(
                            "HTTP/1.1 400 Bad Request\r\nContent-Type: application/x-amz-json-1.1\r\n\
                             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                            body.len()
                        );
                        let _ = client.write_all(answer.as_bytes()).await;
                        let _ = client.shutdown().await;
                    } else if let Ok(mut server) = tokio::net::TcpStream::connect(&upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
            }
        });
        ThrottlingProxy {
            port,
            throttled,
            task,
        }
    }

    fn endpoint_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn throttled(&self) -> usize {
        self.throttled.load(Ordering::SeqCst)
    }
}

impl Drop for ThrottlingProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Reads one HTTP request (headers, then `Content-Length` bytes of body) and drops it.
async fn read_request(stream: &mut tokio::net::TcpStream) {
    let mut buf = Vec::new();
    let mut chunk = [0_u8; 4096];
    loop {
        let Ok(n) = stream.read(&mut chunk).await else {
            return;
        };
        if n == 0 {
            return;
        }
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf);
        if let Some(end) = text.find("\r\n\r\n") {
            let length = text[..end]
                .lines()
                .find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            if buf.len() >= end + 4 + length {
                return;
            }
        }
    }
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
        let outcome = f
            .store
            .write(name, &written, &WritePrecondition::unread(false))
            .await
            .unwrap();
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
    f.store
        .write("graph/retag", &first, &WritePrecondition::unread(false))
        .await
        .unwrap();
    let before = f.store.metadata("graph/retag").await.unwrap().unwrap();

    let outcome = f
        .store
        .write("graph/retag", &later, &WritePrecondition::unread(false))
        .await
        .unwrap();
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
    f.store
        .write("graph/deleted", &written, &WritePrecondition::unread(false))
        .await
        .unwrap();
    boto3(
        &f.moto,
        "sm.delete_secret(SecretId=sys.argv[2], RecoveryWindowInDays=7)\nprint('{}')",
        &["graph/deleted"],
    );

    let write = f
        .store
        .write("graph/deleted", &written, &WritePrecondition::unread(false))
        .await
        .unwrap_err();
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

#[tokio::test]
async fn missing_credentials_are_explained() {
    let moto = Moto::start();
    let no_credentials = SdkConfig::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("eu-west-1"))
        .build();
    let options = AwsOptions {
        endpoint_url: Some(moto.endpoint_url()),
        ..AwsOptions::default()
    };
    let store = AwsStore::with_sdk_config("aws-test", options, &no_credentials).unwrap();
    let err = store.metadata("graph/token").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unauthorized, "{err}");
    assert!(
        err.to_string().contains("no usable AWS credentials"),
        "{err}"
    );
}

#[tokio::test]
async fn names_follow_the_aws_rule() {
    let store = store_at(closed_endpoint(), 1);
    for ok in [
        "a",
        "graph/access-token",
        "A-Za-z0-9/_+=.@-",
        &"n".repeat(512),
    ] {
        assert!(store.check_name(ok).is_ok(), "{ok} should be accepted");
    }
    for bad in [
        "",
        "with space",
        "arn:aws:secretsmanager:eu-west-1:1:secret:x",
        "é",
        &"n".repeat(513),
    ] {
        let err = store.check_name(bad).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidName, "{bad}");
    }
}

#[tokio::test]
async fn a_new_secret_uses_the_configured_kms_key() {
    let moto = Moto::start();
    let options = AwsOptions {
        endpoint_url: Some(moto.endpoint_url()),
        kms_key_id: Some("alias/secret-sync-tokens".to_owned()),
        ..AwsOptions::default()
    };
    let store = AwsStore::with_sdk_config("aws-test", options, &sdk_config(ACCESS_KEY, SECRET_KEY))
        .unwrap();
    let written = payload(
        "eyJ0eXAiOiJKV1QifQ.kms.sig",
        OffsetDateTime::now_utc(),
        Format::Raw,
    );
    store
        .write("graph/kms", &written, &WritePrecondition::unread(false))
        .await
        .unwrap();
    let seen = boto3(
        &moto,
        "print(json.dumps(sm.describe_secret(SecretId=sys.argv[2]).get('KmsKeyId')))",
        &["graph/kms"],
    );
    assert_eq!(seen, "alias/secret-sync-tokens");
}

/// A moto that records every request it receives (moto's recorder, in a file of this test),
/// so a test can see which Secrets Manager operations a write made.
struct Recorded {
    fixture: Fixture,
    recording: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Recorded {
    fn start() -> Recorded {
        let dir = tempfile::tempdir().unwrap();
        let recording = dir.path().join("requests.jsonl");
        let moto = Moto::start_with_env(&[
            ("MOTO_ENABLE_RECORDING", "True"),
            ("MOTO_RECORDER_FILEPATH", recording.to_str().unwrap()),
        ]);
        Recorded {
            fixture: fixture_on(moto, store_at),
            recording,
            _dir: dir,
        }
    }

    /// The operations (`X-Amz-Target` without the service prefix) received so far, in order.
    fn operations(&self) -> Vec<String> {
        let text = std::fs::read_to_string(&self.recording).unwrap_or_default();
        text.lines()
            .map(|line| serde_json::from_str::<Value>(line).unwrap())
            // The readiness probe of testkit's Moto::start.
            .filter(|entry| !entry["url"].as_str().unwrap().contains("/moto-api/"))
            .map(|entry| {
                let line = entry.to_string();
                let headers = entry["headers"].as_object().unwrap();
                let target = headers
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case("x-amz-target"))
                    .and_then(|(_, v)| v.as_str())
                    .unwrap_or_else(|| panic!("a request without X-Amz-Target: {line}"));
                target.trim_start_matches("secretsmanager.").to_owned()
            })
            .collect()
    }

    /// What `write` sends after the caller's metadata read, as the engine does it: the
    /// metadata read, then the write with the precondition of that read; returns the outcome
    /// and the operations of the write alone.
    async fn refresh(
        &self,
        name: &str,
        written: &TokenPayload,
        adopt: bool,
    ) -> (
        Result<WriteOutcome, secret_backends::BackendError>,
        Vec<String>,
    ) {
        let store = &self.fixture.store;
        let seen = store.metadata(name).await.unwrap();
        let before = self.operations().len();
        let outcome = store
            .write(name, written, &WritePrecondition::from_read(seen, adopt))
            .await;
        (outcome, self.operations()[before..].to_vec())
    }
}

fn ops(names: &[&str]) -> Vec<String> {
    names.iter().map(|&n| n.to_owned()).collect()
}

/// A refresh (a new token over the one written before) is the metadata read plus
/// PutSecretValue and TagResource: no second DescribeSecret, no GetSecretValue.
#[tokio::test]
async fn a_refresh_after_the_metadata_read_is_put_and_tag() {
    let r = Recorded::start();
    let now = OffsetDateTime::now_utc();
    for format in [Format::Raw, Format::Json] {
        let name = format!("graph/refresh-{format:?}");
        let first = payload(
            "eyJ0eXAiOiJKV1QifQ.first.sig",
            now + time::Duration::minutes(5),
            format,
        );
        let (outcome, calls) = r.refresh(&name, &first, false).await;
        assert_eq!(outcome.unwrap(), WriteOutcome::Created);
        assert_eq!(calls, ops(&["CreateSecret"]), "create ({format:?})");

        let second = payload(
            "eyJ0eXAiOiJKV1QifQ.second.sig",
            now + time::Duration::minutes(65),
            format,
        );
        let (outcome, calls) = r.refresh(&name, &second, false).await;
        assert_eq!(outcome.unwrap(), WriteOutcome::Updated);
        assert_eq!(
            calls,
            ops(&["PutSecretValue", "TagResource"]),
            "refresh ({format:?})"
        );
        let seen = boto3(&r.fixture.moto, READ_BACK, &[&name]);
        assert_eq!(
            seen["value"].as_str(),
            Some(second.encode().expose_secret()),
            "{format:?}"
        );
        assert_eq!(
            seen["tags"]["secret-sync:expires-on"].as_str(),
            Some(second.expires_on().unix_timestamp().to_string().as_str()),
            "{format:?}: {seen}"
        );
        assert_eq!(seen["versions"], 2, "{format:?}: {seen}");

        // The same token and expiry again: decided from the metadata read, no call at all.
        let (outcome, calls) = r.refresh(&name, &second, false).await;
        assert_eq!(outcome.unwrap(), WriteOutcome::Unchanged, "{format:?}");
        assert_eq!(calls, ops(&[]), "identical token ({format:?})");
    }
}

/// The token already stored with another expiry (the tags of an earlier write failed, or the
/// cache served the token recorded there): raw, only the tags are written; no new version.
#[tokio::test]
async fn the_stored_token_with_another_expiry_is_retagged_without_reading_the_value() {
    let r = Recorded::start();
    let now = OffsetDateTime::now_utc();
    let token = "eyJ0eXAiOiJKV1QifQ.same.sig";
    let (outcome, _) = r
        .refresh(
            "graph/same",
            &payload(token, now + time::Duration::minutes(5), Format::Raw),
            false,
        )
        .await;
    assert_eq!(outcome.unwrap(), WriteOutcome::Created);
    let later = payload(token, now + time::Duration::minutes(50), Format::Raw);
    let (outcome, calls) = r.refresh("graph/same", &later, false).await;
    assert_eq!(outcome.unwrap(), WriteOutcome::Updated);
    assert_eq!(calls, ops(&["TagResource"]));
    let seen = boto3(&r.fixture.moto, READ_BACK, &["graph/same"]);
    assert_eq!(seen["versions"], 1, "{seen}");
    assert_eq!(
        seen["tags"]["secret-sync:expires-on"].as_str(),
        Some(later.expires_on().unix_timestamp().to_string().as_str()),
        "{seen}"
    );
}

/// A version secret-sync did not make (its id carries no fingerprint) whose tags record the
/// payload's expiry and marker may hold the payload's token: only then is the value read, and
/// an identical one is not written again. With another expiry recorded it is not read.
#[tokio::test]
async fn a_version_made_by_someone_else_is_read_only_when_its_expiry_is_the_payloads() {
    let r = Recorded::start();
    let expires = OffsetDateTime::from_unix_timestamp(1_795_500_000).unwrap();
    let token = "eyJ0eXAiOiJKV1QifQ.foreign.sig";
    boto3(
        &r.fixture.moto,
        "sm.create_secret(Name=sys.argv[2], SecretString=sys.argv[3], Tags=[
    {'Key': 'secret-sync:expires-on', 'Value': '1795500000'},
    {'Key': 'secret-sync:expires-at', 'Value': '2026-11-24T06:00:00Z'},
    {'Key': 'secret-sync:managed-by', 'Value': 'secret-sync-test'}])\nprint('{}')",
        &["graph/foreign", token],
    );
    let same = payload(token, expires, Format::Raw);
    let (outcome, calls) = r.refresh("graph/foreign", &same, false).await;
    assert_eq!(outcome.unwrap(), WriteOutcome::Unchanged);
    assert_eq!(calls, ops(&["GetSecretValue"]));

    let other = payload("eyJ0eXAiOiJKV1QifQ.other.sig", expires, Format::Raw);
    let (outcome, calls) = r.refresh("graph/foreign", &other, false).await;
    assert_eq!(outcome.unwrap(), WriteOutcome::Updated);
    assert_eq!(
        calls,
        ops(&["GetSecretValue", "PutSecretValue", "TagResource"])
    );

    let newer = payload(
        "eyJ0eXAiOiJKV1QifQ.newer.sig",
        expires + time::Duration::hours(1),
        Format::Raw,
    );
    let (outcome, calls) = r.refresh("graph/foreign", &newer, false).await;
    assert_eq!(outcome.unwrap(), WriteOutcome::Updated);
    assert_eq!(calls, ops(&["PutSecretValue", "TagResource"]));
    let seen = boto3(&r.fixture.moto, READ_BACK, &["graph/foreign"]);
    assert_eq!(
        seen["value"].as_str(),
        Some("eyJ0eXAiOiJKV1QifQ.newer.sig"),
        "{seen}"
    );
}

/// The adopt rule goes by the metadata read: a secret without the marker is refused without
/// any call (it was not overwritten), and taken over with adopt in two calls.
#[tokio::test]
async fn a_secret_without_the_marker_is_refused_from_the_read_without_a_call() {
    let r = Recorded::start();
    boto3(
        &r.fixture.moto,
        "sm.create_secret(Name='graph/theirs', SecretString=\"someone else's value\")\nprint('{}')",
        &[],
    );
    let written = payload(
        "eyJ0eXAiOiJKV1QifQ.theirs.sig",
        OffsetDateTime::now_utc(),
        Format::Raw,
    );
    let (outcome, calls) = r.refresh("graph/theirs", &written, false).await;
    let err = outcome.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict, "{err}");
    assert!(err.to_string().contains("adopt = true"), "{err}");
    conformance::assert_no_leak(&err, &["eyJ0eXAiOiJKV1QifQ.theirs.sig"]);
    assert_eq!(calls, ops(&[]));
    let seen = boto3(&r.fixture.moto, READ_BACK, &["graph/theirs"]);
    assert_eq!(seen["value"].as_str(), Some("someone else's value"));

    let (outcome, calls) = r.refresh("graph/theirs", &written, true).await;
    assert_eq!(outcome.unwrap(), WriteOutcome::Updated);
    assert_eq!(calls, ops(&["PutSecretValue", "TagResource"]));
}

/// A secret deleted for good between the read and the write is created again.
#[tokio::test]
async fn a_secret_deleted_since_the_read_is_created_again() {
    let r = Recorded::start();
    let now = OffsetDateTime::now_utc();
    let first = payload("eyJ0eXAiOiJKV1QifQ.gone.sig", now, Format::Raw);
    let store = &r.fixture.store;
    store
        .write("graph/gone", &first, &WritePrecondition::unread(false))
        .await
        .unwrap();
    let seen = store.metadata("graph/gone").await.unwrap();
    assert!(seen.is_some());
    boto3(
        &r.fixture.moto,
        "sm.delete_secret(SecretId=sys.argv[2], ForceDeleteWithoutRecovery=True)\nprint('{}')",
        &["graph/gone"],
    );
    let second = payload(
        "eyJ0eXAiOiJKV1QifQ.back.sig",
        now + time::Duration::hours(1),
        Format::Raw,
    );
    let before = r.operations().len();
    let outcome = store
        .write(
            "graph/gone",
            &second,
            &WritePrecondition::from_read(seen, false),
        )
        .await
        .unwrap();
    assert_eq!(outcome, WriteOutcome::Created);
    assert_eq!(
        r.operations()[before..].to_vec(),
        ops(&["PutSecretValue", "CreateSecret"])
    );
    let seen = boto3(&r.fixture.moto, READ_BACK, &["graph/gone"]);
    assert_eq!(seen["value"].as_str(), Some("eyJ0eXAiOiJKV1QifQ.back.sig"));
}

/// Another client (boto3) writes `text` as the secret: creates it, or puts a new current version.
fn put_raw(moto: &Moto) -> impl Fn(&str, &str) + '_ {
    move |name, text| {
        boto3(
            moto,
            "try:\n    sm.put_secret_value(SecretId=sys.argv[2], SecretString=sys.argv[3])\n\
             except sm.exceptions.ResourceNotFoundException:\n    \
             sm.create_secret(Name=sys.argv[2], SecretString=sys.argv[3])\nprint('{}')",
            &[name, text],
        );
    }
}

/// The record of a whole value is in tags (`secret-sync:key-id`, ...), as boto3 sees them,
/// naming the version they describe; the written version is AWSCURRENT, the one before it
/// AWSPREVIOUS, and no version keeps the pending label.
#[tokio::test]
async fn value_round_trip() {
    let f = fixture();
    conformance::value_round_trip(&f.harness).await;
    use secret_backends::{CredentialRecord, SecretValue};
    let name = (f.harness.fresh_name)();
    let record = conformance::full_record();
    let first = SecretValue::new(SecretString::from("first-value")).unwrap();
    f.store
        .write_value(
            &name,
            None,
            &first,
            &record,
            &WritePrecondition::from_read(None, true),
        )
        .await
        .unwrap();
    let read = f.store.read_stored(&name, None).await.unwrap();
    let second = SecretValue::new(SecretString::from("second-value")).unwrap();
    f.store
        .write_value(
            &name,
            None,
            &second,
            &CredentialRecord {
                installation: None,
                ..record.clone()
            },
            &WritePrecondition::from_read(Some(read.metadata.clone()), true),
        )
        .await
        .unwrap();
    let seen = boto3(
        &f.moto,
        "d = sm.describe_secret(SecretId=sys.argv[2])\nv = sm.get_secret_value(SecretId=sys.argv[2], VersionStage='AWSCURRENT')\n\
         print(json.dumps({'value': v['SecretString'], 'version': v['VersionId'], \
         'tags': {t['Key']: t['Value'] for t in d.get('Tags', [])}, 'stages': d['VersionIdsToStages']}))",
        &[&name],
    );
    assert_eq!(seen["value"], "second-value");
    let tags = &seen["tags"];
    assert_eq!(
        tags["secret-sync:key-id"],
        record.key_id.clone().unwrap().as_str(),
        "{seen}"
    );
    assert_eq!(
        tags["secret-sync:key-expires-on"], "2026-11-24T06:00:00Z",
        "{seen}"
    );
    assert_eq!(
        tags["secret-sync:record-version"], seen["version"],
        "{seen}"
    );
    assert!(
        tags.get("secret-sync:installation").is_none(),
        "a field not recorded is untagged: {seen}"
    );
    let stages = seen["stages"].as_object().unwrap();
    assert_eq!(
        stages[read.metadata.version.as_deref().unwrap()],
        serde_json::json!(["AWSPREVIOUS"]),
        "{seen}"
    );
    assert_eq!(
        stages[seen["version"].as_str().unwrap()],
        serde_json::json!(["AWSCURRENT"]),
        "{seen}"
    );
}

#[tokio::test]
async fn field_keeps_other_fields() {
    let f = fixture();
    conformance::field_keeps_other_fields(&f.harness, &put_raw(&f.moto)).await;
}

/// UpdateSecretVersionStage with RemoveFromVersionId = the version read refuses it once
/// AWSCURRENT moved.
#[tokio::test]
async fn value_conflict_when_changed_since_read() {
    let f = fixture();
    conformance::value_conflict_when_changed_since_read(&f.harness, &put_raw(&f.moto)).await;
}

#[tokio::test]
async fn field_conflict_when_changed_since_read() {
    let f = fixture();
    conformance::field_conflict_when_changed_since_read(&f.harness, &put_raw(&f.moto)).await;
}

#[tokio::test]
async fn value_never_echoed() {
    let f = fixture();
    conformance::value_never_echoed(&f.harness, &put_raw(&f.moto)).await;
}
