//! The HTTP(S) plumbing shared by every emulator: a listener on 127.0.0.1 with an ephemeral port,
//! optional TLS, one async handler per request, and a handle that stops the server when dropped.
//! Emulators only see a [`Request`] and answer a [`Reply`], so their code stays about the protocol.
//! A reply's body is whole ([`Reply::Response`]) or produced while it is sent ([`Reply::Streamed`],
//! for the hostile server's huge and slow bodies).

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;

use crate::error::TestkitError;

/// A request as the emulators see it: the whole body is already read.
#[derive(Debug)]
pub(crate) struct Request {
    pub(crate) method: Method,
    pub(crate) path: String,
    pub(crate) query: Option<String>,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
}

impl Request {
    /// The value of a header as text, if present and valid UTF-8.
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The query string decoded into pairs (later duplicates win).
    pub(crate) fn query_pairs(&self) -> std::collections::BTreeMap<String, String> {
        url::form_urlencoded::parse(self.query.as_deref().unwrap_or("").as_bytes())
            .into_owned()
            .collect()
    }
}

/// A response body produced while it is sent (any size, any pace).
pub(crate) type StreamedBody = BoxBody<Bytes, Infallible>;

/// What a handler answers: a response, or "close the socket without answering".
#[derive(Debug)]
pub(crate) enum Reply {
    Response(Response<Full<Bytes>>),
    Streamed(Response<StreamedBody>),
    DropConnection,
}

impl Reply {
    /// A JSON answer with the headers Microsoft services send.
    pub(crate) fn json(status: StatusCode, body: &serde_json::Value) -> Reply {
        Reply::raw(status, "application/json; charset=utf-8", body.to_string())
    }

    /// Any body with the given content type.
    pub(crate) fn raw(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Reply {
        let mut response = Response::new(Full::new(body.into()));
        *response.status_mut() = status;
        if let Ok(value) = HeaderValue::from_str(content_type) {
            response
                .headers_mut()
                .insert(http::header::CONTENT_TYPE, value);
        }
        Reply::Response(response)
    }

    /// Adds a header (ignored for a dropped connection or an invalid value).
    pub(crate) fn with_header(mut self, name: &'static str, value: &str) -> Reply {
        let Ok(value) = HeaderValue::from_str(value) else {
            return self;
        };
        match &mut self {
            Reply::Response(response) => {
                response.headers_mut().insert(name, value);
            }
            Reply::Streamed(response) => {
                response.headers_mut().insert(name, value);
            }
            Reply::DropConnection => {}
        }
        self
    }

    /// The status code, or `None` for a dropped connection.
    pub(crate) fn status(&self) -> Option<u16> {
        match self {
            Reply::Response(response) => Some(response.status().as_u16()),
            Reply::Streamed(response) => Some(response.status().as_u16()),
            Reply::DropConnection => None,
        }
    }
}

pub(crate) type BoxFuture = Pin<Box<dyn Future<Output = Reply> + Send>>;
pub(crate) type Handler = Arc<dyn Fn(Request) -> BoxFuture + Send + Sync>;

/// A running server; dropping it stops the accept loop and every open connection.
#[derive(Debug)]
pub(crate) struct ServerHandle {
    addr: SocketAddr,
    tls: bool,
    task: JoinHandle<()>,
    /// TCP connections accepted so far.
    accepted: Arc<AtomicUsize>,
}

impl ServerHandle {
    /// Binds 127.0.0.1 on `port` (0 = ephemeral) and serves `handler`, over TLS when an acceptor is given.
    pub(crate) async fn start(
        port: u16,
        tls: Option<TlsAcceptor>,
        handler: Handler,
    ) -> Result<ServerHandle, TestkitError> {
        let listener = TcpListener::bind(("127.0.0.1", port))
            .await
            .map_err(TestkitError::Bind)?;
        let addr = listener.local_addr().map_err(TestkitError::Bind)?;
        let is_tls = tls.is_some();
        let accepted = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn(accept_loop(listener, tls, handler, Arc::clone(&accepted)));
        Ok(ServerHandle {
            addr,
            tls: is_tls,
            task,
            accepted,
        })
    }

