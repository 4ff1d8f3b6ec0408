//! Microbenchmarks of the userspace hot path, without root and without eBPF.
//!
//! Input: the golden captures in `tests/fixtures/http1/` (format and provenance in that
//! directory's `README.md`) and synthetic traffic built here: a typical GET with a small JSON
//! body, a keep-alive connection with 100 such exchanges, a chunked response, and a 64 KiB body
//! written in 4 KiB records. Output: criterion reports, in three groups:
//!
//! - `http1_parse`: [`Tracker`] consuming a connection's chunks (head parsing, body framing,
//!   pairing), replayed as the golden test does: one record is one chunk, at most
//!   [`DEFAULT_CAPTURE_BYTES`] of it captured and the rest a hole.
//! - `reassembly`: what the capture task does per ring-buffer record: [`ringbuf::decode`] of the
//!   raw record bytes, then [`ConnTable::on_data`] (connection lookup, per-direction sequence
//!   check, the tracker), plus the connection's open and close events.
//! - `http2_parse`: the HTTP/2 parser (frames, HPACK, gRPC status) consuming one h2c connection
//!   with 100 unary gRPC calls, each written as grpcio does (HEADERS, DATA; HEADERS, DATA,
//!   trailers), headers HPACK-encoded with incremental indexing the first time and indexed after
//!   (no Huffman: decoding Huffman strings costs more than this measures).
//! - `span_build`: a finished exchange → span. `fields/*` is the pure mapping
//!   ([`span::from_exchange`]); `route_and_fields` adds the route lookup the exporter does first;
//!   `span_data` is the export task's path (route, fields moved out of the exchange, the
//!   `SpanData` from [`SpanMaker`], handed to a processor that drops it: no export, no batch-queue
//!   push); `sdk_span` the same through the OpenTelemetry SDK's tracer, which it replaced;
//!   `fields_and_red_metrics` the RED histograms each exchange also costs when metrics are on,
//!   `fields_and_sdk_histograms` the same through the SDK's instruments.
//! - `otlp_encode`: a batch of 100 finished server spans (`SpanData` from the SDK) → the bytes of
//!   an OTLP `ExportTraceServiceRequest`: `direct` is Sonde's encoder
//!   ([`otlp_encode::encode_request`]), `via_proto_structs` the `opentelemetry_proto` conversion
//!   plus prost that it replaced (both give the same bytes).
//!
//! # Units
//! `http1_parse` and `reassembly` count *captured* payload bytes (the bytes the parser reads;
//! holes are skipped by length and not counted), so `thrpt` is MB/s of parsed bytes on one core.
//! `span_build` counts exchanges and `otlp_encode` spans: `thrpt` is exchanges (spans) per s, and
//! `time` / elements is ns per exchange (span).
//!
//! Run: `AYA_BUILD_SKIP=1 CARGO_TARGET_DIR=target/bench cargo +1.99.1 bench -p sonde --bench
//! hot_path` (add `-- --quick` for a short run, or a group name to filter). The separate target dir
//! matters: cargo builds the package's binaries for a bench too, and with `AYA_BUILD_SKIP=1` it would
//! overwrite `target/release/sonde` with a build that has no eBPF programs.

