//! The agent joins a gRPC connection mid-way (README, "Joining an open connection"): a grpcio
//! client (`peers/grpc_peer.py call`, one channel, so one HTTP/2 connection) makes
//! [`BEFORE`] `Unary` calls before the agent starts, so the connection, its SETTINGS and the HPACK
//! dynamic-table entries of both directions (the client's `:path` `/sonde.test.Echo/Unary`,
//! `content-type`, `user-agent`, `te`; the server's `content-type` and `grpc-status: 0`) all
//! predate the agent. Once the agent is ready the same channel makes [`AFTER`]: `Unary` calls,
//! whose `:path` refers to a table entry the agent never saw, interleaved with `ServerStream`
//! calls, a method first called after the join (its `:path` is a new literal, inserted into the
//! table, and later calls refer to it).
//!
//! What the README promises: exactly one SERVER and one CLIENT span per call after the join, all
//! gRPC; the new method's spans carry its `rpc.method`; an old-method span carries no
//! `rpc.method` (named `grpc`) or the right one, never a wrong one; `rpc.response.status_code` is
//! `OK` or absent (`grpc-status: 0` may be a pre-join entry), never another status. The calls run
//! one after another, so the i-th span of each side in start order is the i-th call of
//! [`AFTER`]: each is checked against that call's method, and each CLIENT span must contain its
//! SERVER span.

use agent_tests::{
    expect::{containment_mismatch, RpcSpan},
    grpc_extra::{
        agent_stats_lines, assert_no_failures, check_run, containment_slack, full, ok, Call,
        GrpcClient, GrpcStage, PYTHON,
    },
    peers::{grpc_served, grpc_server, GrpcRun},
    require_root,
    span::{Span, CLIENT, SERVER},
    World,
};

/// The calls made before the agent starts.
const BEFORE: [Call; 3] = [
    ok("unary", "Unary"),
    ok("unary", "Unary"),
    ok("unary", "Unary"),
];

/// The calls made after it is ready: N = 4 `Unary`, M = 3 `ServerStream`, interleaved (each new
/// literal shifts the pre-join entries' indices; an old-method call must still not be named
/// after the new one).
const AFTER: [Call; 7] = [
    ok("unary", "Unary"),
    ok("server_stream", "ServerStream"),
    ok("unary", "Unary"),
    ok("server_stream", "ServerStream"),
    ok("unary", "Unary"),
    ok("server_stream", "ServerStream"),
    ok("unary", "Unary"),
];

/// The method first called after the join.
const NEW_METHOD: &str = "ServerStream";

