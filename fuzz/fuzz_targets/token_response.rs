//! The token endpoint's answer (`entra-auth` `token.rs` `parse_response`), for any status,
//! body and `Retry-After`: never a panic; only a 2xx gives a token, and its refresh point is
//! after the request and before its expiry; no error (message or `Debug`) contains the client
//! secret, whatever the body echoes.
//!
//! Input: byte 0 picks the credential kind, bytes 1-2 the HTTP status (100-599), byte 3 the
//! `Retry-After` (none, or 0 to 254 seconds), the rest is the body.
#![no_main]

use std::time::Duration;

use entra_auth::fuzzing::{SENSITIVE, parse_token_response};
use libfuzzer_sys::fuzz_target;
use time::macros::datetime;

fuzz_target!(|data: &[u8]| {
    let [kind, hi, lo, retry, body @ ..] = data else {
        return;
    };
    let status = 100 + u16::from_be_bytes([*hi, *lo]) % 500;
    let retry_after = (*retry != 255).then(|| Duration::from_secs(u64::from(*retry)));
    let requested_at = datetime!(2026-06-01 12:00:00 UTC);
    match parse_token_response(*kind, status, body, requested_at, retry_after) {
        Ok(token) => {
            assert!((200..300).contains(&status), "HTTP {status} gave a token");
            if let Some(refresh) = token.refresh_on() {
                assert!(
                    refresh < token.expires_on(),
                    "refresh_on {refresh} is not before expires_on"
                );
                assert!(
                    refresh > requested_at,
                    "refresh_on {refresh} is not after the request"
                );
            }
        }
        Err(err) => {
            let shown = format!("{err} {err:?}");
            assert!(
                !shown.contains(SENSITIVE),
                "an error shows the client secret: {shown}"
            );
        }
    }
});
