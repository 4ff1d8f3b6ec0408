//! HTTP/1.1 over TLS: the agent's uprobes on OpenSSL's `SSL_read`/`SSL_read_ex`/`SSL_write`/
//! `SSL_write_ex` (in `libssl.so.3`, and in executables that link OpenSSL statically, like `node`)
//! turn HTTPS exchanges into spans. For each exchange: exactly one SERVER span in the TLS server and
//! one CLIENT span in the TLS client, with the plain-HTTP contract except `url.scheme` = `https`, and
//! nothing from the ciphertext the socket syscalls see on the same connections. Every certificate is
//! self-signed, made per test in its temp dir. curl's bodies are compared with what the server
//! serves: the agent must never alter traffic.

use std::time::Duration;

use agent_tests::{
    expect::{HttpSpan, Service},
    peers::{
        curl, curl_bodies, nginx_index, node_https_client, node_unavailable, python_http_server,
        python_https_client, python_https_server_with_private_libssl, status_body, ClientRun,
    },
    poll, require_root,
    span::{describe, Span, CLIENT, SERVER},
    world::{one_where, Stage, SPAN_TIMEOUT},
    Peer, Via, Watch, World,
};

const NGINX: Service = Service::Exact("nginx");
const CURL: Service = Service::Exact("curl");
const PYTHON: Service = Service::Prefix("python3");
const NODE: Service = Service::Exact("node");

/// nginx: a static file, then `return 404`, then `return 500` (which also ends keep-alive: last).
const NGINX_PATHS: [&str; 3] = ["/index.html", "/status/404", "/status/500"];
/// `peers/http_server.py` and `peers/http_server.js`.
const STATUS_PATHS: [&str; 3] = ["/status/200", "/status/404", "/status/500"];

/// How long the Node client, which starts after the agent (its OpenSSL lives in `/usr/bin/node`,
/// which no running process maps), waits before its first TLS traffic: the agent finds its
/// executable in the scans that follow its exec (50 ms, 500 ms, 2 s). Clients that use the shared
/// `libssl.so.3` need none: it is attached at startup, and uprobes cover later mappings of it.
const DISCOVERY_GRACE: Duration = Duration::from_secs(3);

/// How long a TLS library mapped well after its process's exec (a `dlopen`, Python's `import ssl`)
/// may take to be attached: one periodic rescan (10 s) and the attach, with margin for emulation.
const LATE_LIBRARY_DISCOVERY: Duration = Duration::from_secs(30);

/// One client process's run and how its spans must look.
struct Client<'a> {
    run: &'a ClientRun,
    paths: &'a [&'a str],
    service: Service,
    /// The `User-Agent` prefix it sends, or `None` when it sends none.
    user_agent: Option<&'static str>,
}

