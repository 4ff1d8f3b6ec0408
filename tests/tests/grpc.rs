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

use std::collections::BTreeSet;

use agent_tests::{
    agent::{Agent, Export},
    expect::{containment_mismatch, RpcSpan, Service},
    peers::{grpc_calls, grpc_served, grpc_server, GrpcRun, GrpcServed},
    require_root,
    span::{describe, Span, CLIENT, SERVER},
    OtlpSink, TempDir, World,
};

const PYTHON: Service = Service::Prefix("python3");
const SERVICE: &str = "sonde.test.Echo";

/// How far a CLIENT span's ends may stick out of its SERVER span's: the two syscalls race to
/// return (as in `tests/oracle.rs`), 1 ms. Inside the VM harness (`SONDE_EXPECT_CAPTURE` set by
/// `cargo xtask test --vm`, TCG emulation) a vCPU can be descheduled for milliseconds between
/// delivering a write's bytes and returning from it (seen: a server's last write returned 3.8 ms
/// after the client had read its bytes), so 10 ms there.
fn containment_slack() -> std::time::Duration {
    if std::env::var_os("SONDE_EXPECT_CAPTURE").is_some() {
        std::time::Duration::from_millis(10)
    } else {
        std::time::Duration::from_millis(1)
    }
}

/// One call of a `grpc_peer.py call` run and how both ends must report it.
#[derive(Debug, Clone, Copy)]
struct Call {
    /// The `grpc_peer.py call` spec.
    spec: &'static str,
    /// The method within [`SERVICE`].
    method: &'static str,
    /// The status the client gets (and its span must carry).
    client: &'static str,
    /// The statuses the server's span may carry (the first is what the server itself sends).
    server: &'static [&'static str],
    /// Whether the CLIENT span must contain the SERVER span: not when the call's last frame goes
    /// from client to server (the client's RST_STREAM at its deadline), which the server can only
    /// see after the client's span ended.
    contained: bool,
}

const fn ok(spec: &'static str, method: &'static str) -> Call {
    Call {
        spec,
        method,
        client: "OK",
        server: &["OK"],
        contained: true,
    }
}

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

/// `sonde.test.Echo/<method>`.
fn full(method: &str) -> String {
    format!("{SERVICE}/{method}")
}

/// Harness checks: the client saw each call end as planned, and the server saw the same calls, in
/// the same order, all from one client port (one connection), which it returns.
fn check_run(run: &GrpcRun, served: &[GrpcServed], calls: &[Call]) -> u16 {
    let got: Vec<(&str, &str)> = run
        .calls
        .iter()
        .map(|c| (c.method.as_str(), c.status.as_str()))
        .collect();
    let want: Vec<(&str, &str)> = calls.iter().map(|c| (c.method, c.client)).collect();
    assert_eq!(got, want, "harness: the gRPC client's calls: {run:?}");
    let got: Vec<&str> = served.iter().map(|s| s.method.as_str()).collect();
    let want: Vec<&str> = calls.iter().map(|c| c.method).collect();
    assert_eq!(got, want, "harness: the calls the gRPC server saw");
    let ports: BTreeSet<u16> = served.iter().map(|s| s.client_port).collect();
    assert_eq!(
        ports.len(),
        1,
        "harness: the client used {} connections, want one: {served:?}",
        ports.len()
    );
    ports.into_iter().next().expect("one port")
}

/// The spans of `kind` for `method` that `expect` accepts the status of, in start order.
fn spans_of<'a>(spans: &'a [Span], kind: &str, expect: &RpcSpan) -> Vec<&'a Span> {
    let mut found: Vec<&Span> = spans
        .iter()
        .filter(|s| {
            s.kind == kind
                && s.attr_str("rpc.method") == Some(expect.method.as_str())
                && expect.status_accepted(s)
        })
        .collect();
    found.sort_by_key(|s| s.start_time_unix_nano);
    found
}

/// Every way the spans differ from `calls` made by `run` over one connection from `client_port`:
/// per (method, client status), as many SERVER and CLIENT spans as calls, each matching its
/// contract; calls of one kind are paired in start order (they ran one after another) and, when
/// [`Call::contained`], the CLIENT span must contain the SERVER span.
fn mismatches(
    w: &World,
    spans: &[Span],
    run: &GrpcRun,
    client_port: u16,
    calls: &[Call],
) -> Vec<String> {
    let mut failures = Vec::new();
    let mut groups: Vec<(Call, usize)> = Vec::new();
    for call in calls {
        match groups
            .iter_mut()
            .find(|(c, _)| c.method == call.method && c.client == call.client)
        {
            Some((_, n)) => *n += 1,
            None => groups.push((*call, 1)),
        }
    }
    for (call, n) in groups {
        let method = full(call.method);
        let mut server = RpcSpan::server(&method, call.server[0], w.port());
        for alternative in &call.server[1..] {
            server = server.or_status(alternative);
        }
        let server = server
            .service(PYTHON)
            .pid(w.server.pid())
            .client_port(client_port)
            .max_duration(run.wall);
        let client = RpcSpan::client(&method, call.client, w.port())
            .service(PYTHON)
            .pid(run.pid)
            .max_duration(run.wall);
        let servers = spans_of(spans, SERVER, &server);
        let clients = spans_of(spans, CLIENT, &client);
        let label = format!("{method} ({})", call.client);
        for (kind, found, statuses) in [
            (SERVER, &servers, server.statuses.join("|")),
            (CLIENT, &clients, call.client.to_owned()),
        ] {
            if found.len() != n {
                failures.push(format!(
                    "{label}: want {n} {kind} spans with rpc.method {method:?} and \
                     rpc.response.status_code {statuses}, found {}",
                    found.len()
                ));
            }
        }
        for (expect, found) in [(&server, &servers), (&client, &clients)] {
            for span in found {
                for m in expect.mismatches(span) {
                    failures.push(format!("{label} {}: {m}", span.kind));
                }
            }
        }
        if call.contained && servers.len() == n && clients.len() == n {
            for (i, (c, s)) in clients.iter().zip(&servers).enumerate() {
                if let Some(m) = containment_mismatch(c, s, containment_slack()) {
                    failures.push(format!("{label} call {i}: {m}"));
                }
            }
        }
    }
    failures
}

/// Panics listing every failure and every span, unless `failures` is empty.
fn assert_none(failures: &[String], spans: &[Span]) {
    assert!(
        failures.is_empty(),
        "{} mismatches:\n  - {}\nall spans:\n{}",
        failures.len(),
        failures.join("\n  - "),
        describe(spans)
    );
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
    assert_none(&mismatches(&w, &spans, &run, client_port, &CALLS), &spans);
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
    assert_none(&failures, &spans);
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
    assert_none(&mismatches(&w, &spans, &run, client_port, &calls), &spans);
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
    assert_none(&failures, &spans);
}
