//! Sans-IO protocol parsers: bytes in, exchanges out. No tokio, no clock, no OS state here;
//! timestamps arrive as arguments so every parser is unit-testable from bytes.
//!
//! # The seam
//! Every protocol is one folder here plus one line in [`PROTOCOLS`]: a [`Spec`] with a detector
//! (`detect`: does this chunk start like my protocol?) and a constructor of its [`Parser`]. The
//! connection table ([`crate::conn`]) knows no protocol: it asks [`detect`] about the first chunks
//! of a connection until one claims it, feeds that protocol's parser, and moves the
//! [`Completed`] exchanges and the per-reason counters it reports onward. A connection nobody
//! claims becomes opaque and costs a map lookup per record from then on.
//!
//! Exchanges are typed by semantic family ([`ExchangeKind`]: HTTP, RPC), so telemetry maps a
//! family once, whatever wire protocol carried it.

pub mod http1;
pub mod http2;

use std::fmt;

use agent_common::Direction;

use crate::exchange::{ExchangeKind, Role};

/// One syscall's worth of bytes in one direction of a connection.
///
/// # Units
/// `start_ns`/`end_ns`: the syscall's entry/exit, `CLOCK_MONOTONIC` nanoseconds.
/// `len`: bytes the syscall moved; only the first `data.len()` (`<= len`) were captured. The rest,
/// `len - data.len()`, is a hole of known size: it counts for framing (body lengths) but its content
/// is unknown.
#[derive(Clone, Copy, Debug)]
pub struct Chunk<'a> {
    /// Syscall entry time.
    pub start_ns: u64,
    /// Syscall exit time.
    pub end_ns: u64,
    /// Captured prefix of the payload.
    pub data: &'a [u8],
    /// Total payload length.
    pub len: u64,
}

impl Chunk<'_> {
    /// Bytes of the chunk that were not captured (the hole at its end).
    #[must_use]
    pub fn hole(&self) -> u64 {
        self.len
            .saturating_sub(u64::try_from(self.data.len()).unwrap_or(u64::MAX))
    }

    /// The part of the chunk from captured byte `at` on (same syscall times); `None` when nothing
    /// (captured or not) is left.
    #[must_use]
    pub fn tail(&self, at: usize) -> Option<Self> {
        let data = self.data.get(at..)?;
        let len = self
            .len
            .saturating_sub(u64::try_from(at).unwrap_or(u64::MAX));
        (len > 0).then_some(Chunk { data, len, ..*self })
    }

    /// When a message whose first byte is in this chunk started, as the observed process saw it:
    /// a read's bytes exist once it returns (`end_ns`), a write's when it is entered
    /// (`start_ns`).
    #[must_use]
    pub fn first_byte_ns(&self, role: Role, side: Side) -> u64 {
        match (role, side) {
            (Role::Server, Side::Request) | (Role::Client, Side::Response) => self.end_ns,
            (Role::Client, Side::Request) | (Role::Server, Side::Response) => self.start_ns,
        }
    }
}

/// The protocols Sonde parses (the `protocol` label of `sonde.parse.errors`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    /// HTTP/1.0 and HTTP/1.1 (RFC 9112).
    Http1,
    /// HTTP/2 (RFC 9113), cleartext (prior knowledge or `Upgrade: h2c`) or TLS plaintext; gRPC
    /// rides on it.
    Http2,
}

impl Protocol {
    /// Label value: `http1`, `http2`.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Http1 => "http1",
            Self::Http2 => "http2",
        }
    }

    /// The connection-table event counting connections this protocol claimed
    /// (`sonde.conn.events{event="detected_http2"}`).
    #[must_use]
    pub fn detected_event(self) -> &'static str {
        match self {
            Self::Http1 => "conn_detected_http1",
            Self::Http2 => "conn_detected_http2",
        }
    }
}

/// The two directions of a connection, named by what they carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// Client to server.
    Request,
    /// Server to client.
    Response,
}

impl Side {
    /// Which side `dir` (as seen by a process playing `role`) carries.
    #[must_use]
    pub fn of(role: Role, dir: Direction) -> Self {
        match (role, dir) {
            (Role::Server, Direction::Ingress) | (Role::Client, Direction::Egress) => Self::Request,
            (Role::Server, Direction::Egress) | (Role::Client, Direction::Ingress) => {
                Self::Response
            }
        }
    }
}

