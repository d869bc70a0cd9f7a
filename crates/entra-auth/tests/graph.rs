//! `entra_auth::graph` against servers that answer Microsoft Graph's documented shapes (and
//! against ones that misbehave): what is sent (the token only in `Authorization`, no
//! `$select`, a fresh `client-request-id`, addPassword's three fields), what is parsed, how each
//! refusal is classified and worded, and the hardening rules (no redirects, 1 MiB, timeouts,
//! https off loopback, retries within budget). Every test scans errors, `Debug` output and logs
//! for the token and the new secret.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use entra_auth::graph::{GraphClient, GraphErrorKind, GraphOptions};
use entra_auth::{ClientId, Cloud, RetryPolicy};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};
use testkit::{Behaviour, HostileRequest, HostileServer};
use time::macros::datetime;
use url::Url;

/// An access token shaped like one; it must appear only in the `Authorization` header.
const TOKEN: &str =
    "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.eyJhdWQiOiJncmFwaCJ9.graph-token-NEVER-printed";
/// A new secret as addPassword returns it; it must appear in no output.
const NEW_SECRET: &str = "Qx7~vB2kL.9mNpR4sT6uW8yZ0aC3eF5gH7jK9lMn";
const APP_ID: &str = "3b5a9c1e-7f3d-4e1a-9b2c-1d2e3f4a5b6c";
const OBJECT_ID: &str = "9f1c2d3e-4b5a-4c6d-8e7f-0a1b2c3d4e5f";
const KEY_ID: &str = "a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d";
const READ_PATH: &str = "/v1.0/applications(appId='3b5a9c1e-7f3d-4e1a-9b2c-1d2e3f4a5b6c')";
const ADD_PATH: &str = "/v1.0/applications/9f1c2d3e-4b5a-4c6d-8e7f-0a1b2c3d4e5f/addPassword";
const REMOVE_PATH: &str = "/v1.0/applications/9f1c2d3e-4b5a-4c6d-8e7f-0a1b2c3d4e5f/removePassword";

fn token() -> SecretString {
    SecretString::from(TOKEN)
}

fn app_id() -> ClientId {
    APP_ID.parse().unwrap()
}

fn options() -> GraphOptions {
    GraphOptions {
        request_timeout: Duration::from_secs(5),
        retry: RetryPolicy {
            max_attempts: 4,
            initial_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(50),
            max_elapsed: Duration::from_secs(10),
        },
        ..GraphOptions::default()
    }
}

fn client(server: &HostileServer) -> GraphClient {
    client_with(server, options())
}

fn client_with(server: &HostileServer, options: GraphOptions) -> GraphClient {
    GraphClient::new(Url::parse(&server.base_url()).unwrap(), options).expect("client builds")
}

/// An application answer as Graph v1.0 writes it (fields, nulls and 7-digit fractions included).
fn application_answer() -> Value {
    json!({
        "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#applications(id,appId,displayName,passwordCredentials,keyCredentials)/$entity",
        "id": OBJECT_ID,
        "appId": APP_ID,
        "displayName": "secret-sync test app",
        "passwordCredentials": [
            {
                "customKeyIdentifier": null,
                "displayName": "secret-sync job tokens",
                "endDateTime": "2026-11-24T06:00:00.1234567Z",
                "hint": "Zx8",
                "keyId": KEY_ID,
                "secretText": null,
                "startDateTime": "2025-05-28T06:00:00Z"
            },
            {
                "customKeyIdentifier": null,
                "displayName": null,
                "endDateTime": "not a date",
                "hint": null,
                "keyId": "b2c3d4e5-f6a7-4b8c-9d0e-1f2a3b4c5d6e",
                "secretText": null,
                "startDateTime": "9999-12-31T23:30:00-01:00"
            }
        ],
        "keyCredentials": [
            {
                "customKeyIdentifier": "nL3hR2n0m8dQ2Y8cS3o4b3YzYkE=",
                "displayName": "CN=secret-sync",
                "endDateTime": "2027-01-01T00:00:00Z",
                "key": null,
                "keyId": "c3d4e5f6-a7b8-4c9d-0e1f-2a3b4c5d6e7f",
                "startDateTime": "2025-01-01T00:00:00Z",
                "type": "AsymmetricX509Cert",
                "usage": "Verify"
            }
        ]
    })
}

