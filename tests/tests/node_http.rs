//! Node.js over plain HTTP/1.1 keep-alive, both ends: Node's `http` server (chunked responses,
//! which Node writes corked, as one `writev` of many iovecs: a size line, the data and a CRLF per
//! chunk) and Node's `http.get` with a keep-alive agent. Every exchange on the connection is one
//! SERVER span from the server process and one CLIENT span from the client process, with the
//! decoded body size, the last one included (the one the issue found missing when only 4 iovecs
//! were copied and the terminating chunk was never seen).

use agent_tests::{
    expect::{HttpSpan, Service},
    peers::{node_http_client, node_http_server, node_unavailable},
    require_root,
    span::{CLIENT, SERVER},
    world::one,
    World,
};

const NODE: Service = Service::Exact("node");
/// Small and large chunked bodies around sized ones; the last request is chunked too.
const PATHS: [&str; 5] = [
    "/chunked/3",
    "/status/200",
    "/chunked/40",
    "/status/404",
    "/chunked/12",
];

#[test]
fn node_server_and_client_keep_alive_chunked_responses() {
    require_root!();
    if let Some(reason) = node_unavailable() {
        println!("skipping: {reason}");
        return;
    }
    let mut w = World::start_server_after_agent("node-http", node_http_server);
    let run = node_http_client(w.port(), &PATHS);
    assert_eq!(
        run.transfers.len(),
        PATHS.len(),
        "harness: the Node client did not make every request: {run:?}"
    );
    assert_eq!(
        run.connections(),
        1,
        "harness: the Node client did not keep its connection alive: {run:?}"
    );
    let spans = w.finish(2 * PATHS.len());
    w.assert_counts(&spans, PATHS.len(), PATHS.len());
    for (t, path) in run.transfers.iter().zip(PATHS) {
        HttpSpan::server("GET", path, t.status, w.port())
            .service(NODE)
            .pid(w.server.pid())
            .client_port(t.local_port)
            .no_user_agent()
            .response_body_size(t.body_bytes)
            .max_duration(run.wall)
            .assert(one(&spans, SERVER, path));
        HttpSpan::client("GET", path, t.status, w.port())
            .service(NODE)
            .pid(run.pid)
            .no_user_agent()
            .response_body_size(t.body_bytes)
            .max_duration(run.wall)
            .assert(one(&spans, CLIENT, path));
    }
}