    /// How many TCP connections the server has accepted (a client that reuses its connections
    /// opens few).
    pub(crate) fn connections_accepted(&self) -> usize {
        self.accepted.load(Ordering::Relaxed)
    }

    /// `http://127.0.0.1:PORT` or `https://127.0.0.1:PORT`, without a trailing slash.
    pub(crate) fn base_url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops the server and waits until its connections are closed.
    pub(crate) async fn shutdown(mut self) {
        self.task.abort();
        // The task was aborted: the only possible result is a cancellation, which is what we asked for.
        let _cancelled = (&mut self.task).await;
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn accept_loop(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    handler: Handler,
    count: Arc<AtomicUsize>,
) {
    // Connections live in this set, so aborting the accept task closes them all.
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _peer)) = accepted else { continue };
                count.fetch_add(1, Ordering::Relaxed);
                let handler = handler.clone();
                let tls = tls.clone();
                connections.spawn(async move {
                    match tls {
                        Some(acceptor) => {
                            if let Ok(stream) = acceptor.accept(stream).await {
                                serve_connection(TokioIo::new(stream), handler).await;
                            }
                        }
                        None => serve_connection(TokioIo::new(stream), handler).await,
                    }
                });
            }
            Some(_finished) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// Marker error: returning it from the service makes hyper close the socket without answering.
#[derive(Debug)]
struct DropConnection;

impl std::fmt::Display for DropConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection dropped by fault injection")
    }
}

impl std::error::Error for DropConnection {}

async fn serve_connection<I>(io: TokioIo<I>, handler: Handler)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        let handler = handler.clone();
        async move {
            let (parts, body) = req.into_parts();
            let body = match body.collect().await {
                Ok(collected) => collected.to_bytes(),
                Err(_) => return Err(DropConnection),
            };
            let request = Request {
                method: parts.method,
                path: parts.uri.path().to_owned(),
                query: parts.uri.query().map(str::to_owned),
                headers: parts.headers,
                body,
            };
            match handler(request).await {
                Reply::Response(response) => {
                    Ok::<_, DropConnection>(response.map(|body| body.boxed()))
                }
                Reply::Streamed(response) => Ok(response),
                Reply::DropConnection => Err(DropConnection),
            }
        }
    });
    // A connection error (client went away, dropped by a fault) ends only this connection.
    let _ended = hyper::server::conn::http1::Builder::new()
        .serve_connection(io, service)
        .await;
}

/// The requests an emulator received, each logged on arrival and completed with its status, so a
/// request whose client gave up (timeout during a `Delay` fault) is still counted.
#[derive(Debug)]
pub(crate) struct RequestLog<T> {
    next_id: u64,
    entries: Vec<(u64, T)>,
}

impl<T> Default for RequestLog<T> {
    fn default() -> Self {
        RequestLog {
            next_id: 0,
            entries: Vec::new(),
        }
    }
}

impl<T: Clone> RequestLog<T> {
    /// Logs a request that just arrived; the id completes it later.
    pub(crate) fn arrived(&mut self, entry: T) -> u64 {
        self.next_id += 1;
        self.entries.push((self.next_id, entry));
        self.next_id
    }

    /// Updates the entry `id` (gone if the log was cleared meanwhile).
    pub(crate) fn complete(&mut self, id: u64, update: impl FnOnce(&mut T)) {
        if let Some((_, entry)) = self.entries.iter_mut().rev().find(|(i, _)| *i == id) {
            update(entry);
        }
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &T> {
        self.entries.iter().map(|(_, entry)| entry)
    }

    pub(crate) fn to_vec(&self) -> Vec<T> {
        self.iter().cloned().collect()
    }

    pub(crate) fn clear(&mut self) {
        self.entries.clear();
    }
}