fn graph_error(code: &str, message: &str) -> Value {
    json!({
        "error": {
            "code": code,
            "message": message,
            "innerError": {
                "date": "2025-05-28T06:00:00",
                "request-id": "11111111-aaaa-4bbb-8ccc-222222222222",
                "client-request-id": "33333333-dddd-4eee-8fff-444444444444"
            }
        }
    })
}

/// The token appears in exactly the `Authorization: Bearer` header of every request, and each
/// request has its own UUID v4 `client-request-id`.
fn assert_token_only_in_authorization(requests: &[HostileRequest]) {
    assert!(!requests.is_empty(), "no request reached the server");
    let mut ids = std::collections::HashSet::new();
    for request in requests {
        assert_eq!(
            request.header("authorization"),
            Some(format!("Bearer {TOKEN}").as_str()),
            "{} {}",
            request.method,
            request.path
        );
        let elsewhere = HostileRequest {
            headers: request
                .headers
                .iter()
                .filter(|(name, _)| name != "authorization")
                .cloned()
                .collect(),
            ..request.clone()
        };
        assert!(
            !elsewhere.mentions(TOKEN) && !elsewhere.mentions("graph-token-NEVER-printed"),
            "the token reached the server outside the Authorization header: {} {}",
            request.method,
            request.path
        );
        let id = request
            .header("client-request-id")
            .expect("a client-request-id is sent");
        let uuid = uuid::Uuid::parse_str(id).expect("client-request-id is a UUID");
        assert_eq!(uuid.get_version_num(), 4, "{id}");
        assert!(ids.insert(id.to_owned()), "client-request-id {id} reused");
    }
}

fn assert_clean(text: &str) {
    for (label, value) in [
        ("the token", TOKEN),
        ("the token's tail", "graph-token-NEVER-printed"),
        ("the new secret", NEW_SECRET),
    ] {
        assert!(!text.contains(value), "{label} leaked into: {text}");
    }
}

/// Everything logged on this thread (tests use the current-thread runtime) while the guard lives.
///
/// One global subscriber at TRACE writes each event into the capture of the thread it happens
/// on: per-thread default subscribers would race over tracing's global callsite cache when
/// tests run in parallel, and an event could go missing.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

thread_local! {
    static CAPTURE: std::cell::RefCell<Option<Logs>> = const { std::cell::RefCell::new(None) };
}

/// Stops this thread's capture when dropped.
struct CaptureGuard;

impl Drop for CaptureGuard {
    fn drop(&mut self) {
        CAPTURE.with(|c| c.borrow_mut().take());
    }
}

/// The writer of the global subscriber: this thread's capture, if any.
struct ThreadWriter;

