//! Traffic that is not HTTP, or starts like HTTP and then breaks the grammar, on a watched port:
//! no span, and the agent still flushes and exits 0. A valid request on another watched port in
//! the same run proves the agent was capturing all along (exactly one span pair).

use agent_tests::{
    free_port,
    peers::{curl, raw_tcp},
    require_root,
    span::describe,
    Peer, Via, Watch, World,
};

fn no_spans_for(mode: &str) {
    let raw_port = free_port();
    let mut w = World::start(
        &format!("bad-{mode}"),
        Peer::Python,
        Via::SinkGrpc,
        Watch::AlsoPorts(&[raw_port]),
    );
    raw_tcp(mode, raw_port);
    curl(&[w.server.url("/status/200")], &[]);

    // `finish` stops the agent with SIGTERM and asserts exit status 0.
    let control = w.finish(2);
    w.assert_counts(&control, 1, 1);
    let all = w.sink.spans();
    let raw: Vec<_> = all
        .iter()
        .filter(|s| {
            s.is_for_port(raw_port) || s.attr_int("network.peer.port") == Some(i64::from(raw_port))
        })
        .cloned()
        .collect();
    assert!(
        raw.is_empty(),
        "{mode} traffic on port {raw_port} became spans:\n{}",
        describe(&raw)
    );
    assert_eq!(
        all.len(),
        2,
        "only the control request may produce spans:\n{}",
        describe(&all)
    );
}

#[test]
fn binary_exchange_yields_no_spans() {
    require_root!();
    no_spans_for("binary");
}

#[test]
fn malformed_http_yields_no_spans() {
    require_root!();
    no_spans_for("malformed");
}
