//! One observed request/response exchange on one connection, protocol-independent at the top.
//!
//! Input: what a protocol tracker in [`crate::proto`] completes. Output: handed to
//! [`crate::telemetry`] to become a span. Times are kernel `CLOCK_MONOTONIC` nanoseconds; the
//! conversion to wall-clock time happens once, in the telemetry stage.

use std::net::SocketAddr;

/// Which end of the connection the observed process is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// The process connected (`connect(2)`): spans are kind CLIENT.
    Client,
    /// The process accepted the connection (`accept(2)`): spans are kind SERVER.
    Server,
}

/// The connection an exchange ran on, as seen from the observed process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnInfo {
    /// Client or server end.
    pub role: Role,
    /// The observed process's own address and port.
    pub local: SocketAddr,
    /// The other end's address and port.
    pub peer: SocketAddr,
    /// Process (thread group) id of the observed process.
    pub tgid: u32,
    /// The bytes were read as TLS plaintext (the connection is HTTPS, gRPC over TLS...).
    pub tls: bool,
}

/// A completed exchange.
#[derive(Clone, Debug, PartialEq)]
pub struct Exchange {
    /// Connection and role.
    pub conn: ConnInfo,
    /// First request byte (server: read exit; client: write entry), monotonic ns.
    pub start_ns: u64,
    /// Last response byte (read exit on the client, write exit on the server), monotonic ns.
    pub end_ns: u64,
    /// Protocol payload.
    pub kind: ExchangeKind,
}

/// What an [`Exchange`] was, by semantic family (not by wire protocol): span names, attributes,
/// status rules and metrics are written once per family in [`crate::telemetry`], so a new wire
/// protocol of a known family (HTTP/3, Connect, ...) adds no telemetry code.
#[derive(Clone, Debug, PartialEq)]
pub enum ExchangeKind {
    /// An HTTP request and its final response: HTTP/1.x (RFC 9112) or HTTP/2 (RFC 9113).
    Http(HttpExchange),
    /// A remote procedure call: gRPC over HTTP/2.
    Rpc(RpcExchange),
}

/// HTTP version of an exchange (`network.protocol.version`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum HttpVersion {
    /// `HTTP/1.0`.
    Http10,
    /// `HTTP/1.1`.
    #[default]
    Http11,
    /// HTTP/2 (RFC 9113), cleartext or over TLS.
    Http2,
}

impl HttpVersion {
    /// The `network.protocol.version` value: `1.0`, `1.1`, `2`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Http10 => "1.0",
            Self::Http11 => "1.1",
            Self::Http2 => "2",
        }
    }
}

/// An HTTP request and its final (non-1xx) response.
///
/// Redaction happens before this type is built: no query string, no header values other than
/// those named here.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct HttpExchange {
    /// Request method token exactly as sent (`GET`, `PURGE`, ...).
    pub method: String,
    /// Path of the request target without the query string or fragment (`/users/42`). For the
    /// absolute form (`GET http://h/p`) just the path; for `*` or authority form, the target as is.
    pub path: String,
    /// Version: from the request line for HTTP/1.x.
    pub version: HttpVersion,
    /// `Host` header value, or HTTP/2's `:authority` (may include `:port`).
    pub host: Option<String>,
    /// `User-Agent` header value.
    pub user_agent: Option<String>,
    /// W3C `traceparent` header value, if the request carried one.
    pub traceparent: Option<String>,
    /// Final response status code.
    pub status: u16,
    /// Request body bytes (decoded length for chunked bodies, excluding chunk framing). `None`
    /// when records of the body were lost and no `Content-Length` declared its size.
    pub request_body_bytes: Option<u64>,
    /// Response body bytes (as above); `None` when the end of a chunked body had to be guessed.
    pub response_body_bytes: Option<u64>,
}

/// The RPC system of an [`RpcExchange`] (`rpc.system.name`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RpcSystem {
    /// gRPC over HTTP/2 (<https://github.com/grpc/grpc/blob/master/doc/PROTOCOL-HTTP2.md>).
    Grpc,
}

/// One remote procedure call: a request stream and its response stream with a final status.
///
/// Redaction happens before this type is built: no message bytes, no metadata values other than
/// those named here (never `grpc-message`, which may carry application data).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RpcExchange {
    /// RPC system.
    pub system: RpcSystem,
    /// Fully qualified method, `package.Service/Method` (gRPC: the `:path` without its leading
    /// `/`).
    pub method: String,
    /// Final status code (gRPC: `grpc-status`, 0 = OK ... 16 = UNAUTHENTICATED); `None` when the
    /// call ended without one being seen.
    pub status: Option<u32>,
    /// The `:authority` the call was sent to (may include `:port`).
    pub authority: Option<String>,
    /// `user-agent` of the calling side.
    pub user_agent: Option<String>,
    /// W3C `traceparent` metadata, if the request carried one.
    pub traceparent: Option<String>,
    /// Request message bytes (sum of DATA payloads, gRPC framing included); `None` when some of
    /// the stream was lost.
    pub request_bytes: Option<u64>,
    /// Response message bytes, as above.
    pub response_bytes: Option<u64>,
}