impl Write for ThreadWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        CAPTURE.with(|c| {
            if let Some(logs) = c.borrow().as_ref() {
                logs.0.lock().unwrap().extend_from_slice(buf);
            }
        });
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    fn capture() -> (Logs, CaptureGuard) {
        static GLOBAL: std::sync::Once = std::sync::Once::new();
        GLOBAL.call_once(|| {
            let subscriber = tracing_subscriber::fmt()
                .with_max_level(tracing::Level::TRACE)
                .with_ansi(false)
                .with_writer(|| ThreadWriter)
                .finish();
            tracing::subscriber::set_global_default(subscriber).expect("the only subscriber");
        });
        let logs = Logs::default();
        CAPTURE.with(|c| *c.borrow_mut() = Some(logs.clone()));
        (logs, CaptureGuard)
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

#[tokio::test]
async fn reads_an_application_of_the_documented_shape_without_a_select() {
    let (logs, _guard) = Logs::capture();
    let server = HostileServer::start(Behaviour::json(404, &json!({})))
        .await
        .unwrap();
    server.on(
        READ_PATH,
        Behaviour::json(200, &application_answer()).with_header("request-id", "req-read-1"),
    );
    let app = client(&server)
        .application(&token(), &app_id())
        .await
        .unwrap();

    assert_eq!(app.id, OBJECT_ID);
    assert_eq!(app.app_id, APP_ID);
    assert_eq!(app.display_name.as_deref(), Some("secret-sync test app"));
    let [first, second] = app.password_credentials.as_slice() else {
        panic!("two passwords expected: {:?}", app.password_credentials);
    };
    assert_eq!(first.key_id, KEY_ID);
    assert_eq!(first.hint.as_deref(), Some("Zx8"));
    assert_eq!(
        first.display_name.as_deref(),
        Some("secret-sync job tokens")
    );
    assert_eq!(first.start, Some(datetime!(2025-05-28 06:00:00 UTC)));
    assert_eq!(first.end, Some(datetime!(2026-11-24 06:00:00.1234567 UTC)));
    // Unreadable and unrepresentable dates are None, never a failure of the whole answer.
    assert_eq!((second.start, second.end), (None, None));
    assert_eq!(second.display_name, None);
    let [cert] = app.key_credentials.as_slice() else {
        panic!("one certificate expected: {:?}", app.key_credentials);
    };
    assert_eq!(cert.key_id, "c3d4e5f6-a7b8-4c9d-0e1f-2a3b4c5d6e7f");
    assert_eq!(cert.kind.as_deref(), Some("AsymmetricX509Cert"));
    assert_eq!(cert.usage.as_deref(), Some("Verify"));
    assert_eq!(
        cert.thumbprint.as_deref(),
        Some("nL3hR2n0m8dQ2Y8cS3o4b3YzYkE=")
    );
    assert_eq!(cert.end, Some(datetime!(2027-01-01 00:00:00 UTC)));

    let requests = server.requests();
    let [request] = requests.as_slice() else {
        panic!("one request expected, got {}", requests.len());
    };
    assert_eq!(request.method, "GET");
    assert_eq!(request.path, READ_PATH);
    // No `$select`: naming `keyCredentials` in one makes Graph return each certificate's `key`
    // and counts against its 150-a-minute throttle; the default properties hold both lists.
    assert_eq!(
        request.query.as_deref().unwrap_or(""),
        "",
        "no query expected"
    );
    assert_eq!(request.header("accept"), Some("application/json"));
    assert_token_only_in_authorization(&requests);
    assert_clean(&format!("{app:?}"));
    let logs = logs.text();
    assert!(
        logs.contains("req-read-1"),
        "the request-id is logged: {logs}"
    );
    assert_clean(&logs);
}

#[tokio::test]
async fn an_answer_about_another_app_or_without_ids_is_malformed() {
    let server = HostileServer::start(Behaviour::json(404, &json!({})))
        .await
        .unwrap();
    let mut other = application_answer();
    other["appId"] = json!("00000000-0000-0000-0000-000000000001");
    server.once(READ_PATH, Behaviour::json(200, &other));
    let mut no_key_id = application_answer();
    no_key_id["passwordCredentials"][0]
        .as_object_mut()
        .unwrap()
        .remove("keyId");
    server.once(READ_PATH, Behaviour::json(200, &no_key_id));
    server.once(
        READ_PATH,
        Behaviour::answer(200, "text/html", "<html>login</html>"),
    );
    let client = client(&server);
    for needle in [
        "not the one asked for",
        "has no keyId",
        "is not an application",
    ] {
        let err = client.application(&token(), &app_id()).await.unwrap_err();
        assert_eq!(err.kind(), GraphErrorKind::Malformed, "{err}");
        assert!(err.to_string().contains(needle), "{err} lacks {needle:?}");
        assert_eq!(err.attempts(), 1, "{err}");
    }
}

#[tokio::test]
async fn add_password_sends_all_three_fields_and_keeps_the_secret_secret() {
    let (logs, _guard) = Logs::capture();
    let server = HostileServer::start(Behaviour::json(404, &json!({})))
        .await
        .unwrap();
    let answer = json!({
        "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#microsoft.graph.passwordCredential",
        "customKeyIdentifier": null,
        "displayName": "secret-sync job=tokens installation=ab12",
        "endDateTime": "2026-06-01T00:00:00Z",
        "hint": "Qx7",
        "keyId": KEY_ID,
        "secretText": NEW_SECRET,
        "startDateTime": "2025-12-01T10:00:00.5Z"
    });
    server.on(
        ADD_PATH,
        Behaviour::json(200, &answer).with_header("request-id", "req-add-1"),
    );
    let end = datetime!(2099-06-01 00:00:00 UTC);
    let before = time::OffsetDateTime::now_utc();
    let new = client(&server)
        .add_password(
            &token(),
            OBJECT_ID,
            "secret-sync job=tokens installation=ab12",
            end,
        )
        .await
        .unwrap();
    assert_eq!(new.secret.expose_secret(), NEW_SECRET);
    assert_eq!(new.credential.key_id, KEY_ID);
    assert_eq!(new.credential.hint.as_deref(), Some("Qx7"));
    assert_eq!(new.credential.end, Some(datetime!(2026-06-01 00:00:00 UTC)));
    assert_eq!(
        new.credential.start,
        Some(datetime!(2025-12-01 10:00:00.5 UTC))
    );
    let debug = format!("{new:?}");
    assert!(
        debug.contains(KEY_ID) && debug.contains("REDACTED"),
        "{debug}"
    );
    assert_clean(&debug);

    let requests = server.requests();
    let [request] = requests.as_slice() else {
        panic!("one request expected, got {}", requests.len());
    };
    assert_eq!(
        (request.method.as_str(), request.path.as_str()),
        ("POST", ADD_PATH)
    );
    assert_eq!(request.header("content-type"), Some("application/json"));
    let body: Value = serde_json::from_slice(&request.body).unwrap();
    let credential = &body["passwordCredential"];
    assert_eq!(
        credential["displayName"],
        "secret-sync job=tokens installation=ab12"
    );
    assert_eq!(credential["endDateTime"], "2099-06-01T00:00:00Z");
    let start = credential["startDateTime"]
        .as_str()
        .expect("startDateTime is sent");
    let start =
        time::OffsetDateTime::parse(start, &time::format_description::well_known::Rfc3339).unwrap();
    assert!(start.offset().is_utc(), "{start}");
    assert!(
        (start - before).abs() < time::Duration::seconds(5),
        "start {start} is now"
    );
    assert_eq!(body.as_object().unwrap().len(), 1, "{body}");
    assert_eq!(credential.as_object().unwrap().len(), 3, "{body}");
    assert_token_only_in_authorization(&requests);
    let logs = logs.text();
    assert!(logs.contains("req-add-1"), "{logs}");
    assert_clean(&logs);
}

#[tokio::test]
async fn add_password_answers_without_a_secret_are_malformed_and_quote_nothing() {
    let server = HostileServer::start(Behaviour::json(404, &json!({})))
        .await
        .unwrap();
    let client = client(&server);
    let end = datetime!(2099-06-01 00:00:00 UTC);
    // secretText of the wrong type next to a would-be secret elsewhere, then none at all.
    let answers = [
        json!({"keyId": KEY_ID, "secretText": {"value": NEW_SECRET}}),
        json!({"keyId": KEY_ID, "secretText": null, "hint": "Qx7"}),
        json!({"secretText": NEW_SECRET}),
    ];
    for answer in answers {
        server.once(ADD_PATH, Behaviour::json(200, &answer));
        let err = client
            .add_password(&token(), OBJECT_ID, "secret-sync", end)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), GraphErrorKind::Malformed, "{err}");
        assert_clean(&format!("{err} {err:?}"));
    }
}

