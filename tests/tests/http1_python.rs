//! HTTP/1.1 between curl (CLIENT spans) and Python's `http.server` (SERVER spans): keep-alive and
//! not, statuses, request and chunked response bodies, and the query string staying unexported.

use std::collections::BTreeSet;

use agent_tests::{
    expect::{HttpSpan, Service},
    peers::{curl, python_client_with_headers, ClientRun, CHUNKED_BODY_BYTES},
    require_root,
    span::{describe, Span, CLIENT, SERVER},
    world::one,
    Peer, Via, Watch, World,
};

const PYTHON: Service = Service::Prefix("python3");
const CURL: Service = Service::Exact("curl");

/// The SERVER and CLIENT expectations for the `i`-th transfer of `run`.
fn expected(
    w: &World,
    run: &ClientRun,
    i: usize,
    method: &'static str,
    path: &str,
) -> (HttpSpan, HttpSpan) {
    let t = &run.transfers[i];
    let server = HttpSpan::server(method, path, t.status, w.port())
        .service(PYTHON)
        .pid(w.server.pid())
        .client_port(t.local_port)
        .user_agent_prefix("curl/")
        .response_body_size(t.body_bytes)
        .max_duration(run.wall);
    let client = HttpSpan::client(method, path, t.status, w.port())
        .service(CURL)
        .pid(run.pid)
        .user_agent_prefix("curl/")
        .response_body_size(t.body_bytes)
        .max_duration(run.wall);
    (server, client)
}

fn peer_ports(spans: &[Span]) -> BTreeSet<i64> {
    spans
        .iter()
        .filter(|s| s.is_server())
        .filter_map(|s| s.attr_int("network.peer.port"))
        .collect()
}

#[test]
fn keep_alive_three_requests_on_one_connection() {
    require_root!();
    let mut w = World::python("py-keepalive");
    let paths = ["/status/200", "/status/201", "/status/202"];
    let run = curl(&paths.map(|p| w.server.url(p)), &[]);
    assert_eq!(
        run.connections(),
        1,
        "harness: curl did not reuse its connection: {run:?}"
    );

    let spans = w.finish(6);
    w.assert_counts(&spans, 3, 3);
    for (i, path) in paths.iter().enumerate() {
        let (server, client) = expected(&w, &run, i, "GET", path);
        server.assert(one(&spans, SERVER, path));
        client.assert(one(&spans, CLIENT, path));
    }
    assert_eq!(
        peer_ports(&spans).len(),
        1,
        "one connection, one client port:\n{}",
        describe(&spans)
    );
}

#[test]
fn three_connections_without_keep_alive() {
    require_root!();
    let mut w = World::python("py-no-keepalive");
    let paths = ["/status/200", "/status/203", "/status/204"];
    let runs: Vec<ClientRun> = paths
        .iter()
        .map(|p| curl(&[w.server.url(p)], &[]))
        .collect();
    let client_ports: BTreeSet<u16> = runs.iter().map(|r| r.transfers[0].local_port).collect();
    assert_eq!(
        client_ports.len(),
        3,
        "harness: expected three connections: {runs:?}"
    );

    let spans = w.finish(6);
    w.assert_counts(&spans, 3, 3);
    for (path, run) in paths.iter().zip(&runs) {
        let (server, client) = expected(&w, run, 0, "GET", path);
        server.assert(one(&spans, SERVER, path));
        client.assert(one(&spans, CLIENT, path));
    }
    assert_eq!(
        peer_ports(&spans).len(),
        3,
        "three connections:\n{}",
        describe(&spans)
    );
}

#[test]
fn statuses_200_404_500() {
    require_root!();
    let mut w = World::python("py-statuses");
    let paths = ["/status/200", "/status/404", "/status/500"];
    let run = curl(&paths.map(|p| w.server.url(p)), &[]);
    let statuses: Vec<i64> = run.transfers.iter().map(|t| t.status).collect();
    assert_eq!(
        statuses,
        [200, 404, 500],
        "harness: unexpected statuses from the server"
    );

    let spans = w.finish(6);
    w.assert_counts(&spans, 3, 3);
    // `HttpSpan` derives the span status: ERROR for 5xx on the server, for >= 400 on the client.
    for (i, path) in paths.iter().enumerate() {
        let (server, client) = expected(&w, &run, i, "GET", path);
        server.assert(one(&spans, SERVER, path));
        client.assert(one(&spans, CLIENT, path));
    }
}

#[test]
fn post_body_size() {
    require_root!();
    let mut w = World::python("py-post");
    let body = "0123456789abcdef".repeat(20) + "tail";
    let size = i64::try_from(body.len()).expect("small body");
    let run = curl(
        &[w.server.url("/echo")],
        &[
            "--data-binary",
            &body,
            "--header",
            "Content-Type: application/octet-stream",
        ],
    );
    assert_eq!(
        run.transfers[0].body_bytes, size,
        "harness: /echo did not echo the body"
    );

    let spans = w.finish(2);
    w.assert_counts(&spans, 1, 1);
    let (server, client) = expected(&w, &run, 0, "POST", "/echo");
    server
        .request_body_size(size)
        .assert(one(&spans, SERVER, "/echo"));
    client
        .request_body_size(size)
        .assert(one(&spans, CLIENT, "/echo"));
}

