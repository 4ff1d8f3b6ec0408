//! HTTP/2 parser tests from hand-built frames (RFC 9113 §4.1, §6) and header blocks encoded by a
//! tiny test encoder (RFC 7541 §6.1 indexed, §6.2.2 literal without indexing, §6.2.1 with
//! incremental indexing; no Huffman).

use agent_common::Direction;

use super::{detect, frame::PREFACE, new_parser, ParseStats};
use crate::exchange::{ExchangeKind, HttpVersion, Role, RpcExchange};
use crate::proto::{Chunk, Completed, Fit, Flow, Parser, Side, Start};

const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).unwrap();
    let mut f = len.to_be_bytes()[1..].to_vec();
    f.push(kind);
    f.push(flags);
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// HPACK integer with an `n`-bit prefix whose high bits are `first` (RFC 7541 §5.1).
fn int(out: &mut Vec<u8>, first: u8, n: u32, mut v: usize) {
    let max = (1usize << n) - 1;
    if v < max {
        out.push(first | u8::try_from(v).unwrap());
        return;
    }
    out.push(first | u8::try_from(max).unwrap());
    v -= max;
    while v >= 128 {
        out.push(u8::try_from(v % 128).unwrap() | 0x80);
        v /= 128;
    }
    out.push(u8::try_from(v).unwrap());
}

fn string(out: &mut Vec<u8>, s: &str) {
    int(out, 0, 7, s.len());
    out.extend_from_slice(s.as_bytes());
}

/// A header block of literal fields without indexing (new names).
fn block(fields: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in fields {
        out.push(0x00);
        string(&mut out, name);
        string(&mut out, value);
    }
    out
}

fn headers(stream: u32, flags: u8, fields: &[(&str, &str)]) -> Vec<u8> {
    frame(0x1, flags | END_HEADERS, stream, &block(fields))
}

fn data(stream: u32, flags: u8, n: usize) -> Vec<u8> {
    frame(0x0, flags, stream, &vec![b'x'; n])
}

fn settings() -> Vec<u8> {
    frame(0x4, 0, 0, &[0, 3, 0, 0, 0, 100])
}

fn rst(stream: u32, code: u32) -> Vec<u8> {
    frame(0x3, 0, stream, &code.to_be_bytes())
}

fn get(stream: u32, path: &str) -> Vec<u8> {
    headers(
        stream,
        END_STREAM,
        &[
            (":method", "GET"),
            (":scheme", "http"),
            (":path", path),
            (":authority", "h2.test:8080"),
            ("user-agent", "nghttp2/1.52.0"),
        ],
    )
}

fn grpc_request(stream: u32, method: &str, extra: &[(&str, &str)]) -> Vec<u8> {
    let mut fields = vec![
        (":method", "POST"),
        (":scheme", "http"),
        (":path", method),
        (":authority", "localhost:50051"),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
    ];
    fields.extend_from_slice(extra);
    headers(stream, 0, &fields)
}

/// Feeds chunks to a parser and collects what it reports.
struct Conn {
    role: Role,
    parser: Box<dyn Parser>,
    out: Vec<Completed>,
    stats: ParseStats,
}

impl Conn {
    fn new(role: Role, start: Start) -> Self {
        Self {
            role,
            parser: new_parser(role, start),
            out: Vec::new(),
            stats: ParseStats::default(),
        }
    }

    /// Bytes sent by the client (`Request` side) or the server at `[start, end]` ns, all
    /// captured.
    fn feed(&mut self, side: Side, t: (u64, u64), bytes: &[u8]) {
        self.feed_hole(side, t, bytes, 0);
    }

    /// As [`Self::feed`], with `hole` more uncaptured bytes after `bytes`.
    fn feed_hole(&mut self, side: Side, (start_ns, end_ns): (u64, u64), bytes: &[u8], hole: u64) {
        let dir = match (self.role, side) {
            (Role::Server, Side::Request) | (Role::Client, Side::Response) => Direction::Ingress,
            _ => Direction::Egress,
        };
        let chunk = Chunk {
            start_ns,
            end_ns,
            data: bytes,
            len: bytes.len() as u64 + hole,
        };
        self.parser.on_chunk(dir, chunk, &mut self.out);
        self.collect();
    }

