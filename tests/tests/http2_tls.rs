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
//! absent or equal to `$body_bytes_sent`, each CLIENT span containing its SERVER span (± 5 ms: see `h2_nginx::TLS`).

use agent_tests::{
    agent::{Agent, Export},
    expect::Service,
    h2_nginx::{assert_none, check_h2load, check_log, mismatches, Client, Timing, TLS},
    peers::{curl_h2_tls, h2load, nginx_access_log, nginx_h2_tls, nginx_index},
    require_root,
    world::SPAN_TIMEOUT,
    OtlpSink, TempDir, World,
};

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
        &mismatches(&w, &spans, &log, &[client], Timing::Paired, TLS),
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
        &mismatches(&w, &spans, &log, &[client], Timing::Overlapping, TLS),
        &spans,
    );
}
