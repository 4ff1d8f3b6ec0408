//! HTTP/1.1 over IPv6 loopback: curl → Python `http.server` on `[::1]`. Exactly one SERVER and one
//! CLIENT span, with `::1` as the peer, client and server address. Skipped (with the reason
//! printed) when IPv6 loopback is unavailable.

use agent_tests::{
    peers::{curl, ipv6_loopback_unavailable},
    require_root, Peer, Via, Watch, World,
};

#[test]
fn curl_to_python_on_ipv6_loopback() {
    require_root!();
    if let Some(reason) = ipv6_loopback_unavailable() {
        println!("skipping: {reason}");
        return;
    }
    let mut w = World::start("ipv6", Peer::PythonIpv6, Via::SinkGrpc, Watch::Server);
    let url = w.server.url("/status/200");
    assert!(url.starts_with("http://[::1]:"), "harness: {url}");
    let run = curl(&[url], &[]);
    assert_eq!(
        run.transfers[0].status, 200,
        "harness: unexpected status {run:?}"
    );

    let spans = w.finish(2);
    w.assert_counts(&spans, 1, 1);
    w.assert_curl_to_python(&spans, &run, &["/status/200"]);
}
