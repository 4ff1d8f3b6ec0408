//! Checks shared by the nginx HTTP/2 tests (`tests/http2_nginx.rs` over h2c, `tests/http2_tls.rs`
//! over TLS): the spans for nginx's port against nginx's own access log, and h2load's summary.

use std::{collections::BTreeMap, time::Duration};

use crate::{
    expect::{containment_mismatch, HttpSpan, Service},
    peers::{H2loadRun, NginxRequest},
    span::{describe, Span},
    World,
};

/// `service.name` of nginx's spans.
pub const NGINX: Service = Service::Exact("nginx");

/// How the connection carried HTTP/2.
#[derive(Debug, Clone, Copy)]
pub struct Transport {
    /// `url.scheme` every span must carry (`http` for h2c, `https` over TLS). Over TLS the sink
    /// must also hold nothing but the spans for the server's port (a span parsed from ciphertext
    /// would show there).
    pub scheme: &'static str,
    /// How far a CLIENT span's ends may stick out of its SERVER span's.
    pub slack: Duration,
}

/// h2c: the syscalls of the two ends race to return, 1 ms (as in `tests/oracle.rs`).
pub const H2C: Transport = Transport {
    scheme: "http",
    slack: Duration::from_millis(1),
};

/// HTTP/2 over TLS: the times are taken where `SSL_read`/`SSL_write` return, after the syscall
/// inside them; a server's `SSL_write` returns only once the kernel has delivered the bytes, so the
/// client's `SSL_read` can return first, by as long as the server's thread waits for a CPU (seen:
/// more than 1 ms with qemu guests busy on the same 2 cores). 5 ms.
pub const TLS: Transport = Transport {
    scheme: "https",
    slack: Duration::from_millis(5),
};

/// A client process whose CLIENT spans are checked.
pub struct Client {
    pub pid: u32,
    /// Wall time from spawn to exit, an upper bound on every span it caused.
    pub wall: Duration,
    pub service: Service,
}

/// How CLIENT and SERVER spans of one path are compared in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timing {
    /// The requests of one path ran one after another: pair the path's spans in start order, each
    /// CLIENT span must contain its SERVER span.
    Paired,
    /// Concurrent requests of one path: every SERVER span within some CLIENT span of its path, and
    /// every CLIENT span containing some SERVER span of its path.
    Overlapping,
}

/// Harness checks on nginx's log: every request over HTTP/2, on `connections` connections, with a
/// User-Agent starting with `user_agent`.
pub fn check_log(log: &[NginxRequest], connections: usize, user_agent: &str) {
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
pub type Key = (String, String, i64, Option<u16>);

pub fn count(keys: impl IntoIterator<Item = Key>) -> BTreeMap<Key, usize> {
    let mut m = BTreeMap::new();
    for k in keys {
        *m.entry(k).or_insert(0) += 1;
    }
    m
}

pub fn span_key(span: &Span) -> Key {
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
pub fn of_path<'a>(group: &[&'a Span], path: &str) -> Vec<&'a Span> {
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
pub fn mismatches(
    w: &World,
    spans: &[Span],
    log: &[NginxRequest],
    clients: &[Client],
    timing: Timing,
    transport: Transport,
) -> Vec<String> {
    let mut failures = Vec::new();
    if transport.scheme == "https" {
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
            .scheme(transport.scheme)
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
                    if let Some(m) = containment_mismatch(c, s, transport.slack) {
                        failures.push(format!("GET {path} #{i}: {m}"));
                    }
                }
            }
            // The counts differ: already reported above.
            Timing::Paired => {}
            Timing::Overlapping => {
                let inside =
                    |c: &Span, s: &Span| containment_mismatch(c, s, transport.slack).is_none();
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
pub fn assert_none(failures: &[String], spans: &[Span]) {
    assert!(
        failures.is_empty(),
        "{} mismatches:\n  - {}\nall spans:\n{}",
        failures.len(),
        failures.join("\n  - "),
        describe(spans)
    );
}

/// h2load's summary: `done` requests, none errored or timed out, and this many 2xx, 4xx, 5xx.
pub fn check_h2load(run: &H2loadRun, done: u64, statuses: [u64; 3]) {
    assert!(
        run.done == done
            && run.errored == 0
            && run.timeout == 0
            && [run.status_2xx, run.status_4xx, run.status_5xx] == statuses,
        "harness: h2load did not get {done} responses with {statuses:?} 2xx/4xx/5xx:\n{}",
        run.output
    );
}
