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

use std::{collections::BTreeMap, time::Duration};

use agent_tests::{
    agent::{Agent, Export},
    expect::{containment_mismatch, HttpSpan, Service},
    peers::{
        curl_http2, h2load, nghttp, nginx_access_log, nginx_h2c, ClientRun, H2loadRun, NginxRequest,
    },
    require_root,
    span::{describe, Span},
    world::SPAN_TIMEOUT,
    OtlpSink, TempDir, World,
};

const NGINX: Service = Service::Exact("nginx");

/// How far a CLIENT span's ends may stick out of its SERVER span's (as in `tests/oracle.rs`).
const CONTAINMENT_SLACK: Duration = Duration::from_millis(1);

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

/// A client process whose CLIENT spans are checked.
struct Client {
    pid: u32,
    /// Wall time from spawn to exit, an upper bound on every span it caused.
    wall: Duration,
    service: Service,
}

/// How CLIENT and SERVER spans of one path are compared in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Timing {
    /// The requests of one path ran one after another: pair the path's spans in start order, each
    /// CLIENT span must contain its SERVER span.
    Paired,
    /// Concurrent requests of one path: every SERVER span within some CLIENT span of its path, and
    /// every CLIENT span containing some SERVER span of its path.
    Overlapping,
}

/// Harness checks on nginx's log: every request over HTTP/2, on `connections` connections, with a
/// User-Agent starting with `user_agent`.
fn check_log(log: &[NginxRequest], connections: usize, user_agent: &str) {
    let odd: Vec<&NginxRequest> = log
        .iter()
        .filter(|r| r.protocol != "HTTP/2.0" || !r.user_agent.starts_with(user_agent))
        .collect();
    assert!(
        odd.is_empty(),
        "harness: nginx served requests not over HTTP/2 or not from {user_agent}…: {odd:?}"
    );
    let mut conns: Vec<u64> = log.iter().map(|r| r.connection).collect();
    conns.sort_unstable();
    conns.dedup();
    assert_eq!(
        conns.len(),
        connections,
        "harness: nginx saw {} connections, want {connections}: {log:?}",
        conns.len()
    );
}

/// (method, path, status, and for SERVER spans the client's port).
type Key = (String, String, i64, Option<u16>);

fn count(keys: impl IntoIterator<Item = Key>) -> BTreeMap<Key, usize> {
    let mut m = BTreeMap::new();
    for k in keys {
        *m.entry(k).or_insert(0) += 1;
    }
    m
}

fn span_key(span: &Span) -> Key {
    (
        span.attr_str("http.request.method")
            .unwrap_or("<none>")
            .to_owned(),
        span.attr_str("url.path").unwrap_or("<none>").to_owned(),
        span.attr_int("http.response.status_code").unwrap_or(-1),
        span.is_server()
            .then(|| span.attr_int("network.peer.port"))
            .flatten()
            .and_then(|p| u16::try_from(p).ok()),
    )
}

/// The spans of `group` for `path`, in start order.
fn of_path<'a>(group: &[&'a Span], path: &str) -> Vec<&'a Span> {
    let mut v: Vec<&Span> = group
        .iter()
        .copied()
        .filter(|s| s.attr_str("url.path") == Some(path))
        .collect();
    v.sort_by_key(|s| s.start_time_unix_nano);
    v
}

