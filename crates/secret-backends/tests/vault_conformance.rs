//! The shared conformance suite, run against a real OpenBao dev server, on KV v2 and KV v1.
//!
//! Each test starts its own server (testkit::real), so tests are independent and can run in
//! parallel. The stores detect the KV version themselves (no `kv_version` given), so the
//! detection is exercised by every test here.

use std::sync::atomic::{AtomicU64, Ordering};

use secrecy::SecretString;
use secret_backends::Format;
use secret_backends::conformance::{self, Harness};
use secret_backends::vault::{VaultAuth, VaultOptions, VaultStore};
use testkit::real::OpenBao;

struct Fixture {
    harness: Harness,
    bao: OpenBao,
    mount: &'static str,
}

fn store(address: &str, mount: &str, token: SecretString) -> VaultStore {
    VaultStore::new(
        "ops-vault",
        VaultOptions::new(
            address,
            mount,
            VaultAuth::Token {
                token: token.into(),
            },
        ),
    )
    .unwrap()
}

/// An address where nothing listens.
fn closed_port_address() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    format!("http://127.0.0.1:{port}")
}

fn fixture(kv_version: u8) -> Fixture {
    let bao = OpenBao::start();
    let mount = if kv_version == 2 {
        "secret"
    } else {
        bao.enable_kv("kv1", 1);
        "kv1"
    };
    let counter = AtomicU64::new(0);
    let harness = Harness {
        store: Box::new(store(&bao.address(), mount, bao.root_token().clone())),
        fresh_name: Box::new(move || {
            format!(
                "conformance/token-{}",
                counter.fetch_add(1, Ordering::Relaxed)
            )
        }),
        formats: vec![Format::Raw, Format::Json],
        // the Vault backend always stores a KV map
        read_back: |_| Some("access_token"),
        invalid_name: "apps/../escape".to_owned(),
    };
    Fixture {
        harness,
        bao,
        mount,
    }
}

macro_rules! conformance_tests {
    ($module:ident, $version:expr) => {
        mod $module {
            use super::*;

            #[tokio::test]
            async fn missing_secret_is_not_found() {
                conformance::missing_secret_is_not_found(&fixture($version).harness).await;
            }

            #[tokio::test]
            async fn write_then_read_back() {
                conformance::write_then_read_back(&fixture($version).harness).await;
            }

            #[tokio::test]
            async fn overwrite() {
                conformance::overwrite(&fixture($version).harness).await;
            }

            #[tokio::test]
            async fn metadata_round_trip() {
                conformance::metadata_round_trip(&fixture($version).harness).await;
            }

            #[tokio::test]
            async fn unchanged_write() {
                conformance::unchanged_write(&fixture($version).harness).await;
            }

            #[tokio::test]
            async fn missing_field() {
                conformance::missing_field(&fixture($version).harness).await;
            }

            #[tokio::test]
            async fn refused_before_network() {
                let f = fixture($version);
                let offline = store(&closed_port_address(), f.mount, f.bao.root_token().clone());
                conformance::refused_before_network(&f.harness, &offline).await;
            }

            #[tokio::test]
            async fn server_unreachable() {
                let f = fixture($version);
                let offline = store(&closed_port_address(), f.mount, f.bao.root_token().clone());
                conformance::server_unreachable(&f.harness, &offline).await;
            }

            #[tokio::test]
            async fn authentication_refused() {
                let f = fixture($version);
                let wrong = "s.wrong-token-4711";
                let bad = store(&f.bao.address(), f.mount, SecretString::from(wrong));
                conformance::authentication_refused(&f.harness, &bad, wrong).await;
            }
        }
    };
}

conformance_tests!(kv2, 2);
conformance_tests!(kv1, 1);

/// Another client (the raw API, root token) creates the secret between the read and the write.
fn create_as_other(f: &Fixture, name: &str) {
    let (path, body) = if f.mount == "secret" {
        (
            format!("secret/data/{name}"),
            serde_json::json!({"data": {"value": "someone else's value"}}),
        )
    } else {
        (
            format!("{}/{name}", f.mount),
            serde_json::json!({"value": "someone else's value"}),
        )
    };
    f.bao.api("POST", &path, Some(body));
}

/// KV v2: the write's check-and-set (`cas = 0`: must not exist) is what refuses it.
#[tokio::test]
async fn kv2_created_since_read_is_not_overwritten() {
    let f = fixture(2);
    conformance::created_since_read_is_not_overwritten(&f.harness, &|name| {
        create_as_other(&f, name)
    })
    .await;
}

/// KV v1 has no check-and-set: the re-read right before the write is what refuses it.
#[tokio::test]
async fn kv1_created_since_read_is_not_overwritten() {
    let f = fixture(1);
    conformance::created_since_read_is_not_overwritten(&f.harness, &|name| {
        create_as_other(&f, name)
    })
    .await;
}