#[tokio::test]
async fn add_password_refuses_bad_inputs_before_sending() {
    let server = HostileServer::start(Behaviour::json(500, &json!({})))
        .await
        .unwrap();
    let client = client(&server);
    let future = datetime!(2099-06-01 00:00:00 UTC);
    let past = datetime!(2020-01-01 00:00:00 UTC);
    let cases = [
        ("not-a-guid/../../me", "name", future, "is not a GUID"),
        (OBJECT_ID, "", future, "display name"),
        (OBJECT_ID, "two\nlines", future, "display name"),
        (OBJECT_ID, "name", past, "must lie in the future"),
    ];
    for (object_id, name, end, needle) in cases {
        let err = client
            .add_password(&token(), object_id, name, end)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), GraphErrorKind::Config, "{err}");
        assert!(err.to_string().contains(needle), "{err} lacks {needle:?}");
    }
    let err = client
        .add_password(&SecretString::from(" "), OBJECT_ID, "name", future)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), GraphErrorKind::Config, "{err}");
    let err = client
        .remove_password(&token(), OBJECT_ID, "123")
        .await
        .unwrap_err();
    assert_eq!(err.kind(), GraphErrorKind::Config, "{err}");
    assert_eq!(
        server.request_count(),
        0,
        "nothing is sent for a refused input"
    );
}

