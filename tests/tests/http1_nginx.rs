//! HTTP/1.1 against nginx (SERVER spans; `sendfile on`, so static bodies never pass through
//! `write()`), driven by curl and by Python's `http.client` (CLIENT spans), including 100
//! concurrent connections.

use std::collections::BTreeSet;

use agent_tests::{
    expect::{HttpSpan, Service},
    peers::{curl, python_client, ClientRun, NGINX_INDEX_BYTES},
    require_root,
    span::{describe, Span, CLIENT, SERVER},
    world::{one, SPAN_TIMEOUT},
    World,
};

const NGINX: Service = Service::Exact("nginx");
const PATHS: [&str; 3] = ["/index.html", "/status/404", "/status/500"];

/// The client saw what nginx serves: 200 with the static file, then 404, then 500.
fn check_three(run: &ClientRun) {
    let statuses: Vec<i64> = run.transfers.iter().map(|t| t.status).collect();
    assert_eq!(
        statuses,
        [200, 404, 500],
        "harness: unexpected statuses from nginx: {run:?}"
    );
    let index_bytes = i64::try_from(NGINX_INDEX_BYTES).expect("small file");
    assert_eq!(
        run.transfers[0].body_bytes, index_bytes,
        "harness: unexpected index.html size"
    );
}

/// Exactly one SERVER (nginx) and one CLIENT span per path, matching what the client saw.
/// `user_agent`: the header's prefix, or `None` when the client sends none.
fn assert_three(
    w: &World,
    spans: &[Span],
    run: &ClientRun,
    client: Service,
    user_agent: Option<&'static str>,
) {
    w.assert_counts(spans, 3, 3);
    for (i, path) in PATHS.iter().enumerate() {
        let t = &run.transfers[i];
        let server = HttpSpan::server("GET", path, t.status, w.port())
            .service(NGINX)
            .pid(w.server.pid())
            .client_port(t.local_port);
        let client = HttpSpan::client("GET", path, t.status, w.port())
            .service(client)
            .pid(run.pid);
        for (expect, kind) in [(server, SERVER), (client, CLIENT)] {
            let expect = expect
                .response_body_size(t.body_bytes)
                .max_duration(run.wall);
            let expect = match user_agent {
                Some(prefix) => expect.user_agent_prefix(prefix),
                None => expect.no_user_agent(),
            };
            expect.assert(one(spans, kind, path));
        }
    }
}

#[test]
fn curl_static_file_404_500() {
    require_root!();
    let mut w = World::nginx("nginx-curl");
    let run = curl(&PATHS.map(|p| w.server.url(p)), &[]);
    check_three(&run);

    let spans = w.finish(6);
    assert_three(&w, &spans, &run, Service::Exact("curl"), Some("curl/"));
}

#[test]
fn python_keep_alive_client_static_file_404_500() {
    require_root!();
    let mut w = World::nginx("nginx-python");
    let mut args = vec!["keepalive".to_owned(), w.port().to_string()];
    args.extend(PATHS.map(str::to_owned));
    let run = python_client(&args);
    check_three(&run);
    // nginx closes the connection after a 500, which comes last: one connection for all three.
    assert_eq!(
        run.connections(),
        1,
        "harness: http.client did not keep its connection: {run:?}"
    );

    let spans = w.finish(6);
    // http.client (unlike urllib) sends no User-Agent header.
    assert_three(&w, &spans, &run, Service::Prefix("python3"), None);
}

#[test]
fn one_hundred_parallel_connections() {
    require_root!();
    const N: usize = 100;
    let mut w = World::nginx("nginx-parallel");
    let run = python_client(&[
        "parallel".to_owned(),
        w.port().to_string(),
        N.to_string(),
        "/index.html".to_owned(),
    ]);
    assert_eq!(
        run.transfers.len(),
        N,
        "harness: not every request completed"
    );
    assert!(
        run.transfers.iter().all(|t| t.status == 200),
        "harness: some requests failed: {run:?}"
    );
    assert_eq!(
        run.connections(),
        N,
        "harness: connections were not distinct"
    );

    let port = w.port();
    w.sink
        .wait_for_spans(|s| s.is_for_port(port), 2 * N, SPAN_TIMEOUT * 2);
    let spans = w.finish(2 * N);
    w.assert_counts(&spans, N, N);

    let index_bytes = i64::try_from(NGINX_INDEX_BYTES).expect("small file");
    for span in &spans {
        let expect = if span.is_server() {
            HttpSpan::server("GET", "/index.html", 200, port)
                .service(NGINX)
                .pid(w.server.pid())
        } else {
            HttpSpan::client("GET", "/index.html", 200, port)
                .service(Service::Prefix("python3"))
                .pid(run.pid)
        };
        expect
            .response_body_size(index_bytes)
            .max_duration(run.wall)
            .assert(span);
    }
    let client_ports: BTreeSet<i64> = run
        .transfers
        .iter()
        .map(|t| i64::from(t.local_port))
        .collect();
    let span_ports: BTreeSet<i64> = spans
        .iter()
        .filter(|s| s.is_server())
        .filter_map(|s| s.attr_int("network.peer.port"))
        .collect();
    assert_eq!(
        span_ports,
        client_ports,
        "SERVER spans' network.peer.port != the clients' ports:\n{}",
        describe(&spans)
    );
}
