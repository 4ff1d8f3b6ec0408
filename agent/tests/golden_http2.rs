//! Golden replay of real HTTP/2 and gRPC captures through the protocol seam ([`agent::proto`]).
//!
//! Input: every `tests/fixtures/http2/<case>.bin` (format and provenance in that directory's
//! `README.md`). Each record is fed as one chunk, captured like the kernel does on an HTTP/2
//! socket (a prefix of at most [`PROTOCOL_CAPTURE_BYTES`], the rest a hole), with synthetic
//! timestamps: record `i` runs from `1000 * (i + 1)` to `1000 * (i + 1) + 500` ns. The parser is
//! found as the connection table finds it: [`proto::detect`] on the first record must pick
//! [`Protocol::Http2`], whose [`Spec::new`](agent::proto::Spec) builds it with
//! [`Start::Beginning`]. The capture is replayed twice: as seen by the server (client records are
//! `Ingress`) and by the client (client records are `Egress`), then closed.
//!
//! Output: the completed exchanges and the nonzero parse counters
//! ([`Parser::take_counters`]), compared with `<case>.expected.json`. `UPDATE_GOLDEN=1` rewrites
//! the expected files instead.
//!
//! Robustness replays (assertions only, no expected files), in both roles:
//! - **joined after every record `k`**: records `k..` on a connection seen mid-stream (detection
//!   with `first = false`, chunks skipped until a protocol claims one, then [`Start::Joined`]);
//! - **every record lost once**: the full replay with record `k` replaced by
//!   [`Parser::on_gap`] for its direction.
//!
//! Neither may panic or report an exchange the full replay of the same role did not report (same
//! family, method/path/status or RPC method/status; an unknown (empty) method or path, or an
//! unknown RPC status, matches anything).

use std::{
    collections::BTreeMap,
    fs,
    panic::{self, AssertUnwindSafe},
    path::PathBuf,
};

use agent::exchange::{ExchangeKind, HttpExchange, Role, RpcExchange, RpcSystem};
use agent::proto::{self, Chunk, Completed, Flow, Parser, Protocol, Side, Start};
use agent_common::limits::PROTOCOL_CAPTURE_BYTES;
use agent_common::Direction;
use serde_json::{json, Value};

#[path = "common/fixture.rs"]
#[allow(dead_code, reason = "fixture_dir() is the HTTP/1 fixtures' directory")]
mod fixture;

use fixture::{protocol_fixture_dir, read_records, Record};

/// Every case the fixture set must hold: its name, the exchanges its full replay reports (in
/// each role), and the parse counters it may have nonzero (each explained in the README).
const CASES: &[(&str, usize, &[&str])] = &[
    ("curl_prior_knowledge", 1, &[]),
    ("grpc_bidi", 1, &[]),
    ("grpc_client_stream", 1, &[]),
    ("grpc_concurrent_20", 20, &[]),
    ("grpc_fail_not_found", 1, &[]),
    ("grpc_server_stream", 1, &[]),
    ("grpc_slow_deadline", 2, &[]),
    ("grpc_unary", 2, &[]),
    (
        "grpc_unary_large",
        1,
        &[
            "dropped_by_gap",
            "grpc_status_unknown",
            "hole_in_frame_header",
            "hpack_unknown_index",
            "request_headers_unknown",
        ],
    ),
    ("h2load_n20_m4", 20, &["goaway"]),
    ("nghttp_4_uris", 4, &["goaway"]),
    (
        "nghttp_large_body",
        0,
        &["dropped_by_gap", "goaway", "hole_in_frame_header"],
    ),
];

fn direction(role: Role, from_client: bool) -> Direction {
    match (role, from_client) {
        (Role::Server, true) | (Role::Client, false) => Direction::Ingress,
        (Role::Server, false) | (Role::Client, true) => Direction::Egress,
    }
}

fn dir_index(dir: Direction) -> usize {
    match dir {
        Direction::Egress => 0,
        Direction::Ingress => 1,
    }
}

/// Record `i` as the kernel would report it on an HTTP/2 socket.
fn chunk(i: usize, record: &Record) -> Chunk<'_> {
    let ts_ns = 1000 * (u64::try_from(i).expect("few records") + 1);
    Chunk {
        start_ns: ts_ns,
        end_ns: ts_ns + 500,
        data: &record.data[..record.data.len().min(PROTOCOL_CAPTURE_BYTES)],
        len: u64::try_from(record.data.len()).expect("fits"),
    }
}

