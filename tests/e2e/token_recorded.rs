//! `secret-sync token` against an Entra-shaped endpoint it has never seen: a bare HTTP server
//! that answers with the responses recorded from the real Entra ID service
//! (tests/fixtures/entra/token-responses.json), byte for byte as recorded, whatever is asked.
//! This proves the client parses what the real service sends, not just what our emulator sends.

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::support::{now_unix, secret_sync};

const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
const CLIENT: &str = "0a1b2c3d-1111-2222-3333-444455556666";
const SECRET: &str = "recorded-client-secret-value~9z";

fn recorded_case(what_prefix: &str) -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/fixtures/entra/token-responses.json"
    );
    let text = std::fs::read_to_string(path).expect("fixture file is in the repository");
    let doc: Value = serde_json::from_str(&text).expect("fixture is JSON");
    doc["cases"]
        .as_array()
        .expect("cases")
        .iter()
        .find(|case| {
            case["what"]
                .as_str()
                .is_some_and(|w| w.starts_with(what_prefix))
        })
        .unwrap_or_else(|| panic!("no recorded case starts with {what_prefix:?}"))
        .clone()
}

/// Serves `status` + `body` (with the recorded headers) to every request; returns the base URL
/// and a handle whose result is the raw text of the first request received.
async fn replay(case: Value) -> (String, tokio::task::JoinHandle<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let handle = tokio::spawn(async move {
        let mut first = None;
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                break;
            };
            let request = read_request(&mut socket).await;
            let status = case["status"].as_u64().unwrap();
            let body = serde_json::to_string(&case["body"]).unwrap();
            let mut head = format!(
                "HTTP/1.1 {status} {}\r\nContent-Length: {}\r\nConnection: close\r\n",
                if status == 200 { "OK" } else { "Error" },
                body.len()
            );
            let headers = case["headers"].as_object().cloned().unwrap_or_else(|| {
                serde_json::from_str(r#"{"Content-Type":"application/json; charset=utf-8"}"#)
                    .unwrap()
            });
            for (name, value) in headers {
                head.push_str(&format!("{name}: {}\r\n", value.as_str().unwrap()));
            }
            head.push_str("\r\n");
            socket.write_all(head.as_bytes()).await.unwrap();
            socket.write_all(body.as_bytes()).await.unwrap();
            socket.shutdown().await.ok();
            if first.is_none() {
                first = Some(request);
            }
            // The client stops after a permanent refusal; a success needs one request.
            if status == 200 || status == 400 || status == 401 {
                break;
            }
        }
        first.unwrap_or_default()
    });
    (base, handle)
}

async fn read_request(socket: &mut tokio::net::TcpStream) -> String {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = socket.read(&mut chunk).await.unwrap();
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf);
        if let Some(end) = text.find("\r\n\r\n") {
            let length = text[..end]
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            if buf.len() >= end + 4 + length {
                break;
            }
        }
    }
    String::from_utf8(buf).unwrap()
}

fn token_args<'a>(base: &'a str, output: &'a str) -> Vec<&'a str> {
    vec![
        "token",
        "--tenant-id",
        TENANT,
        "--client-id",
        CLIENT,
        "--client-secret-env",
        "APP_SECRET",
        "--scope",
        "https://vault.azure.net/.default",
        "--authority",
        base,
        "--output",
        output,
    ]
}

#[tokio::test]
async fn recorded_success_is_printed_as_json_with_its_expiry() {
    let (base, server) = replay(recorded_case("client secret, success (")).await;
    let before = now_unix();
    let run = secret_sync(&token_args(&base, "json"), &[("APP_SECRET", SECRET)]).await;
    run.assert_code(0);
    run.assert_no_leak(&[SECRET]);

    let printed: Value =
        serde_json::from_str(run.stdout.trim()).expect("stdout is one JSON object");
    assert_eq!(
        printed["access_token"], "access_token",
        "the recorded token"
    );
    assert_eq!(printed["token_type"], "Bearer");
    let expires_on = printed["expires_on"]
        .as_i64()
        .expect("expires_on is an integer");
    assert!(
        (before + 3599..=now_unix() + 3599).contains(&expires_on),
        "expires_on {expires_on} is 3599 s after the request (sent at {before})"
    );
    let expires_at = time::OffsetDateTime::parse(
        printed["expires_at"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .expect("expires_at is RFC 3339");
    assert_eq!(expires_at.unix_timestamp(), expires_on);

    // What went over the wire is the documented client-credentials form.
    let request = server.await.unwrap();
    assert!(
        request.starts_with(&format!("POST /{TENANT}/oauth2/v2.0/token HTTP/1.1")),
        "request line: {request}"
    );
    let body = request.split("\r\n\r\n").nth(1).unwrap();
    let form: std::collections::HashMap<String, String> =
        url::form_urlencoded::parse(body.as_bytes())
            .into_owned()
            .collect();
    assert_eq!(form["grant_type"], "client_credentials");
    assert_eq!(form["client_id"], CLIENT);
    assert_eq!(form["client_secret"], SECRET);
    assert_eq!(form["scope"], "https://vault.azure.net/.default");
}

#[tokio::test]
async fn recorded_success_text_output_is_the_bare_token() {
    let (base, _server) = replay(recorded_case("client secret, success with a 24 h")).await;
    let run = secret_sync(&token_args(&base, "text"), &[("APP_SECRET", SECRET)]).await;
    run.assert_code(0);
    assert_eq!(run.stdout, "access_token\n");
    assert_eq!(run.stderr, "", "nothing on stderr on success");
}

#[tokio::test]
async fn recorded_wrong_secret_refusal_exits_1_with_code_and_advice() {
    for what in [
        "wrong client secret (support log",
        "wrong client secret, newer wording",
    ] {
        let (base, server) = replay(recorded_case(what)).await;
        let run = secret_sync(&token_args(&base, "text"), &[("APP_SECRET", SECRET)]).await;
        run.assert_code(1);
        run.assert_no_leak(&[SECRET]);
        assert_eq!(
            run.stdout, "",
            "nothing on stdout when no token was obtained"
        );
        assert!(
            run.stderr.contains("7000215"),
            "the AADSTS code is named: {}",
            run.stderr
        );
        assert!(
            run.stderr.to_lowercase().contains("secret") && run.stderr.contains("Value"),
            "the advice says to use the secret's Value: {}",
            run.stderr
        );
        server.await.unwrap();
    }
}
