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

/// Protocol-specific payload of an [`Exchange`]; one variant per protocol.
#[derive(Clone, Debug, PartialEq)]
pub enum ExchangeKind {
    /// HTTP/1.x (RFC 9112).
    Http(HttpExchange),
}

/// An HTTP/1.x request and its final (non-1xx) response.
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
    /// Minor version of `HTTP/1.x` from the request line (0 or 1).
    pub version_minor: u8,
    /// `Host` header value (may include `:port`).
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