#[test]
fn chunked_response_body_size_is_decoded_bytes() {
    require_root!();
    let mut w = World::python("py-chunked");
    let run = curl(&[w.server.url("/chunked")], &[]);
    assert_eq!(
        run.transfers[0].body_bytes, CHUNKED_BODY_BYTES,
        "harness: unexpected /chunked body"
    );

    let spans = w.finish(2);
    w.assert_counts(&spans, 1, 1);
    let (server, client) = expected(&w, &run, 0, "GET", "/chunked");
    server
        .response_body_size(CHUNKED_BODY_BYTES)
        .assert(one(&spans, SERVER, "/chunked"));
    client
        .response_body_size(CHUNKED_BODY_BYTES)
        .assert(one(&spans, CLIENT, "/chunked"));
}

#[test]
fn query_string_is_not_exported() {
    require_root!();
    let mut w = World::python("py-query");
    let run = curl(&[w.server.url("/status/200?token=secret")], &[]);

    let spans = w.finish(2);
    w.assert_counts(&spans, 1, 1);
    let (server, client) = expected(&w, &run, 0, "GET", "/status/200");
    server.assert(one(&spans, SERVER, "/status/200"));
    client.assert(one(&spans, CLIENT, "/status/200"));
    for span in &spans {
        let leaked: Vec<String> = span.all_values().filter(|v| v.contains("secret")).collect();
        assert!(
            leaked.is_empty(),
            "the query string leaked into {leaked:?}\nspan: {span}"
        );
    }
}

/// The agent exports over OTLP/HTTP (HTTP/1.1 POSTs it can parse, set by the `--otlp-*` flags) and
/// its filter includes the sink's ports, so only the agent itself can keep its export connections
/// (either end: the agent's CLIENT side or the sink's SERVER side) out of the spans. Three separate
/// curl runs spread over several export rounds.
#[test]
fn own_export_traffic_is_not_reported() {
    require_root!();
    let mut w = World::start(
        "py-own-traffic",
        Peer::Python,
        Via::SinkHttpFlags,
        Watch::AlsoExporterPorts,
    );
    let runs: Vec<ClientRun> = (0..3)
        .map(|i| {
            // Longer than OTEL_BSP_SCHEDULE_DELAY (200 ms): each run's spans go out in their own export.
            std::thread::sleep(std::time::Duration::from_millis(600));
            curl(&[w.server.url(&format!("/status/20{i}"))], &[])
        })
        .collect();
    let spans = w.finish(6);
    let sink_port = w.sink.http_port();
    let own: Vec<Span> = w.sink.spans_where(|s| {
        s.is_for_port(sink_port)
            || s.is_for_port(w.sink.grpc_port())
            || s.resource_str("service.name") == Some("sonde")
            || s.attr_str("url.path") == Some("/v1/traces")
    });
    assert!(
        own.is_empty(),
        "the agent reported its own export traffic:\n{}",
        describe(&own)
    );
    w.assert_counts(&spans, 3, 3);
    for (i, run) in runs.iter().enumerate() {
        let path = format!("/status/20{i}");
        let (server, client) = expected(&w, run, 0, "GET", &path);
        server.assert(one(&spans, SERVER, &path));
        client.assert(one(&spans, CLIENT, &path));
    }
}

/// A W3C `traceparent` on the request makes the SERVER span a child of the caller's span in the
/// caller's trace; `Authorization` and `Cookie` values never leave the host (Python `http.client`).
#[test]
fn traceparent_is_joined_and_credentials_are_not_exported() {
    require_root!();
    const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
    const PARENT_ID: &str = "00f067aa0ba902b7";
    const SECRET: &str = "s3cret";
    let mut w = World::python("py-traceparent");
    let traceparent = format!("traceparent: 00-{TRACE_ID}-{PARENT_ID}-01");
    let run = python_client_with_headers(
        w.port(),
        "/status/200",
        &[
            &traceparent,
            &format!("Authorization: Bearer {SECRET}"),
            &format!("Cookie: session={SECRET}"),
        ],
    );
    let t = &run.transfers[0];
    assert_eq!(t.status, 200, "harness: unexpected status {run:?}");

    let spans = w.finish(2);
    w.assert_counts(&spans, 1, 1);
    let server = one(&spans, SERVER, "/status/200");
    let client = one(&spans, CLIENT, "/status/200");
    HttpSpan::server("GET", "/status/200", 200, w.port())
        .service(PYTHON)
        .pid(w.server.pid())
        .client_port(t.local_port)
        .no_user_agent()
        .response_body_size(t.body_bytes)
        .max_duration(run.wall)
        .assert(server);
    HttpSpan::client("GET", "/status/200", 200, w.port())
        .service(PYTHON)
        .pid(run.pid)
        .no_user_agent()
        .response_body_size(t.body_bytes)
        .max_duration(run.wall)
        .assert(client);
    assert_eq!(
        (server.trace_id.as_str(), server.parent_span_id.as_str()),
        (TRACE_ID, PARENT_ID),
        "the SERVER span did not join the caller's trace as a child of its span: {server}"
    );
    assert!(
        server.span_id.len() == 16
            && server.span_id != PARENT_ID
            && server.span_id != "0".repeat(16),
        "the SERVER span needs its own valid span id: {server}"
    );

    for span in &spans {
        let leaked: Vec<String> = span.all_values().filter(|v| v.contains(SECRET)).collect();
        assert!(
            leaked.is_empty(),
            "a credential header value leaked into {leaked:?}\nspan: {span}"
        );
    }
    assert!(
        !w.sink.raw().contains(SECRET),
        "a credential header value reached the OTLP sink:\n{}",
        w.sink.raw()
    );
    let logs = w.agent.stdout() + &w.agent.stderr();
    assert!(
        !logs.contains(SECRET),
        "the agent logged a credential header value:\n{}",
        w.agent.logs()
    );
}