/// Where a replayed connection is, as in the connection table (`agent::conn`).
enum State {
    /// No protocol claimed it yet; `first`: the next chunk of each direction (indexed by
    /// [`dir_index`]) is that direction's first byte.
    Detecting {
        first: [bool; 2],
    },
    Parsing(Box<dyn Parser>),
    Opaque,
}

/// One connection replayed through the seam, the way the connection table drives it.
struct Conn {
    role: Role,
    state: State,
    /// Every claim: record index, protocol, how its parser started.
    claims: Vec<(usize, Protocol, Start)>,
    out: Vec<Completed>,
    counters: BTreeMap<&'static str, u64>,
}

impl Conn {
    /// `from_start`: the connection is seen from its first byte in both directions.
    fn new(role: Role, from_start: bool) -> Self {
        Self {
            role,
            state: State::Detecting {
                first: [from_start; 2],
            },
            claims: Vec::new(),
            out: Vec::new(),
            counters: BTreeMap::new(),
        }
    }

    fn on_record(&mut self, i: usize, record: &Record) {
        let dir = direction(self.role, record.from_client);
        let c = chunk(i, record);
        if let State::Detecting { first } = &mut self.state {
            let idx = dir_index(dir);
            let side = Side::of(self.role, dir);
            let Some(spec) = proto::detect(side, c.data, first[idx]) else {
                first[idx] = false;
                return;
            };
            let start = if first.iter().all(|f| *f) {
                Start::Beginning
            } else {
                Start::Joined
            };
            self.claims.push((i, spec.protocol, start));
            self.state = State::Parsing((spec.new)(self.role, start));
        }
        if let State::Parsing(parser) = &mut self.state {
            parser.on_chunk(dir, c, &mut self.out);
            self.after_parser_call();
        }
    }

    /// Record `i` was lost (a kernel sequence gap in its direction).
    fn on_lost(&mut self, record: &Record) {
        let dir = direction(self.role, record.from_client);
        match &mut self.state {
            State::Detecting { first } => first[dir_index(dir)] = false,
            State::Parsing(parser) => {
                parser.on_gap(dir);
                self.after_parser_call();
            }
            State::Opaque => {}
        }
    }

    fn after_parser_call(&mut self) {
        let State::Parsing(parser) = &mut self.state else {
            return;
        };
        let counters = &mut self.counters;
        parser.take_counters(&mut |reason, n| *counters.entry(reason).or_default() += n);
        match parser.flow() {
            Flow::Parsing => {}
            Flow::NotMine => self.state = State::Opaque,
            Flow::Switched { .. } => self.state = State::Detecting { first: [false; 2] },
        }
    }

    fn close(&mut self, ts_ns: u64) {
        if let State::Parsing(parser) = &mut self.state {
            parser.on_close(ts_ns, &mut self.out);
            self.after_parser_call();
        }
    }
}

/// What replays `records` in `role`: from record `from` (a joined connection unless 0 and
/// `!joined`), with record `lost` replaced by a gap.
fn run(records: &[Record], role: Role, joined: bool, from: usize, lost: Option<usize>) -> Conn {
    let mut conn = Conn::new(role, !joined && from == 0);
    for (i, record) in records.iter().enumerate().skip(from) {
        if lost == Some(i) {
            conn.on_lost(record);
        } else {
            conn.on_record(i, record);
        }
    }
    conn.close(1000 * (u64::try_from(records.len()).expect("few records") + 1));
    conn
}

/// The full replay in `role`; asserts the seam picked HTTP/2 from the first record and that its
/// parser followed the whole connection.
fn replay(name: &str, records: &[Record], role: Role) -> Conn {
    let first = records.first().expect("a record");
    let side = Side::of(role, direction(role, first.from_client));
    let claimed = proto::detect(side, chunk(0, first).data, true).map(|s| s.protocol);
    assert_eq!(
        claimed,
        Some(Protocol::Http2),
        "{name} {role:?}: detection of record 0"
    );
    let conn = run(records, role, false, 0, None);
    assert_eq!(
        conn.claims,
        [(0, Protocol::Http2, Start::Beginning)],
        "{name} {role:?}: claims"
    );
    assert!(
        matches!(conn.state, State::Parsing(_)),
        "{name} {role:?}: the parser gave up"
    );
    conn
}

