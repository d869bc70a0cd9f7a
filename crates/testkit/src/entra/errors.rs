//! Entra-shaped answers: the exact error body Entra sends (AADSTS text with trace and correlation
//! ids, `error_codes`, `timestamp`, `error_uri`) and the headers of every token endpoint answer.

use http::StatusCode;
use time::OffsetDateTime;
use time::macros::format_description;

use crate::server::{Reply, Request};

/// One refusal: HTTP status, OAuth `error`, AADSTS number, and the text after `AADSTSnnnn: `.
#[derive(Debug, Clone)]
pub(crate) struct EntraRefusal {
    pub(crate) status: u16,
    pub(crate) error: &'static str,
    pub(crate) code: u32,
    pub(crate) message: String,
}

impl EntraRefusal {
    pub(crate) fn new(
        status: u16,
        error: &'static str,
        code: u32,
        message: impl Into<String>,
    ) -> Self {
        EntraRefusal {
            status,
            error,
            code,
            message: message.into(),
        }
    }
}

/// `2020-04-07 20:52:51Z`, the format of Entra's `timestamp` field.
pub(crate) fn entra_timestamp(at: OffsetDateTime) -> String {
    let format = format_description!("[year]-[month]-[day] [hour]:[minute]:[second]Z");
    at.format(&format).unwrap_or_default()
}

/// Entra echoes a valid `client-request-id` as the correlation id; otherwise it makes one up.
fn correlation_id(request: &Request) -> String {
    request
        .header("client-request-id")
        .and_then(|value| uuid::Uuid::parse_str(value).ok())
        .unwrap_or_else(uuid::Uuid::new_v4)
        .to_string()
}

/// The error answer exactly as Entra shapes it.
pub(crate) fn error_reply(
    request: &Request,
    status: u16,
    error: &str,
    code: u32,
    message: &str,
) -> Reply {
    let trace_id = uuid::Uuid::new_v4().to_string();
    let correlation_id = correlation_id(request);
    let timestamp = entra_timestamp(OffsetDateTime::now_utc());
    let body = serde_json::json!({
        "error": error,
        "error_description": format!(
            "AADSTS{code}: {message}\r\nTrace ID: {trace_id}\r\nCorrelation ID: {correlation_id}\r\nTimestamp: {timestamp}"
        ),
        "error_codes": [code],
        "timestamp": timestamp,
        "trace_id": trace_id,
        "correlation_id": correlation_id,
        "error_uri": format!("https://login.microsoftonline.com/error?code={code}"),
    });
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
    with_entra_headers(Reply::json(status, &body), &trace_id, &correlation_id)
}

pub(crate) fn refusal_reply(request: &Request, refusal: &EntraRefusal) -> Reply {
    error_reply(
        request,
        refusal.status,
        refusal.error,
        refusal.code,
        &refusal.message,
    )
}

/// The headers every token endpoint answer carries.
pub(crate) fn with_entra_headers(reply: Reply, trace_id: &str, correlation_id: &str) -> Reply {
    reply
        .with_header("cache-control", "no-cache, no-store")
        .with_header("pragma", "no-cache")
        .with_header("x-ms-request-id", trace_id)
        .with_header("client-request-id", correlation_id)
}

/// A success answer with Entra's headers.
pub(crate) fn success_reply(request: &Request, body: &serde_json::Value) -> Reply {
    let trace_id = uuid::Uuid::new_v4().to_string();
    with_entra_headers(
        Reply::json(StatusCode::OK, body),
        &trace_id,
        &correlation_id(request),
    )
}
