//! A keep-alive connection opened (and used once) before the agent starts is still traced once the
//! agent runs: it finds the socket through `/proc/<pid>/fd` and `/proc/<pid>/net/tcp`, gives each
//! end its role (the listening side is the server) and the right 4-tuple. The request made before
//! the agent started must not appear.

use agent_tests::{
    expect::{HttpSpan, Service},
    peers::StdinClient,
    require_root,
    span::{describe, CLIENT, SERVER},
    world::{one, Stage},
    Peer, Via, Watch,
};

const PYTHON: Service = Service::Prefix("python3");

#[test]
fn connection_opened_before_the_agent_is_traced() {
    require_root!();
    let stage = Stage::start("preexisting", Peer::Python, Via::SinkGrpc);
    // Connected, and one request answered, before the agent exists.
    let mut client = StdinClient::connect(&stage.dir, stage.port());
    let before = client.get("/status/203");
    assert_eq!(before.status, 203, "harness: unexpected status {before:?}");

    // While the agent attaches, the server's handler thread is parked in recv() on this connection
    // (waiting for the next request) and the client is idle: the first request below is the first
    // one the server receives through a syscall that began before the probes existed. It must be
    // traced like the others.
    let mut w = stage.start_agent(Watch::Server, &[]);
    let paths = ["/status/200", "/status/201", "/status/404"];
    let transfers: Vec<_> = paths.iter().map(|p| client.get(p)).collect();
    let statuses: Vec<i64> = transfers.iter().map(|t| t.status).collect();
    assert_eq!(
        statuses,
        [200, 201, 404],
        "harness: unexpected statuses from the server"
    );
    let client_pid = client.pid();
    let local_port = client.local_port;
    // The connection stays open until the agent has stopped: only /proc told it about this socket.
    let spans = w.finish(6);
    let run = client.quit();
    assert_eq!(
        run.connections(),
        1,
        "harness: the client reconnected: {run:?}"
    );

    let early: Vec<_> = spans
        .iter()
        .filter(|s| s.attr_str("url.path") == Some("/status/203"))
        .cloned()
        .collect();
    assert!(
        early.is_empty(),
        "the request made before the agent started was reported:\n{}",
        describe(&early)
    );
    w.assert_counts(&spans, 3, 3);
    for (path, t) in paths.iter().zip(&transfers) {
        HttpSpan::server("GET", path, t.status, w.port())
            .service(PYTHON)
            .pid(w.server.pid())
            .client_port(local_port)
            .no_user_agent()
            .response_body_size(t.body_bytes)
            .assert(one(&spans, SERVER, path));
        HttpSpan::client("GET", path, t.status, w.port())
            .service(PYTHON)
            .pid(client_pid)
            .no_user_agent()
            .response_body_size(t.body_bytes)
            .assert(one(&spans, CLIENT, path));
    }
}
