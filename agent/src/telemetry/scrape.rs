//! The HTTP endpoint on `--prometheus-listen`: `GET /metrics` (Prometheus text format 0.0.4),
//! `GET /healthz` and `GET /readyz` (200 `ok` once the probes are attached, which is before this
//! server starts). Each scrape is a message to the export task, which owns the meters.

use std::{convert::Infallible, net::SocketAddr};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{
    body::Incoming, server::conn::http1, service::service_fn, Method, Request, Response, StatusCode,
};
use hyper_util::rt::TokioIo;
use tokio::{
    net::TcpListener,
    sync::{mpsc, oneshot, watch},
};

/// A scrape: the export task answers with the exposition text.
pub type ScrapeRequest = oneshot::Sender<String>;

/// Content type of the Prometheus text exposition format.
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Serves until `stop` changes. Connection errors are logged at debug and never stop the server.
pub async fn serve(
    listener: TcpListener,
    scrapes: mpsc::Sender<ScrapeRequest>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::debug!(error = %e, "metrics endpoint accept failed");
                    continue;
                }
            },
            _ = stop.changed() => return,
        };
        let scrapes = scrapes.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| handle(req, scrapes.clone()));
            if let Err(e) = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(%peer, error = %e, "metrics endpoint connection failed");
            }
        });
    }
}

async fn handle(
    req: Request<Incoming>,
    scrapes: mpsc::Sender<ScrapeRequest>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let reply = |status: StatusCode, content_type: &str, body: String| {
        let mut r = Response::new(Full::new(Bytes::from(body)));
        *r.status_mut() = status;
        if let Ok(v) = content_type.parse() {
            r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
        }
        Ok(r)
    };
    if req.method() != Method::GET {
        return reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "GET only\n".into(),
        );
    }
    match req.uri().path() {
        "/metrics" => {
            let (tx, rx) = oneshot::channel();
            if scrapes.send(tx).await.is_err() {
                return reply(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain",
                    "shutting down\n".into(),
                );
            }
            match rx.await {
                Ok(text) => reply(StatusCode::OK, PROMETHEUS_TEXT, text),
                Err(_) => reply(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain",
                    "shutting down\n".into(),
                ),
            }
        }
        "/healthz" | "/readyz" => reply(StatusCode::OK, "text/plain", "ok\n".into()),
        _ => reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found; try /metrics\n".into(),
        ),
    }
}

/// Binds the listener (so a bad address fails at startup, with a clear error).
///
/// # Errors
/// The address cannot be bound.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}
