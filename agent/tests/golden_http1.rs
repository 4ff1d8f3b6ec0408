//! Golden replay of real HTTP/1.1 captures through [`agent::proto::http1::Tracker`].
//!
//! Input: every `tests/fixtures/http1/<case>.bin` (format and provenance in that directory's
//! `README.md`). Each record is fed as one chunk, captured like the kernel does (a prefix of at
//! most [`DEFAULT_CAPTURE_BYTES`], the rest a hole), with synthetic timestamps: record `i` runs from
//! `1000 * (i + 1)` to `1000 * (i + 1) + 500` ns. The capture is replayed twice: as seen by the
//! server (client records are `Ingress`) and by the client (client records are `Egress`), then
//! closed. Output: the completed exchanges and nonzero drop counters, compared with
//! `<case>.expected.json`. `UPDATE_GOLDEN=1` rewrites the expected files instead.

use std::fs;
use std::path::PathBuf;

use agent::exchange::{HttpVersion, Role};
use agent::proto::http1::{Completed, ParseStats, Tracker};
use agent::proto::Chunk;
use agent_common::limits::DEFAULT_CAPTURE_BYTES;
use agent_common::Direction;
use serde_json::{json, Map, Value};

#[path = "common/fixture.rs"]
mod fixture;

use fixture::{fixture_dir, read_records, Record};

/// Cases the fixture set must cover (see the README).
const REQUIRED_CASES: &[&str] = &[
    "get_keepalive_x3",
    "not_found_404",
    "post_body",
    "chunked_response",
    "head",
    "server_error_500",
];

fn replay(records: &[Record], role: Role) -> Value {
    let mut tracker = Tracker::new(role);
    let mut out = Vec::new();
    let mut ts_ns = 0;
    for (i, record) in records.iter().enumerate() {
        let dir = match (role, record.from_client) {
            (Role::Server, true) | (Role::Client, false) => Direction::Ingress,
            (Role::Server, false) | (Role::Client, true) => Direction::Egress,
        };
        ts_ns = 1000 * (u64::try_from(i).expect("few records") + 1);
        let captured = &record.data[..record.data.len().min(DEFAULT_CAPTURE_BYTES)];
        let len = u64::try_from(record.data.len()).expect("fits");
        let chunk = Chunk {
            start_ns: ts_ns,
            end_ns: ts_ns + 500,
            data: captured,
            len,
        };
        tracker.on_chunk(dir, chunk, &mut out);
        assert!(!tracker.is_not_http(), "{role:?}: gave up at record {i}");
    }
    tracker.on_close(ts_ns + 1000, &mut out);
    json!({
        "exchanges": out.iter().map(exchange_json).collect::<Vec<_>>(),
        "stats": stats_json(&tracker.take_stats()),
    })
}

fn exchange_json(done: &Completed) -> Value {
    let h = &done.http;
    json!({
        "start_ns": done.start_ns,
        "end_ns": done.end_ns,
        "method": h.method,
        "path": h.path,
        "version_minor": u8::from(h.version != HttpVersion::Http10),
        "host": h.host,
        "user_agent": h.user_agent,
        "traceparent": h.traceparent,
        "status": h.status,
        "request_body_bytes": h.request_body_bytes,
        "response_body_bytes": h.response_body_bytes,
    })
}

fn stats_json(stats: &ParseStats) -> Value {
    let nonzero: Map<String, Value> = stats
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(k, n)| (k.to_owned(), json!(n)))
        .collect();
    Value::Object(nonzero)
}

/// The exchanges of a replay without their timestamps (which depend on the role).
fn without_times(replay: &Value) -> Vec<Value> {
    let exchanges = replay["exchanges"].as_array().expect("exchanges array");
    exchanges
        .iter()
        .map(|x| {
            let mut x = x.clone();
            let fields = x.as_object_mut().expect("exchange object");
            fields.remove("start_ns");
            fields.remove("end_ns");
            x
        })
        .collect()
}

#[test]
fn golden_http1() {
    let update = std::env::var("UPDATE_GOLDEN").is_ok_and(|v| v == "1");
    let mut cases: Vec<PathBuf> = fs::read_dir(fixture_dir())
        .expect("fixture dir")
        .map(|entry| entry.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "bin"))
        .collect();
    cases.sort();
    let names: Vec<String> = cases
        .iter()
        .map(|p| p.file_stem().expect("stem").to_string_lossy().into_owned())
        .collect();
    for required in REQUIRED_CASES {
        assert!(
            names.iter().any(|n| n == required),
            "missing fixture {required}.bin"
        );
    }
    let mut mismatches = Vec::new();
    for (path, name) in cases.iter().zip(&names) {
        let records = read_records(path);
        let server = replay(&records, Role::Server);
        let client = replay(&records, Role::Client);
        assert_eq!(
            without_times(&server),
            without_times(&client),
            "{name}: roles disagree"
        );
        assert!(!without_times(&server).is_empty(), "{name}: no exchange");
        let got = json!({ "server": server, "client": client });
        let expected_path = path.with_extension("expected.json");
        let text = serde_json::to_string_pretty(&got).expect("serialize") + "\n";
        if update {
            fs::write(&expected_path, text).expect("write golden file");
            continue;
        }
        let want: Value = fs::read_to_string(&expected_path)
            .ok()
            .and_then(|s| serde_json::from_str(&s).ok())
            .unwrap_or(Value::Null);
        if want != got {
            mismatches.push(format!("{name}: got\n{text}"));
        }
    }
    assert!(
        mismatches.is_empty(),
        "golden mismatch (rerun with UPDATE_GOLDEN=1 and review the diff):\n{}",
        mismatches.join("\n")
    );
}
