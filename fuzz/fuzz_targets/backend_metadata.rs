//! What the backends parse out of a server's answer or a stored document: expiries and markers
//! in a JSON map (`expiry_from_map`, `StoredToken::from_map`: sidecars, JSON token documents,
//! Vault KV data), the same map with string values (Vault custom_metadata), RFC 3339 and Unix
//! times (Vault `created_time`, Key Vault and AWS tags, AWS `LastChangedDate`), Vault lease
//! durations, and a Key Vault secret bundle (attributes and tags). Never a panic; every time
//! kept is in UTC, whole seconds, in the years 1 to 9999, and is written back (RFC 3339) as
//! text that parses to the same time; a Vault renewal waits at most a day.
//!
//! Input: any bytes; JSON gives the parsers something to chew on.
#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use secret_backends::fuzzing::{
    format_rfc3339, key_vault_secret, rfc3339_time, unix_time, vault_renewal_wait,
};
use secret_backends::{StoredToken, expiry_from_map};
use serde_json::{Map, Value};
use time::{OffsetDateTime, UtcOffset};

fn check_time(what: &str, t: Option<OffsetDateTime>) {
    let Some(t) = t else { return };
    assert_eq!(t.offset(), UtcOffset::UTC, "{what}: {t} is not in UTC");
    assert_eq!(t.nanosecond(), 0, "{what}: {t} is not whole seconds");
    assert!(
        (1..=9999).contains(&t.year()),
        "{what}: {t} is outside the years 1 to 9999"
    );
    let text = format_rfc3339(t);
    assert_eq!(
        rfc3339_time(&text),
        Some(t),
        "{what}: {t} is written as {text:?}, which reads back differently"
    );
}

fn walk(value: &Value) {
    match value {
        Value::String(s) => {
            check_time("an RFC 3339 string", rfc3339_time(s));
            if let Ok(seconds) = s.trim().parse::<i64>() {
                check_time("Unix seconds in a string", unix_time(seconds));
            }
        }
        Value::Number(n) => {
            if let Some(seconds) = n.as_i64() {
                check_time("Unix seconds", unix_time(seconds));
            }
            if let Some(lease) = n.as_u64() {
                if let Some(wait) = vault_renewal_wait(lease) {
                    assert!(
                        wait <= Duration::from_secs(24 * 60 * 60),
                        "lease {lease}: renewal in {wait:?}"
                    );
                    assert!(
                        wait <= Duration::from_secs(lease),
                        "lease {lease}: renewal in {wait:?}"
                    );
                }
            }
        }
        Value::Array(items) => items.iter().for_each(walk),
        Value::Object(map) => {
            check_map(map);
            map.values().for_each(walk);
        }
        Value::Bool(_) | Value::Null => {}
    }
}

fn check_map(map: &Map<String, Value>) {
    check_time("expiry_from_map", expiry_from_map(map));
    if let Some(stored) = StoredToken::from_map(map) {
        check_time("StoredToken::from_map", stored.expires_on);
    }
    // Vault custom_metadata: a map of strings
    let strings: Map<String, Value> = map
        .iter()
        .map(|(k, v)| {
            let text = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            (k.clone(), Value::String(text))
        })
        .collect();
    check_time("expiry_from_map of strings", expiry_from_map(&strings));
}

fuzz_target!(|data: &[u8]| {
    if let Some((expires, meta)) = key_vault_secret(data) {
        check_time("Key Vault exp", expires);
        check_time("Key Vault expiry", meta.expires_on);
        check_time("Key Vault updated", meta.updated_on);
    }
    if let Ok(value) = serde_json::from_slice::<Value>(data) {
        walk(&value);
    }
});
