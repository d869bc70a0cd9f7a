//! `webhook`: POST a small JSON document to a URL after a write.
//!
//! The document (`version`, `event`, `action`, `job`, `targets`, `expires_on`, `expires_at`,
//! `sent_at`; never a token) goes to https, or plain http on loopback (the loader refuses
//! anything else). With a `signing_key`, the header `X-Secret-Sync-Signature:
//! sha256=<hex HMAC-SHA256 of the exact body>` lets the receiver check who sent it; `sent_at`
//! is signed too, so a receiver can refuse replays. The HMAC is aws-lc-rs's, the crypto
//! provider rustls already uses (no second crypto stack).
//!
//! The client is reqwest over rustls (the platform's roots, as the token client, plus the
//! action's `ca_file`), follows no redirect (a 3xx is a failure, so the signed document never goes where the config does not
//! say) and reads at most [`MAX_ANSWER`] bytes of an answer, for the log. An attempt that
//! times out, cannot connect or gets a 5xx or 429 is retried with exponential backoff (0.5 s,
//! 1 s, 2 s, ...), up to `attempts` tries, all within the time the caller gives (the pass's
//! deadline, at most 30 s); any other 4xx fails at once, and so does a refused certificate.

use std::time::Duration;

use aws_lc_rs::hmac;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};
use time::OffsetDateTime;
use tokio::time::Instant;
use tracing::debug;
use url::Url;

use super::Context;
use crate::output::rfc3339;

/// The signature header.
pub const SIGNATURE_HEADER: &str = "X-Secret-Sync-Signature";

/// How much of an answer's body is read (for the debug log).
pub const MAX_ANSWER: usize = 4096;

/// The first retry's wait; each further one doubles it.
const FIRST_BACKOFF: Duration = Duration::from_millis(500);

/// An HTTP client for webhooks: rustls, no redirects, the platform's roots plus those of
/// `extra_roots` (the PEM bundle of an action's `ca_file`).
pub fn client(extra_roots: &[Vec<u8>]) -> anyhow::Result<reqwest::Client> {
    let builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("secret-sync/", env!("CARGO_PKG_VERSION")));
    // The platform's roots, read at the first handshake (platform-tls).
    let builder = platform_tls::platform_roots(builder, extra_roots).map_err(anyhow::Error::msg)?;
    Ok(builder.build()?)
}

/// The document a webhook receives.
pub fn body(key: &str, context: &Context) -> Value {
    json!({
        "version": 1,
        "event": "token-written",
        "action": key,
        "job": context.job,
        "targets": context.targets.iter().map(|t| json!({
            "backend": t.backend,
            "name": t.name,
            "outcome": t.outcome,
        })).collect::<Vec<_>>(),
        "expires_on": context.expires_on.map(OffsetDateTime::unix_timestamp),
        "expires_at": context.expires_on.map(rfc3339),
        "sent_at": OffsetDateTime::now_utc().unix_timestamp(),
    })
}

/// `sha256=<hex>` of `body` under `key`.
pub fn signature(key: &SecretString, body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, key.expose_secret().as_bytes());
    let tag = hmac::sign(&key, body);
    let mut hex = String::with_capacity(7 + 64);
    hex.push_str("sha256=");
    for byte in tag.as_ref() {
        hex.push_str(&format!("{byte:02x}"));
    }
    hex
}

/// One webhook delivery.
#[derive(Debug)]
pub struct Request<'a> {
    pub url: &'a Url,
    pub body: Value,
    pub key: Option<&'a SecretString>,
    /// Each attempt's timeout.
    pub timeout: Duration,
    pub attempts: u32,
    /// All attempts together end within this.
    pub within: Duration,
}

/// Where the webhook goes, for messages: origin and path (a query may carry a key).
fn shown(url: &Url) -> String {
    format!("{}{}", url.origin().ascii_serialization(), url.path())
}

/// What went wrong, with its causes (a refused connection, a certificate the platform does
/// not trust), without the URL reqwest puts in its own message (the query may hold a key).
fn causes(err: reqwest::Error) -> String {
    let err = err.without_url();
    let mut text = err.to_string();
    let mut source = std::error::Error::source(&err);
    while let Some(cause) = source {
        let line = cause.to_string();
        if !text.contains(&line) {
            text.push_str(": ");
            text.push_str(&line);
        }
        source = cause.source();
    }
    text
}

/// Sends `request`, retrying as the module doc says; `Ok` with the status that accepted it.
pub async fn send(client: &reqwest::Client, request: Request<'_>) -> Result<String, String> {
    let end = Instant::now() + request.within;
    let body = serde_json::to_vec(&request.body).map_err(|err| err.to_string())?;
    let signature = request.key.map(|key| signature(key, &body));
    let target = shown(request.url);
    let mut backoff = FIRST_BACKOFF;
    let mut last = String::new();
    for attempt in 1..=request.attempts {
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        let mut post = client
            .post(request.url.clone())
            .timeout(request.timeout.min(left))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.clone());
        if let Some(signature) = &signature {
            post = post.header(SIGNATURE_HEADER, signature);
        }
        let retryable = match post.send().await {
            Ok(mut answer) => {
                let status = answer.status();
                let mut read = Vec::new();
                while read.len() < MAX_ANSWER {
                    match answer.chunk().await {
                        Ok(Some(chunk)) => read.extend_from_slice(&chunk),
                        _ => break,
                    }
                }
                read.truncate(MAX_ANSWER);
                debug!(url = %target, status = status.as_u16(), attempt,
                    answer = %String::from_utf8_lossy(&read), "webhook answer");
                if status.is_success() {
                    return Ok(format!(
                        "{target} answered {} (attempt {attempt})",
                        status.as_u16()
                    ));
                }
                if status.is_redirection() {
                    return Err(format!(
                        "{target} answered {} (a redirect, which is not followed: give the \
                         final URL)",
                        status.as_u16()
                    ));
                }
                last = format!("{target} answered {}", status.as_u16());
                status.is_server_error() || status.as_u16() == 429
            }
            Err(err) if err.is_timeout() => {
                last = format!(
                    "{target} did not answer within {}",
                    humantime::format_duration(request.timeout.min(left))
                );
                true
            }
            Err(err) if err.is_connect() && platform_tls::is_tls_refusal(&err) => {
                // The same certificate is refused at every attempt.
                return Err(format!(
                    "{target}: its TLS certificate was refused ({}); not retried. If a private \
                     CA signed it, give that CA's PEM as the action's ca_file",
                    causes(err)
                ));
            }
            Err(err) if err.is_connect() => {
                last = format!("cannot connect to {target}: {}", causes(err));
                true
            }
            Err(err) => {
                last = format!("cannot send to {target}: {}", causes(err));
                true
            }
        };
        if !retryable {
            return Err(format!("{last}; not retried (a 4xx other than 429)"));
        }
        if attempt < request.attempts {
            let wait = backoff.min(end.saturating_duration_since(Instant::now()));
            tokio::time::sleep(wait).await;
            backoff *= 2;
        }
    }
    Err(format!(
        "{last} (after {} attempt(s) within {})",
        request.attempts,
        humantime::format_duration(request.within)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_rfc_4231_hmac_sha256_in_hex() {
        // RFC 4231, test case 2.
        let key = SecretString::from("Jefe".to_owned());
        assert_eq!(
            signature(&key, b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
