//! Helpers shared by the hostile-server tests (`aws_hostile`, `azure_kv_hostile`,
//! `vault_hostile`): the payload they write and the checks every one of them makes of a
//! redirect target and of a huge answer.

use secrecy::SecretString;
use secret_backends::{BackendError, ErrorKind, Format, TokenPayload};
use testkit::HostileServer;

/// A payload of `token` in `format`, expiring in an hour, managed by `secret-sync`.
pub fn payload(token: &str, format: Format) -> TokenPayload {
    TokenPayload::new(
        SecretString::from(token),
        "Bearer",
        time::OffsetDateTime::now_utc() + time::Duration::hours(1),
        "secret-sync",
        format,
    )
    .unwrap()
}

/// Panics unless no request at all reached `elsewhere`, the place a redirect pointed at.
pub fn assert_nothing_reached(elsewhere: &HostileServer) {
    let reached = elsewhere.requests();
    assert!(
        reached.is_empty(),
        "nothing may reach the redirect target, it got {reached:?}"
    );
}

/// Panics unless `err` is the protocol error that names an answer over the 1024 KiB limit and
/// `server` sent fewer than `limit` bytes of its body before the client stopped reading.
pub fn assert_cut_off(err: &BackendError, server: &HostileServer, limit: u64) {
    assert_eq!(err.kind(), ErrorKind::Protocol, "{err}");
    assert!(err.to_string().contains("larger than 1024 KiB"), "{err}");
    assert!(
        server.body_bytes_sent() < limit,
        "the client read on: {} bytes sent",
        server.body_bytes_sent()
    );
}