/// Exactly one SERVER span (in `server`'s process) and one CLIENT span (in the client's process)
/// per transfer of each client, all `https`, and no other span at all (in particular none parsed
/// from ciphertext, on this port or without one).
fn assert_tls_spans(w: &World, spans: &[Span], server: Service, clients: &[Client<'_>]) {
    let all = w.sink.spans();
    assert!(
        all.len() == spans.len(),
        "spans that are not for the TLS port {} (ciphertext parsed as HTTP?):\n{}",
        w.port(),
        describe(&all)
    );
    let plain: Vec<Span> = spans
        .iter()
        .filter(|s| s.attr_str("url.scheme") != Some("https"))
        .cloned()
        .collect();
    assert!(
        plain.is_empty(),
        "spans on the TLS port without url.scheme \"https\" (from ciphertext, or the scheme is \
         wrong):\n{}\nall spans:\n{}",
        describe(&plain),
        describe(spans)
    );
    let exchanges: usize = clients.iter().map(|c| c.run.transfers.len()).sum();
    w.assert_counts(spans, exchanges, exchanges);

    for c in clients {
        assert_eq!(
            c.run.transfers.len(),
            c.paths.len(),
            "harness: one transfer per path"
        );
        for (t, path) in c.run.transfers.iter().zip(c.paths) {
            let server_span = HttpSpan::server("GET", path, t.status, w.port())
                .service(server)
                .pid(w.server.pid())
                .client_port(t.local_port);
            let client_span = HttpSpan::client("GET", path, t.status, w.port())
                .service(c.service)
                .pid(c.run.pid);
            let found = [
                (
                    server_span,
                    one_where(spans, SERVER, path, "from this client's port", |s| {
                        s.attr_int("network.peer.port") == Some(i64::from(t.local_port))
                    }),
                ),
                (
                    client_span,
                    one_where(spans, CLIENT, path, "in this client's process", |s| {
                        s.resource_int("process.pid") == Some(i64::from(c.run.pid))
                    }),
                ),
            ];
            for (expect, span) in found {
                let expect = expect
                    .scheme("https")
                    .response_body_size(t.body_bytes)
                    .max_duration(c.run.wall);
                let expect = match c.user_agent {
                    Some(prefix) => expect.user_agent_prefix(prefix),
                    None => expect.no_user_agent(),
                };
                expect.assert(span);
            }
        }
    }
}

/// Harness checks on a client run: these statuses, and one connection for all of them.
fn check_run(run: &ClientRun, statuses: &[i64]) {
    let got: Vec<i64> = run.transfers.iter().map(|t| t.status).collect();
    assert_eq!(got, statuses, "harness: unexpected statuses: {run:?}");
    assert_eq!(
        run.connections(),
        1,
        "harness: the client did not keep its connection alive: {run:?}"
    );
}

/// The bodies nginx serves for [`NGINX_PATHS`] reached curl unaltered.
fn check_nginx_bodies(w: &World, bodies: &[Vec<u8>]) {
    assert!(
        bodies[0] == nginx_index(&w.dir),
        "curl's /index.html body ({} bytes) differs from the served file",
        bodies[0].len()
    );
    for (body, title) in bodies[1..]
        .iter()
        .zip(["404 Not Found", "500 Internal Server Error"])
    {
        let text = String::from_utf8_lossy(body);
        assert!(
            text.contains(&format!("<title>{title}</title>")),
            "curl got an unexpected error page: {text:?}"
        );
    }
}

/// The `status <code>\n` bodies reached curl unaltered.
fn check_status_bodies(run: &ClientRun, bodies: &[Vec<u8>]) {
    for (t, body) in run.transfers.iter().zip(bodies) {
        assert!(
            *body == status_body(t.status),
            "curl's body for status {} is {:?}, want {:?}",
            t.status,
            String::from_utf8_lossy(body),
            String::from_utf8_lossy(&status_body(t.status))
        );
    }
}

/// nginx over HTTPS and curl, one curl run over [`NGINX_PATHS`] with `tls_args`.
fn nginx_curl(name: &str, tls_args: &[&str]) {
    let mut w = World::start(name, Peer::NginxTls, Via::SinkGrpc, Watch::Server);
    let mut args = vec!["--insecure"];
    args.extend_from_slice(tls_args);
    let (run, bodies) = curl_bodies(&w.dir, &NGINX_PATHS.map(|p| w.server.url(p)), &args);
    check_run(&run, &[200, 404, 500]);
    check_nginx_bodies(&w, &bodies);

    let spans = w.finish(6);
    assert_tls_spans(
        &w,
        &spans,
        NGINX,
        &[Client {
            run: &run,
            paths: &NGINX_PATHS,
            service: CURL,
            user_agent: Some("curl/"),
        }],
    );
}

/// TLS 1.3, three requests on one kept-alive connection.
#[test]
fn nginx_curl_tls13_keep_alive() {
    require_root!();
    nginx_curl("tls-nginx-13", &["--tlsv1.3"]);
}

/// TLS 1.2 only, three requests on one kept-alive connection.
#[test]
fn nginx_curl_tls12() {
    require_root!();
    nginx_curl("tls-nginx-12", &["--tlsv1.2", "--tls-max", "1.2"]);
}

/// Python's `ssl` on both ends (`SSL_read_ex`/`SSL_write_ex`): `http.client.HTTPSConnection` with
/// three requests on one connection, then one curl request (whose body is checked).
#[test]
fn python_server_python_and_curl_clients() {
    require_root!();
    let mut w = World::start("tls-python", Peer::PythonTls, Via::SinkGrpc, Watch::Server);
    python_then_curl(&mut w);
}

/// A TLS server that starts after the agent is ready, with its own copy of `libssl.so.3` (a file
/// no process mapped when the agent started, so an uprobe attached at startup cannot cover it), is
/// traced like one that was there before: the agent discovers the new process's library.
#[test]
fn python_server_started_after_the_agent() {
    require_root!();
    let mut w =
        World::start_server_after_agent("tls-late-server", python_https_server_with_private_libssl);
    // The server maps its private libssl when it imports `ssl`, at a time no exec-triggered scan
    // may catch (Python starts in seconds under emulation); the agent's periodic rescan (10 s)
    // must find it. Traffic starts once the agent says it attached that file.
    let private = w.dir.join("private-lib/libssl.so.3");
    let marker = format!("file={}", private.display());
    let attached = poll(LATE_LIBRARY_DISCOVERY, || {
        w.agent.stderr().contains(&marker).then_some(())
    });
    assert!(
        attached.is_some(),
        "the agent did not attach {} within {} s:\n{}",
        private.display(),
        LATE_LIBRARY_DISCOVERY.as_secs(),
        w.agent.stderr()
    );
    python_then_curl(&mut w);
}

/// Three `http.client` HTTPS requests on one connection and one curl request against `w`'s Python
/// TLS server; asserts their spans.
fn python_then_curl(w: &mut World) {
    let python = python_https_client(w.port(), &STATUS_PATHS);
    check_run(&python, &[200, 404, 500]);
    let curl_paths = ["/status/201"];
    let (curl, bodies) = curl_bodies(&w.dir, &[w.server.url(curl_paths[0])], &["--insecure"]);
    check_run(&curl, &[201]);
    check_status_bodies(&curl, &bodies);

    let spans = w.finish(8);
    assert_tls_spans(
        w,
        &spans,
        PYTHON,
        &[
            Client {
                run: &python,
                paths: &STATUS_PATHS,
                service: PYTHON,
                user_agent: None,
            },
            Client {
                run: &curl,
                paths: &curl_paths,
                service: CURL,
                user_agent: Some("curl/"),
            },
        ],
    );
}

/// Node's `https` server (OpenSSL linked statically into `/usr/bin/node`) and curl: SERVER spans
/// from the `node` process.
#[test]
fn node_server_curl_client() {
    require_root!();
    if let Some(reason) = node_unavailable() {
        println!("skipping: {reason}");
        return;
    }
    let mut w = World::start(
        "tls-node-server",
        Peer::NodeTls,
        Via::SinkGrpc,
        Watch::Server,
    );
    let (run, bodies) = curl_bodies(
        &w.dir,
        &STATUS_PATHS.map(|p| w.server.url(p)),
        &["--insecure"],
    );
    check_run(&run, &[200, 404, 500]);
    check_status_bodies(&run, &bodies);

    let spans = w.finish(6);
    assert_tls_spans(
        &w,
        &spans,
        NODE,
        &[Client {
            run: &run,
            paths: &STATUS_PATHS,
            service: CURL,
            user_agent: Some("curl/"),
        }],
    );
}

/// Node's `https.get` (keep-alive agent) against nginx: CLIENT spans from a `node` process that did
/// not exist when the agent started (it waits [`DISCOVERY_GRACE`] before its first request); then
/// one curl request (whose body is checked).
#[test]
fn node_client_nginx_server() {
    require_root!();
    if let Some(reason) = node_unavailable() {
        println!("skipping: {reason}");
        return;
    }
    let mut w = World::start(
        "tls-node-client",
        Peer::NginxTls,
        Via::SinkGrpc,
        Watch::Server,
    );
    let node = node_https_client(DISCOVERY_GRACE, w.port(), &NGINX_PATHS);
    check_run(&node, &[200, 404, 500]);
    let curl_paths = ["/index.html"];
    let (curl, bodies) = curl_bodies(&w.dir, &[w.server.url(curl_paths[0])], &["--insecure"]);
    check_run(&curl, &[200]);
    check_nginx_bodies(&w, &bodies);

    let spans = w.finish(8);
    assert_tls_spans(
        &w,
        &spans,
        NGINX,
        &[
            Client {
                run: &node,
                paths: &NGINX_PATHS,
                service: NODE,
                user_agent: None,
            },
            Client {
                run: &curl,
                paths: &curl_paths,
                service: CURL,
                user_agent: Some("curl/"),
            },
        ],
    );
}

/// `--no-tls`: no uprobes, so HTTPS stays invisible: no span from it (the ciphertext the socket
/// syscalls see is never parsed as HTTP), and the traffic is unchanged. A plain-HTTP request to a
/// second watched server proves the agent was capturing all along (exactly one span pair).
#[test]
fn no_tls_flag_reports_nothing() {
    require_root!();
    let stage = Stage::start("tls-off", Peer::NginxTls, Via::SinkGrpc);
    let control = python_http_server(&stage.dir);
    let mut w = stage.start_agent(Watch::AlsoPorts(&[control.port()]), &["--no-tls"]);
    let (run, bodies) = curl_bodies(
        &w.dir,
        &NGINX_PATHS.map(|p| w.server.url(p)),
        &["--insecure"],
    );
    check_run(&run, &[200, 404, 500]);
    check_nginx_bodies(&w, &bodies);
    curl(&[control.url("/status/200")], &[]);

    let control_port = control.port();
    w.sink
        .wait_for_spans(|s| s.is_for_port(control_port), 2, SPAN_TIMEOUT);
    // `finish` stops the agent (it drains and flushes); nothing may be for the TLS port.
    let tls_spans = w.finish(0);
    assert!(
        tls_spans.is_empty(),
        "spans for the TLS port with --no-tls:\n{}",
        describe(&tls_spans)
    );
    let all = w.sink.spans();
    assert!(
        all.len() == 2 && all.iter().all(|s| s.is_for_port(control_port)),
        "want only the control request's SERVER + CLIENT spans (port {control_port}):\n{}",
        describe(&all)
    );
}
