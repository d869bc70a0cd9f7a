//! Replays the recorded Entra and Key Vault answers (tests/fixtures, copied from real recordings):
//! for each case the emulator is driven into the same situation and must answer with the same
//! status, the same Content-Type and Cache-Control, the same set of keys with the same JSON types,
//! and the same `error` and `error_codes`. Key Vault exchanges are replayed request by request
//! (challenge, then authenticated calls) and compared the same way, plus `error.code`, the value,
//! the attributes and the id's name and version. A new fixture without a replay fails a test.

use std::time::Duration;

use serde_json::Value;
use testkit::{AppRegistration, EntraEmulator, TestCertificate, ThumbprintHeader, TokenOptions};

use crate::support::{Answer, post_assertion, post_form};

const TENANT: &str = "azure_tenant_id";
const CLIENT: &str = "azure_client_id";
const SECRET: &str = "azure_client_secret";
const SCOPE: &str = "https://vault.azure.net/.default";

/// The JSON type of every value, keeping object keys: two bodies have the same shape when this is equal.
pub fn shape(value: &Value) -> Value {
    match value {
        Value::Object(map) => {
            Value::Object(map.iter().map(|(k, v)| (k.clone(), shape(v))).collect())
        }
        Value::Array(items) => Value::Array(items.iter().map(shape).collect()),
        Value::String(_) => "string".into(),
        Value::Number(_) => "number".into(),
        Value::Bool(_) => "bool".into(),
        Value::Null => "null".into(),
    }
}

async fn secret_request(entra: &EntraEmulator, secret: &str) -> Answer {
    post_form(
        &reqwest::Client::new(),
        &entra.token_url(TENANT),
        &[
            ("grant_type", "client_credentials"),
            ("client_id", CLIENT),
            ("client_secret", secret),
            ("scope", SCOPE),
        ],
    )
    .await
}

/// Puts the emulator in the situation a fixture case recorded and makes the same request.
async fn replay(case: &Value) -> Answer {
    let what = case["what"].as_str().unwrap();
    let entra = EntraEmulator::start().await.unwrap();
    let cert = TestCertificate::generate("fixture").unwrap();
    entra.register_app(
        AppRegistration::new(TENANT, CLIENT)
            .with_secret(SECRET)
            .with_certificate(&cert),
    );
    if what.starts_with("client secret, success (") {
        let request = &case["request"];
        let form: Vec<(&str, &str)> = request["form"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str().unwrap()))
            .collect();
        let url = format!("{}{}", entra.base_url(), request["path"].as_str().unwrap());
        assert_eq!(request["method"], "POST");
        post_form(&reqwest::Client::new(), &url, &form).await
    } else if what.starts_with("client secret, success with a 24 h token") {
        entra.set_token_options(TokenOptions {
            lifetime: Duration::from_secs(86399),
            ..TokenOptions::default()
        });
        secret_request(&entra, SECRET).await
    } else if what.starts_with("wrong client secret") {
        secret_request(&entra, "the-secret-id-not-its-value").await
    } else if what.starts_with("bad certificate assertion") {
        let mut claims = cert.assertion(CLIENT, &entra.token_url(TENANT));
        claims.thumbprint = ThumbprintHeader::None;
        post_assertion(
            &reqwest::Client::new(),
            &entra.token_url(TENANT),
            CLIENT,
            &cert.sign(&claims),
        )
        .await
    } else {
        panic!("fixture case {what:?} has no situation in this test: add one");
    }
}

#[tokio::test]
async fn entra_fixtures_replay() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/entra/token-responses.json"
    ))
    .unwrap();
    let fixture: Value = serde_json::from_str(&text).unwrap();
    let cases = fixture["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 5, "every recorded case is replayed");
    for case in cases {
        let what = case["what"].as_str().unwrap();
        let answer = replay(case).await;
        assert_eq!(
            answer.status, case["status"],
            "{what}: status; body {}",
            answer.text
        );
        assert_eq!(
            shape(&answer.body),
            shape(&case["body"]),
            "{what}: body shape; body {}",
            answer.text
        );
        let expected = &case["body"];
        for key in [
            "error",
            "error_codes",
            "token_type",
            "expires_in",
            "ext_expires_in",
        ] {
            assert_eq!(answer.body.get(key), expected.get(key), "{what}: {key}");
        }
        for (name, value) in case["headers"].as_object().into_iter().flatten() {
            let name = name.to_ascii_lowercase();
            assert_eq!(
                answer.headers.get(&name).map(String::as_str),
                value.as_str(),
                "{what}: header {name}"
            );
        }
        // Headers the fixtures record on their first case hold for every answer.
        assert_eq!(
            answer.headers.get("content-type").map(String::as_str),
            Some("application/json; charset=utf-8"),
            "{what}"
        );
        assert_eq!(
            answer.headers.get("cache-control").map(String::as_str),
            Some("no-cache, no-store"),
            "{what}"
        );
    }
}

