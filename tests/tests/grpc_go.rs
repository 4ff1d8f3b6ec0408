//! gRPC between two implementations: the Python grpcio client (`peers/grpc_peer.py call`, one
//! channel, so one HTTP/2 connection) against a grpc-go server (`peers/grpc_go_peer.go`: grpc-go
//! 1.33.3 on go1.19 from Debian's packages, built in GOPATH mode on first use into
//! `target/e2e-go/`; raw-bytes codec, hand-written `sonde.test.Echo` service with the methods of
//! `grpc_peer.py serve`). grpc-go has its own HTTP/2 stack and HPACK encoder (its own
//! dynamic-table choices, a separate `loopyWriter` goroutine writing frames with plain `write`),
//! so the SERVER spans come from bytes no grpcio process wrote.
//!
//! Exactly one SERVER span (from the Go binary: `service.name` `grpc_go_peer`, its file name) and
//! one CLIENT span (grpcio) per call, named `rpc.method`, with the gRPC status both ends saw and
//! semconv's status rules; each CLIENT span containing its SERVER span (± 1 ms) except past the
//! deadline. Skipped, with the reason, without Debian's `golang-go` and `golang-google-grpc-dev`.

use agent_tests::{
    expect::Service,
    grpc_extra::{
        agent_stats_lines, assert_no_failures, call_mismatches, check_run, go_grpc_unavailable,
        grpc_go_server, grpc_world_with, ok, Call, GO_PEER, PYTHON,
    },
    peers::{grpc_calls, grpc_served},
    require_root,
};

/// Every call on one channel, in order.
const CALLS: [Call; 6] = [
    ok("unary", "Unary"),
    ok("unary", "Unary"),
    ok("unary", "Unary"),
    // NOT_FOUND: an error on the client's span only.
    Call {
        spec: "fail:NOT_FOUND",
        method: "Fail",
        client: "NOT_FOUND",
        server: &["NOT_FOUND"],
        contained: true,
    },
    // The client's 200 ms deadline passes while the Go handler waits on its context. The client
    // resets the stream (RST_STREAM CANCEL, past `grpc-timeout`: DEADLINE_EXCEEDED). grpc-go's
    // server cancels the handler's context at its own deadline (the same `grpc-timeout`, counted
    // from when it read the headers) and the handler then returns DEADLINE_EXCEEDED, which
    // grpc-go sends in trailers if the client's RST_STREAM has not closed the stream yet; if it
    // has, nothing more is sent and the server saw a reset stream (CANCELLED, or
    // DEADLINE_EXCEEDED by gRPC's rule for a CANCEL past the deadline).
    Call {
        spec: "slow:200",
        method: "Slow",
        client: "DEADLINE_EXCEEDED",
        server: &["DEADLINE_EXCEEDED", "CANCELLED"],
        contained: false,
    },
    ok("server_stream", "ServerStream"),
];

#[test]
fn grpcio_client_against_a_grpc_go_server() {
    require_root!();
    if let Some(why) = go_grpc_unavailable() {
        println!("skipping: {why}");
        return;
    }
    let mut w = grpc_world_with("grpc-go", grpc_go_server);
    let specs = CALLS.map(|c| c.spec);
    let run = grpc_calls(w.port(), &specs);
    let served = grpc_served(&w.server, CALLS.len());
    let client_port = check_run(&run, &served, &CALLS);

    let spans = w.finish(2 * CALLS.len());
    let stats = format!("agent stats:\n{}", agent_stats_lines(&w.agent));
    let mut failures = call_mismatches(
        &w,
        &spans,
        &run,
        client_port,
        &CALLS,
        (Service::Exact(GO_PEER), PYTHON),
    );
    let servers = spans.iter().filter(|s| s.is_server()).count();
    let clients = spans.iter().filter(|s| s.is_client()).count();
    if (servers, clients, spans.len()) != (CALLS.len(), CALLS.len(), 2 * CALLS.len()) {
        failures.push(format!(
            "{servers} SERVER and {clients} CLIENT spans, {} in all; want exactly {n} and {n}",
            spans.len(),
            n = CALLS.len()
        ));
    }
    assert_no_failures(&failures, &spans, &stats);
}
