//! A hostile HTTP(S) server: it answers what a broken, compromised or malicious server would, so
//! tests can show that a client neither leaks, crashes, grows without bound nor hangs when it meets
//! one. It runs on 127.0.0.1 with an ephemeral port (optionally over TLS with its own [`TestCa`]),
//! stops when dropped, and records every request it receives.
//!
//! What it answers is a [`Behaviour`], chosen per exact path ([`HostileServer::on`], permanent;
//! [`HostileServer::once`], used by the next request only, in the order given) or else the default
//! given at start:
//! - [`Behaviour::answer`] / [`Behaviour::json`]: a canned status, headers and body (absurd
//!   `expires_in`, `Retry-After: 300000000000`, `lease_duration`...); [`Behaviour::with_header`]
//!   adds headers to any behaviour.
//! - [`Behaviour::redirect`]: 301/302/307/308 with a `Location` (e.g. another hostile server).
//! - [`Behaviour::huge_body`]: N bytes generated while they are sent (never held in memory),
//!   with or without `Content-Length` ([`Behaviour::without_content_length`]).
//! - [`Behaviour::slow_drip`]: a body sent one chunk ([`Behaviour::chunk_len`], default one byte)
//!   per interval.
//! - [`Behaviour::hang`]: read the request, never answer.
//! - [`Behaviour::drop_connection`]: read the request, close the socket.
//!
//! [`HostileServer::requests`] returns the requests ([`HostileRequest`]: method, path, query,
//! headers, body) with their values unredacted, so a test can assert that a credential never
//! reached the server ([`HostileRequest::mentions`]). [`HostileServer::body_bytes_sent`] counts the
//! body bytes handed to the socket, so a test can show that a client stopped reading early.
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! use testkit::{Behaviour, HostileServer};
//!
//! // A target that records what reaches it, and a server that redirects everything there.
//! let elsewhere = HostileServer::start(Behaviour::json(200, &serde_json::json!({}))).await?;
//! let server = HostileServer::start(Behaviour::redirect(307, &elsewhere.url("/stolen"))).await?;
//! // One path answers an absurd token, another a 200 MB body without Content-Length.
//! server.on(
//!     "/tenant/oauth2/v2.0/token",
//!     Behaviour::json(
//!         200,
//!         &serde_json::json!({"token_type": "Bearer", "access_token": "x", "expires_in": 1e12}),
//!     ),
//! );
//! server.on(
//!     "/huge",
//!     Behaviour::huge_body(200, "application/json", 200 << 20).without_content_length(),
//! );
//! // The next request to /slow (only) gets 429 with a Retry-After of ~9500 years.
//! server.once("/slow", Behaviour::json(429, &serde_json::json!({})).with_header("retry-after", "300000000000"));
//!
//! let client = reqwest::Client::builder()
//!     .redirect(reqwest::redirect::Policy::none())
//!     .build()?;
//! let answer = client
//!     .get(server.url("/vault/secret"))
//!     .header("x-vault-token", "hvs.secret")
//!     .send()
//!     .await?;
//! assert_eq!(answer.status(), 307);
//! assert!(server.requests()[0].mentions("hvs.secret"));
//! assert!(elsewhere.requests().is_empty(), "the redirect was not followed");
//! # Ok(()) }
//! ```

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::future::Future as _;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, SizeHint};
use tokio::time::Sleep;

use crate::error::TestkitError;
use crate::server::{Handler, Reply, Request, ServerHandle};
use crate::tls::TestCa;

/// The size of the blocks a generated body is sent in.
const BLOCK: usize = 64 * 1024;

/// What the hostile server answers to one request. Build it with the constructors, adjust it
/// with the `with_*`/`without_*` methods.
#[derive(Debug, Clone)]
pub struct Behaviour {
    status: StatusCode,
    headers: Vec<(HeaderName, HeaderValue)>,
    body: BodyKind,
    content_length: bool,
}

#[derive(Debug, Clone)]
enum BodyKind {
    Whole(Bytes),
    Huge {
        len: u64,
    },
    Drip {
        body: Bytes,
        chunk_len: usize,
        interval: Duration,
    },
    Hang,
    Drop,
}

fn status(code: u16) -> StatusCode {
    StatusCode::from_u16(code).unwrap_or_else(|_| panic!("{code} is not an HTTP status code"))
}