fn replay_json(conn: &Conn) -> Value {
    json!({
        "exchanges": conn.out.iter().map(exchange_json).collect::<Vec<_>>(),
        "stats": conn.counters,
    })
}

fn exchange_json(done: &Completed) -> Value {
    match &done.kind {
        ExchangeKind::Http(h) => json!({
            "kind": "http",
            "start_ns": done.start_ns,
            "end_ns": done.end_ns,
            "method": h.method,
            "path": h.path,
            "version": h.version.as_str(),
            "host": h.host,
            "user_agent": h.user_agent,
            "traceparent": h.traceparent,
            "status": h.status,
            "request_body_bytes": h.request_body_bytes,
            "response_body_bytes": h.response_body_bytes,
        }),
        ExchangeKind::Rpc(r) => json!({
            "kind": "rpc",
            "start_ns": done.start_ns,
            "end_ns": done.end_ns,
            "system": match r.system {
                RpcSystem::Grpc => "grpc",
            },
            "method": r.method,
            "status": r.status,
            "authority": r.authority,
            "user_agent": r.user_agent,
            "traceparent": r.traceparent,
            "request_bytes": r.request_bytes,
            "response_bytes": r.response_bytes,
        }),
    }
}

/// A replay's JSON without the exchanges' timestamps (which depend on the role).
fn without_times(replay: &Value) -> Value {
    let mut replay = replay.clone();
    for x in replay["exchanges"]
        .as_array_mut()
        .expect("exchanges array")
        .iter_mut()
    {
        let fields = x.as_object_mut().expect("exchange object");
        fields.remove("start_ns");
        fields.remove("end_ns");
    }
    replay
}

/// The fixtures, sorted by name.
fn cases() -> Vec<(String, Vec<Record>)> {
    let mut paths: Vec<PathBuf> = fs::read_dir(protocol_fixture_dir("http2"))
        .expect("fixture dir")
        .map(|entry| entry.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "bin"))
        .collect();
    paths.sort();
    let cases: Vec<(String, Vec<Record>)> = paths
        .iter()
        .map(|p| {
            let name = p.file_stem().expect("stem").to_string_lossy().into_owned();
            (name, read_records(p))
        })
        .collect();
    for (required, _, _) in CASES {
        assert!(
            cases.iter().any(|(n, _)| n == required),
            "missing fixture {required}.bin"
        );
    }
    cases
}

fn case_info(name: &str) -> (usize, &'static [&'static str]) {
    CASES
        .iter()
        .find(|(n, _, _)| *n == name)
        .map(|(_, count, allowed)| (*count, *allowed))
        .unwrap_or_else(|| panic!("{name}.bin is not listed in CASES (and the README)"))
}

#[test]
fn golden_http2() {
    let update = std::env::var("UPDATE_GOLDEN").is_ok_and(|v| v == "1");
    let mut mismatches = Vec::new();
    let mut unexplained = Vec::new();
    for (name, records) in cases() {
        let (count, allowed) = case_info(&name);
        let server = replay(&name, &records, Role::Server);
        let client = replay(&name, &records, Role::Client);
        let (server, client) = (replay_json(&server), replay_json(&client));
        assert_eq!(
            without_times(&server),
            without_times(&client),
            "{name}: roles disagree"
        );
        assert_eq!(
            server["exchanges"].as_array().map(Vec::len),
            Some(count),
            "{name}: exchanges"
        );
        for reason in server["stats"].as_object().expect("stats object").keys() {
            if !allowed.contains(&reason.as_str()) {
                unexplained.push(format!("{name}: {reason}"));
            }
        }
        let got = json!({ "server": server, "client": client });
        let path = protocol_fixture_dir("http2").join(format!("{name}.expected.json"));
        let text = serde_json::to_string_pretty(&got).expect("serialize") + "\n";
        if update {
            fs::write(&path, text).expect("write golden file");
            continue;
        }
        let want: Value = fs::read_to_string(&path)
            .ok()
            .and_then(|s| serde_json::from_str(&s).ok())
            .unwrap_or(Value::Null);
        if want != got {
            mismatches.push(format!("{name}: got\n{text}"));
        }
    }
    assert!(
        unexplained.is_empty(),
        "nonzero parse counters not explained in the README (add them to CASES):\n{}",
        unexplained.join("\n")
    );
    assert!(
        mismatches.is_empty(),
        "golden mismatch (rerun with UPDATE_GOLDEN=1 and review the diff):\n{}",
        mismatches.join("\n")
    );
}

