//! HTTP/1.1 over IPv6 loopback: curl → Python `http.server` on `[::1]`. Exactly one SERVER and one
//! CLIENT span, with `::1` as the peer, client and server address. Skipped (with the reason
//! printed) when IPv6 loopback is unavailable.

use agent_tests::{
    expect::{HttpSpan, Service},
    peers::{curl, ipv6_loopback_unavailable},
    require_root,
    span::{CLIENT, SERVER},
    world::one,
    Peer, Via, Watch, World,
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
    let t = &run.transfers[0];
    assert_eq!(t.status, 200, "harness: unexpected status {run:?}");

    let spans = w.finish(2);
    w.assert_counts(&spans, 1, 1);
    HttpSpan::server("GET", "/status/200", 200, w.port())
        .address("::1")
        .service(Service::Prefix("python3"))
        .pid(w.server.pid())
        .client_port(t.local_port)
        .user_agent_prefix("curl/")
        .response_body_size(t.body_bytes)
        .max_duration(run.wall)
        .assert(one(&spans, SERVER, "/status/200"));
    HttpSpan::client("GET", "/status/200", 200, w.port())
        .address("::1")
        .service(Service::Exact("curl"))
        .pid(run.pid)
        .user_agent_prefix("curl/")
        .response_body_size(t.body_bytes)
        .max_duration(run.wall)
        .assert(one(&spans, CLIENT, "/status/200"));
}