impl Behaviour {
    /// Exactly this status, `Content-Type` and body.
    ///
    /// Panics if `status` is not a valid status code (100-999) or `content_type` not a valid
    /// header value: both are test programming errors.
    pub fn answer(status_code: u16, content_type: &str, body: impl Into<Bytes>) -> Behaviour {
        Behaviour {
            status: status(status_code),
            headers: Vec::new(),
            body: BodyKind::Whole(body.into()),
            content_length: true,
        }
        .with_header("content-type", content_type)
    }

    /// A JSON body (`application/json; charset=utf-8`) with this status.
    pub fn json(status_code: u16, body: &serde_json::Value) -> Behaviour {
        Behaviour::answer(
            status_code,
            "application/json; charset=utf-8",
            body.to_string(),
        )
    }

    /// A redirect (301, 302, 303, 307 or 308 are the useful ones) to `location`, with an empty body.
    pub fn redirect(status_code: u16, location: &str) -> Behaviour {
        Behaviour::answer(status_code, "text/plain", Bytes::new()).with_header("location", location)
    }

    /// A body of `len` bytes generated while it is sent, in 64 KiB blocks, so neither the server
    /// nor a client that stops early holds it. It starts `{"filler":"` and goes on with `a`s, never
    /// closing the string: a JSON parser that reads it whole fails only at the very end.
    pub fn huge_body(status_code: u16, content_type: &str, len: u64) -> Behaviour {
        Behaviour {
            status: status(status_code),
            headers: Vec::new(),
            body: BodyKind::Huge { len },
            content_length: true,
        }
        .with_header("content-type", content_type)
    }

    /// `body`, sent one chunk (one byte unless [`Behaviour::chunk_len`] says otherwise) every
    /// `interval`; the first chunk goes out at once, with the headers.
    pub fn slow_drip(
        status_code: u16,
        content_type: &str,
        body: impl Into<Bytes>,
        interval: Duration,
    ) -> Behaviour {
        Behaviour {
            status: status(status_code),
            headers: Vec::new(),
            body: BodyKind::Drip {
                body: body.into(),
                chunk_len: 1,
                interval,
            },
            content_length: true,
        }
        .with_header("content-type", content_type)
    }

    /// Reads the request and never answers (the connection stays open until the client gives up
    /// or the server is dropped).
    pub fn hang() -> Behaviour {
        Behaviour {
            status: StatusCode::OK,
            headers: Vec::new(),
            body: BodyKind::Hang,
            content_length: false,
        }
    }

    /// Reads the request and closes the connection without answering.
    pub fn drop_connection() -> Behaviour {
        Behaviour {
            status: StatusCode::OK,
            headers: Vec::new(),
            body: BodyKind::Drop,
            content_length: false,
        }
    }

    /// Adds a header (repeat the call for a repeated header). A `Content-Length` given here is
    /// sent as is, whatever the body's length: a lying server.
    ///
    /// Panics on an invalid header name or value (a test programming error).
    pub fn with_header(mut self, name: &str, value: &str) -> Behaviour {
        let name = HeaderName::from_bytes(name.as_bytes())
            .unwrap_or_else(|_| panic!("{name:?} is not a valid header name"));
        let value = HeaderValue::from_str(value)
            .unwrap_or_else(|_| panic!("{value:?} is not a valid header value"));
        self.headers.push((name, value));
        self
    }

    /// Sends the body without `Content-Length` (chunked transfer encoding), so the client cannot
    /// know its size before reading it.
    pub fn without_content_length(mut self) -> Behaviour {
        self.content_length = false;
        self
    }

    /// For [`Behaviour::slow_drip`]: the number of bytes sent per interval (at least 1).
    pub fn chunk_len(mut self, len: usize) -> Behaviour {
        if let BodyKind::Drip { chunk_len, .. } = &mut self.body {
            *chunk_len = len.max(1);
        }
        self
    }
}

/// One request as the hostile server received it, values unredacted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostileRequest {
    /// `GET`, `POST`...
    pub method: String,
    /// The path, without the query.
    pub path: String,
    /// The raw query string, if any.
    pub query: Option<String>,
    /// Every header in arrival order, names in lower case.
    pub headers: Vec<(String, String)>,
    /// The body, as sent.
    pub body: Vec<u8>,
}

impl HostileRequest {
    /// The first value of header `name` (case-insensitive), if present and text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as text (lossy UTF-8).
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Whether `needle` appears anywhere in the request: path, query, a header name or value, or
    /// the body (raw and form-decoded). The check for "this secret never reached the server".
    pub fn mentions(&self, needle: &str) -> bool {
        let decoded: String = url::form_urlencoded::parse(&self.body)
            .map(|(k, v)| format!("{k}={v}\n"))
            .collect();
        let query = self.query.as_deref().unwrap_or("");
        let decoded_query: String = url::form_urlencoded::parse(query.as_bytes())
            .map(|(k, v)| format!("{k}={v}\n"))
            .collect();
        self.path.contains(needle)
            || query.contains(needle)
            || decoded_query.contains(needle)
            || self
                .headers
                .iter()
                .any(|(n, v)| n.contains(needle) || v.contains(needle))
            || self.body_text().contains(needle)
            || decoded.contains(needle)
    }
}