use std::{
    fs,
    hint::black_box,
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use agent::{
    config::Selection,
    conn::{ConnTable, Observed},
    exchange::{ExchangeKind, Role},
    proto::{
        http1::{Completed, Tracker},
        http2, Chunk, Start,
    },
    ringbuf::{self, Record as RingRecord},
    route::{Patterns, Route, RouteConfig, Router},
    telemetry::{
        clock::Clock,
        metrics::{RedTable, Sample},
        otlp_encode, semconv, span,
        tracer::SpanMaker,
    },
};
use agent_common::{
    event::{AF_INET, TCP_CLOSE, TCP_ESTABLISHED, TCP_SYN_RECV, TCP_SYN_SENT},
    limits::DEFAULT_CAPTURE_BYTES,
    ConnEvent, DataEventHeader, DataSource, Direction, EventKind,
};
use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use opentelemetry::{
    metrics::MeterProvider as _,
    trace::{Span as _, TraceContextExt as _, Tracer as _, TracerProvider as _},
    Context,
};
use opentelemetry_proto::{
    tonic::{collector::trace::v1::ExportTraceServiceRequest, resource::v1::Resource},
    transform::{
        common::tonic::ResourceAttributesWithSchema,
        trace::tonic::group_spans_by_resource_and_scope,
    },
};
use opentelemetry_sdk::{
    error::OTelSdkResult,
    metrics::{ManualReader, SdkMeterProvider},
    trace::{SdkTracerProvider, SpanData, SpanProcessor},
};
use prost::Message as _;

#[path = "../tests/common/fixture.rs"]
mod fixture;

use fixture::{fixture_dir, read_records, Record};

/// Kernel address of the benchmarked socket (any value: it is only a key).
const SK: u64 = 0xffff_8880_1234_5000;
/// Exchanges on the synthetic keep-alive connection.
const KEEPALIVE_EXCHANGES: usize = 100;
/// Size of the synthetic large body, written in [`DEFAULT_CAPTURE_BYTES`] records.
const LARGE_BODY_BYTES: usize = 64 * 1024;
/// Chunks of the synthetic chunked response, and the size of each.
const CHUNKS: usize = 16;
const CHUNK_BYTES: usize = 256;
/// The route a server exchange of the synthetic traffic gets (as the router infers it).
const ROUTE: &str = "/api/v1/users/{id}/orders";

/// A whole connection's traffic and how many exchanges it must yield.
struct Scenario {
    name: String,
    records: Vec<Record>,
    exchanges: usize,
}

impl Scenario {
    /// Payload bytes the parser reads: each record's captured prefix.
    fn captured_bytes(&self) -> u64 {
        self.records
            .iter()
            .map(|r| len_u64(captured(&r.data)))
            .sum()
    }
}

fn len_u64(data: &[u8]) -> u64 {
    u64::try_from(data.len()).expect("usize fits u64")
}

/// The prefix the kernel side would capture.
fn captured(data: &[u8]) -> &[u8] {
    &data[..data.len().min(DEFAULT_CAPTURE_BYTES)]
}

fn direction(role: Role, from_client: bool) -> Direction {
    match (role, from_client) {
        (Role::Server, true) | (Role::Client, false) => Direction::Ingress,
        (Role::Server, false) | (Role::Client, true) => Direction::Egress,
    }
}

// ---------------------------------------------------------------------------------------------
// Inputs

/// Every golden capture, sorted by name; its exchange count is what a replay yields (the golden
/// test checks that count against the expected files).
fn fixtures() -> Vec<Scenario> {
    let mut paths: Vec<PathBuf> = fs::read_dir(fixture_dir())
        .expect("fixture dir")
        .map(|entry| entry.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "bin"))
        .collect();
    paths.sort();
    paths
        .iter()
        .map(|path| {
            let records = read_records(path);
            let exchanges = replay_tracker(&records, Role::Server, &mut Vec::new());
            assert!(exchanges > 0, "{}: no exchange", path.display());
            Scenario {
                name: format!(
                    "golden/{}",
                    path.file_stem().expect("stem").to_string_lossy()
                ),
                records,
                exchanges,
            }
        })
        .collect()
}

/// A browser-like GET: a few common headers, a bearer token and a query string (both redacted).
fn get_request(path: &str) -> Vec<u8> {
    format!(
        "GET {path}?limit=20&token=secret HTTP/1.1\r\n\
         Host: api.example.com:8080\r\n\
         User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\n\
         Accept: application/json\r\n\
         Accept-Language: en-US,en;q=0.5\r\n\
         Accept-Encoding: gzip, deflate, br\r\n\
         Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiI0MiJ9.c2lnbmF0dXJl\r\n\
         Connection: keep-alive\r\n\r\n"
    )
    .into_bytes()
}

/// An nginx-like response head; `framing` is the `Content-Length` or `Transfer-Encoding` line.
fn response_head(framing: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 200 OK\r\n\
         Server: nginx/1.22.1\r\n\
         Date: Sat, 21 Nov 2026 17:00:00 GMT\r\n\
         Content-Type: application/json\r\n\
         {framing}\r\n\
         Connection: keep-alive\r\n\
         Cache-Control: no-store\r\n\r\n"
    )
    .into_bytes()
}

/// A small JSON body (about 200 bytes).
fn json_body(id: usize) -> Vec<u8> {
    format!(
        "{{\"user\":{id},\"orders\":[{{\"id\":1001,\"total\":\"19.99\",\"status\":\"shipped\"}},\
         {{\"id\":1002,\"total\":\"5.00\",\"status\":\"pending\"}},\
         {{\"id\":1003,\"total\":\"42.00\",\"status\":\"delivered\"}}],\"next\":null}}"
    )
    .into_bytes()
}