    fn collect(&mut self) {
        let stats = &mut self.stats;
        self.parser.take_counters(&mut |reason, n| {
            let field = match reason {
                "bad_preface" => &mut stats.bad_preface,
                "bad_frame" => &mut stats.bad_frame,
                "hole_in_frame_header" => &mut stats.hole_in_frame_header,
                "header_block_lost" => &mut stats.header_block_lost,
                "hpack_error" => &mut stats.hpack_error,
                "hpack_unknown_index" => &mut stats.hpack_unknown_index,
                "request_headers_unknown" => &mut stats.request_headers_unknown,
                "response_headers_unknown" => &mut stats.response_headers_unknown,
                "unpaired_response" => &mut stats.unpaired_response,
                "grpc_status_unknown" => &mut stats.grpc_status_unknown,
                "reset_before_response" => &mut stats.reset_before_response,
                "unanswered_at_close" => &mut stats.unanswered_at_close,
                "push_promise" => &mut stats.push_promise,
                "dropped_by_gap" => &mut stats.dropped_by_gap,
                "unsynced_chunks" => &mut stats.unsynced_chunks,
                "gap" => &mut stats.gap,
                _ => &mut stats.goaway,
            };
            *field += n;
        });
    }

    fn http(&self, i: usize) -> (&Completed, &crate::exchange::HttpExchange) {
        let c = &self.out[i];
        let ExchangeKind::Http(h) = &c.kind else {
            panic!("not HTTP: {c:?}");
        };
        (c, h)
    }

    fn rpc(&self, i: usize) -> (&Completed, &RpcExchange) {
        let c = &self.out[i];
        let ExchangeKind::Rpc(r) = &c.kind else {
            panic!("not RPC: {c:?}");
        };
        (c, r)
    }
}

fn preface_and_settings() -> Vec<u8> {
    let mut b = PREFACE.to_vec();
    b.extend(settings());
    b
}

#[test]
fn h2c_request_from_the_start_is_one_http_exchange() {
    let mut c = Conn::new(Role::Server, Start::Beginning);
    let mut req = preface_and_settings();
    req.extend(get(1, "/index.html?secret=1"));
    c.feed(Side::Request, (100, 110), &req);
    c.feed(Side::Response, (200, 210), &settings());
    let mut resp = headers(1, 0, &[(":status", "200")]);
    resp.extend(data(1, END_STREAM, 5));
    c.feed(Side::Response, (300, 310), &resp);
    assert_eq!(c.out.len(), 1, "{:?}", c.stats.nonzero());
    let (ex, h) = c.http(0);
    assert_eq!((ex.start_ns, ex.end_ns), (110, 310));
    assert_eq!((h.method.as_str(), h.path.as_str()), ("GET", "/index.html"));
    assert_eq!(h.status, 200);
    assert_eq!(h.version, HttpVersion::Http2);
    assert_eq!(h.host.as_deref(), Some("h2.test:8080"));
    assert_eq!(h.user_agent.as_deref(), Some("nghttp2/1.52.0"));
    assert_eq!(
        (h.request_body_bytes, h.response_body_bytes),
        (Some(0), Some(5))
    );
    assert_eq!(c.stats, ParseStats::default());
}

