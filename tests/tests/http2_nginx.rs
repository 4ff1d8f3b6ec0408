//! Plain HTTP/2 (h2c with prior knowledge) against nginx (`peers/nginx_h2.conf`, `sendfile on`):
//! one SERVER span (nginx) and one CLIENT span per stream, with the HTTP/1.1 span contract except
//! `network.protocol.version` `2`. Clients: curl (`--http2-prior-knowledge`, one request per
//! process and connection: Debian 12's curl 7.88.1 cannot reuse a prior-knowledge connection),
//! `h2load -c 1 -m 1` (requests one after another on one connection), `nghttp` (every request sent
//! at once: concurrent streams on one connection) and `h2load` (200 requests on 2 connections, 2
//! concurrent streams each).
//!
//! nginx's access log says what nginx saw (client port, method, URI, status, protocol, body bytes,
//! User-Agent per request), so the spans are checked against it: the same (method, path, status,
//! client port) multiset on the SERVER side, the same (method, path, status) multiset on the CLIENT
//! side, and every span's attributes, `user_agent.original` equal to the logged User-Agent.
//! `http.response.body.size` (the DATA payload bytes) is optional for HTTP/2 spans, but when
//! present it must equal `$body_bytes_sent`.

use agent_tests::{
    agent::{Agent, Export},
    expect::Service,
    h2_nginx::{assert_none, check_h2load, check_log, mismatches, Client, Timing, H2C},
    peers::{curl_http2, h2load, nghttp, nginx_access_log, nginx_h2c, ClientRun},
    require_root,
    world::SPAN_TIMEOUT,
    OtlpSink, TempDir, World,
};

/// The sink, nginx serving h2c and the agent watching its port.
fn h2_world(name: &str) -> World {
    let dir = TempDir::new(name);
    let sink = OtlpSink::start(&dir);
    let server = nginx_h2c(&dir);
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

/// curl, one process and connection per request: the static file, `return 404`, `return 500`
/// (an error on the SERVER span too). Each connection carries one stream (id 1).
#[test]
fn curl_prior_knowledge_one_request_per_connection() {
    require_root!();
    const PATHS: [(&str, i64); 3] = [
        ("/index.html", 200),
        ("/status/404", 404),
        ("/status/500", 500),
    ];
    let mut w = h2_world("h2-curl");
    let runs: Vec<ClientRun> = PATHS
        .iter()
        .map(|(path, _)| curl_http2(&w.server.url(path)))
        .collect();
    let statuses: Vec<i64> = runs.iter().map(|r| r.transfers[0].status).collect();
    assert_eq!(statuses, PATHS.map(|(_, s)| s), "harness: {runs:?}");
    let log = nginx_access_log(&w.dir, PATHS.len());
    check_log(&log, PATHS.len(), "curl/");
    for (run, r) in runs.iter().zip(&log) {
        let t = &run.transfers[0];
        assert!(
            t.local_port == r.client_port && t.body_bytes == r.body_bytes,
            "harness: curl and nginx disagree on {}: {t:?} {r:?}",
            r.uri
        );
    }

    let spans = w.finish(2 * PATHS.len());
    w.assert_counts(&spans, PATHS.len(), PATHS.len());
    let clients: Vec<Client> = runs
        .iter()
        .map(|r| Client {
            pid: r.pid,
            wall: r.wall,
            service: Service::Exact("curl"),
        })
        .collect();
    assert_none(
        &mismatches(&w, &spans, &log, &clients, Timing::Paired, H2C),
        &spans,
    );
}

/// `h2load -n 6 -c 1 -m 1`: 6 requests (the static file, `return 404`, `return 500`, twice) one
/// after another on one connection (streams 1, 3, …, 11).
#[test]
fn h2load_sequential_requests_on_one_connection() {
    require_root!();
    let mut w = h2_world("h2-sequential");
    let run = h2load(
        &["/index.html", "/status/404", "/status/500"].map(|p| w.server.url(p)),
        6,
        1,
        1,
    );
    check_h2load(&run, 6, [2, 2, 2]);
    let log = nginx_access_log(&w.dir, 6);
    check_log(&log, 1, "h2load");

    let spans = w.finish(12);
    w.assert_counts(&spans, 6, 6);
    let client = Client {
        pid: run.pid,
        wall: run.wall,
        service: Service::Exact("h2load"),
    };
    assert_none(
        &mismatches(&w, &spans, &log, &[client], Timing::Paired, H2C),
        &spans,
    );
}

/// nghttp sends all 4 requests (200, 404 from `return`, 500, 404 from a missing file) before any
/// response arrives: 4 concurrent streams on one connection (13, 15, 17, 19: nghttp first sends
/// PRIORITY frames for the idle streams 3 to 11, its priority tree, which are no requests), each
/// its own span pair.
#[test]
fn nghttp_concurrent_streams_on_one_connection() {
    require_root!();
    const PATHS: [(&str, i64); 4] = [
        ("/index.html", 200),
        ("/status/404", 404),
        ("/status/500", 500),
        ("/missing.html", 404),
    ];
    let mut w = h2_world("h2-nghttp");
    let run = nghttp(&PATHS.map(|(p, _)| w.server.url(p)));
    let mut got: Vec<(&str, i64)> = run
        .streams
        .iter()
        .map(|s| (s.path.as_str(), s.status))
        .collect();
    got.sort_unstable();
    let mut want = PATHS.to_vec();
    want.sort_unstable();
    assert_eq!(got, want, "harness: nghttp's streams: {run:?}");
    assert!(
        run.all_requests_before_any_response,
        "harness: nghttp did not send every request before the first response: {run:?}"
    );
    let log = nginx_access_log(&w.dir, PATHS.len());
    check_log(&log, 1, "nghttp2/");

    let spans = w.finish(2 * PATHS.len());
    w.assert_counts(&spans, PATHS.len(), PATHS.len());
    let client = Client {
        pid: run.pid,
        wall: run.wall,
        service: Service::Exact("nghttp"),
    };
    assert_none(
        &mismatches(&w, &spans, &log, &[client], Timing::Paired, H2C),
        &spans,
    );
}

/// h2load: 200 requests (`/index.html` and `/status/404` in turn) on 2 connections, at most 2
/// concurrent streams each: exactly 200 SERVER and 200 CLIENT spans, with nginx's (path, status,
/// client port) multiset.
#[test]
fn h2load_two_hundred_requests_on_two_connections() {
    require_root!();
    const N: usize = 200;
    let mut w = h2_world("h2-h2load");
    let run = h2load(
        &["/index.html", "/status/404"].map(|p| w.server.url(p)),
        200,
        2,
        2,
    );
    check_h2load(&run, 200, [100, 100, 0]);
    let log = nginx_access_log(&w.dir, N);
    check_log(&log, 2, "h2load");

    let port = w.port();
    w.sink
        .wait_for_spans(|s| s.is_for_port(port), 2 * N, SPAN_TIMEOUT * 2);
    let spans = w.finish(2 * N);
    w.assert_counts(&spans, N, N);
    let client = Client {
        pid: run.pid,
        wall: run.wall,
        service: Service::Exact("h2load"),
    };
    assert_none(
        &mismatches(&w, &spans, &log, &[client], Timing::Overlapping, H2C),
        &spans,
    );
}