#[tokio::test]
async fn remove_password_posts_the_key_id_and_takes_204() {
    let server = HostileServer::start(Behaviour::json(404, &json!({})))
        .await
        .unwrap();
    server.on(REMOVE_PATH, Behaviour::answer(204, "text/plain", ""));
    // Upper case in, canonical lower case sent.
    client(&server)
        .remove_password(&token(), OBJECT_ID, &KEY_ID.to_uppercase())
        .await
        .unwrap();
    let requests = server.requests();
    let [request] = requests.as_slice() else {
        panic!("one request expected, got {}", requests.len());
    };
    assert_eq!(
        (request.method.as_str(), request.path.as_str()),
        ("POST", REMOVE_PATH)
    );
    let body: Value = serde_json::from_slice(&request.body).unwrap();
    assert_eq!(body, json!({"keyId": KEY_ID}));
    assert_token_only_in_authorization(&requests);
}

#[tokio::test]
async fn each_graph_refusal_is_classified_and_says_what_to_do() {
    #[derive(Clone, Copy)]
    enum Op {
        Read,
        Add,
        Remove,
    }
    /// Call, status, Graph code, Graph message, expected kind, what the error must say.
    type Case = (
        Op,
        u16,
        &'static str,
        &'static str,
        GraphErrorKind,
        &'static [&'static str],
    );
    let cases: &[Case] = &[
        (
            Op::Read,
            401,
            "InvalidAuthenticationToken",
            "Access token has expired or is not yet valid.",
            GraphErrorKind::Unauthorized,
            &["/.default", "unexpired"],
        ),
        (
            Op::Read,
            403,
            "Authorization_RequestDenied",
            "Insufficient privileges to complete the operation.",
            GraphErrorKind::Forbidden,
            &["Application.ReadWrite.OwnedBy", "may not read"],
        ),
        (
            Op::Add,
            403,
            "Authorization_RequestDenied",
            "Insufficient privileges to complete the operation.",
            GraphErrorKind::Forbidden,
            &[
                "Application.ReadWrite.OwnedBy",
                "owner",
                "Application.ReadWrite.All",
            ],
        ),
        (
            Op::Remove,
            403,
            "Authorization_RequestDenied",
            "Insufficient privileges to complete the operation.",
            GraphErrorKind::Forbidden,
            &[
                "Application.ReadWrite.OwnedBy",
                "owner",
                "Application.ReadWrite.All",
            ],
        ),
        (
            Op::Read,
            404,
            "Request_ResourceNotFound",
            "Resource '3b5a9c1e' does not exist or one of its queried reference-property objects are not present.",
            GraphErrorKind::NotFound,
            &["check the client id"],
        ),
        (
            Op::Add,
            404,
            "Request_ResourceNotFound",
            "Resource does not exist.",
            GraphErrorKind::NotFound,
            &["object id"],
        ),
        (
            Op::Add,
            400,
            "CredentialInvalidLifetimeAsPerAppPolicy",
            "Credential lifetime exceeds the max value allowed as per assigned policy.",
            GraphErrorKind::PolicyRefused,
            &["app management policy", "shorter lifetime"],
        ),
        (
            Op::Add,
            400,
            "CredentialTypeNotAllowedAsPerAppPolicy",
            "Password credentials are not allowed as per assigned policy.",
            GraphErrorKind::PolicyRefused,
            &["does not allow client secrets", "certificate"],
        ),
        (
            Op::Add,
            400,
            "TooManyAppPasswords",
            "Not allowed to add 3 passwords. You can only add a maximum of 2 passwords.",
            GraphErrorKind::PolicyRefused,
            &["at most 2", "remove a secret"],
        ),
        (
            Op::Remove,
            400,
            "Request_BadRequest",
            "Invalid value specified for property 'keyId'.",
            GraphErrorKind::Rejected,
            &["refused the removePassword request"],
        ),
        (
            Op::Read,
            500,
            "UnknownError",
            "",
            GraphErrorKind::Transient,
            &["try again later"],
        ),
    ];
    let server = HostileServer::start(Behaviour::json(404, &json!({})))
        .await
        .unwrap();
    let client = client(&server);
    let end = datetime!(2099-06-01 00:00:00 UTC);
    for (op, status, code, message, kind, needles) in cases {
        let path = match op {
            Op::Read => READ_PATH,
            Op::Add => ADD_PATH,
            Op::Remove => REMOVE_PATH,
        };
        // The server echoes the token in its message: it must not come back out.
        let echoed = format!("{message} {TOKEN}");
        server.once(
            path,
            Behaviour::json(*status, &graph_error(code, &echoed))
                .with_header("request-id", "req-header-9"),
        );
        let before = server.request_count();
        let err = match op {
            Op::Read => client.application(&token(), &app_id()).await.map(|_| ()),
            Op::Add => client
                .add_password(&token(), OBJECT_ID, "secret-sync", end)
                .await
                .map(|_| ()),
            Op::Remove => client.remove_password(&token(), OBJECT_ID, KEY_ID).await,
        }
        .unwrap_err();
        let text = err.to_string();
        assert_eq!(err.kind(), *kind, "{status} {code}: {text}");
        assert_eq!(err.status(), Some(*status), "{text}");
        assert_eq!(err.code(), Some(*code), "{text}");
        assert_eq!(err.request_id(), Some("req-header-9"), "{text}");
        assert!(
            !err.is_retryable(),
            "{status} {code} is not retried: {text}"
        );
        assert_eq!(
            server.request_count() - before,
            1,
            "{status} {code}: one request"
        );
        let sent_id = server
            .requests()
            .last()
            .unwrap()
            .header("client-request-id")
            .unwrap()
            .to_owned();
        assert_eq!(err.client_request_id(), Some(sent_id.as_str()), "{text}");
        for needle in needles
            .iter()
            .chain(&[*code, "request-id req-header-9", sent_id.as_str()])
        {
            assert!(
                text.contains(needle),
                "{status} {code}: {text:?} lacks {needle:?}"
            );
        }
        if !message.is_empty() {
            assert!(text.contains(message), "Graph's message is quoted: {text}");
        }
        assert_clean(&format!("{text} {err:?}"));
    }
}

