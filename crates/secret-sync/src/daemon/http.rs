//! The daemon's HTTP listener on `[settings] listen`: `/healthz`, `/readyz` and `/metrics`.
//!
//! Why so small: three GET paths answered from [`Metrics`] need no router or framework, only
//! hyper's HTTP/1.1 connection. Binding is a separate step ([`Listener::bind`]) so the daemon can
//! refuse to start when the address is taken, before it schedules anything; serving stops when
//! the shutdown future the daemon passes completes.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use time::OffsetDateTime;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use super::metrics::{Metrics, Readiness};

/// The content type of the Prometheus text exposition format.
pub const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A client that has not sent its request headers in this long is dropped.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// The listener could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HttpError {
    // The OS error is the source: `{:#}` prints it once, after this.
    #[error(
        "could not listen on {addr} ([settings] listen): stop the process that holds the \
         address or choose another one"
    )]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// A bound, not yet serving, listener.
#[derive(Debug)]
pub struct Listener {
    listener: TcpListener,
    addr: SocketAddr,
}

impl Listener {
    /// Bind `addr` (port 0 picks a free port; see [`Listener::local_addr`]).
    pub async fn bind(addr: SocketAddr) -> Result<Self, HttpError> {
        let bind_error = |source| HttpError::Bind { addr, source };
        let listener = TcpListener::bind(addr).await.map_err(bind_error)?;
        let addr = listener.local_addr().map_err(bind_error)?;
        Ok(Listener { listener, addr })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Answer requests until `shutdown` completes; then stop accepting and drop open
    /// connections (each request is answered from memory, so none is long in flight).
    pub async fn serve(self, metrics: Arc<Metrics>, shutdown: impl Future<Output = ()>) {
        info!(addr = %self.addr, "serving /healthz, /readyz and /metrics");
        let mut connections = JoinSet::new();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                accepted = self.listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        let metrics = Arc::clone(&metrics);
                        connections.spawn(async move {
                            let service = service_fn(move |request| {
                                let response = respond(&metrics, &request);
                                async move { Ok::<_, Infallible>(response) }
                            });
                            let served = hyper::server::conn::http1::Builder::new()
                                .timer(TokioTimer::new())
                                .header_read_timeout(HEADER_READ_TIMEOUT)
                                .serve_connection(TokioIo::new(stream), service)
                                .await;
                            if let Err(err) = served {
                                debug!(%peer, error = %err, "health/metrics connection ended with an error");
                            }
                        });
                    }
                    // Out of file descriptors and the like: say so, wait a little, go on.
                    Err(err) => {
                        warn!(error = %err, "could not accept a connection on the metrics listener");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
                // Reap finished connections so the set does not grow with every scrape.
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
            }
        }
        connections.shutdown().await;
        info!(addr = %self.addr, "stopped serving /healthz, /readyz and /metrics");
    }
}

fn respond(metrics: &Metrics, request: &Request<Incoming>) -> Response<Full<Bytes>> {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return text(
            StatusCode::METHOD_NOT_ALLOWED,
            "only GET and HEAD are served\n".to_owned(),
        );
    }
    match request.uri().path() {
        "/healthz" => text(StatusCode::OK, "ok\n".to_owned()),
        "/readyz" => match metrics.readiness(OffsetDateTime::now_utc()) {
            Readiness::Ready => text(StatusCode::OK, "ready\n".to_owned()),
            Readiness::NotReady(reason) => text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not ready: {reason}\n"),
            ),
        },
        "/metrics" => {
            let mut response = text(StatusCode::OK, metrics.render());
            response
                .headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static(METRICS_CONTENT_TYPE));
            response
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: the paths are /healthz, /readyz and /metrics\n".to_owned(),
        ),
    }
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, SocketAddrV4};

    use tokio::sync::oneshot;

    use super::*;
    use crate::daemon::metrics::Status;

    fn loopback(port: u16) -> SocketAddr {
        SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port))
    }

    /// A served listener on a free port, its base URL and the sender that stops it.
    async fn start(
        metrics: Arc<Metrics>,
    ) -> (String, oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
        let listener = Listener::bind(loopback(0)).await.expect("bind 127.0.0.1:0");
        let base = format!("http://{}", listener.local_addr());
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(listener.serve(metrics, async move {
            let _ = stopped.await;
        }));
        (base, stop, server)
    }

    async fn get(url: &str) -> (StatusCode, String, String) {
        let response = reqwest::get(url).await.expect("GET");
        let status = response.status();
        let content_type = response
            .headers()
            .get(CONTENT_TYPE)
            .map(|v| v.to_str().expect("ascii").to_owned())
            .unwrap_or_default();
        (status, content_type, response.text().await.expect("body"))
    }

    #[tokio::test]
    async fn answers_healthz_readyz_and_metrics() {
        let metrics = Arc::new(Metrics::new());
        let (base, stop, server) = start(Arc::clone(&metrics)).await;

        let (status, _, body) = get(&format!("{base}/healthz")).await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "ok\n"));

        let (status, _, body) = get(&format!("{base}/readyz")).await;
        assert_eq!(
            (status, body.as_str()),
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "not ready: no config loaded yet\n"
            )
        );
        metrics.set_config_loaded(true);
        let (status, _, body) = get(&format!("{base}/readyz")).await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "ready\n"));
        metrics.record_job_run("broken", Status::Failure);
        let (status, _, body) = get(&format!("{base}/readyz")).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.contains("broken"), "the reason names the job: {body}");

        metrics.record_token_request("app", Status::Success);
        let (status, content_type, body) = get(&format!("{base}/metrics")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(content_type, METRICS_CONTENT_TYPE);
        assert!(
            body.contains("secret_sync_token_requests_total{job=\"app\",outcome=\"success\"} 1\n"),
            "{body}"
        );

        let (status, _, body) = get(&format!("{base}/other")).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{body}");

        let client = reqwest::Client::new();
        let head = client
            .head(format!("{base}/healthz"))
            .send()
            .await
            .expect("HEAD");
        assert_eq!(head.status(), StatusCode::OK);
        assert_eq!(head.text().await.expect("no body"), "", "HEAD has no body");
        let post = client
            .post(format!("{base}/metrics"))
            .send()
            .await
            .expect("POST");
        assert_eq!(post.status(), StatusCode::METHOD_NOT_ALLOWED);

        stop.send(()).expect("server still running");
        tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .expect("the server stops on shutdown")
            .expect("the server task does not panic");
        assert!(
            reqwest::get(format!("{base}/healthz")).await.is_err(),
            "nothing answers after shutdown"
        );
    }

    #[tokio::test]
    async fn refuses_an_address_in_use_and_says_what_to_do() {
        let taken = Listener::bind(loopback(0)).await.expect("bind 127.0.0.1:0");
        let addr = taken.local_addr();

        let err = Listener::bind(addr)
            .await
            .expect_err("the address is in use");
        let message = err.to_string();
        assert!(
            message.starts_with(&format!("could not listen on {addr} ([settings] listen): ")),
            "{message}"
        );
        assert!(message.contains("choose another one"), "{message}");
    }
}
