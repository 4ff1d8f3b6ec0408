//! The agent exports OTLP/gRPC to rotel (a real OpenTelemetry collector), which batches and
//! forwards to the sink: the spans must survive a third-party OTLP implementation intact.

use agent_tests::{peers::curl, require_root, span::describe, Peer, Via, Watch, World};

#[test]
fn spans_arrive_through_rotel_with_their_attributes() {
    require_root!();
    let mut w = World::start("rotel", Peer::Python, Via::Rotel, Watch::Server);
    let paths = ["/status/200", "/status/503"];
    let run = curl(&paths.map(|p| w.server.url(p)), &[]);

    let spans = w.finish(4);
    w.assert_counts(&spans, 2, 2);
    w.assert_curl_to_python(&spans, &run, &paths);
    // Everything the sink got came from rotel (the agent never knew the sink's address).
    let raw = w.sink.raw();
    assert!(
        raw.lines().all(|l| l.contains(r#""transport": "grpc""#)),
        "the sink got something other than rotel's OTLP/gRPC:\n{raw}\nspans:\n{}",
        describe(&spans)
    );
}