/// Every way `spans` differ from the requests nginx logged (`log`), made by `clients`; see the
/// module doc. Exact counts are checked by the caller ([`World::assert_counts`]).
fn mismatches(
    w: &World,
    spans: &[Span],
    log: &[NginxRequest],
    clients: &[Client],
    timing: Timing,
) -> Vec<String> {
    let mut failures = Vec::new();
    let (server_spans, client_spans): (Vec<&Span>, Vec<&Span>) =
        spans.iter().partition(|s| s.is_server());

    let logged_servers = count(log.iter().map(|r| {
        (
            r.method.clone(),
            r.uri.clone(),
            r.status,
            Some(r.client_port),
        )
    }));
    let logged_clients = count(
        log.iter()
            .map(|r| (r.method.clone(), r.uri.clone(), r.status, None)),
    );
    for (kind, found, want) in [
        (
            "SERVER",
            count(server_spans.iter().map(|s| span_key(s))),
            logged_servers,
        ),
        (
            "CLIENT",
            count(client_spans.iter().map(|s| span_key(s))),
            logged_clients,
        ),
    ] {
        if found != want {
            failures.push(format!(
                "{kind} spans by (method, url.path, status, peer port): {found:?}, nginx logged \
                 {want:?}"
            ));
        }
    }

    // Each path has one status, one body size and one User-Agent in these tests.
    let mut by_path: BTreeMap<&str, (i64, i64, &str)> = BTreeMap::new();
    for r in log {
        let this = (r.status, r.body_bytes, r.user_agent.as_str());
        let prev = by_path.insert(&r.uri, this);
        assert!(
            prev.is_none_or(|p| p == this),
            "harness: nginx answered {} differently, or to different clients: {log:?}",
            r.uri
        );
    }
    // Any client's run bounds a SERVER span; the longest is the loosest bound.
    let longest = clients.iter().map(|c| c.wall).max().unwrap_or_default();
    for span in spans {
        let Some(path) = span.attr_str("url.path") else {
            failures.push(format!("url.path missing: {span}"));
            continue;
        };
        let Some(&(status, body, user_agent)) = by_path.get(path) else {
            failures.push(format!(
                "a span for {path:?}, which nginx never served: {span}"
            ));
            continue;
        };
        let expect = if span.is_server() {
            HttpSpan::server("GET", path, status, w.port())
                .service(NGINX)
                .pid(w.server.pid())
                .max_duration(longest)
        } else {
            let pid = span.resource_int("process.pid");
            let Some(client) = clients.iter().find(|c| pid == Some(i64::from(c.pid))) else {
                failures.push(format!(
                    "CLIENT GET {path}: from process {pid:?}, none of the clients: {span}"
                ));
                continue;
            };
            HttpSpan::client("GET", path, status, w.port())
                .service(client.service)
                .pid(client.pid)
                .max_duration(client.wall)
        };
        let expect = expect
            .http2()
            .response_body_size(body)
            .optional_body_sizes();
        for m in expect.mismatches(span) {
            failures.push(format!("{} GET {path}: {m}", span.kind));
        }
        let got = span.attr_str("user_agent.original");
        if got != Some(user_agent) {
            failures.push(format!(
                "{} GET {path}: user_agent.original {got:?}, nginx logged {user_agent:?}",
                span.kind
            ));
        }
    }

    for path in by_path.keys() {
        let (servers, clients) = (of_path(&server_spans, path), of_path(&client_spans, path));
        match timing {
            Timing::Paired if servers.len() == clients.len() => {
                for (i, (c, s)) in clients.iter().zip(&servers).enumerate() {
                    if let Some(m) = containment_mismatch(c, s, CONTAINMENT_SLACK) {
                        failures.push(format!("GET {path} #{i}: {m}"));
                    }
                }
            }
            // The counts differ: already reported above.
            Timing::Paired => {}
            Timing::Overlapping => {
                let inside =
                    |c: &Span, s: &Span| containment_mismatch(c, s, CONTAINMENT_SLACK).is_none();
                for s in &servers {
                    if !clients.iter().any(|c| inside(c, s)) {
                        failures.push(format!(
                            "GET {path}: SERVER span within no CLIENT span of its path: {s}"
                        ));
                    }
                }
                for c in &clients {
                    if !servers.iter().any(|s| inside(c, s)) {
                        failures.push(format!(
                            "GET {path}: CLIENT span containing no SERVER span of its path: {c}"
                        ));
                    }
                }
            }
        }
    }
    failures
}

/// Panics listing every failure and every span, unless `failures` is empty.
fn assert_none(failures: &[String], spans: &[Span]) {
    assert!(
        failures.is_empty(),
        "{} mismatches:\n  - {}\nall spans:\n{}",
        failures.len(),
        failures.join("\n  - "),
        describe(spans)
    );
}

/// h2load's summary: `done` requests, none errored or timed out, and this many 2xx, 4xx, 5xx.
fn check_h2load(run: &H2loadRun, done: u64, statuses: [u64; 3]) {
    assert!(
        run.done == done
            && run.errored == 0
            && run.timeout == 0
            && [run.status_2xx, run.status_4xx, run.status_5xx] == statuses,
        "harness: h2load did not get {done} responses with {statuses:?} 2xx/4xx/5xx:\n{}",
        run.output
    );
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
        &mismatches(&w, &spans, &log, &clients, Timing::Paired),
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
        &mismatches(&w, &spans, &log, &[client], Timing::Paired),
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
        &mismatches(&w, &spans, &log, &[client], Timing::Paired),
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
        &mismatches(&w, &spans, &log, &[client], Timing::Overlapping),
        &spans,
    );
}