/// A GET and its small JSON response, head and body in one write (as most servers send it).
fn small_exchange(records: &mut Vec<Record>, id: usize) {
    records.push(Record {
        from_client: true,
        data: get_request(&format!("/api/v1/users/{id}/orders")),
    });
    let body = json_body(id);
    let mut response = response_head(&format!("Content-Length: {}", body.len()));
    response.extend_from_slice(&body);
    records.push(Record {
        from_client: false,
        data: response,
    });
}

fn synthetic() -> Vec<Scenario> {
    let mut get = Vec::new();
    small_exchange(&mut get, 42);

    let mut keepalive = Vec::new();
    for id in 0..KEEPALIVE_EXCHANGES {
        small_exchange(&mut keepalive, id);
    }

    // Chunked: the head, then one write per chunk, then the last chunk.
    let mut chunked = vec![
        Record {
            from_client: true,
            data: get_request("/api/v1/stream"),
        },
        Record {
            from_client: false,
            data: response_head("Transfer-Encoding: chunked"),
        },
    ];
    for i in 0..CHUNKS {
        let fill = b'a' + u8::try_from(i % 26).expect("< 26");
        let mut data = format!("{CHUNK_BYTES:x}\r\n").into_bytes();
        data.resize(data.len() + CHUNK_BYTES, fill);
        data.extend_from_slice(b"\r\n");
        chunked.push(Record {
            from_client: false,
            data,
        });
    }
    chunked.push(Record {
        from_client: false,
        data: b"0\r\n\r\n".to_vec(),
    });

    // 64 KiB body: the head, then 4 KiB writes (each fully captured).
    let mut large = vec![
        Record {
            from_client: true,
            data: get_request("/api/v1/export"),
        },
        Record {
            from_client: false,
            data: response_head(&format!("Content-Length: {LARGE_BODY_BYTES}")),
        },
    ];
    for i in 0..LARGE_BODY_BYTES / DEFAULT_CAPTURE_BYTES {
        large.push(Record {
            from_client: false,
            data: vec![b'0' + u8::try_from(i % 10).expect("< 10"); DEFAULT_CAPTURE_BYTES],
        });
    }

    let scenarios = [
        ("synthetic/get_small", get, 1),
        ("synthetic/keepalive_100", keepalive, KEEPALIVE_EXCHANGES),
        ("synthetic/chunked", chunked, 1),
        ("synthetic/body_64k_in_4k", large, 1),
    ];
    scenarios
        .into_iter()
        .map(|(name, records, exchanges)| {
            let got = replay_tracker(&records, Role::Server, &mut Vec::new());
            assert_eq!(
                got, exchanges,
                "{name}: the tracker disagrees with the input"
            );
            Scenario {
                name: name.to_owned(),
                records,
                exchanges,
            }
        })
        .collect()
}

fn scenarios() -> Vec<Scenario> {
    let mut all = synthetic();
    all.extend(fixtures());
    all
}

// ---------------------------------------------------------------------------------------------
// http1_parse

/// Feeds `records` to a new tracker playing `role`, then closes it; returns the exchanges.
fn replay_tracker(records: &[Record], role: Role, out: &mut Vec<Completed>) -> usize {
    out.clear();
    let mut tracker = Tracker::new(role);
    let mut ts_ns = 0;
    for record in records {
        ts_ns += 1000;
        let chunk = Chunk {
            start_ns: ts_ns,
            end_ns: ts_ns + 500,
            data: captured(&record.data),
            len: len_u64(&record.data),
        };
        tracker.on_chunk(direction(role, record.from_client), chunk, out);
    }
    tracker.on_close(ts_ns + 1000, out);
    out.len()
}

fn http1_parse(c: &mut Criterion) {
    let mut group = c.benchmark_group("http1_parse");
    let mut out = Vec::new();
    for scenario in scenarios() {
        group.throughput(Throughput::Bytes(scenario.captured_bytes()));
        group.bench_function(BenchmarkId::from_parameter(&scenario.name), |b| {
            b.iter(|| {
                black_box(replay_tracker(
                    black_box(&scenario.records),
                    Role::Server,
                    &mut out,
                ))
            });
        });
    }
    group.finish();
}

// ---------------------------------------------------------------------------------------------
// http2_parse

