//! HTTP/2 over TLS (ALPN `h2`) against nginx (`peers/nginx_h2_tls.conf`: `listen … ssl http2`,
//! nginx 1.22 syntax, a self-signed certificate per test): the agent's uprobes on the system
//! `libssl.so.3` (`SSL_read`/`SSL_write`, used by nginx, curl and h2load alike) see the plaintext
//! frames, so each stream gives one SERVER span (nginx) and one CLIENT span, with the HTTP/1.1 span
//! contract except `network.protocol.version` `2` and `url.scheme` `https`, and nothing is parsed
//! from the ciphertext the socket syscalls carry on the same connections (the sink holds no other
//! span). Clients: curl `--http2 --insecure` with three URLs in one run, which over TLS reuses one
//! connection (unlike prior-knowledge h2c in `http2_nginx.rs`, where Debian's curl 7.88.1 cannot),
//! with TLS 1.3 and with TLS 1.2 only; and `h2load -n 100 -c 2 -m 2` (100 requests on 2
//! connections, 2 concurrent streams each).
//!
//! As in `http2_nginx.rs`, nginx's access log is the reference: the same (method, path, status,
//! client port) multiset on the SERVER side, (method, path, status) on the CLIENT side, every span's
//! attributes, `user_agent.original` equal to the logged User-Agent, `http.response.body.size`
//! absent or equal to `$body_bytes_sent`, each CLIENT span containing its SERVER span (± 1 ms).

use std::{collections::BTreeMap, time::Duration};

use agent_tests::{
    agent::{Agent, Export},
    expect::{containment_mismatch, HttpSpan, Service},
    peers::{
        curl_h2_tls, h2load, nginx_access_log, nginx_h2_tls, nginx_index, H2loadRun, NginxRequest,
    },
    require_root,
    span::{describe, Span},
    world::SPAN_TIMEOUT,
    OtlpSink, TempDir, World,
};

const NGINX: Service = Service::Exact("nginx");

/// How far a CLIENT span's ends may stick out of its SERVER span's. Over TLS the times are taken
/// where `SSL_read`/`SSL_write` return, after the syscall inside them: a server's `SSL_write`
/// returns only once the kernel has delivered the bytes, so the client's `SSL_read` can return
/// first, by as long as the server's thread waits for a CPU (seen: more than 1 ms with qemu
/// guests busy on the same 2 cores). 5 ms, not the 1 ms of the cleartext tests.
const CONTAINMENT_SLACK: Duration = Duration::from_millis(5);

/// nginx: the static file, `return 404`, `return 500`.
const NGINX_PATHS: [(&str, i64); 3] = [
    ("/index.html", 200),
    ("/status/404", 404),
    ("/status/500", 500),
];

/// The sink, nginx serving h2 over TLS and the agent watching its port.
fn h2_tls_world(name: &str) -> World {
    let dir = TempDir::new(name);
    let sink = OtlpSink::start(&dir);
    let server = nginx_h2_tls(&dir);
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
    /// One request per path: each CLIENT span must contain the SERVER span of its path.
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

/// Every way `spans` (the spans for the server's port) differ from the requests nginx logged
/// (`log`), made by `clients`; see the module doc. Also: nothing else reached the sink (a span
/// parsed from ciphertext would carry no port of ours, or the wrong scheme). Exact counts are
/// checked by the caller ([`World::assert_counts`]).
fn mismatches(
    w: &World,
    spans: &[Span],
    log: &[NginxRequest],
    clients: &[Client],
    timing: Timing,
) -> Vec<String> {
    let mut failures = Vec::new();
    let all = w.sink.spans();
    if all.len() != spans.len() {
        failures.push(format!(
            "{} spans in the sink, {} of them for the TLS port {} (ciphertext parsed as HTTP?):\n{}",
            all.len(),
            spans.len(),
            w.port(),
            describe(&all)
        ));
    }
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
            .scheme("https")
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

/// curl `--http2 --insecure` (plus `tls_args`), one run over [`NGINX_PATHS`]: three streams (1, 3,
/// 5) one after another on one TLS connection; the bodies reached curl unaltered.
fn nginx_curl(name: &str, tls_args: &[&str]) {
    let mut w = h2_tls_world(name);
    let (run, bodies) = curl_h2_tls(&w.dir, &NGINX_PATHS.map(|(p, _)| w.server.url(p)), tls_args);
    let statuses: Vec<i64> = run.transfers.iter().map(|t| t.status).collect();
    assert_eq!(statuses, NGINX_PATHS.map(|(_, s)| s), "harness: {run:?}");
    assert_eq!(
        run.connections(),
        1,
        "harness: curl did not reuse its TLS connection: {run:?}"
    );
    assert!(
        bodies[0] == nginx_index(&w.dir),
        "curl's /index.html body ({} bytes) differs from the served file",
        bodies[0].len()
    );
    let log = nginx_access_log(&w.dir, NGINX_PATHS.len());
    check_log(&log, 1, "curl/");
    for (t, r) in run.transfers.iter().zip(&log) {
        assert!(
            t.local_port == r.client_port && t.body_bytes == r.body_bytes,
            "harness: curl and nginx disagree on {}: {t:?} {r:?}",
            r.uri
        );
    }

    let spans = w.finish(2 * NGINX_PATHS.len());
    w.assert_counts(&spans, NGINX_PATHS.len(), NGINX_PATHS.len());
    let client = Client {
        pid: run.pid,
        wall: run.wall,
        service: Service::Exact("curl"),
    };
    assert_none(
        &mismatches(&w, &spans, &log, &[client], Timing::Paired),
        &spans,
    );
}

/// TLS 1.3 (curl's default), three requests on one connection.
#[test]
fn curl_alpn_h2_tls13_three_requests_on_one_connection() {
    require_root!();
    nginx_curl("h2-tls-curl-13", &["--tlsv1.3"]);
}

/// TLS 1.2 only, three requests on one connection.
#[test]
fn curl_alpn_h2_tls12_three_requests_on_one_connection() {
    require_root!();
    nginx_curl("h2-tls-curl-12", &["--tlsv1.2", "--tls-max", "1.2"]);
}

/// h2load's summary: `done` requests, none errored or timed out, this many 2xx, 4xx, 5xx, and
/// ALPN chose `h2`.
fn check_h2load(run: &H2loadRun, done: u64, statuses: [u64; 3]) {
    assert!(
        run.done == done
            && run.errored == 0
            && run.timeout == 0
            && [run.status_2xx, run.status_4xx, run.status_5xx] == statuses
            && run.output.contains("Application protocol: h2"),
        "harness: h2load did not get {done} responses with {statuses:?} 2xx/4xx/5xx over ALPN \
         h2:\n{}",
        run.output
    );
}

/// `h2load -n 100 -c 2 -m 2 https://…` (ALPN h2): 100 requests (`/index.html` and `/status/404`
/// in turn) on 2 TLS connections, at most 2 concurrent streams each: exactly 100 SERVER and 100
/// CLIENT spans, with nginx's (path, status, client port) multiset.
#[test]
fn h2load_hundred_requests_on_two_tls_connections() {
    require_root!();
    const N: usize = 100;
    let mut w = h2_tls_world("h2-tls-h2load");
    let run = h2load(
        &["/index.html", "/status/404"].map(|p| w.server.url(p)),
        100,
        2,
        2,
    );
    check_h2load(&run, 100, [50, 50, 0]);
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