/// Whether `got` (from a robustness replay) may be the exchange `full` (from the full replay).
fn compatible(got: &ExchangeKind, full: &ExchangeKind) -> bool {
    let known = |got: &str, full: &str| got.is_empty() || got == full;
    match (got, full) {
        (ExchangeKind::Http(g), ExchangeKind::Http(f)) => http_compatible(g, f, known),
        (ExchangeKind::Rpc(g), ExchangeKind::Rpc(f)) => rpc_compatible(g, f, known),
        _ => false,
    }
}

fn http_compatible(g: &HttpExchange, f: &HttpExchange, known: impl Fn(&str, &str) -> bool) -> bool {
    known(&g.method, &f.method) && known(&g.path, &f.path) && g.status == f.status
}

fn rpc_compatible(g: &RpcExchange, f: &RpcExchange, known: impl Fn(&str, &str) -> bool) -> bool {
    g.system == f.system
        && known(&g.method, &f.method)
        && g.status.is_none_or(|s| f.status == Some(s))
}

/// Exchanges of `got` that cannot each be paired with a distinct compatible exchange of `full`
/// (a maximum bipartite matching, so one vague exchange cannot steal another's partner).
fn invented<'a>(got: &'a [Completed], full: &[Completed]) -> Vec<&'a Completed> {
    fn assign(
        g: usize,
        edges: &[Vec<usize>],
        seen: &mut [bool],
        partner: &mut [Option<usize>],
    ) -> bool {
        for &f in &edges[g] {
            if seen[f] {
                continue;
            }
            seen[f] = true;
            if partner[f].is_none_or(|other| assign(other, edges, seen, partner)) {
                partner[f] = Some(g);
                return true;
            }
        }
        false
    }
    let edges: Vec<Vec<usize>> = got
        .iter()
        .map(|g| {
            (0..full.len())
                .filter(|&f| compatible(&g.kind, &full[f].kind))
                .collect()
        })
        .collect();
    let mut partner = vec![None; full.len()];
    let mut lonely = Vec::new();
    for (g, done) in got.iter().enumerate() {
        let mut seen = vec![false; full.len()];
        if !assign(g, &edges, &mut seen, &mut partner) {
            lonely.push(done);
        }
    }
    lonely
}

/// Runs every robustness replay `make(k)` of every case and role, `k` over the record indices;
/// returns the failures (panics, invented exchanges, inverted times).
fn robustness(what: &str, make: impl Fn(&[Record], Role, usize) -> Conn) -> Vec<String> {
    let mut failures = Vec::new();
    for (name, records) in cases() {
        for role in [Role::Server, Role::Client] {
            let full = run(&records, role, false, 0, None).out;
            for k in 0..records.len() {
                let at = format!("{name} {role:?} {what} k={k}");
                let result = panic::catch_unwind(AssertUnwindSafe(|| make(&records, role, k)));
                let conn = match result {
                    Ok(conn) => conn,
                    Err(e) => {
                        let msg = e
                            .downcast_ref::<String>()
                            .cloned()
                            .or_else(|| e.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                            .unwrap_or_default();
                        failures.push(format!("{at}: panicked: {msg}"));
                        continue;
                    }
                };
                for x in invented(&conn.out, &full) {
                    failures.push(format!(
                        "{at}: invented {} (claims {:?}, counters {:?})",
                        exchange_json(x),
                        conn.claims,
                        conn.counters
                    ));
                }
                for x in conn.out.iter().filter(|x| x.end_ns < x.start_ns) {
                    failures.push(format!("{at}: ends before it starts: {x:?}"));
                }
            }
        }
    }
    failures
}

#[test]
fn joined_after_every_record() {
    let failures = robustness("joined", |records, role, k| {
        run(records, role, true, k, None)
    });
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_record_lost_once() {
    let failures = robustness("lost", |records, role, k| {
        run(records, role, false, 0, Some(k))
    });
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