/// Unary gRPC calls on one h2c connection.
const GRPC_CALLS: u32 = 100;

fn h2_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).expect("small");
    let mut f = len.to_be_bytes()[1..].to_vec();
    f.extend_from_slice(&[kind, flags]);
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// HPACK fields: the first time literal with incremental indexing (new name, RFC 7541 §6.2.1),
/// later an indexed reference (§6.1) to the entry that insertion made (`index` from 62 up).
fn hpack(fields: &[(&str, &str)], first: bool, index: u8) -> Vec<u8> {
    let mut b = Vec::new();
    for (i, (name, value)) in fields.iter().enumerate() {
        if first {
            b.push(0x40);
            for s in [name, value] {
                b.push(u8::try_from(s.len()).expect("short"));
                b.extend_from_slice(s.as_bytes());
            }
        } else {
            // Entries inserted later have lower indices.
            let back = u8::try_from(fields.len() - 1 - i).expect("few");
            b.push(0x80 | (index + back));
        }
    }
    b
}

/// The records of a client's side of `GRPC_CALLS` unary calls: `(from_client, bytes)`.
fn grpc_unary_connection() -> Vec<Record> {
    let mut records = Vec::new();
    let mut preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    preface.extend(h2_frame(4, 0, 0, &[0, 3, 0, 0, 0, 100]));
    records.push(Record {
        from_client: true,
        data: preface,
    });
    records.push(Record {
        from_client: false,
        data: h2_frame(4, 0, 0, &[]),
    });
    let request = [
        (":method", "POST"),
        (":scheme", "http"),
        (":path", "/helloworld.Greeter/SayHello"),
        (":authority", "localhost:50051"),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
        (
            "user-agent",
            "grpc-python/1.85.1 grpc-c/52.0.0 (linux; chttp2)",
        ),
    ];
    let response = [(":status", "200"), ("content-type", "application/grpc")];
    let trailers = [("grpc-status", "0")];
    let message = [
        0u8, 0, 0, 0, 12, 10, 10, b'w', b'o', b'r', b'l', b'd', b'!', b'!', b'!', b'!',
    ];
    for call in 0..GRPC_CALLS {
        let stream = 2 * call + 1;
        let first = call == 0;
        let mut req = h2_frame(1, 0x4, stream, &hpack(&request, first, 62));
        req.extend(h2_frame(0, 0x1, stream, &message));
        records.push(Record {
            from_client: true,
            data: req,
        });
        // The server's table: `response` inserted first, `trailers` after it (index 62).
        let mut resp = h2_frame(1, 0x4, stream, &hpack(&response, first, 63));
        resp.extend(h2_frame(0, 0, stream, &message));
        resp.extend(h2_frame(1, 0x5, stream, &hpack(&trailers, first, 62)));
        records.push(Record {
            from_client: false,
            data: resp,
        });
    }
    records
}

fn replay_http2(records: &[Record], role: Role, out: &mut Vec<agent::proto::Completed>) -> usize {
    out.clear();
    let mut parser = http2::new_parser(role, Start::Beginning);
    let mut ts_ns = 0;
    for record in records {
        ts_ns += 1000;
        let chunk = Chunk {
            start_ns: ts_ns,
            end_ns: ts_ns + 500,
            data: captured(&record.data),
            len: len_u64(&record.data),
        };
        parser.on_chunk(direction(role, record.from_client), chunk, out);
    }
    out.len()
}

fn http2_parse(c: &mut Criterion) {
    let mut group = c.benchmark_group("http2_parse");
    let records = grpc_unary_connection();
    let bytes: u64 = records.iter().map(|r| len_u64(&r.data)).sum();
    let mut out = Vec::new();
    assert_eq!(
        replay_http2(&records, Role::Server, &mut out),
        GRPC_CALLS as usize,
        "every call must complete"
    );
    group.throughput(Throughput::Bytes(bytes));
    group.bench_function("grpc_unary_x100", |b| {
        b.iter(|| black_box(replay_http2(black_box(&records), Role::Server, &mut out)));
    });
    group.finish();
}

// ---------------------------------------------------------------------------------------------
// reassembly