#[test]
fn grpc_channel_opened_before_the_agent_is_traced_after_the_join() {
    require_root!();
    let stage = GrpcStage::start("grpc-join", grpc_server);
    let release = stage.dir.join("join.release");
    let close = stage.dir.join("join.close");
    let (wait, wait_close) = (
        format!("wait:{}", release.display()),
        format!("wait:{}", close.display()),
    );
    let specs: Vec<&str> = BEFORE
        .iter()
        .map(|c| c.spec)
        .chain([wait.as_str()])
        .chain(AFTER.iter().map(|c| c.spec))
        .chain([wait_close.as_str()])
        .collect();
    let mut client = GrpcClient::spawn(&stage.dir, stage.port(), &specs);
    // The BEFORE calls are done and the channel is idle (its connection open) before the agent
    // starts.
    client.wait_for_calls(BEFORE.len());
    let mut w = stage.start_agent();
    GrpcClient::release(&release);
    client.wait_for_calls(BEFORE.len() + AFTER.len());
    let all: Vec<Call> = BEFORE.iter().chain(&AFTER).copied().collect();
    let served = grpc_served(&w.server, all.len());

    // The channel stays open until the agent has stopped, as in `preexisting_connection.rs`: only
    // `/proc` tells the agent about this connection, and it reads `/proc` when it drains the
    // connection's first records (every 50 ms), by which time a client that exits at once has
    // closed the socket.
    let n = AFTER.len();
    let spans = w.finish(2 * n);
    GrpcClient::release(&close);
    let run = client.finish();
    let client_port = check_run(&run, &served, &all);
    let stats = format!("agent stats:\n{}", agent_stats_lines(&w.agent));
    let mut failures = Vec::new();
    for kind in [SERVER, CLIENT] {
        let got = spans.iter().filter(|s| s.kind == kind).count();
        if got != n {
            failures.push(format!(
                "{got} {kind} spans, want exactly {n} (one per call after the join)"
            ));
        }
        let new = spans
            .iter()
            .filter(|s| s.kind == kind && s.attr_str("rpc.method") == Some(&full(NEW_METHOD)))
            .count();
        let want = AFTER.iter().filter(|c| c.method == NEW_METHOD).count();
        if new != want {
            failures.push(format!(
                "{new} {kind} spans with rpc.method {:?}, want {want} (its `:path` was inserted \
                 after the join)",
                full(NEW_METHOD)
            ));
        }
    }
    if spans.len() != 2 * n {
        failures.push(format!("{} spans in all, want {}", spans.len(), 2 * n));
    }
    let (mut servers, mut clients): (Vec<&Span>, Vec<&Span>) =
        spans.iter().partition(|s| s.is_server());
    servers.sort_by_key(|s| s.start_time_unix_nano);
    clients.sort_by_key(|s| s.start_time_unix_nano);
    let positional = servers.len() == n && clients.len() == n;
    // Without exact counts the spans cannot be matched to calls by position: each is then
    // checked against the method it names (or Unary when it names none).
    for (kind, found) in [(SERVER, &servers), (CLIENT, &clients)] {
        for (i, span) in found.iter().enumerate() {
            let planned = if positional {
                Some(AFTER[i].method)
            } else {
                None
            };
            failures.extend(
                joined_span_mismatches(span, planned, &w, &run, client_port)
                    .into_iter()
                    .map(|m| format!("{kind} span {i} (start order): {m}")),
            );
        }
    }
    if positional {
        for (i, (c, s)) in clients.iter().zip(&servers).enumerate() {
            if let Some(m) = containment_mismatch(c, s, containment_slack()) {
                failures.push(format!(
                    "call {i} after the join ({}): {m}",
                    AFTER[i].method
                ));
            }
        }
    }
    assert_no_failures(&failures, &spans, &stats);
}

/// How `span`, one end of a call made after the join, breaks the README's promise. `planned`: the
/// method of the call it must be (by position), when the counts allow matching by position.
fn joined_span_mismatches(
    span: &Span,
    planned: Option<&str>,
    w: &World,
    run: &GrpcRun,
    client_port: u16,
) -> Vec<String> {
    let mut out = Vec::new();
    let named = span.attr_str("rpc.method");
    let known = [full("Unary"), full(NEW_METHOD)];
    if let Some(name) = named {
        if !known.iter().any(|k| k == name) {
            out.push(format!("a wrong rpc.method {name:?}: {span}"));
            return out;
        }
    }
    let method = match (planned, named) {
        (Some(p), _) => full(p),
        (None, Some(name)) => name.to_owned(),
        (None, None) => full("Unary"),
    };
    if let Some(name) = named {
        if name != method {
            out.push(format!(
                "rpc.method {name:?}, want {method:?} or none: {span}"
            ));
        }
    }
    if named.is_none() && method == full(NEW_METHOD) {
        out.push(format!(
            "no rpc.method, want {method:?} (a `:path` inserted after the join): {span}"
        ));
    }
    if named.is_none() && span.name != "grpc" {
        out.push(format!(
            "name {:?}, want `grpc` for a span without rpc.method",
            span.name
        ));
    }
    let expect = if span.is_server() {
        RpcSpan::server(&method, "OK", w.port())
            .pid(w.server.pid())
            .client_port(client_port)
    } else {
        RpcSpan::client(&method, "OK", w.port()).pid(run.pid)
    }
    .service(PYTHON)
    .max_duration(run.wall);
    let status_absent = span.attr_str("rpc.response.status_code").is_none();
    for m in expect.mismatches(span) {
        // Fields that may be unknown after the join: the method of an old-method call (its name
        // is then `grpc`, checked above) and the status.
        let unknown = (named.is_none() && (m.starts_with("rpc.method:") || m.starts_with("name:")))
            || (status_absent && m.starts_with("rpc.response.status_code:"));
        if !unknown {
            out.push(m);
        }
    }
    out
}
