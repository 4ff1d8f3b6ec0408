//! gRPC over plaintext HTTP/2 (h2c), Python grpcio on both ends (`peers/grpc_peer.py`, service
//! `sonde.test.Echo`, raw-bytes messages): one SERVER span (the grpcio server) and one CLIENT span
//! (the grpcio client) per call, named `rpc.method` (`sonde.test.Echo/Unary`), with the grpc status
//! name in `rpc.response.status_code` and semconv's status rules (client: every non-`OK` status is
//! an error; server: only UNKNOWN, DEADLINE_EXCEEDED, UNIMPLEMENTED, INTERNAL, UNAVAILABLE and
//! DATA_LOSS). Every client runs one channel, i.e. one HTTP/2 connection, for all its calls; the
//! server logs each call's client port (the SERVER spans' `network.peer.port`).
//!
//! What the agent sees of grpcio 1.85 (strace, without the agent): writes are `sendmsg` with many
//! iovecs (26 for the client's first: preface, SETTINGS, WINDOW_UPDATE, then HEADERS whose HPACK
//! block is cut into an iovec per literal, then DATA), several frames per call; reads are
//! `recvmsg` of up to 8 KiB (the server got all 20 concurrent requests, 60 frames, in one). The
//! client's `:path` is a literal with incremental indexing and a literal name, later calls reuse
//! the dynamic table (a 24-byte HEADERS), the server's response HEADERS are 3 bytes of
//! dynamic-table indices, and both ends exchange PINGs (BDP probes) between calls.

use agent_tests::{
    agent::{Agent, Export},
    expect::{containment_mismatch, RpcSpan},
    grpc_extra::{
        assert_no_failures, call_mismatches, check_run, containment_slack, full, ok, Call, PYTHON,
    },
    peers::{grpc_calls, grpc_served, grpc_server},
    require_root,
    span::{Span, CLIENT, SERVER},
    OtlpSink, TempDir, World,
};

/// Test A: every call kind, in order, on one channel.
const CALLS: [Call; 10] = [
    ok("unary", "Unary"),
    ok("unary", "Unary"),
    ok("unary", "Unary"),
    ok("server_stream", "ServerStream"),
    ok("client_stream", "ClientStream"),
    ok("bidi", "BidiStream"),
    // NOT_FOUND: an error on the client's span only. INTERNAL: on both.
    Call {
        spec: "fail:NOT_FOUND",
        method: "Fail",
        client: "NOT_FOUND",
        server: &["NOT_FOUND"],
        contained: true,
    },
    Call {
        spec: "fail:INTERNAL",
        method: "Fail",
        client: "INTERNAL",
        server: &["INTERNAL"],
        contained: true,
    },
    // The client's deadline (200 ms, sent as `grpc-timeout: 200m`) passes while the server's
    // handler sleeps: the client resets the stream (RST_STREAM CANCEL) and gets DEADLINE_EXCEEDED;
    // no response frame of this stream ever reaches it (as seen with strace), so its span's status
    // comes from the reset after `grpc-timeout` (gRPC's own rule: CANCEL past the deadline is
    // DEADLINE_EXCEEDED). The server's own deadline timer (the same `grpc-timeout`, counted from
    // when it read the headers, so a little later) races with that RST_STREAM: when it fires
    // first, grpcio's server sends trailers with `grpc-status: 4` (DEADLINE_EXCEEDED); when the
    // RST_STREAM arrives first (what strace showed), the server sends nothing more and the stream
    // was cancelled (CANCELLED, or DEADLINE_EXCEEDED by that same rule). Either is a correct report
    // of what the server saw.
    Call {
        spec: "slow:200",
        method: "Slow",
        client: "DEADLINE_EXCEEDED",
        server: &["DEADLINE_EXCEEDED", "CANCELLED"],
        contained: false,
    },
    ok("unary", "Unary"),
];

/// The sink, the grpcio server and the agent watching its port.
fn grpc_world(name: &str) -> World {
    let dir = TempDir::new(name);
    let sink = OtlpSink::start(&dir);
    let server = grpc_server(&dir);
    let agent = Agent::start(
        &dir,
        &[server.port()],
        &[],
        &Export::Grpc(sink.grpc_endpoint()),
    );
    World {
        agent,
        gateway: None,
        server,
        sink,
        dir,
    }
}