/// The scenario's records as the kernel writes them into the ring buffer: a
/// [`DataEventHeader`] followed by the captured payload, with per-direction sequence numbers.
fn ring_records(scenario: &Scenario, role: Role) -> Vec<Vec<u8>> {
    let mut seq = [0u64; 2];
    let mut ts_ns = 0;
    let tgid = std::process::id();
    scenario
        .records
        .iter()
        .map(|record| {
            let dir = direction(role, record.from_client);
            let payload = captured(&record.data);
            let len = len_u64(&record.data);
            ts_ns += 1000;
            let header = DataEventHeader {
                kind: EventKind::Data as u32,
                direction: dir as u32,
                ts_enter_ns: ts_ns,
                ts_exit_ns: ts_ns + 500,
                sk: SK,
                seq: seq[dir as usize],
                len,
                tgid,
                tid: tgid,
                fd: 3,
                captured: u32::try_from(payload.len()).expect("<= DEFAULT_CAPTURE_BYTES"),
                source: match dir {
                    Direction::Ingress => DataSource::Read,
                    Direction::Egress => DataSource::Write,
                } as u32,
                _pad: 0,
                comm: *b"bench\0\0\0\0\0\0\0\0\0\0\0",
            };
            seq[dir as usize] += len;
            // SAFETY: `DataEventHeader` is `#[repr(C)]` plain old data with explicit padding
            // (`_pad`; checked by agent-common's size assertions), so all its bytes are
            // initialised and may be read as `u8`.
            let header_bytes = unsafe {
                std::slice::from_raw_parts(
                    (&raw const header).cast::<u8>(),
                    size_of::<DataEventHeader>(),
                )
            };
            let mut bytes = header_bytes.to_vec();
            bytes.extend_from_slice(payload);
            bytes
        })
        .collect()
}

/// `inet_sock_set_state` of the benchmarked socket: established as `role`, or closed.
fn conn_event(role: Role, newstate: u32) -> ConnEvent {
    let mut saddr = [0u8; 16];
    saddr[..4].copy_from_slice(&[127, 0, 0, 1]);
    let (sport, dport) = match role {
        Role::Server => (8080, 50000),
        Role::Client => (50000, 8080),
    };
    ConnEvent {
        kind: EventKind::Conn as u32,
        family: AF_INET,
        flags: 0,
        ts_ns: 1,
        sk: SK,
        oldstate: match (newstate, role) {
            (TCP_CLOSE, _) => TCP_ESTABLISHED,
            (_, Role::Server) => TCP_SYN_RECV,
            (_, Role::Client) => TCP_SYN_SENT,
        },
        newstate,
        sport,
        dport,
        tgid: 0,
        saddr,
        daddr: saddr,
    }
}

/// One connection's life in the table: open, every record decoded and fed, close.
fn replay_table(
    table: &mut ConnTable,
    role: Role,
    ring: &[Vec<u8>],
    now: Instant,
    out: &mut Vec<Observed>,
) -> usize {
    out.clear();
    table.on_conn_event(&conn_event(role, TCP_ESTABLISHED), now, out);
    for bytes in ring {
        match ringbuf::decode(bytes) {
            Ok(RingRecord::Data(d)) => table.on_data(&d, now, out),
            other => panic!("bench input is not a data record: {other:?}"),
        }
    }
    table.on_conn_event(&conn_event(role, TCP_CLOSE), now, out);
    out.len()
}

fn new_table() -> ConnTable {
    ConnTable::new(Selection::default(), Duration::from_secs(300))
}

fn reassembly(c: &mut Criterion) {
    let mut group = c.benchmark_group("reassembly");
    let mut out = Vec::new();
    let now = Instant::now();
    for scenario in scenarios() {
        let ring = ring_records(&scenario, Role::Server);
        // One table for every iteration, as in the agent: the process cache is warm and the
        // socket address is reused, so each iteration is a new connection on a known process.
        let mut table = new_table();
        let got = replay_table(&mut table, Role::Server, &ring, now, &mut out);
        assert_eq!(got, scenario.exchanges, "{}: table replay", scenario.name);
        group.throughput(Throughput::Bytes(scenario.captured_bytes()));
        group.bench_function(BenchmarkId::from_parameter(&scenario.name), |b| {
            b.iter(|| {
                black_box(replay_table(
                    &mut table,
                    Role::Server,
                    black_box(&ring),
                    now,
                    &mut out,
                ))
            });
        });
    }
    group.finish();
}

// ---------------------------------------------------------------------------------------------
// span_build

/// A span processor that drops every span: the SDK builds `SpanData`, nothing is exported.
#[derive(Debug)]
struct Discard;