#[tokio::test]
async fn request_id_comes_from_inner_error_and_graph_messages_are_bounded() {
    let server = HostileServer::start(Behaviour::json(404, &json!({})))
        .await
        .unwrap();
    let long = format!("{}\nsecond line", "y".repeat(5_000));
    server.on(
        READ_PATH,
        Behaviour::json(403, &graph_error("Authorization_RequestDenied", &long)),
    );
    let err = client(&server)
        .application(&token(), &app_id())
        .await
        .unwrap_err();
    assert_eq!(
        err.request_id(),
        Some("11111111-aaaa-4bbb-8ccc-222222222222")
    );
    let quoted = err.graph_message().unwrap();
    assert!(quoted.chars().count() <= 301, "{}", quoted.len());
    assert!(!err.to_string().contains("second line"), "{err}");
    assert!(err.to_string().len() < 2_000, "{}", err.to_string().len());
}

#[tokio::test]
async fn throttling_is_retried_after_the_time_graph_asks_for() {
    let server = HostileServer::start(Behaviour::json(404, &json!({})))
        .await
        .unwrap();
    server.once(
        READ_PATH,
        Behaviour::json(429, &graph_error("TooManyRequests", "Too many requests."))
            .with_header("retry-after", "1"),
    );
    server.once(
        READ_PATH,
        Behaviour::json(503, &graph_error("ServiceUnavailable", "Try later.")),
    );
    server.on(READ_PATH, Behaviour::json(200, &application_answer()));
    let started = Instant::now();
    let app = client(&server)
        .application(&token(), &app_id())
        .await
        .unwrap();
    assert_eq!(app.id, OBJECT_ID);
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "Retry-After was honoured: {:?}",
        started.elapsed()
    );
    let requests = server.requests();
    assert_eq!(requests.len(), 3);
    assert_token_only_in_authorization(&requests);
}