/// One completed exchange, as a parser reports it.
#[derive(Clone, Debug, PartialEq)]
pub struct Completed {
    /// First request byte, monotonic ns ([`Chunk::first_byte_ns`]).
    pub start_ns: u64,
    /// Last response byte, monotonic ns; never before `start_ns`.
    pub end_ns: u64,
    /// What was exchanged.
    pub kind: ExchangeKind,
}

/// What a parser wants done with its connection next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    /// Keep feeding it.
    Parsing,
    /// The bytes are not this protocol (after all): the connection becomes opaque.
    NotMine,
    /// The protocol switched (HTTP/1 `101`, a `CONNECT` tunnel) inside the last chunk: its
    /// captured bytes from `rest_at` on (often the new protocol's first frames, read together
    /// with the `101`) belong to the next protocol, named by [`Parser::take_handoff`] or detected
    /// again.
    Switched {
        /// Offset into the last chunk's captured bytes where the next protocol starts.
        rest_at: usize,
    },
}

/// What a parser hands to the protocol that follows a switch ([`Flow::Switched`]).
#[derive(Clone, Debug, PartialEq)]
pub enum Handoff {
    /// An HTTP/1.1 request answered `101` after `Upgrade: h2c` (RFC 7540 §3.2; deprecated by RFC
    /// 9113 but still sent by `curl --http2` on `http://`): its answer is HTTP/2 stream 1.
    H2cUpgrade {
        /// When the request's first byte went by ([`Chunk::first_byte_ns`]).
        start_ns: u64,
        /// The request (`status` is the `101`).
        request: crate::exchange::HttpExchange,
    },
}

impl Handoff {
    /// The protocol that follows the switch.
    #[must_use]
    pub fn protocol(&self) -> Protocol {
        match self {
            Self::H2cUpgrade { .. } => Protocol::Http2,
        }
    }
}

/// How well the first captured bytes of a chunk fit a protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Fit {
    /// Contradicts the protocol.
    No,
    /// Consistent but too short to tell (a head split byte by byte at the connection's start).
    Maybe,
    /// The protocol's own markers are there (a request line, the HTTP/2 preface, a chain of
    /// well-formed frames).
    Yes,
}

/// A sans-IO parser of one connection (both directions).
///
/// Chunks of one direction come in syscall order; a kernel sequence gap is reported with
/// [`Parser::on_gap`] before the next chunk of that direction.
pub trait Parser: fmt::Debug + Send {
    /// Feeds one chunk; completed exchanges are appended to `out`.
    fn on_chunk(&mut self, dir: Direction, chunk: Chunk<'_>, out: &mut Vec<Completed>);
    /// Records of unknown content were lost in `dir`.
    fn on_gap(&mut self, dir: Direction);
    /// The connection closed at `ts_ns`: finish what the close completes, count the rest.
    fn on_close(&mut self, ts_ns: u64, out: &mut Vec<Completed>);
    /// Whether to keep feeding this parser.
    fn flow(&self) -> Flow;
    /// After [`Flow::Switched`]: what the next protocol's parser should know (once).
    fn take_handoff(&mut self) -> Option<Handoff> {
        None
    }
    /// Takes over what the previous protocol's parser handed over ([`Parser::take_handoff`]).
    fn accept_handoff(&mut self, handoff: Handoff) {
        let _ = handoff;
    }
    /// Hands over the counters accumulated since the last call (`reason`, count; non-zero only)
    /// and resets them.
    fn take_counters(&mut self, add: &mut dyn FnMut(&'static str, u64));
}

/// Where a connection's parser starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start {
    /// From the connection's first byte in both directions (the agent saw it open).
    Beginning,
    /// Somewhere in the middle: state built by earlier bytes (HPACK tables) is unknown.
    Joined,
}

/// One protocol's line in [`PROTOCOLS`].
#[derive(Clone, Copy)]
pub struct Spec {
    /// Which protocol.
    pub protocol: Protocol,
    /// Does a chunk of `side` whose captured bytes are `data` start like this protocol? `first`:
    /// it is the first chunk of that direction of a connection seen from its start.
    pub detect: fn(side: Side, data: &[u8], first: bool) -> Fit,
    /// A parser for a connection on which the observed process plays `role`.
    pub new: fn(role: Role, start: Start) -> Box<dyn Parser>,
    /// Payload bytes the kernel should capture per syscall on this protocol's sockets, when
    /// more than the global capture size (`None`: the global one will do, the parser skips an
    /// uncaptured tail by length).
    pub capture_bytes: Option<u32>,
}

impl fmt::Debug for Spec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Spec")
            .field("protocol", &self.protocol)
            .finish_non_exhaustive()
    }
}

