//! Cleartext HTTP/2 against hypercorn (PyPI, an ASGI server on the `h2` library) serving
//! `peers/asgi_app.py` (`/ok` 200, `/missing` 404), run with `--workers 0` so the interpreter that
//! serves is the process hypercorn was started as. The app logs every request it answers (HTTP
//! version, client port, method, path, status, body bytes, User-Agent): the reference the spans are
//! checked against.
//!
//! - h2c with prior knowledge: one SERVER span (the Python interpreter) and one CLIENT span per
//!   request, with the HTTP/1.1 span contract except `network.protocol.version` `2`. Clients:
//!   `curl --http2-prior-knowledge`, one process and connection per request (Debian 12's curl
//!   7.88.1 cannot reuse a prior-knowledge connection), and `nghttp` (both paths as concurrent
//!   streams on one connection). hypercorn (the `h2` library) ends each response with an empty
//!   DATA frame carrying END_STREAM, written on its own after the body; curl 7.88.1 considers the
//!   transfer done once it has `content-length` body bytes and closes the connection without
//!   reading that frame (and the server's write of it may meet curl's reset), while nghttp reads
//!   to END_STREAM and sends GOAWAY before closing.
//! - h2c by `Upgrade` (`curl --http2` on `http://`: an HTTP/1.1 request with `Upgrade: h2c`,
//!   hypercorn answers `101` and then the response over HTTP/2 on stream 1). The HTTP/1 parser
//!   hands the upgraded request to the HTTP/2 parser as stream 1 (RFC 7540 §3.2): one HTTP/2
//!   exchange per side, `GET /ok` 200, and no span for the `101`.

use std::time::Duration;

use agent_tests::{
    agent::{Agent, Export},
    expect::{containment_mismatch, HttpSpan, Service},
    peers::{
        curl_h2c_upgrade, curl_http2, hypercorn_h2c, hypercorn_requests, nghttp, AsgiRequest,
        ClientRun, HYPERCORN_MISSING_BYTES, HYPERCORN_OK_BYTES,
    },
    require_root,
    span::{describe, Span, CLIENT, SERVER},
    world::one_where,
    OtlpSink, TempDir, World,
};

/// The server is the Python interpreter (`python3.11` under pyenv).
const PYTHON: Service = Service::Prefix("python3");
const CURL: Service = Service::Exact("curl");

/// How far a CLIENT span's ends may stick out of its SERVER span's (as in `tests/oracle.rs`).
const CONTAINMENT_SLACK: Duration = Duration::from_millis(1);

