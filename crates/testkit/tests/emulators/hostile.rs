//! The hostile server itself, driven with reqwest: each behaviour does what the hardening tests
//! rely on (the canned answer byte for byte, the redirect's Location, a huge body generated while
//! sent and never whole in memory, a drip paced by its interval, a hang that never answers), and
//! every request is recorded unredacted, hanging ones included.

use std::time::{Duration, Instant};

use serde_json::json;
use testkit::{Behaviour, HostileServer};

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client builds")
}

#[tokio::test]
async fn canned_answer_is_sent_as_given_and_the_request_is_recorded() {
    let server = HostileServer::start(
        Behaviour::json(429, &json!({"error": "slow down"}))
            .with_header("retry-after", "300000000000"),
    )
    .await
    .expect("server starts");

    let answer = no_redirects()
        .post(server.url("/tenant/oauth2/v2.0/token?api-version=1"))
        .header("x-vault-token", "hvs.not-for-you")
        .form(&[("client_secret", "s3cret value")])
        .send()
        .await
        .expect("answer");
    assert_eq!(answer.status(), 429);
    assert_eq!(answer.headers()["retry-after"], "300000000000");
    assert_eq!(
        answer.headers()["content-type"],
        "application/json; charset=utf-8"
    );
    assert_eq!(answer.text().await.unwrap(), r#"{"error":"slow down"}"#);

    let requests = server.requests();
    assert_eq!(requests.len(), 1, "{requests:?}");
    let request = &requests[0];
    assert_eq!(request.method, "POST");
    assert_eq!(request.path, "/tenant/oauth2/v2.0/token");
    assert_eq!(request.query.as_deref(), Some("api-version=1"));
    assert_eq!(request.header("X-Vault-Token"), Some("hvs.not-for-you"));
    assert_eq!(request.body_text(), "client_secret=s3cret+value");
    assert!(request.mentions("hvs.not-for-you"));
    assert!(
        request.mentions("s3cret value"),
        "form-decoded body is searched"
    );
    assert!(!request.mentions("something else"));
}

#[tokio::test]
async fn per_path_behaviours_once_answers_first_then_the_default() {
    let server = HostileServer::start(Behaviour::answer(404, "text/plain", "default"))
        .await
        .expect("server starts");
    server.on("/a", Behaviour::answer(200, "text/plain", "always a"));
    server.once("/a", Behaviour::answer(503, "text/plain", "first"));
    server.once("/a", Behaviour::answer(502, "text/plain", "second"));
    let client = no_redirects();
    let mut seen = Vec::new();
    for path in ["/a", "/a", "/a", "/a", "/b"] {
        let answer = client.get(server.url(path)).send().await.expect("answer");
        seen.push((answer.status().as_u16(), answer.text().await.unwrap()));
    }
    let expected: Vec<(u16, String)> = [
        (503, "first"),
        (502, "second"),
        (200, "always a"),
        (200, "always a"),
        (404, "default"),
    ]
    .into_iter()
    .map(|(s, b)| (s, b.to_owned()))
    .collect();
    assert_eq!(seen, expected);
    assert_eq!(server.request_count(), 5);

    server.set_default(Behaviour::answer(418, "text/plain", "teapot"));
    let answer = client.get(server.url("/c")).send().await.expect("answer");
    assert_eq!(answer.status(), 418);
}

#[tokio::test]
async fn redirect_points_at_another_server_which_records_what_a_following_client_sends() {
    let elsewhere = HostileServer::start(Behaviour::answer(200, "text/plain", "landed"))
        .await
        .expect("target starts");
    for status in [301u16, 302, 307, 308] {
        let server = HostileServer::start(Behaviour::redirect(status, &elsewhere.url("/stolen")))
            .await
            .expect("server starts");
        let answer = no_redirects()
            .get(server.url("/v1/secret/data/x"))
            .send()
            .await
            .expect("answer");
        assert_eq!(answer.status().as_u16(), status);
        assert_eq!(answer.headers()["location"], elsewhere.url("/stolen"));
    }
    assert_eq!(elsewhere.request_count(), 0, "nothing followed yet");

    // A client with reqwest's default policy follows and sends a custom header along.
    let server = HostileServer::start(Behaviour::redirect(307, &elsewhere.url("/stolen")))
        .await
        .expect("server starts");
    let answer = reqwest::Client::new()
        .get(server.url("/v1/secret/data/x"))
        .header("x-vault-token", "hvs.leaked")
        .send()
        .await
        .expect("answer");
    assert_eq!(answer.text().await.unwrap(), "landed");
    let landed = elsewhere.requests();
    assert_eq!(landed.len(), 1, "{landed:?}");
    assert_eq!(landed[0].path, "/stolen");
    assert!(landed[0].mentions("hvs.leaked"));
}

/// Reads a whole body chunk by chunk, keeping only its length and first bytes.
async fn drain(mut response: reqwest::Response) -> (u64, Vec<u8>) {
    let mut len = 0u64;
    let mut head = Vec::new();
    while let Some(chunk) = response.chunk().await.expect("body reads") {
        if head.len() < 32 {
            head.extend_from_slice(&chunk[..chunk.len().min(32 - head.len())]);
        }
        len += chunk.len() as u64;
    }
    (len, head)
}

#[tokio::test]
async fn huge_body_is_streamed_with_or_without_content_length() {
    const LEN: u64 = 50 << 20;
    let server = HostileServer::start(Behaviour::huge_body(200, "application/json", LEN))
        .await
        .expect("server starts");
    server.on(
        "/chunked",
        Behaviour::huge_body(200, "application/json", LEN).without_content_length(),
    );
    let client = no_redirects();

    let answer = client.get(server.url("/")).send().await.expect("answer");
    assert_eq!(answer.content_length(), Some(LEN));
    let (len, head) = drain(answer).await;
    assert_eq!(len, LEN);
    assert!(head.starts_with(br#"{"filler":"aaaa"#), "{head:?}");

    let answer = client
        .get(server.url("/chunked"))
        .send()
        .await
        .expect("answer");
    assert_eq!(answer.content_length(), None);
    assert_eq!(answer.headers()["transfer-encoding"], "chunked");
    assert_eq!(drain(answer).await.0, LEN);
    assert_eq!(server.body_bytes_sent(), 2 * LEN);
}

#[tokio::test]
async fn huge_body_stops_being_generated_when_the_client_stops_reading() {
    const LEN: u64 = 1 << 30;
    let server = HostileServer::start(Behaviour::huge_body(200, "application/json", LEN))
        .await
        .expect("server starts");
    let mut answer = no_redirects()
        .get(server.url("/"))
        .send()
        .await
        .expect("answer");
    let mut read = 0;
    while read < 1 << 20 {
        read += answer.chunk().await.unwrap().expect("more body").len();
    }
    drop(answer);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let sent = server.body_bytes_sent();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(server.body_bytes_sent(), sent, "still generating");
    assert!(
        sent < 64 << 20,
        "sent {sent} bytes of {LEN} to a client that stopped at 1 MiB"
    );
}

#[tokio::test]
async fn slow_drip_sends_one_chunk_per_interval() {
    let server = HostileServer::start(
        Behaviour::slow_drip(200, "text/plain", "abcdef", Duration::from_millis(100)).chunk_len(2),
    )
    .await
    .expect("server starts");
    server.on(
        "/bytes",
        Behaviour::slow_drip(200, "text/plain", "xyz", Duration::from_millis(100)),
    );
    let client = no_redirects();

    let started = Instant::now();
    let mut answer = client.get(server.url("/")).send().await.expect("answer");
    assert_eq!(answer.content_length(), Some(6));
    let mut chunks = Vec::new();
    while let Some(chunk) = answer.chunk().await.expect("body reads") {
        chunks.push((
            String::from_utf8(chunk.to_vec()).unwrap(),
            started.elapsed(),
        ));
    }
    let texts: Vec<&str> = chunks.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(texts, ["ab", "cd", "ef"]);
    assert!(chunks[2].1 >= Duration::from_millis(200), "{chunks:?}");

    let started = Instant::now();
    let answer = client
        .get(server.url("/bytes"))
        .send()
        .await
        .expect("answer");
    assert_eq!(answer.text().await.unwrap(), "xyz");
    assert!(started.elapsed() >= Duration::from_millis(200));
}

#[tokio::test]
async fn slow_drip_outlasts_a_client_timeout() {
    let server = HostileServer::start(Behaviour::slow_drip(
        200,
        "application/json",
        vec![b' '; 100],
        Duration::from_millis(50),
    ))
    .await
    .expect("server starts");
    let client = reqwest::Client::builder()
        .timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    let started = Instant::now();
    let answer = client
        .get(server.url("/"))
        .send()
        .await
        .expect("headers come at once");
    let err = answer.text().await.expect_err("the body takes 5 s");
    assert!(err.is_timeout(), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn hang_never_answers_but_records_the_request() {
    let server = HostileServer::start(Behaviour::hang())
        .await
        .expect("server starts");
    let client = reqwest::Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let err = client
        .post(server.url("/hang"))
        .body("payload")
        .send()
        .await
        .expect_err("no answer");
    assert!(err.is_timeout(), "{err:?}");
    let requests = server.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].body_text(), "payload");
}

#[tokio::test]
async fn drop_connection_closes_without_an_answer() {
    let server = HostileServer::start(Behaviour::drop_connection())
        .await
        .expect("server starts");
    let err = no_redirects()
        .get(server.url("/"))
        .send()
        .await
        .expect_err("no answer");
    assert!(!err.is_timeout(), "{err:?}");
    assert_eq!(server.request_count(), 1);
}

#[tokio::test]
async fn tls_server_is_trusted_through_its_ca() {
    let server = HostileServer::start_tls(Behaviour::answer(200, "text/plain", "over tls"))
        .await
        .expect("server starts");
    assert!(server.base_url().starts_with("https://127.0.0.1:"));
    let ca = reqwest::Certificate::from_pem(server.ca_pem().expect("a CA").as_bytes()).unwrap();
    let client = reqwest::Client::builder()
        .tls_certs_only([ca])
        .build()
        .unwrap();
    let answer = client.get(server.url("/")).send().await.expect("answer");
    assert_eq!(answer.text().await.unwrap(), "over tls");

    let plain = HostileServer::start(Behaviour::hang()).await.unwrap();
    assert!(plain.ca_pem().is_none());
    let dir = tempfile::tempdir().unwrap();
    assert!(plain.write_ca_pem(&dir.path().join("ca.pem")).is_err());
    server.write_ca_pem(&dir.path().join("ca.pem")).unwrap();
}
