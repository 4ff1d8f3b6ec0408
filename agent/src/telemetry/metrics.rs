//! RED metrics from exchanges: the HTTP duration and body-size histograms of the OpenTelemetry
//! semantic conventions (<https://opentelemetry.io/docs/specs/semconv/http/http-metrics/>) and the
//! RPC call durations (`rpc.server.call.duration`, `rpc.client.call.duration`,
//! <https://opentelemetry.io/docs/specs/semconv/rpc/rpc-metrics/>), recorded for every exchange
//! (before any trace sampling), on the per-process meter.
//!
//! # Units
//! Durations in seconds (`s`), body sizes in bytes (`By`).

use opentelemetry::{
    metrics::{Histogram, Meter},
    KeyValue,
};

use super::semconv;
use crate::exchange::{Exchange, ExchangeKind, HttpExchange, Role};

/// Span attributes an RPC call's metrics keep (low cardinality: no peer port, no user agent).
const RPC_METRIC_KEYS: [&str; 6] = [
    semconv::RPC_SYSTEM_NAME,
    semconv::RPC_METHOD,
    semconv::RPC_RESPONSE_STATUS_CODE,
    semconv::ERROR_TYPE,
    semconv::SERVER_ADDRESS,
    semconv::SERVER_PORT,
];

/// The instruments of one process's meter.
#[derive(Debug, Clone)]
pub struct Instruments {
    server_duration: Histogram<f64>,
    client_duration: Histogram<f64>,
    server_request_body: Histogram<u64>,
    server_response_body: Histogram<u64>,
    client_request_body: Histogram<u64>,
    client_response_body: Histogram<u64>,
    rpc_server_duration: Histogram<f64>,
    rpc_client_duration: Histogram<f64>,
}

impl Instruments {
    /// Creates the instruments on `meter`.
    pub fn new(meter: &Meter) -> Self {
        let duration = |name: &'static str, description: &'static str| {
            meter
                .f64_histogram(name)
                .with_unit("s")
                .with_description(description)
                .with_boundaries(semconv::HTTP_DURATION_BOUNDARIES_S.to_vec())
                .build()
        };
        let size = |name: &'static str, description: &'static str| {
            meter
                .u64_histogram(name)
                .with_unit("By")
                .with_description(description)
                .build()
        };
        Self {
            server_duration: duration(
                semconv::HTTP_SERVER_REQUEST_DURATION,
                "Duration of HTTP server requests.",
            ),
            client_duration: duration(
                semconv::HTTP_CLIENT_REQUEST_DURATION,
                "Duration of HTTP client requests.",
            ),
            server_request_body: size(
                semconv::HTTP_SERVER_REQUEST_BODY_SIZE,
                "Size of HTTP server request bodies.",
            ),
            server_response_body: size(
                semconv::HTTP_SERVER_RESPONSE_BODY_SIZE,
                "Size of HTTP server response bodies.",
            ),
            client_request_body: size(
                semconv::HTTP_CLIENT_REQUEST_BODY_SIZE,
                "Size of HTTP client request bodies.",
            ),
            client_response_body: size(
                semconv::HTTP_CLIENT_RESPONSE_BODY_SIZE,
                "Size of HTTP client response bodies.",
            ),
            rpc_server_duration: duration(
                semconv::RPC_SERVER_CALL_DURATION,
                "Duration of incoming remote procedure calls.",
            ),
            rpc_client_duration: duration(
                semconv::RPC_CLIENT_CALL_DURATION,
                "Duration of outgoing remote procedure calls.",
            ),
        }
    }

    /// Records one exchange, given its span's attributes (see [`from_span_attributes`]): the span
    /// attributes are built once per exchange and the metric ones picked out of them.
    pub fn record(&self, ex: &Exchange, span_attributes: &[KeyValue]) {
        match &ex.kind {
            ExchangeKind::Http(http) => self.record_http(ex, http, span_attributes),
            ExchangeKind::Rpc(_) => {
                let attributes: Vec<KeyValue> = span_attributes
                    .iter()
                    .filter(|kv| RPC_METRIC_KEYS.contains(&kv.key.as_str()))
                    .cloned()
                    .collect();
                let seconds = ex.end_ns.saturating_sub(ex.start_ns) as f64 / 1e9;
                match ex.conn.role {
                    Role::Server => self.rpc_server_duration.record(seconds, &attributes),
                    Role::Client => self.rpc_client_duration.record(seconds, &attributes),
                }
            }
        }
    }