#[test]
fn multiplexed_streams_are_timed_separately() {
    let mut c = Conn::new(Role::Client, Start::Beginning);
    c.feed(Side::Request, (10, 11), &preface_and_settings());
    for (i, id) in [1u32, 3, 5].iter().enumerate() {
        let t = 100 * (i as u64 + 1);
        c.feed(Side::Request, (t, t + 1), &get(*id, &format!("/s{id}")));
    }
    // Answers in reverse order, stream 3's in two frames, across chunks.
    let mut r5 = headers(5, 0, &[(":status", "404")]);
    r5.extend(data(5, END_STREAM, 0));
    c.feed(Side::Response, (1000, 1001), &r5);
    let r3 = [headers(3, 0, &[(":status", "200")]), data(3, 0, 10)].concat();
    c.feed(Side::Response, (1100, 1101), &r3);
    c.feed(
        Side::Response,
        (1200, 1201),
        &headers(1, END_STREAM, &[(":status", "204")]),
    );
    c.feed(Side::Response, (1300, 1301), &data(3, END_STREAM, 7));
    let got: Vec<_> = (0..c.out.len())
        .map(|i| {
            let (ex, h) = c.http(i);
            (
                h.path.clone(),
                h.status,
                ex.start_ns,
                ex.end_ns,
                h.response_body_bytes,
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("/s5".to_owned(), 404, 300, 1001, Some(0)),
            ("/s1".to_owned(), 204, 100, 1201, Some(0)),
            ("/s3".to_owned(), 200, 200, 1301, Some(17)),
        ]
    );
}

#[test]
fn grpc_unary_call_with_trailers() {
    let mut c = Conn::new(Role::Server, Start::Beginning);
    let mut req = preface_and_settings();
    req.extend(grpc_request(
        1,
        "/sonde.test.Echo/Unary",
        &[("grpc-timeout", "1S")],
    ));
    req.extend(data(1, END_STREAM, 12));
    c.feed(Side::Request, (100, 120), &req);
    let mut resp = headers(
        1,
        0,
        &[(":status", "200"), ("content-type", "application/grpc")],
    );
    resp.extend(data(1, 0, 12));
    resp.extend(headers(
        1,
        END_STREAM,
        &[("grpc-status", "0"), ("grpc-message", "secret")],
    ));
    c.feed(Side::Response, (300, 350), &resp);
    assert_eq!(c.out.len(), 1, "{:?}", c.stats.nonzero());
    let (ex, r) = c.rpc(0);
    assert_eq!((ex.start_ns, ex.end_ns), (120, 350));
    assert_eq!(r.method, "sonde.test.Echo/Unary");
    assert_eq!(r.status, Some(0));
    assert_eq!(r.authority.as_deref(), Some("localhost:50051"));
    assert_eq!((r.request_bytes, r.response_bytes), (Some(12), Some(12)));
}

#[test]
fn grpc_trailers_only_error() {
    let mut c = Conn::new(Role::Client, Start::Beginning);
    let mut req = preface_and_settings();
    req.extend(grpc_request(1, "/sonde.test.Echo/Fail", &[]));
    req.extend(data(1, END_STREAM, 5));
    c.feed(Side::Request, (100, 120), &req);
    c.feed(
        Side::Response,
        (300, 350),
        &headers(
            1,
            END_STREAM,
            &[
                (":status", "200"),
                ("content-type", "application/grpc"),
                ("grpc-status", "5"),
            ],
        ),
    );
    let (ex, r) = c.rpc(0);
    assert_eq!((ex.start_ns, ex.end_ns), (100, 350));
    assert_eq!(r.status, Some(5));
}

#[test]
fn grpc_reset_is_cancelled_or_deadline_exceeded() {
    for (elapsed_ms, status) in [(50u64, 1u32), (99, 4), (150, 4)] {
        let mut c = Conn::new(Role::Server, Start::Beginning);
        let mut req = preface_and_settings();
        req.extend(grpc_request(
            1,
            "/sonde.test.Echo/Slow",
            &[("grpc-timeout", "100m")],
        ));
        req.extend(data(1, END_STREAM, 5));
        c.feed(Side::Request, (0, 1_000_000), &req);
        let t = 1_000_000 + elapsed_ms * 1_000_000;
        c.feed(Side::Request, (t - 10, t), &rst(1, 0x8));
        assert_eq!(c.out.len(), 1, "{elapsed_ms} ms: {:?}", c.stats.nonzero());
        assert_eq!(c.rpc(0).1.status, Some(status), "{elapsed_ms} ms");
        assert_eq!(c.rpc(0).1.response_bytes, None);
    }
}

#[test]
fn http_stream_reset_before_its_response_is_counted_not_reported() {
    let mut c = Conn::new(Role::Server, Start::Beginning);
    let mut req = preface_and_settings();
    req.extend(get(1, "/a"));
    c.feed(Side::Request, (0, 10), &req);
    c.feed(Side::Request, (20, 30), &rst(1, 0x8));
    assert!(c.out.is_empty());
    assert_eq!(c.stats.reset_before_response, 1);
}

#[test]
fn http_stream_reset_after_its_response_headers_ends_there() {
    let mut c = Conn::new(Role::Server, Start::Beginning);
    let mut req = preface_and_settings();
    req.extend(get(1, "/a"));
    c.feed(Side::Request, (0, 10), &req);
    let mut resp = headers(1, 0, &[(":status", "200")]);
    resp.extend(data(1, 0, 5));
    c.feed(Side::Response, (20, 30), &resp);
    c.feed(Side::Request, (40, 50), &rst(1, 0x8));
    assert_eq!(c.out.len(), 1, "{:?}", c.stats.nonzero());
    let (ex, h) = c.http(0);
    assert_eq!((ex.start_ns, ex.end_ns), (10, 50));
    assert_eq!((h.status, h.response_body_bytes), (200, None));
    assert_eq!(c.stats.reset_before_response, 0);
}

#[test]
fn hole_inside_data_is_skipped_by_length() {
    let mut c = Conn::new(Role::Client, Start::Beginning);
    let mut req = preface_and_settings();
    req.extend(get(1, "/big"));
    c.feed(Side::Request, (0, 1), &req);
    // HEADERS, then a 10,000-byte DATA frame of which 100 bytes were captured, then the rest of
    // the stream in the next chunk.
    let mut resp = headers(1, 0, &[(":status", "200")]);
    let big = data(1, 0, 10_000);
    resp.extend_from_slice(&big[..109]);
    c.feed_hole(Side::Response, (10, 11), &resp, 9_900);
    c.feed(Side::Response, (20, 21), &data(1, END_STREAM, 1));
    assert_eq!(c.out.len(), 1, "{:?}", c.stats.nonzero());
    assert_eq!(c.http(0).1.response_body_bytes, Some(10_001));
}

#[test]
fn hole_over_a_frame_header_loses_framing_until_a_frame_boundary() {
    let mut c = Conn::new(Role::Client, Start::Beginning);
    let mut req = preface_and_settings();
    req.extend(get(1, "/a"));
    c.feed(Side::Request, (0, 1), &req);
    // The response's HEADERS frame captured, its DATA frame header in a hole.
    c.feed_hole(
        Side::Response,
        (10, 11),
        &headers(1, 0, &[(":status", "200")]),
        50,
    );
    assert_eq!(c.stats.hole_in_frame_header, 1);
    assert_eq!(c.stats.dropped_by_gap, 1);
    // A chunk starting mid-frame is skipped; one starting with frames is followed again.
    c.feed(Side::Response, (20, 21), b"\x01\x02\x03");
    assert_eq!(c.stats.unsynced_chunks, 1);
    c.feed(Side::Request, (30, 31), &get(3, "/b"));
    let mut resp = headers(3, 0, &[(":status", "200")]);
    resp.extend(data(3, END_STREAM, 2));
    c.feed(Side::Response, (40, 41), &resp);
    assert_eq!(c.out.len(), 1);
    assert_eq!(c.http(0).1.path, "/b");
}

#[test]
fn joined_connection_reports_unknown_indexed_fields_as_absent() {
    let mut c = Conn::new(Role::Server, Start::Joined);
    // `:path` as an indexed reference to dynamic entry 62, inserted before the join.
    let mut unknown = vec![0x82, 0x86, 0xbe];
    unknown.extend(block(&[(":authority", "x")]));
    c.feed(
        Side::Request,
        (0, 1),
        &frame(0x1, END_STREAM | END_HEADERS, 7, &unknown),
    );
    c.feed(
        Side::Response,
        (10, 11),
        &headers(7, END_STREAM, &[(":status", "200")]),
    );
    assert_eq!(c.out.len(), 1);
    let (_, h) = c.http(0);
    assert_eq!(
        (h.method.as_str(), h.path.as_str(), h.status),
        ("GET", "", 200)
    );
    assert_eq!(c.stats.request_headers_unknown, 1);
    assert_eq!(c.stats.hpack_unknown_index, 1);
    // A literal with incremental indexing inserts `:path: /known` as the new entry 62, which
    // the next request refers to: known now.
    let mut indexed = vec![0x82, 0x86, 0x44];
    string(&mut indexed, "/known");
    c.feed(
        Side::Request,
        (20, 21),
        &frame(0x1, END_STREAM | END_HEADERS, 9, &indexed),
    );
    c.feed(
        Side::Request,
        (30, 31),
        &frame(0x1, END_STREAM | END_HEADERS, 11, &[0x82, 0x86, 0xbe]),
    );
    c.feed(
        Side::Response,
        (40, 41),
        &headers(9, END_STREAM, &[(":status", "200")]),
    );
    c.feed(
        Side::Response,
        (50, 51),
        &headers(11, END_STREAM, &[(":status", "201")]),
    );
    let paths: Vec<_> = (1..c.out.len())
        .map(|i| (c.http(i).1.path.clone(), c.http(i).1.status))
        .collect();
    assert_eq!(
        paths,
        [("/known".to_owned(), 200), ("/known".to_owned(), 201)]
    );
    assert_eq!(c.stats.request_headers_unknown, 1);
    // A response on a stream whose request never went by is not reported.
    c.feed(
        Side::Response,
        (60, 61),
        &headers(13, END_STREAM, &[(":status", "200")]),
    );
    assert_eq!(c.out.len(), 3);
    assert_eq!(c.stats.unpaired_response, 1);
}

#[test]
fn header_block_split_over_continuation_and_byte_sized_chunks() {
    let mut c = Conn::new(Role::Server, Start::Beginning);
    let b = block(&[(":method", "GET"), (":path", "/split"), (":scheme", "http")]);
    let (first, second) = b.split_at(7);
    let mut req = preface_and_settings();
    req.extend(frame(0x1, END_STREAM, 1, first));
    req.extend(frame(0x9, END_HEADERS, 1, second));
    for (i, byte) in req.iter().enumerate() {
        let t = i as u64 * 10;
        c.feed(Side::Request, (t, t + 1), std::slice::from_ref(byte));
    }
    c.feed(
        Side::Response,
        (10_000, 10_001),
        &headers(1, END_STREAM, &[(":status", "200")]),
    );
    assert_eq!(c.out.len(), 1, "{:?}", c.stats.nonzero());
    let (ex, h) = c.http(0);
    assert_eq!(h.path, "/split");
    // The first byte of the HEADERS frame is byte 24 + 15 of the connection.
    assert_eq!(ex.start_ns, 39 * 10 + 1);
}

#[test]
fn push_promise_is_counted_and_ignored() {
    let mut c = Conn::new(Role::Client, Start::Beginning);
    let mut req = preface_and_settings();
    req.extend(get(1, "/"));
    c.feed(Side::Request, (0, 1), &req);
    let mut promised = 2u32.to_be_bytes().to_vec();
    promised.extend(block(&[(":method", "GET"), (":path", "/style.css")]));
    let mut resp = frame(0x5, END_HEADERS, 1, &promised);
    resp.extend(headers(1, END_STREAM, &[(":status", "200")]));
    c.feed(Side::Response, (10, 11), &resp);
    assert_eq!(c.out.len(), 1);
    assert_eq!(c.stats.push_promise, 1);
}

#[test]
fn bad_preface_gives_up() {
    let mut c = Conn::new(Role::Server, Start::Beginning);
    c.feed(Side::Request, (0, 1), b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n");
    assert_eq!(c.parser.flow(), Flow::NotMine);
    assert_eq!(c.stats.bad_preface, 1);
}

#[test]
fn close_counts_open_streams() {
    let mut c = Conn::new(Role::Server, Start::Beginning);
    let mut req = preface_and_settings();
    req.extend(get(1, "/a"));
    req.extend(get(3, "/b"));
    c.feed(Side::Request, (0, 1), &req);
    c.parser.on_close(5, &mut c.out);
    c.collect();
    assert!(c.out.is_empty());
    assert_eq!(c.stats.unanswered_at_close, 2);
}

#[test]
fn detection_needs_the_preface_or_whole_frames() {
    assert_eq!(
        detect(Side::Request, &preface_and_settings(), true),
        Fit::Yes
    );
    assert_eq!(detect(Side::Request, b"PRI ", true), Fit::Yes);
    assert_eq!(detect(Side::Request, b"PRI", true), Fit::No);
    assert_eq!(detect(Side::Response, &settings(), true), Fit::Yes);
    let resp = [headers(1, 0, &[(":status", "200")]), data(1, END_STREAM, 3)].concat();
    assert_eq!(detect(Side::Response, &resp, false), Fit::Yes);
    // One frame running past the capture is not evidence enough.
    assert_eq!(detect(Side::Response, &resp[..20], false), Fit::No);
    assert_eq!(
        detect(Side::Request, b"GET / HTTP/1.1\r\n\r\n", false),
        Fit::No
    );
}

#[test]
fn random_bytes_never_panic() {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for round in 0..300 {
        let start = if round % 2 == 0 {
            Start::Beginning
        } else {
            Start::Joined
        };
        let mut c = Conn::new(Role::Server, start);
        let mut t = 0;
        for _ in 0..40 {
            let n = (next() % 64) as usize;
            let mut bytes: Vec<u8> = (0..n).map(|_| next() as u8).collect();
            if next() % 4 == 0 {
                // Frame-shaped noise: a plausible header with a random payload.
                let payload = bytes.clone();
                bytes = frame(
                    (next() % 10) as u8,
                    next() as u8,
                    (next() % 8) as u32,
                    &payload,
                );
            }
            let side = if next() % 2 == 0 {
                Side::Request
            } else {
                Side::Response
            };
            t += 10;
            c.feed_hole(side, (t, t + 1), &bytes, next() % 3 * (next() % 100));
        }
        c.parser.on_close(t, &mut c.out);
        for ex in &c.out {
            assert!(ex.end_ns >= ex.start_ns);
        }
    }
}

#[test]
fn grpc_channel_keeps_reporting_calls_whose_markers_went_unknown() {
    let mut c = Conn::new(Role::Server, Start::Beginning);
    let mut req = preface_and_settings();
    req.extend(grpc_request(1, "/sonde.test.Echo/Unary", &[]));
    req.extend(data(1, END_STREAM, 7));
    c.feed(Side::Request, (0, 10), &req);
    let mut resp = headers(
        1,
        0,
        &[(":status", "200"), ("content-type", "application/grpc")],
    );
    resp.extend(data(1, 0, 7));
    resp.extend(headers(1, END_STREAM, &[("grpc-status", "0")]));
    c.feed(Side::Response, (20, 30), &resp);
    // Records lost both ways: both HPACK tables are unknown from here.
    c.parser.on_gap(Direction::Ingress);
    c.parser.on_gap(Direction::Egress);
    // `:method POST` and `:status 200` are static entries; `:path`, `content-type` and
    // `grpc-status` refer to dynamic entries inserted before the loss.
    let mut req = frame(0x1, END_HEADERS, 3, &[0x83, 0x86, 0xbf, 0xbe]);
    req.extend(data(3, END_STREAM, 7));
    c.feed(Side::Request, (40, 50), &req);
    let mut resp = frame(0x1, END_HEADERS, 3, &[0x88, 0xbe]);
    resp.extend(data(3, 0, 7));
    resp.extend(frame(0x1, END_HEADERS | END_STREAM, 3, &[0xbf]));
    c.feed(Side::Response, (60, 70), &resp);
    assert_eq!(c.out.len(), 2, "{:?}", c.stats.nonzero());
    let (ex, r) = c.rpc(1);
    assert_eq!((r.method.as_str(), r.status), ("", None));
    assert_eq!((ex.start_ns, ex.end_ns), (50, 70));
    assert_eq!(c.stats.grpc_status_unknown, 1);
    assert_eq!(c.stats.request_headers_unknown, 1);
}

#[test]
fn close_completes_a_response_whose_body_reached_its_content_length() {
    let mut c = Conn::new(Role::Client, Start::Beginning);
    let mut req = preface_and_settings();
    req.extend(get(1, "/ok"));
    req.extend(get(3, "/partial"));
    c.feed(Side::Request, (0, 10), &req);
    // The declared body in full; its END_STREAM (an empty DATA frame) is never read.
    let mut resp = headers(1, 0, &[(":status", "200"), ("content-length", "5")]);
    resp.extend(data(1, 0, 5));
    c.feed(Side::Response, (20, 30), &resp);
    // Half of a declared body.
    let mut resp = headers(3, 0, &[(":status", "200"), ("content-length", "8")]);
    resp.extend(data(3, 0, 4));
    c.feed(Side::Response, (40, 50), &resp);
    assert!(c.out.is_empty());
    c.parser.on_close(60, &mut c.out);
    c.collect();
    assert_eq!(c.out.len(), 1, "{:?}", c.stats.nonzero());
    let (ex, h) = c.http(0);
    assert_eq!((h.path.as_str(), h.response_body_bytes), ("/ok", Some(5)));
    assert_eq!(ex.end_ns, 30);
    assert_eq!(c.stats.unanswered_at_close, 1);
}