/// Test A: 3 unary calls, one of each streaming kind, a NOT_FOUND and an INTERNAL failure, a call
/// past its 200 ms deadline, and a last unary call (the connection is still parsed after a
/// cancelled stream), in order on one channel: exactly one SERVER and one CLIENT span per call.
#[test]
fn unary_streaming_and_failing_calls_on_one_channel() {
    require_root!();
    let mut w = grpc_world("grpc-calls");
    let specs = CALLS.map(|c| c.spec);
    let run = grpc_calls(w.port(), &specs);
    let served = grpc_served(&w.server, CALLS.len());
    let client_port = check_run(&run, &served, &CALLS);

    let spans = w.finish(2 * CALLS.len());
    w.assert_counts(&spans, CALLS.len(), CALLS.len());
    assert_no_failures(
        &call_mismatches(&w, &spans, &run, client_port, &CALLS, (PYTHON, PYTHON)),
        &spans,
        "",
    );
}

/// Test B: 200 unary calls started together on one channel (grpcio futures; the server holds each
/// 100 ms in one of its 32 worker threads, so the 200 streams are open at once, up to 32 of them
/// in handlers, and their frames interleave on the connection): exactly 200 SERVER and 200 CLIENT
/// spans, each `sonde.test.Echo/Unary` and `OK`. Which CLIENT span
/// belongs to which SERVER span is not exported, so the timing check is per span: every SERVER span
/// lies within some CLIENT span, and every CLIENT span contains some SERVER span.
#[test]
fn concurrent_unary_calls_interleaved_on_one_channel() {
    require_root!();
    const N: usize = 200;
    let mut w = grpc_world("grpc-concurrent");
    let run = grpc_calls(w.port(), &[&format!("concurrent:{N}:100")]);
    let calls = [ok("", "Unary"); N];
    let served = grpc_served(&w.server, N);
    let client_port = check_run(&run, &served, &calls);
    let most = served.iter().map(|s| s.inflight).max().unwrap_or(0);
    assert!(
        most >= 2,
        "harness: the server never had two calls in flight at once (the calls did not overlap): \
         {served:?}"
    );

    let port = w.port();
    let spans = w.finish(2 * N);
    w.assert_counts(&spans, N, N);
    let method = full("Unary");
    let mut failures = Vec::new();
    for span in &spans {
        let expect = if span.is_server() {
            RpcSpan::server(&method, "OK", port)
                .pid(w.server.pid())
                .client_port(client_port)
        } else {
            RpcSpan::client(&method, "OK", port).pid(run.pid)
        };
        let expect = expect.service(PYTHON).max_duration(run.wall);
        for m in expect.mismatches(span) {
            failures.push(format!("{} {method}: {m}", span.kind));
        }
    }
    let (servers, clients): (Vec<&Span>, Vec<&Span>) = spans.iter().partition(|s| s.is_server());
    let contains = |c: &Span, s: &Span| containment_mismatch(c, s, containment_slack()).is_none();
    for s in &servers {
        if !clients.iter().any(|c| contains(c, s)) {
            failures.push(format!("SERVER span within no CLIENT span: {s}"));
        }
    }
    for c in &clients {
        if !servers.iter().any(|s| contains(c, s)) {
            failures.push(format!("CLIENT span containing no SERVER span: {c}"));
        }
    }
    assert_no_failures(&failures, &spans, "");
}