#[derive(Debug)]
struct State {
    default: Behaviour,
    paths: HashMap<String, Behaviour>,
    once: HashMap<String, VecDeque<Behaviour>>,
    requests: Vec<HostileRequest>,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    body_bytes_sent: Arc<AtomicU64>,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A test that panicked while holding the lock leaves consistent data: keep serving.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The hostile server; dropping it stops it and closes its connections.
#[derive(Debug)]
pub struct HostileServer {
    server: ServerHandle,
    shared: Arc<Shared>,
    ca: Option<TestCa>,
}

impl HostileServer {
    /// Starts over HTTP on 127.0.0.1 (ephemeral port); paths without their own behaviour get `default`.
    pub async fn start(default: Behaviour) -> Result<HostileServer, TestkitError> {
        HostileServer::start_inner(default, None).await
    }

    /// Starts over HTTPS with a fresh [`TestCa`] ([`HostileServer::ca_pem`] for the client).
    pub async fn start_tls(default: Behaviour) -> Result<HostileServer, TestkitError> {
        HostileServer::start_inner(default, Some(TestCa::generate()?)).await
    }

    async fn start_inner(
        default: Behaviour,
        ca: Option<TestCa>,
    ) -> Result<HostileServer, TestkitError> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                default,
                paths: HashMap::new(),
                once: HashMap::new(),
                requests: Vec::new(),
            }),
            body_bytes_sent: Arc::new(AtomicU64::new(0)),
        });
        let acceptor = match &ca {
            Some(ca) => Some(tokio_rustls::TlsAcceptor::from(ca.server_config()?)),
            None => None,
        };
        let handler_shared = shared.clone();
        let handler: Handler = Arc::new(move |request| {
            let shared = handler_shared.clone();
            Box::pin(async move { handle(&shared, request).await })
        });
        let server = ServerHandle::start(0, acceptor, handler).await?;
        Ok(HostileServer { server, shared, ca })
    }

    /// `http(s)://127.0.0.1:PORT`, without a trailing slash.
    pub fn base_url(&self) -> String {
        self.server.base_url()
    }

    /// The base URL followed by `path` (which should start with `/`).
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.server.base_url())
    }

    /// The port the server listens on.
    pub fn port(&self) -> u16 {
        self.server.addr().port()
    }

    /// The CA certificate (PEM) of a server started with [`HostileServer::start_tls`].
    pub fn ca_pem(&self) -> Option<&str> {
        self.ca.as_ref().map(TestCa::cert_pem)
    }

    /// Writes the CA certificate (PEM) to `path`, for a client's `ca_file`. Fails for an HTTP server.
    pub fn write_ca_pem(&self, path: &std::path::Path) -> Result<(), TestkitError> {
        match &self.ca {
            Some(ca) => ca.write_pem(path),
            None => Err(TestkitError::Tls(
                "this hostile server was started without TLS".to_owned(),
            )),
        }
    }

    /// Every request to exactly `path` (no query) gets `behaviour` from now on (after any
    /// [`HostileServer::once`] answers queued for it).
    pub fn on(&self, path: &str, behaviour: Behaviour) {
        self.shared.lock().paths.insert(path.to_owned(), behaviour);
    }

    /// The next request to exactly `path` gets `behaviour`; calls queue up in order.
    pub fn once(&self, path: &str, behaviour: Behaviour) {
        self.shared
            .lock()
            .once
            .entry(path.to_owned())
            .or_default()
            .push_back(behaviour);
    }

    /// Requests to paths without their own behaviour get `behaviour` from now on.
    pub fn set_default(&self, behaviour: Behaviour) {
        self.shared.lock().default = behaviour;
    }

    /// Every request received so far, in arrival order (recorded before answering, so a request
    /// that hangs is there too).
    pub fn requests(&self) -> Vec<HostileRequest> {
        self.shared.lock().requests.clone()
    }

    /// How many requests have arrived.
    pub fn request_count(&self) -> usize {
        self.shared.lock().requests.len()
    }

    /// Body bytes handed to the connections so far, across all requests. A client that stops
    /// reading makes this stop growing (up to the socket buffers).
    pub fn body_bytes_sent(&self) -> u64 {
        self.shared.body_bytes_sent.load(Ordering::Relaxed)
    }
}