/// Every protocol, most specific first: on a tie of [`Fit`] the earlier line wins.
pub static PROTOCOLS: [Spec; 2] = [
    Spec {
        protocol: Protocol::Http2,
        detect: http2::detect,
        new: http2::new_parser,
        capture_bytes: Some(http2::CAPTURE_BYTES),
    },
    Spec {
        protocol: Protocol::Http1,
        detect: http1::detect,
        new: http1::new_parser,
        capture_bytes: None,
    },
];

/// The [`PROTOCOLS`] line of `protocol`.
#[must_use]
pub fn spec_of(protocol: Protocol) -> Option<&'static Spec> {
    PROTOCOLS.iter().find(|s| s.protocol == protocol)
}

/// The protocol that claims a chunk of `side` starting with `data`: the best [`Fit`] above
/// [`Fit::No`], ties to the earlier [`PROTOCOLS`] line. `first`: as in [`Spec::detect`].
#[must_use]
pub fn detect(side: Side, data: &[u8], first: bool) -> Option<&'static Spec> {
    let mut best: Option<(Fit, &'static Spec)> = None;
    for spec in &PROTOCOLS {
        let fit = (spec.detect)(side, data, first);
        if fit > Fit::No && best.is_none_or(|(b, _)| fit > b) {
            best = Some((fit, spec));
        }
    }
    best.map(|(_, spec)| spec)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claimed(side: Side, data: &[u8], first: bool) -> Option<Protocol> {
        detect(side, data, first).map(|s| s.protocol)
    }

    #[test]
    fn detection_picks_the_protocol_from_the_first_bytes() {
        let get = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
        assert_eq!(claimed(Side::Request, get, false), Some(Protocol::Http1));
        assert_eq!(
            claimed(Side::Response, b"HTTP/1.1 200 OK\r\n", false),
            Some(Protocol::Http1)
        );
        let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";
        assert_eq!(claimed(Side::Request, preface, true), Some(Protocol::Http2));
        // A server's first bytes on h2: its SETTINGS frame.
        let settings = b"\x00\x00\x06\x04\x00\x00\x00\x00\x00\x00\x03\x00\x00\x00\x64";
        assert_eq!(
            claimed(Side::Response, settings, true),
            Some(Protocol::Http2)
        );
        // TLS handshake bytes and random binary are nobody's.
        let hello = [0x16u8, 0x03, 0x01, 0x00, 0x20, 0x01, 0x00, 0x00];
        assert_eq!(claimed(Side::Request, &hello, true), None);
        assert_eq!(
            claimed(Side::Request, b"\x00\x01\x02\x03garbage", false),
            None
        );
        // A head split byte by byte from the connection's first byte: HTTP/1 may claim it.
        assert_eq!(claimed(Side::Request, b"G", true), Some(Protocol::Http1));
        assert_eq!(claimed(Side::Request, b"G", false), None);
    }

    #[test]
    fn first_byte_time_follows_the_syscall_direction() {
        let c = Chunk {
            start_ns: 10,
            end_ns: 20,
            data: b"x",
            len: 5,
        };
        assert_eq!(c.hole(), 4);
        assert_eq!(c.first_byte_ns(Role::Server, Side::Request), 20);
        assert_eq!(c.first_byte_ns(Role::Client, Side::Request), 10);
        assert_eq!(c.first_byte_ns(Role::Client, Side::Response), 20);
        assert_eq!(c.first_byte_ns(Role::Server, Side::Response), 10);
    }
}