/// Test C: unary calls with a 12 KiB request (echoed), beyond the agent's global per-syscall
/// capture (4 KiB) but within what it captures on a socket it recognised as HTTP/2 (16 KiB), then
/// a small call on the same connection: one SERVER and one CLIENT span each, `OK`, named.
#[test]
fn messages_beyond_the_global_capture_size() {
    require_root!();
    const SIZES: [u64; 2] = [12 * 1024, 16];
    let mut w = grpc_world("grpc-large");
    let specs = SIZES.map(|n| format!("unary:{n}"));
    let specs: Vec<&str> = specs.iter().map(String::as_str).collect();
    let run = grpc_calls(w.port(), &specs);
    let calls = [ok("", "Unary"); SIZES.len()];
    let served = grpc_served(&w.server, SIZES.len());
    let client_port = check_run(&run, &served, &calls);
    let echoed: Vec<u64> = run.calls.iter().map(|c| c.response_bytes).collect();
    assert_eq!(echoed, SIZES, "harness: the echoed sizes");

    let spans = w.finish(2 * SIZES.len());
    w.assert_counts(&spans, SIZES.len(), SIZES.len());
    assert_no_failures(
        &call_mismatches(&w, &spans, &run, client_port, &calls, (PYTHON, PYTHON)),
        &spans,
        "",
    );
}

/// Test D: a 300 KiB request, past what the agent captures of one syscall even on HTTP/2 (the
/// client writes up to HTTP/2's 64 KiB flow-control window in one `sendmsg`, the server reads as
/// much in one `recvmsg`), then two small calls on the same connection. Frames past a syscall's
/// 16 KiB capture are lost, with the direction's HPACK table: the big call's span may be lost on
/// either side (counted as `hole_in_frame_header`, `dropped_by_gap`), and later spans may lack
/// `rpc.method` (their `:path` refers to a table entry inserted before the loss) or
/// `rpc.response.status_code` (`grpc-status`, likewise). What must hold: both small calls are
/// reported on each side, every span is gRPC, none names a wrong method or a status other than
/// `OK`, and the agent counts the loss.
#[test]
fn messages_beyond_the_http2_capture_lose_only_what_they_must() {
    require_root!();
    const SIZES: [u64; 3] = [300 * 1024, 16, 16];
    let mut w = grpc_world("grpc-huge");
    let specs = SIZES.map(|n| format!("unary:{n}"));
    let specs: Vec<&str> = specs.iter().map(String::as_str).collect();
    let run = grpc_calls(w.port(), &specs);
    let calls = [ok("", "Unary"); SIZES.len()];
    let served = grpc_served(&w.server, SIZES.len());
    let client_port = check_run(&run, &served, &calls);

    let spans = w.finish(2 * SIZES.len());
    let mut failures = Vec::new();
    for kind in [SERVER, CLIENT] {
        let n = spans.iter().filter(|s| s.kind == kind).count();
        if !(SIZES.len() - 1..=SIZES.len()).contains(&n) {
            failures.push(format!(
                "{n} {kind} spans, want {} or {}",
                SIZES.len() - 1,
                SIZES.len()
            ));
        }
    }
    let want = full("Unary");
    let server = RpcSpan::server(&want, "OK", w.port())
        .service(PYTHON)
        .pid(w.server.pid())
        .client_port(client_port)
        .max_duration(run.wall);
    for span in spans.iter().filter(|s| s.is_server()) {
        let unnamed = span.attr_str("rpc.method").is_none();
        for m in server.mismatches(span) {
            // A span whose `:path` went unknown lacks the method (and is named `grpc`).
            let unknown_field = (unnamed
                && (m.starts_with("rpc.method:") || m.starts_with("name:")))
                || (span.attr_str("rpc.response.status_code").is_none()
                    && m.starts_with("rpc.response.status_code:"));
            if !unknown_field {
                failures.push(format!("SERVER: {m}"));
            }
        }
    }
    for span in spans.iter().filter(|s| s.is_client()) {
        if span.attr_str("rpc.system.name") != Some("grpc") {
            failures.push(format!("CLIENT span is not gRPC: {span}"));
        }
        if span
            .attr_str("rpc.response.status_code")
            .is_some_and(|code| code != "OK")
        {
            failures.push(format!(
                "CLIENT span status is neither OK nor absent: {span}"
            ));
        }
        if let Some(method) = span.attr_str("rpc.method") {
            if method != want {
                failures.push(format!(
                    "CLIENT span names a wrong method {method:?}: {span}"
                ));
            }
        }
    }
    let logs = w.agent.logs();
    if !logs.contains("http2.hole_in_frame_header=") {
        failures.push("the agent's stats do not count the HTTP/2 capture loss".to_owned());
    }
    assert_no_failures(&failures, &spans, "");
}