#[tokio::test]
async fn a_retry_after_beyond_the_budget_is_not_waited_for() {
    let server = HostileServer::start(Behaviour::json(404, &json!({})))
        .await
        .unwrap();
    server.on(
        READ_PATH,
        Behaviour::json(429, &graph_error("TooManyRequests", "Too many requests."))
            .with_header("retry-after", "300000000000"),
    );
    let started = Instant::now();
    let err = client(&server)
        .application(&token(), &app_id())
        .await
        .unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(err.kind(), GraphErrorKind::Throttled, "{err}");
    assert!(err.is_retryable());
    assert_eq!(err.retry_after(), Some(Duration::from_secs(300000000000)));
    assert!(err.to_string().contains("no retry was made"), "{err}");
    assert_eq!(server.request_count(), 1);
}

#[tokio::test]
async fn transient_failures_stop_at_the_attempt_limit() {
    let server = HostileServer::start(Behaviour::json(404, &json!({})))
        .await
        .unwrap();
    server.on(READ_PATH, Behaviour::json(504, &json!({})));
    let err = client(&server)
        .application(&token(), &app_id())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), GraphErrorKind::Transient, "{err}");
    assert_eq!(err.attempts(), 4, "{err}");
    assert_eq!(server.request_count(), 4);
    assert!(err.to_string().contains("after 4 attempts"), "{err}");
    assert_token_only_in_authorization(&server.requests());
}

#[tokio::test]
async fn add_password_is_not_repeated_when_graph_may_have_done_it() {
    let server = HostileServer::start(Behaviour::json(404, &json!({})))
        .await
        .unwrap();
    server.on(ADD_PATH, Behaviour::json(504, &json!({})));
    let end = datetime!(2099-06-01 00:00:00 UTC);
    let err = client(&server)
        .add_password(&token(), OBJECT_ID, "secret-sync", end)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), GraphErrorKind::Transient, "{err}");
    assert_eq!(
        server.request_count(),
        1,
        "a 504 addPassword is not sent again"
    );
    // A 503 means it was not done: retried.
    server.once(ADD_PATH, Behaviour::json(503, &json!({})));
    server.once(
        ADD_PATH,
        Behaviour::json(200, &json!({"keyId": KEY_ID, "secretText": NEW_SECRET})),
    );
    let new = client(&server)
        .add_password(&token(), OBJECT_ID, "secret-sync", end)
        .await
        .unwrap();
    assert_eq!(new.credential.key_id, KEY_ID);
    assert_eq!(server.request_count(), 3);
}

#[tokio::test]
async fn a_redirect_is_not_followed() {
    let elsewhere = HostileServer::start(Behaviour::json(200, &application_answer()))
        .await
        .unwrap();
    let server = HostileServer::start(Behaviour::redirect(307, &elsewhere.url(READ_PATH)))
        .await
        .unwrap();
    let err = client(&server)
        .application(&token(), &app_id())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), GraphErrorKind::Malformed, "{err}");
    assert!(err.to_string().contains("redirect"), "{err}");
    assert!(elsewhere.requests().is_empty(), "the redirect was followed");
    assert_eq!(server.request_count(), 1);
    assert_clean(&format!("{err} {err:?}"));
}