    fn record_http(&self, ex: &Exchange, http: &HttpExchange, span_attributes: &[KeyValue]) {
        let attributes = from_span_attributes(ex.conn.role, span_attributes);
        let seconds = ex.end_ns.saturating_sub(ex.start_ns) as f64 / 1e9;
        let (duration, request_body, response_body) = match ex.conn.role {
            Role::Server => (
                &self.server_duration,
                &self.server_request_body,
                &self.server_response_body,
            ),
            Role::Client => (
                &self.client_duration,
                &self.client_request_body,
                &self.client_response_body,
            ),
        };
        duration.record(seconds, &attributes);
        if let Some(n) = http.request_body_bytes {
            request_body.record(n, &attributes);
        }
        if let Some(n) = http.response_body_bytes {
            response_body.record(n, &attributes);
        }
    }
}

/// The metric attributes of an HTTP exchange: a low-cardinality subset of the span's (no path,
/// no peer port, no user agent).
pub fn attributes(ex: &Exchange, http: &HttpExchange, route: Option<&str>) -> Vec<KeyValue> {
    from_span_attributes(ex.conn.role, &super::span::http_attributes(ex, http, route))
}

/// [`attributes`] picked out of the span's own attributes (cloning shares their strings).
pub fn from_span_attributes(role: Role, span_attrs: &[KeyValue]) -> Vec<KeyValue> {
    let keep = |k: &str| {
        matches!(
            k,
            semconv::HTTP_REQUEST_METHOD
                | semconv::HTTP_RESPONSE_STATUS_CODE
                | semconv::URL_SCHEME
                | semconv::NETWORK_PROTOCOL_VERSION
                | semconv::ERROR_TYPE
                | semconv::HTTP_ROUTE
        ) || (role == Role::Client && matches!(k, semconv::SERVER_ADDRESS | semconv::SERVER_PORT))
    };
    span_attrs
        .iter()
        .filter(|kv| keep(kv.key.as_str()))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exchange::ConnInfo;

    fn exchange(role: Role, status: u16) -> (Exchange, HttpExchange) {
        let http = HttpExchange {
            method: "GET".into(),
            path: "/users/7".into(),
            version: crate::exchange::HttpVersion::Http11,
            host: Some("api.test:8080".into()),
            user_agent: Some("curl/7.88.1".into()),
            traceparent: None,
            status,
            request_body_bytes: Some(0),
            response_body_bytes: Some(5),
        };
        let ex = Exchange {
            conn: ConnInfo {
                role,
                local: "127.0.0.1:8080".parse().unwrap(),
                peer: "127.0.0.1:50000".parse().unwrap(),
                tgid: 1,
                tls: false,
            },
            start_ns: 0,
            end_ns: 1_000_000,
            kind: ExchangeKind::Http(http.clone()),
        };
        (ex, http)
    }

    fn keys(attrs: &[KeyValue]) -> Vec<&str> {
        let mut k: Vec<_> = attrs.iter().map(|kv| kv.key.as_str()).collect();
        k.sort_unstable();
        k
    }

    #[test]
    fn server_attributes_are_low_cardinality() {
        let (ex, http) = exchange(Role::Server, 503);
        assert_eq!(
            keys(&attributes(&ex, &http, None)),
            [
                "error.type",
                "http.request.method",
                "http.response.status_code",
                "network.protocol.version",
                "url.scheme"
            ]
        );
    }

    #[test]
    fn client_attributes_name_the_server() {
        let (ex, http) = exchange(Role::Client, 200);
        assert_eq!(
            keys(&attributes(&ex, &http, None)),
            [
                "http.request.method",
                "http.response.status_code",
                "network.protocol.version",
                "server.address",
                "server.port",
                "url.scheme"
            ]
        );
    }
}