async fn handle(shared: &Shared, request: Request) -> Reply {
    let behaviour = {
        let mut state = shared.lock();
        state.requests.push(HostileRequest {
            method: request.method.to_string(),
            path: request.path.clone(),
            query: request.query.clone(),
            headers: request
                .headers
                .iter()
                .map(|(n, v)| {
                    (
                        n.as_str().to_owned(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect(),
            body: request.body.to_vec(),
        });
        let queued = state
            .once
            .get_mut(&request.path)
            .and_then(VecDeque::pop_front);
        queued
            .or_else(|| state.paths.get(&request.path).cloned())
            .unwrap_or_else(|| state.default.clone())
    };
    let counter = shared.body_bytes_sent.clone();
    let body = match behaviour.body {
        BodyKind::Hang => return std::future::pending::<Reply>().await,
        BodyKind::Drop => return Reply::DropConnection,
        BodyKind::Whole(bytes) => Generated::drip(bytes, usize::MAX, Duration::ZERO, counter),
        BodyKind::Huge { len } => Generated::huge(len, counter),
        BodyKind::Drip {
            body,
            chunk_len,
            interval,
        } => Generated::drip(body, chunk_len, interval, counter),
    };
    let body = body.exact_len(behaviour.content_length);
    let mut response = Response::new(body.boxed());
    *response.status_mut() = behaviour.status;
    for (name, value) in behaviour.headers {
        response.headers_mut().append(name, value);
    }
    Reply::Streamed(response)
}

/// A response body produced frame by frame: a huge filler or a slow drip.
struct Generated {
    source: Source,
    interval: Duration,
    sleep: Option<Pin<Box<Sleep>>>,
    /// Bytes not sent yet.
    remaining: u64,
    /// Whether hyper is told the exact length (and so sends `Content-Length`).
    exact: bool,
    counter: Arc<AtomicU64>,
}

enum Source {
    /// `{"filler":"aaaa...`, generated block by block.
    Filler { block: Bytes, started: bool },
    /// These bytes, `chunk_len` at a time.
    Bytes { bytes: Bytes, chunk_len: usize },
}

impl Generated {
    fn huge(len: u64, counter: Arc<AtomicU64>) -> Generated {
        Generated {
            source: Source::Filler {
                block: Bytes::from(vec![b'a'; BLOCK]),
                started: false,
            },
            interval: Duration::ZERO,
            sleep: None,
            remaining: len,
            exact: true,
            counter,
        }
    }

    fn drip(
        bytes: Bytes,
        chunk_len: usize,
        interval: Duration,
        counter: Arc<AtomicU64>,
    ) -> Generated {
        Generated {
            remaining: bytes.len() as u64,
            source: Source::Bytes { bytes, chunk_len },
            interval,
            sleep: None,
            exact: true,
            counter,
        }
    }

    fn exact_len(mut self, exact: bool) -> Generated {
        self.exact = exact;
        self
    }

    fn next_chunk(&mut self) -> Bytes {
        let want = usize::try_from(self.remaining).unwrap_or(usize::MAX);
        let chunk = match &mut self.source {
            Source::Filler { block, started } => {
                let mut chunk = block.slice(..want.min(BLOCK));
                if !*started {
                    *started = true;
                    let prefix = br#"{"filler":""#;
                    let mut first = chunk.to_vec();
                    let n = prefix.len().min(first.len());
                    first[..n].copy_from_slice(&prefix[..n]);
                    chunk = Bytes::from(first);
                }
                chunk
            }
            Source::Bytes { bytes, chunk_len } => bytes.split_to((*chunk_len).min(bytes.len())),
        };
        self.remaining -= chunk.len() as u64;
        chunk
    }
}

impl Body for Generated {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.remaining == 0 {
            return Poll::Ready(None);
        }
        if let Some(sleep) = self.sleep.as_mut() {
            if sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            self.sleep = None;
        }
        let chunk = self.next_chunk();
        self.counter
            .fetch_add(chunk.len() as u64, Ordering::Relaxed);
        if !self.interval.is_zero() && self.remaining > 0 {
            self.sleep = Some(Box::pin(tokio::time::sleep(self.interval)));
        }
        Poll::Ready(Some(Ok(Frame::data(chunk))))
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> SizeHint {
        if self.exact {
            SizeHint::with_exact(self.remaining)
        } else {
            SizeHint::default()
        }
    }
}