impl SpanProcessor for Discard {
    fn on_start(&self, _span: &mut opentelemetry_sdk::trace::Span, _cx: &Context) {}

    fn on_end(&self, span: SpanData) {
        black_box(span);
    }

    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        Ok(())
    }
}

/// The exchanges of the synthetic keep-alive connection as the table reports them for `role`.
fn keepalive_exchanges(role: Role) -> Vec<Observed> {
    let scenario = synthetic()
        .into_iter()
        .find(|s| s.name == "synthetic/keepalive_100")
        .expect("keep-alive scenario");
    let mut out = Vec::new();
    let n = replay_table(
        &mut new_table(),
        role,
        &ring_records(&scenario, role),
        Instant::now(),
        &mut out,
    );
    assert_eq!(n, KEEPALIVE_EXCHANGES);
    out
}

/// The route of a server exchange as [`agent::telemetry::export::Exporter`] computes it.
fn route_of(router: &mut Router, obs: &Observed) -> Option<Arc<str>> {
    let ExchangeKind::Http(http) = &obs.exchange.kind else {
        return None;
    };
    match router.route(u64::from(obs.exchange.conn.tgid), &http.path) {
        Route::Inferred(route) => Some(route),
        Route::Pattern(pattern) => Some(Arc::from(pattern)),
        Route::Overflow => None,
    }
}

fn span_build(c: &mut Criterion) {
    let mut group = c.benchmark_group("span_build");
    let clock = Clock::sample();
    let server = keepalive_exchanges(Role::Server);
    let client = keepalive_exchanges(Role::Client);
    let mut traced = server.clone();
    for obs in &mut traced {
        let ExchangeKind::Http(http) = &mut obs.exchange.kind else {
            unreachable!("keep-alive exchanges are HTTP");
        };
        http.traceparent = Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into());
    }
    group.throughput(Throughput::Elements(
        u64::try_from(KEEPALIVE_EXCHANGES).expect("fits"),
    ));

    for (name, exchanges, route) in [
        ("fields/server", &server, Some(ROUTE)),
        ("fields/server_traceparent", &traced, Some(ROUTE)),
        ("fields/client", &client, None),
    ] {
        group.bench_function(name, |b| {
            b.iter(|| {
                for obs in exchanges {
                    black_box(span::from_exchange(black_box(&obs.exchange), &clock, route));
                }
            });
        });
    }

    let mut router = Router::new(Patterns::default(), RouteConfig::default());
    let learned = route_of(&mut router, &server[0]);
    assert_eq!(learned.as_deref(), Some(ROUTE), "router: unexpected route");
    group.bench_function("route_and_fields/server", |b| {
        b.iter(|| {
            for obs in &server {
                let route = route_of(&mut router, black_box(obs));
                black_box(span::from_exchange(&obs.exchange, &clock, route.as_deref()));
            }
        });
    });

    // What the export task does per span: route, fields, `SpanData` (sampler and ids), handed
    // to a processor (here one that drops it).
    // The exporter consumes each exchange (`into_fields` moves its strings), so the exchanges
    // are cloned outside the measurement.
    let maker = SpanMaker::default();
    group.bench_function("span_data/server", |b| {
        b.iter_batched(
            || server.clone(),
            |batch| {
                for obs in batch {
                    let route = route_of(&mut router, black_box(&obs));
                    let fields = span::into_fields(obs.exchange, &clock, route);
                    if let Some(span) = maker.make(fields) {
                        Discard.on_end(span);
                    }
                }
            },
            BatchSize::SmallInput,
        );
    });

    // The same through the SDK's tracer, which Sonde used before `SpanMaker`.
    let provider = SdkTracerProvider::builder()
        .with_span_processor(Discard)
        .build();
    let tracer = provider.tracer(semconv::SCOPE_NAME);
    group.bench_function("sdk_span/server", |b| {
        b.iter(|| {
            for obs in &server {
                let route = route_of(&mut router, black_box(obs));
                let fields = span::from_exchange(&obs.exchange, &clock, route.as_deref());
                let parent = match fields.parent {
                    Some(sc) => Context::new().with_remote_span_context(sc),
                    None => Context::new(),
                };
                let builder = tracer
                    .span_builder(fields.name)
                    .with_kind(fields.kind)
                    .with_start_time(fields.start)
                    .with_attributes(fields.attributes);
                let mut s = tracer.build_with_context(builder, &parent);
                s.set_status(fields.status);
                s.end_with_timestamp(fields.end);
            }
        });
    });

    let mut table = RedTable::default();
    group.bench_function("fields_and_red_metrics/server", |b| {
        b.iter(|| {
            for obs in &server {
                let fields = span::from_exchange(black_box(&obs.exchange), &clock, Some(ROUTE));
                table.record(Sample::of(&obs.exchange), &fields.attributes, fields.end);
            }
        });
    });

    // The same three histograms through the SDK's instruments, which Sonde used before its own
    // table: the measured reason for the table.
    let meters = SdkMeterProvider::builder()
        .with_reader(ManualReader::builder().build())
        .build();
    let meter = meters.meter(semconv::SCOPE_NAME);
    let duration = meter
        .f64_histogram(semconv::HTTP_SERVER_REQUEST_DURATION)
        .with_boundaries(semconv::HTTP_DURATION_BOUNDARIES_S.to_vec())
        .build();
    let request_body = meter
        .u64_histogram(semconv::HTTP_SERVER_REQUEST_BODY_SIZE)
        .build();
    let response_body = meter
        .u64_histogram(semconv::HTTP_SERVER_RESPONSE_BODY_SIZE)
        .build();
    group.bench_function("fields_and_sdk_histograms/server", |b| {
        b.iter(|| {
            for obs in &server {
                let fields = span::from_exchange(black_box(&obs.exchange), &clock, Some(ROUTE));
                let attrs: Vec<opentelemetry::KeyValue> = fields
                    .attributes
                    .iter()
                    .filter(|kv| {
                        matches!(
                            kv.key.as_str(),
                            semconv::HTTP_REQUEST_METHOD
                                | semconv::HTTP_RESPONSE_STATUS_CODE
                                | semconv::URL_SCHEME
                                | semconv::NETWORK_PROTOCOL_VERSION
                                | semconv::ERROR_TYPE
                                | semconv::HTTP_ROUTE
                        )
                    })
                    .cloned()
                    .collect();
                duration.record(0.001, &attrs);
                request_body.record(0, &attrs);
                response_body.record(100, &attrs);
            }
        });
    });
    group.finish();
}