/// KV v2: a write after a metadata read does not read the data again (the expiry read is not
/// the payload's, so the token cannot be); check-and-set on the version read is what refuses
/// a secret someone else overwrote since, and what lets `adopt` take it over (a mismatch, then
/// the rule on what is there). A refresh over an untouched secret makes one version.
#[tokio::test]
async fn kv2_overwritten_since_read_is_refused_by_check_and_set() {
    use secrecy::ExposeSecret;
    use secret_backends::{ErrorKind, WriteOutcome, WritePrecondition};
    let f = fixture(2);
    let store = &f.harness.store;
    let name = "conformance/overwritten";
    let first = conformance::payload(&conformance::unique_token(), 30, Format::Raw);
    store
        .write(name, &first, &WritePrecondition::unread(false))
        .await
        .unwrap();

    let seen = store.metadata(name).await.unwrap().unwrap();
    let token = conformance::unique_token();
    let refresh = conformance::payload(&token, 90, Format::Raw);
    let outcome = store
        .write(
            name,
            &refresh,
            &WritePrecondition::from_read(Some(seen.clone()), false),
        )
        .await
        .unwrap();
    assert_eq!(outcome, WriteOutcome::Updated);
    let after = store.metadata(name).await.unwrap().unwrap();
    let version = |v: &Option<String>| v.as_deref().unwrap().parse::<u32>().unwrap();
    assert_eq!(version(&after.version), version(&seen.version) + 1);
    assert_eq!(after.expires_on, Some(refresh.expires_on()));
    let read = store.read(name, Some("access_token")).await.unwrap();
    assert_eq!(read.expose_secret(), token.expose_secret());

    create_as_other(&f, name);
    let next = conformance::payload(&conformance::unique_token(), 120, Format::Raw);
    let err = store
        .write(
            name,
            &next,
            &WritePrecondition::from_read(Some(after.clone()), false),
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict, "{err}");
    assert!(
        err.to_string().contains("since secret-sync read it"),
        "{err}"
    );
    let theirs = store.read(name, Some("value")).await.unwrap();
    assert_eq!(theirs.expose_secret(), "someone else's value");

    let outcome = store
        .write(
            name,
            &next,
            &WritePrecondition::from_read(Some(after), true),
        )
        .await
        .unwrap();
    assert_eq!(outcome, WriteOutcome::Updated);
    let meta = store.metadata(name).await.unwrap().unwrap();
    assert_eq!(meta.expires_on, Some(next.expires_on()));
}

/// Another client (the raw API, root token) writes `text` (a JSON object) as the secret's data.
fn put_raw(f: &Fixture) -> impl Fn(&str, &str) + '_ {
    move |name, text| {
        let data: serde_json::Value = serde_json::from_str(text).unwrap();
        let (path, body) = if f.mount == "secret" {
            (
                format!("secret/data/{name}"),
                serde_json::json!({ "data": data }),
            )
        } else {
            (format!("{}/{name}", f.mount), data)
        };
        f.bao.api("POST", &path, Some(body));
    }
}

/// KV v2: the record of a whole value is in custom_metadata (`secret-sync-key-id`, ...).
#[tokio::test]
async fn kv2_value_round_trip() {
    let f = fixture(2);
    conformance::value_round_trip(&f.harness).await;
}

#[tokio::test]
async fn kv2_field_keeps_other_fields() {
    let f = fixture(2);
    conformance::field_keeps_other_fields(&f.harness, &put_raw(&f)).await;
}

#[tokio::test]
async fn kv1_field_keeps_other_fields() {
    let f = fixture(1);
    conformance::field_keeps_other_fields(&f.harness, &put_raw(&f)).await;
}

/// KV v2: check-and-set on the version read refuses it.
#[tokio::test]
async fn kv2_value_conflict_when_changed_since_read() {
    let f = fixture(2);
    conformance::value_conflict_when_changed_since_read(&f.harness, &put_raw(&f)).await;
}

#[tokio::test]
async fn kv2_field_conflict_when_changed_since_read() {
    let f = fixture(2);
    conformance::field_conflict_when_changed_since_read(&f.harness, &put_raw(&f)).await;
}

/// KV v1: the map read right before the write is compared with the read's fingerprint.
#[tokio::test]
async fn kv1_field_conflict_when_changed_since_read() {
    let f = fixture(1);
    conformance::field_conflict_when_changed_since_read(&f.harness, &put_raw(&f)).await;
}

#[tokio::test]
async fn kv2_value_never_echoed() {
    let f = fixture(2);
    conformance::value_never_echoed(&f.harness, &put_raw(&f)).await;
}

#[tokio::test]
async fn kv1_value_never_echoed() {
    let f = fixture(1);
    conformance::value_never_echoed(&f.harness, &put_raw(&f)).await;
}

/// KV v1 keeps no metadata, so a whole value (whose record would go there) is refused, saying
/// to name a #field; nothing is written.
#[tokio::test]
async fn kv1_whole_value_is_refused() {
    use secret_backends::{CredentialRecord, ErrorKind, SecretValue, WritePrecondition};
    let f = fixture(1);
    let name = (f.harness.fresh_name)();
    let value = SecretValue::new(SecretString::from(r#"{"secret":"v1-whole"}"#)).unwrap();
    let err = f
        .harness
        .store
        .write_value(
            &name,
            None,
            &value,
            &CredentialRecord::default(),
            &WritePrecondition::unread(true),
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidConfig, "{err}");
    assert!(err.to_string().contains("#client_secret"), "{err}");
    conformance::assert_no_leak(&err, &["v1-whole"]);
    assert_eq!(f.harness.store.metadata(&name).await.unwrap(), None);
    let err = f.harness.store.read_stored(&name, None).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidConfig, "{err}");
}