#[tokio::test]
async fn a_huge_answer_is_refused_without_reading_it() {
    let server = HostileServer::start(
        Behaviour::huge_body(200, "application/json", 200 << 20).without_content_length(),
    )
    .await
    .unwrap();
    let err = client(&server)
        .application(&token(), &app_id())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), GraphErrorKind::Malformed, "{err}");
    assert!(err.to_string().contains("more than 1 MiB"), "{err}");
    assert!(
        server.body_bytes_sent() < 32 << 20,
        "read {} bytes",
        server.body_bytes_sent()
    );
    assert_eq!(server.request_count(), 1, "not retried");
}

#[tokio::test]
async fn a_dripping_or_silent_server_is_cut_off_by_the_request_timeout() {
    let options = GraphOptions {
        request_timeout: Duration::from_millis(800),
        retry: RetryPolicy::none(),
        ..options()
    };
    let drip = HostileServer::start(Behaviour::slow_drip(
        200,
        "application/json",
        application_answer().to_string(),
        Duration::from_millis(100),
    ))
    .await
    .unwrap();
    let hang = HostileServer::start(Behaviour::hang()).await.unwrap();
    for server in [&drip, &hang] {
        let started = Instant::now();
        let err = client_with(server, options.clone())
            .application(&token(), &app_id())
            .await
            .unwrap_err();
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(err.kind(), GraphErrorKind::Connection, "{err}");
        assert!(err.to_string().contains("within 0.8 s"), "{err}");
        assert!(err.is_retryable(), "a read may be retried: {err}");
        assert_clean(&format!("{err} {err:?}"));
    }
}

#[test]
fn endpoints_must_be_https_or_loopback_http() {
    for ok in [
        "https://graph.microsoft.com",
        "https://graph.microsoft.us/",
        "http://127.0.0.1:8080",
        "http://[::1]:8080/prefix/",
        "http://localhost:1",
    ] {
        GraphClient::new(Url::parse(ok).unwrap(), GraphOptions::default())
            .unwrap_or_else(|e| panic!("{ok}: {e}"));
    }
    for (bad, needle) in [
        ("http://graph.microsoft.com", "plain http"),
        ("http://10.0.0.1", "plain http"),
        ("ftp://graph.microsoft.com", "not an http(s) URL"),
        ("https://user:pw@graph.microsoft.com", "user information"),
        ("https://graph.microsoft.com/?x=1", "query"),
        ("https://graph.microsoft.com/v1.0", "API version"),
    ] {
        let err = GraphClient::new(Url::parse(bad).unwrap(), GraphOptions::default()).unwrap_err();
        assert_eq!(err.kind(), GraphErrorKind::Config, "{bad}: {err}");
        assert!(
            err.to_string().contains(needle),
            "{bad}: {err} lacks {needle:?}"
        );
        assert!(!err.to_string().contains("pw@"), "{err}");
    }
    let endpoint = Cloud::China.graph_endpoint();
    let client = GraphClient::new(endpoint, GraphOptions::default()).unwrap();
    assert_eq!(client.endpoint(), "https://microsoftgraph.chinacloudapi.cn");
    assert!(!format!("{client:?}").contains("BEGIN"));
}

#[tokio::test]
async fn a_path_prefix_is_kept() {
    let server = HostileServer::start(Behaviour::json(404, &json!({})))
        .await
        .unwrap();
    let prefixed = format!("/graph{READ_PATH}");
    server.on(&prefixed, Behaviour::json(200, &application_answer()));
    let client = GraphClient::new(Url::parse(&server.url("/graph/")).unwrap(), options()).unwrap();
    client.application(&token(), &app_id()).await.unwrap();
    assert_eq!(server.requests()[0].path, prefixed);
}