// ---------------------------------------------------------------------------------------------
// otlp_encode

fn otlp_encode(c: &mut Criterion) {
    let mut group = c.benchmark_group("otlp_encode");
    let clock = Clock::sample();
    let maker = SpanMaker::default();
    let batch: Vec<SpanData> = keepalive_exchanges(Role::Server)
        .iter()
        .filter_map(|obs| maker.make(span::from_exchange(&obs.exchange, &clock, Some(ROUTE))))
        .collect();
    assert_eq!(batch.len(), KEEPALIVE_EXCHANGES);
    let sdk_resource = opentelemetry_sdk::Resource::builder()
        .with_service_name("nginx")
        .build();
    let resource = ResourceAttributesWithSchema::from(&sdk_resource);
    let resource_bytes = Resource {
        attributes: resource.attributes.0.clone(),
        dropped_attributes_count: 0,
        entity_refs: Vec::new(),
    }
    .encode_to_vec();
    let via_structs = |batch: Vec<SpanData>| {
        ExportTraceServiceRequest {
            resource_spans: group_spans_by_resource_and_scope(batch, &resource),
        }
        .encode_to_vec()
    };
    assert_eq!(
        otlp_encode::encode_request(&batch, &resource_bytes, ""),
        Some(via_structs(batch.clone())),
        "the two encodings differ"
    );
    group.throughput(Throughput::Elements(
        u64::try_from(KEEPALIVE_EXCHANGES).expect("fits"),
    ));
    group.bench_function("direct/server_x100", |b| {
        b.iter(|| {
            black_box(otlp_encode::encode_request(
                black_box(&batch),
                &resource_bytes,
                "",
            ))
        });
    });
    group.bench_function("via_proto_structs/server_x100", |b| {
        b.iter_batched(
            || batch.clone(),
            |batch| black_box(via_structs(batch)),
            BatchSize::SmallInput,
        );
    });
    group.finish();
}

fn config() -> Criterion {
    // Short defaults for a shared machine; command-line flags override them.
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2))
}

criterion_group! {
    name = benches;
    config = config();
    targets = http1_parse, http2_parse, reassembly, span_build, otlp_encode
}
criterion_main!(benches);