/// The sink, hypercorn and the agent watching its port.
fn hypercorn_world(name: &str) -> World {
    let dir = TempDir::new(name);
    let sink = OtlpSink::start(&dir);
    let server = hypercorn_h2c(&dir);
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

/// Harness checks: the app answered each of `runs` (one request each, in order) over HTTP/2, on the
/// client's port, with `want` (path, status) and the body the client got; returns what it logged.
fn check_served(w: &World, runs: &[ClientRun], want: &[(&str, i64)]) -> Vec<AsgiRequest> {
    let served = hypercorn_requests(&w.server, runs.len());
    for ((run, r), (path, status)) in runs.iter().zip(&served).zip(want) {
        let t = &run.transfers[0];
        assert!(
            run.transfers.len() == 1
                && r.http_version == "2"
                && r.method == "GET"
                && r.path == *path
                && r.status == *status
                && t.status == *status
                && t.local_port == r.client_port
                && t.body_bytes == r.body_bytes
                && r.user_agent.starts_with("curl/"),
            "harness: curl and hypercorn disagree, or not HTTP/2, or not GET {path} → {status}: \
             {run:?} {r:?}"
        );
    }
    served
}

/// Nothing but `spans` (those for the server's port) reached the sink.
fn assert_only(w: &World, spans: &[Span]) {
    let all = w.sink.spans();
    assert!(
        all.len() == spans.len(),
        "spans that are not for port {}:\n{}",
        w.port(),
        describe(&all)
    );
}

/// curl `--http2-prior-knowledge`, one process and connection per request (stream 1 each): `/ok`
/// (200), `/missing` (404: an error on the CLIENT span only), `/ok` again. Exactly one SERVER and
/// one CLIENT span per request, HTTP/2, checked against what the app logged. curl closes once it
/// has the `content-length` body, before hypercorn's closing empty END_STREAM DATA frame (module
/// doc): the agent must still report each exchange, whose request and response headers and whole
/// body both ends saw.
#[test]
fn curl_prior_knowledge_one_request_per_connection() {
    require_root!();
    const PATHS: [(&str, i64); 3] = [("/ok", 200), ("/missing", 404), ("/ok", 200)];
    let mut w = hypercorn_world("h2-hypercorn-pk");
    let runs: Vec<ClientRun> = PATHS
        .iter()
        .map(|(path, _)| curl_http2(&w.server.url(path)))
        .collect();
    let served = check_served(&w, &runs, &PATHS);
    for r in &served {
        let want = if r.status == 200 {
            HYPERCORN_OK_BYTES
        } else {
            HYPERCORN_MISSING_BYTES
        };
        assert_eq!(r.body_bytes, want, "harness: unexpected body size: {r:?}");
    }

    let spans = w.finish(2 * PATHS.len());
    w.assert_counts(&spans, PATHS.len(), PATHS.len());
    assert_only(&w, &spans);
    for (run, r) in runs.iter().zip(&served) {
        let port = r.client_port;
        let server_span = one_where(&spans, SERVER, &r.path, "from this client's port", |s| {
            s.attr_int("network.peer.port") == Some(i64::from(port))
        });
        let client_span = one_where(&spans, CLIENT, &r.path, "in this curl process", |s| {
            s.resource_int("process.pid") == Some(i64::from(run.pid))
        });
        for (expect, span) in [
            (
                HttpSpan::server("GET", &r.path, r.status, w.port())
                    .service(PYTHON)
                    .pid(w.server.pid())
                    .client_port(port),
                server_span,
            ),
            (
                HttpSpan::client("GET", &r.path, r.status, w.port())
                    .service(CURL)
                    .pid(run.pid),
                client_span,
            ),
        ] {
            expect
                .http2()
                .response_body_size(r.body_bytes)
                .optional_body_sizes()
                .max_duration(run.wall)
                .assert(span);
            assert_eq!(
                span.attr_str("user_agent.original"),
                Some(r.user_agent.as_str()),
                "user_agent.original differs from the logged User-Agent: {span}"
            );
        }
        if let Some(m) = containment_mismatch(client_span, server_span, CONTAINMENT_SLACK) {
            panic!("GET {} from port {port}: {m}", r.path);
        }
    }
}

/// `nghttp` with `/ok` and `/missing` as two concurrent streams on one connection (it reads every
/// stream to END_STREAM and sends GOAWAY before closing): exactly two SERVER and two CLIENT spans,
/// HTTP/2, checked against what the app logged.
#[test]
fn nghttp_prior_knowledge_two_streams_on_one_connection() {
    require_root!();
    const PATHS: [(&str, i64); 2] = [("/ok", 200), ("/missing", 404)];
    let mut w = hypercorn_world("h2-hypercorn-nghttp");
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
    let served = hypercorn_requests(&w.server, PATHS.len());
    let ports: Vec<u16> = served.iter().map(|r| r.client_port).collect();
    assert!(
        served.iter().all(|r| r.http_version == "2"
            && r.method == "GET"
            && r.user_agent.starts_with("nghttp2/"))
            && ports.iter().all(|p| *p == ports[0]),
        "harness: hypercorn did not serve both over HTTP/2 on one connection from nghttp: \
         {served:?}"
    );

    let spans = w.finish(2 * PATHS.len());
    w.assert_counts(&spans, PATHS.len(), PATHS.len());
    assert_only(&w, &spans);
    for r in &served {
        let server_span = one_where(&spans, SERVER, &r.path, "", |_| true);
        let client_span = one_where(&spans, CLIENT, &r.path, "", |_| true);
        for (expect, span) in [
            (
                HttpSpan::server("GET", &r.path, r.status, w.port())
                    .service(PYTHON)
                    .pid(w.server.pid())
                    .client_port(r.client_port),
                server_span,
            ),
            (
                HttpSpan::client("GET", &r.path, r.status, w.port())
                    .service(Service::Exact("nghttp"))
                    .pid(run.pid),
                client_span,
            ),
        ] {
            expect
                .http2()
                .response_body_size(r.body_bytes)
                .optional_body_sizes()
                .max_duration(run.wall)
                .assert(span);
            assert_eq!(
                span.attr_str("user_agent.original"),
                Some(r.user_agent.as_str()),
                "user_agent.original differs from the logged User-Agent: {span}"
            );
        }
        if let Some(m) = containment_mismatch(client_span, server_span, CONTAINMENT_SLACK) {
            panic!("GET {}: {m}", r.path);
        }
    }
}

/// curl `--http2` on `http://…/ok`: `Upgrade: h2c`, hypercorn answers `101`, then 200 over HTTP/2
/// on stream 1 (the app logs HTTP version 2; curl ends on HTTP/2). The agent hands the upgraded
/// HTTP/1.1 request to the HTTP/2 parser as stream 1 (RFC 7540 §3.2): exactly one SERVER and one
/// CLIENT span, each `GET /ok` 200 over HTTP/2 (`network.protocol.version` `2`), timed from the
/// HTTP/1.1 request to the end of the HTTP/2 answer; no span for the `101` itself, and no
/// `http2.unpaired_response` in the agent's stop stats.
#[test]
fn curl_h2c_upgrade_is_one_http2_exchange() {
    require_root!();
    let mut w = hypercorn_world("h2-hypercorn-upgrade");
    let run = curl_h2c_upgrade(&w.server.url("/ok"));
    let served = check_served(&w, std::slice::from_ref(&run), &[("/ok", 200)]);
    let r = &served[0];

    let spans = w.finish(2);
    w.assert_counts(&spans, 1, 1);
    assert_only(&w, &spans);
    let server_span = one_where(&spans, SERVER, "/ok", "", |_| true);
    let client_span = one_where(&spans, CLIENT, "/ok", "", |_| true);
    for (expect, span) in [
        (
            HttpSpan::server("GET", "/ok", 200, w.port())
                .service(PYTHON)
                .pid(w.server.pid())
                .client_port(r.client_port),
            server_span,
        ),
        (
            HttpSpan::client("GET", "/ok", 200, w.port())
                .service(CURL)
                .pid(run.pid),
            client_span,
        ),
    ] {
        expect
            .http2()
            .response_body_size(r.body_bytes)
            .optional_body_sizes()
            .user_agent_prefix("curl/")
            .max_duration(run.wall)
            .assert(span);
    }
    if let Some(m) = containment_mismatch(client_span, server_span, CONTAINMENT_SLACK) {
        panic!("the upgraded exchange: {m}");
    }
    let unpaired = w.agent.conn_stat("http2.unpaired_response");
    assert!(
        unpaired.is_none(),
        "want no http2.unpaired_response (stream 1 answers the upgraded request), got \
         {unpaired:?}; stderr:\n{}",
        w.agent.stderr()
    );
}
