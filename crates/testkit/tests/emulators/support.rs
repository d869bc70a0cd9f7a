//! Helpers shared by the Entra tests: a started emulator with one app, a form POST, and checks
//! of the Entra error shape, so each test reads as the situation it sets up.

use std::collections::BTreeMap;

use serde_json::Value;
use testkit::{AppRegistration, EntraEmulator};

pub const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
pub const CLIENT_ID: &str = "11111111-2222-3333-4444-555555555555";
pub const SECRET: &str = "correct~secret.value";
pub const VAULT_SCOPE: &str = "https://vault.azure.net/.default";

/// An HTTP emulator with app CLIENT_ID (secret SECRET) in TENANT.
pub async fn emulator_with_secret_app() -> EntraEmulator {
    let entra = EntraEmulator::start().await.expect("emulator starts");
    entra.register_app(AppRegistration::new(TENANT, CLIENT_ID).with_secret(SECRET));
    entra
}

/// What came back: status, headers of interest, body as JSON (Null when not JSON) and raw text.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: BTreeMap<String, String>,
    pub body: Value,
    pub text: String,
}

impl Answer {
    pub async fn from(response: reqwest::Response) -> Answer {
        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
            .collect();
        let text = response.text().await.expect("body reads");
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Answer {
            status,
            headers,
            body,
            text,
        }
    }

    /// Asserts an Entra error with this status, `error` and AADSTS code, in Entra's exact shape.
    pub fn assert_entra_error(&self, status: u16, error: &str, code: u64) {
        assert_eq!(self.status, status, "status; body: {}", self.text);
        assert_eq!(self.body["error"], error, "error; body: {}", self.text);
        assert_eq!(
            self.body["error_codes"],
            serde_json::json!([code]),
            "codes; body: {}",
            self.text
        );
        let description = self.body["error_description"].as_str().unwrap_or_default();
        assert!(
            description.starts_with(&format!("AADSTS{code}: ")),
            "description starts with the code: {description}"
        );
        for part in ["\r\nTrace ID: ", "\r\nCorrelation ID: ", "\r\nTimestamp: "] {
            assert!(description.contains(part), "{part:?} in {description:?}");
        }
        for key in ["timestamp", "trace_id", "correlation_id"] {
            assert!(self.body[key].is_string(), "{key} in {}", self.text);
        }
        assert_eq!(
            self.body["error_uri"],
            format!("https://login.microsoftonline.com/error?code={code}")
        );
        assert_eq!(
            self.headers.get("content-type").map(String::as_str),
            Some("application/json; charset=utf-8")
        );
        assert_eq!(
            self.headers.get("cache-control").map(String::as_str),
            Some("no-cache, no-store")
        );
    }
}

/// POSTs `form` to `url` with `client`.
pub async fn post_form(client: &reqwest::Client, url: &str, form: &[(&str, &str)]) -> Answer {
    let response = client
        .post(url)
        .form(form)
        .send()
        .await
        .expect("the emulator answers");
    Answer::from(response).await
}

/// A client-credentials request with a client secret.
pub async fn post_secret(
    entra: &EntraEmulator,
    tenant: &str,
    client_id: &str,
    secret: &str,
    scope: &str,
) -> Answer {
    post_form(
        &reqwest::Client::new(),
        &entra.token_url(tenant),
        &[
            ("grant_type", "client_credentials"),
            ("client_id", client_id),
            ("client_secret", secret),
            ("scope", scope),
        ],
    )
    .await
}
/// A client-credentials request with a client assertion.
pub async fn post_assertion(
    client: &reqwest::Client,
    url: &str,
    client_id: &str,
    assertion: &str,
) -> Answer {
    post_form(
        client,
        url,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", client_id),
            (
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            ),
            ("client_assertion", assertion),
            ("scope", VAULT_SCOPE),
        ],
    )
    .await
}