/// Replays one recorded Key Vault exchange against a fresh vault, entry by entry.
async fn replay_keyvault(file: &str) {
    let path = format!(
        "{}/tests/fixtures/keyvault/{file}",
        env!("CARGO_MANIFEST_DIR")
    );
    let fixture: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let vault = crate::keyvault::Vault::start(|entra| testkit::KeyVaultOptions {
        ca: entra.ca(),
        ..testkit::KeyVaultOptions::new("12345678-1234-1234-1234-123456789012")
    })
    .await;
    for (index, entry) in fixture["Entries"].as_array().unwrap().iter().enumerate() {
        let what = format!("{file} entry {index}");
        let recorded = url::Url::parse(entry["RequestUri"].as_str().unwrap()).unwrap();
        let url = format!(
            "{}{}?{}",
            vault.kv.vault_url(),
            recorded.path(),
            recorded.query().unwrap_or("")
        );
        let method =
            reqwest::Method::from_bytes(entry["RequestMethod"].as_str().unwrap().as_bytes())
                .unwrap();
        let authorized = entry["RequestHeaders"].get("Authorization").is_some();
        let body = Some(entry["RequestBody"].clone()).filter(|b| !b.is_null());
        let answer = vault.send_url(method, &url, body, authorized).await;

        assert_eq!(
            answer.status, entry["StatusCode"],
            "{what}: status; body {}",
            answer.text
        );
        for (name, value) in entry["ResponseHeaders"].as_object().unwrap() {
            let name = name.to_ascii_lowercase();
            assert_eq!(
                answer.headers.get(&name).map(String::as_str),
                value.as_str(),
                "{what}: header {name}"
            );
        }
        let expected = &entry["ResponseBody"];
        assert_eq!(
            shape(&answer.body),
            shape(expected),
            "{what}: body shape; body {}",
            answer.text
        );
        assert_eq!(
            answer.body.pointer("/error/code"),
            expected.pointer("/error/code"),
            "{what}"
        );
        assert_eq!(answer.body.get("value"), expected.get("value"), "{what}");
        for attribute in ["enabled", "exp", "recoveryLevel", "recoverableDays"] {
            assert_eq!(
                answer.body["attributes"].get(attribute),
                expected["attributes"].get(attribute),
                "{what}: {attribute}"
            );
        }
        if let Some(expected_id) = expected["id"].as_str() {
            let id = answer.body["id"].as_str().unwrap();
            let tail = |id: &str| id.split('/').rev().nth(1).map(str::to_owned);
            assert_eq!(
                tail(id),
                tail(expected_id),
                "{what}: secret name in id {id}"
            );
            assert_eq!(
                id.rsplit('/').next().unwrap().len(),
                32,
                "{what}: 32-hex version in {id}"
            );
        }
    }
}

#[tokio::test]
async fn keyvault_get_missing_secret_replays() {
    replay_keyvault("get-missing-secret.json").await;
}

#[tokio::test]
async fn keyvault_set_secret_with_attributes_replays() {
    replay_keyvault("set-secret-with-attributes.json").await;
}

#[tokio::test]
async fn keyvault_update_secret_attributes_replays() {
    replay_keyvault("update-secret-attributes.json").await;
}

#[test]
fn every_keyvault_fixture_is_replayed() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/keyvault");
    let mut files: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(
        files,
        [
            "get-missing-secret.json",
            "set-secret-with-attributes.json",
            "update-secret-attributes.json"
        ],
        "a new Key Vault fixture needs its replay test here"
    );
}
