//! TLS "bad input": handshakes that fail with an alert, a client that asks to renegotiate a TLS 1.2
//! connection mid-stream, a process that maps a file named like `libssl` without any SSL symbol,
//! and a stripped curl executable. In every case the agent reports no span it should not (nothing
//! from handshake bytes or ciphertext, nothing made up), keeps capturing (a normal `curl --insecure`
//! request afterwards gives exactly one SERVER + one CLIENT span with the full contract), the
//! servers keep serving, and the agent exits 0 on SIGTERM.

use std::{
    fs,
    io::Write as _,
    path::{Path, PathBuf},
    process::Command,
    thread,
    time::{Duration, Instant},
};

use agent_tests::{
    expect::{HttpSpan, Service},
    peers::{curl_bodies_with, nginx_index, python, status_body, ClientRun, NGINX_INDEX_BYTES},
    poll,
    process::{run_captured, run_to_completion, Captured, Proc},
    require_root,
    span::{describe, Span, CLIENT, SERVER},
    world::one_where,
    Peer, Via, Watch, World,
};

const NGINX: Service = Service::Exact("nginx");
const PYTHON: Service = Service::Prefix("python3");
const CURL: Service = Service::Exact("curl");
const OPENSSL: Service = Service::Exact("openssl");

/// How long a client may take (each has its own, shorter, timeouts too).
const CLIENT_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a process started after the agent waits before the agent is expected to have scanned
/// it (on exec, then again 0.5 s and 2 s later; every 10 s anyway).
const DISCOVERY_GRACE: Duration = Duration::from_secs(3);

/// One `curl --insecure` GET of `path` on `w`'s server, run from the executable `program`; returns
/// the run and the body curl received.
fn good_curl(w: &World, program: &Path, path: &str) -> (ClientRun, Vec<u8>) {
    let (run, mut bodies) =
        curl_bodies_with(program, &w.dir, &[w.server.url(path)], &["--insecure"]);
    assert_eq!(run.transfers.len(), 1, "harness: one transfer: {run:?}");
    (run, bodies.remove(0))
}

/// The curl run's one exchange has exactly one SERVER span (from curl's port, in the server's
/// process) and one CLIENT span (in curl's process), each with the whole HTTPS contract.
fn assert_curl_pair(
    w: &World,
    spans: &[Span],
    run: &ClientRun,
    path: &str,
    server: Service,
    client: Service,
) {
    let t = &run.transfers[0];
    let server_span = one_where(spans, SERVER, path, "from curl's port", |s| {
        s.attr_int("network.peer.port") == Some(i64::from(t.local_port))
    });
    let client_span = one_where(spans, CLIENT, path, "in curl's process", |s| {
        s.resource_int("process.pid") == Some(i64::from(run.pid))
    });
    for (expect, span) in [
        (
            HttpSpan::server("GET", path, t.status, w.port())
                .service(server)
                .pid(w.server.pid())
                .client_port(t.local_port),
            server_span,
        ),
        (
            HttpSpan::client("GET", path, t.status, w.port())
                .service(client)
                .pid(run.pid),
            client_span,
        ),
    ] {
        expect
            .scheme("https")
            .user_agent_prefix("curl/")
            .response_body_size(t.body_bytes)
            .max_duration(run.wall)
            .assert(span);
    }
}

/// Every span the sink holds is one of `spans` (those for `w`'s port): none was parsed from the
/// ciphertext or handshake bytes of a connection and reported without a port, or on another one.
fn assert_nothing_else(w: &World, spans: &[Span]) {
    let all = w.sink.spans();
    assert!(
        all.len() == spans.len(),
        "spans that are not for the TLS port {}:\n{}",
        w.port(),
        describe(&all)
    );
}

/// Runs a client that must fail the TLS handshake: its exit status must be `exit_code` (any
/// failure when `None`), and its stderr must contain `because`.
fn failing_client(
    name: &str,
    cmd: &mut Command,
    exit_code: Option<i32>,
    because: &str,
) -> Captured {
    let run = run_captured(name, cmd, CLIENT_TIMEOUT);
    let code_ok = match exit_code {
        Some(code) => run.status.code() == Some(code),
        None => !run.status.success(),
    };
    assert!(
        code_ok && run.stderr.contains(because),
        "harness: {name} should fail ({}) with {because:?}, got {}\nstdout:\n{}\nstderr:\n{}",
        exit_code.map_or_else(|| "non-zero".to_owned(), |c| c.to_string()),
        run.status,
        run.stdout,
        run.stderr
    );
    run
}

/// Three handshakes that fail against nginx (`ssl_protocols TLSv1.2 TLSv1.3`, self-signed
/// certificate), each with a TLS alert on the wire, and none of them ever reaches `SSL_read` or
/// `SSL_write` on either side: their records are only seen by the socket syscalls. Then one good
/// request on the same server.
/// - curl verifying the certificate: it gets the self-signed certificate, sends an alert
///   (`unknown_ca`) and gives up (exit 60);
/// - `curl --tls-max 1.1`: nginx answers its TLS 1.0/1.1 ClientHello with a `protocol_version`
///   alert (exit 35);
/// - `openssl s_client -tls1_3 -ciphersuites TLS_AES_128_CCM_8_SHA256` (a suite nginx does not
///   enable): nginx answers with a `handshake_failure` alert.
#[test]
fn failed_handshakes_yield_no_spans() {
    require_root!();
    let mut w = World::start(
        "tls-bad-handshake",
        Peer::NginxTls,
        Via::SinkGrpc,
        Watch::Server,
    );
    let url = w.server.url("/index.html");
    let addr = format!("127.0.0.1:{}", w.port());
    failing_client(
        "curl (verifying the certificate)",
        Command::new("curl").args(["--silent", "--show-error", "--max-time", "30", &url]),
        Some(60),
        "SSL certificate problem",
    );
    failing_client(
        "curl --tls-max 1.1",
        Command::new("curl").args([
            "--silent",
            "--show-error",
            "--max-time",
            "30",
            "--insecure",
            "--tls-max",
            "1.1",
            &url,
        ]),
        Some(35),
        "alert protocol version",
    );
    failing_client(
        "openssl s_client (TLS_AES_128_CCM_8_SHA256 only)",
        Command::new("openssl").args([
            "s_client",
            "-connect",
            &addr,
            "-tls1_3",
            "-ciphersuites",
            "TLS_AES_128_CCM_8_SHA256",
        ]),
        None,
        "alert handshake failure",
    );

    let (run, body) = good_curl(&w, Path::new("curl"), "/index.html");
    assert_eq!(run.transfers[0].status, 200, "harness: {run:?}");
    assert!(
        body == nginx_index(&w.dir),
        "curl's /index.html body ({} bytes) differs from the served file",
        body.len()
    );

    // `finish` stops the agent with SIGTERM and asserts exit status 0.
    let spans = w.finish(2);
    w.assert_counts(&spans, 1, 1);
    assert_curl_pair(&w, &spans, &run, "/index.html", NGINX, CURL);
    assert_nothing_else(&w, &spans);
}

/// What `openssl s_client` did when asked to renegotiate mid-connection.
#[derive(Debug)]
struct Renegotiation {
    pid: u32,
    wall: Duration,
    /// The status of each response it printed, in order (the requests are sent in order).
    statuses: Vec<i64>,
    stdout: String,
    stderr: String,
}

/// The statuses of the `HTTP/1.1 <code> …` status lines in s_client's output.
fn response_statuses(stdout: &str) -> Vec<i64> {
    stdout
        .lines()
        .filter_map(|l| l.strip_prefix("HTTP/1.1 "))
        .filter_map(|rest| rest.split_whitespace().next()?.parse().ok())
        .collect()
}

/// `openssl s_client -tls1_2` to `127.0.0.1:port`, driven through stdin: `GET paths[0]`, then the
/// line `R` (s_client's "renegotiate" command; `-quiet` and `-ign_eof` would turn the command
/// letters off, so neither is used), then `GET paths[1]` if s_client still runs, then end of input
/// (s_client closes the connection). Each request is one write, so s_client reads it as one chunk
/// that does not start with a command letter.
fn renegotiate_mid_connection(w: &World, paths: [&str; 2]) -> Renegotiation {
    let started = Instant::now();
    let port = w.port();
    let mut cmd = Command::new("openssl");
    cmd.args([
        "s_client",
        "-tls1_2",
        "-connect",
        &format!("127.0.0.1:{port}"),
    ]);
    let mut proc = Proc::spawn_piped("s_client", w.dir.path(), &mut cmd);
    let request = |path: &str| format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n");
    let send = |proc: &mut Proc, text: &str| {
        // s_client may be gone (it aborts a refused renegotiation): then the pipe is broken.
        if let Some(stdin) = proc.stdin() {
            let _ = stdin
                .write_all(text.as_bytes())
                .and_then(|()| stdin.flush());
        }
    };
    let responses = |proc: &mut Proc, n: usize, timeout: Duration| {
        poll(timeout, || {
            (response_statuses(&proc.stdout()).len() >= n || proc.try_status().is_some())
                .then_some(())
        });
    };

    send(&mut proc, &request(paths[0]));
    responses(&mut proc, 1, CLIENT_TIMEOUT);
    assert_eq!(
        response_statuses(&proc.stdout()).len(),
        1,
        "harness: s_client got no response to its first request:\n{}",
        proc.logs()
    );
    // Let the whole response reach s_client before the renegotiation starts.
    thread::sleep(Duration::from_millis(300));
    send(&mut proc, "R\n");
    let renegotiating = poll(Duration::from_secs(10), || {
        proc.stderr().contains("RENEGOTIATING").then_some(())
    });
    assert!(
        renegotiating.is_some(),
        "harness: s_client did not start a renegotiation:\n{}",
        proc.logs()
    );
    // The renegotiation handshake runs (or is refused) once s_client and the server read again.
    thread::sleep(Duration::from_secs(1));
    send(&mut proc, &request(paths[1]));
    responses(&mut proc, 2, Duration::from_secs(5));
    proc.close_stdin();
    let status = proc.wait_timeout(Duration::from_secs(30));
    assert!(
        status.is_some(),
        "harness: s_client did not exit at the end of its input"
    );
    Renegotiation {
        pid: proc.pid(),
        wall: started.elapsed(),
        statuses: response_statuses(&proc.stdout()),
        stdout: proc.stdout(),
        stderr: proc.stderr(),
    }
}

/// A TLS 1.2 client renegotiates after its first request on `peer`; then a normal curl request.
/// Whatever the server does, every span on the port is a real exchange: exactly one SERVER and one
/// CLIENT span (in s_client) per response s_client got, each with the requested path, and exactly
/// one pair for curl.
/// `first_body_bytes` is the size of the body served for `paths[0]`.
fn renegotiation(
    name: &str,
    peer: Peer,
    server: Service,
    paths: [&str; 2],
    first_body_bytes: i64,
    curl_path: &str,
) -> Renegotiation {
    let mut w = World::start(name, peer, Via::SinkGrpc, Watch::Server);
    let reneg = renegotiate_mid_connection(&w, paths);
    println!(
        "s_client with renegotiation: statuses {:?}, exit after {:?}, stderr:\n{}",
        reneg.statuses, reneg.wall, reneg.stderr
    );
    assert_eq!(
        reneg.statuses.first(),
        Some(&200),
        "harness: the first request failed: {reneg:?}"
    );

    let (run, body) = good_curl(&w, Path::new("curl"), curl_path);
    assert_eq!(run.transfers[0].status, 200, "harness: {run:?}");
    let want_body = if peer == Peer::NginxTls {
        nginx_index(&w.dir)
    } else {
        status_body(200)
    };
    assert!(
        body == want_body,
        "curl's body differs from the served one: {body:?}"
    );

    let answered = reneg.statuses.len();
    let spans = w.finish(2 + 2 * answered);
    let junk: Vec<Span> = spans
        .iter()
        .filter(|s| {
            s.attr_str("url.scheme") != Some("https")
                || s.attr_str("http.request.method") != Some("GET")
                || !s
                    .attr_str("url.path")
                    .is_some_and(|p| paths.contains(&p) || p == curl_path)
        })
        .cloned()
        .collect();
    assert!(
        junk.is_empty(),
        "spans that are no request sent (wrong scheme, method or path):\n{}\nall spans:\n{}",
        describe(&junk),
        describe(&spans)
    );
    w.assert_counts(&spans, 1 + answered, 1 + answered);
    assert_curl_pair(&w, &spans, &run, curl_path, server, CURL);
    let curl_port = i64::from(run.transfers[0].local_port);
    for (i, (path, status)) in paths.iter().zip(&reneg.statuses).enumerate() {
        let body_bytes = (i == 0).then_some(first_body_bytes);
        let server_span = one_where(&spans, SERVER, path, "not from curl's port", |s| {
            s.attr_int("network.peer.port") != Some(curl_port)
        });
        let client_span = one_where(&spans, CLIENT, path, "in s_client's process", |s| {
            s.resource_int("process.pid") == Some(i64::from(reneg.pid))
        });
        for (mut expect, span) in [
            (
                HttpSpan::server("GET", path, *status, w.port())
                    .service(server)
                    .pid(w.server.pid()),
                server_span,
            ),
            (
                HttpSpan::client("GET", path, *status, w.port())
                    .service(OPENSSL)
                    .pid(reneg.pid),
                client_span,
            ),
        ] {
            expect.response_body_size = body_bytes;
            expect
                .scheme("https")
                .no_user_agent()
                .max_duration(reneg.wall)
                .assert(span);
        }
    }
    assert_nothing_else(&w, &spans);
    reneg
}

/// nginx 1.22 with OpenSSL 3 (observed): it sets `SSL_OP_NO_RENEGOTIATION`, so OpenSSL answers
/// s_client's renegotiation ClientHello with a `no_renegotiation` warning alert; s_client then
/// aborts (`ssl3_read_bytes:no renegotiation`, a fatal alert to nginx, exit status 1) before the
/// second request: one response, one span pair from s_client.
#[test]
fn renegotiation_refused_by_nginx() {
    require_root!();
    let reneg = renegotiation(
        "tls-reneg-nginx",
        Peer::NginxTls,
        NGINX,
        ["/index.html", "/status/404"],
        NGINX_INDEX_BYTES as i64,
        "/index.html",
    );
    assert!(
        reneg.stderr.contains("no renegotiation") || reneg.statuses.len() == 2,
        "unexpected s_client outcome: {reneg:?}"
    );
}

/// Python's `ssl` server (3.11, OpenSSL 3; observed): `SSLContext` sets `OP_NO_RENEGOTIATION` by
/// default, so the renegotiation is refused the same way: s_client aborts after its first
/// response; the server's `SSL_read` (blocked waiting for the next request) fails with
/// `SSLV3_ALERT_HANDSHAKE_FAILURE` and the handler thread ends. One span pair from s_client.
#[test]
fn renegotiation_refused_by_python() {
    require_root!();
    let reneg = renegotiation(
        "tls-reneg-python",
        Peer::PythonTls,
        PYTHON,
        ["/status/200", "/status/201"],
        status_body(200).len() as i64,
        "/status/200",
    );
    assert!(
        reneg.stderr.contains("no renegotiation") || reneg.statuses.len() == 2,
        "unexpected s_client outcome: {reneg:?}\nstdout:\n{}",
        reneg.stdout
    );
}

/// Builds `<dir>/fake-ssl/libssl.so.3`, a shared object named like OpenSSL's that defines one
/// unrelated function and no SSL symbol.
fn fake_libssl(w: &World) -> PathBuf {
    let dir = w.dir.join("fake-ssl");
    fs::create_dir_all(&dir).expect("create fake-ssl");
    let source = dir.join("fake.c");
    fs::write(
        &source,
        "int sonde_e2e_unrelated(int x) { return x + 1; }\n",
    )
    .expect("write fake.c");
    let lib = dir.join("libssl.so.3");
    run_to_completion(
        "gcc -shared",
        Command::new("gcc")
            .args(["-shared", "-fPIC", "-o"])
            .arg(&lib)
            .arg(&source),
        CLIENT_TIMEOUT,
    );
    lib
}

/// A process started after the agent maps (`LD_PRELOAD`) a file named `libssl.so.3` without any
/// SSL symbol: the agent skips it as `no_symbols` (debug log naming the file, and the count in the
/// `TLS discovery stats` line at shutdown), attaches nothing to it, and a curl ↔ nginx HTTPS
/// exchange meanwhile still gives exactly one span pair. The preloaded process exits 0.
#[test]
fn fake_libssl_without_symbols_is_skipped() {
    require_root!();
    let mut w = World::start_with_args(
        "tls-fake-libssl",
        Peer::NginxTls,
        Via::SinkGrpc,
        Watch::Server,
        &["--log", "info,agent::probe::tls_attach=debug"],
    );
    let lib = fake_libssl(&w);
    let lib_text = lib.to_string_lossy().into_owned();
    let mut cmd = Command::new(python());
    cmd.env("LD_PRELOAD", &lib)
        .args(["-c", "import time; time.sleep(5)"]);
    let mut preloaded = Proc::spawn("preloaded", w.dir.path(), &mut cmd);
    let mapped = poll(Duration::from_secs(10), || {
        fs::read_to_string(format!("/proc/{}/maps", preloaded.pid()))
            .ok()
            .filter(|maps| maps.contains(&lib_text))
    });
    assert!(
        mapped.is_some(),
        "harness: the process did not map {lib_text}"
    );
    thread::sleep(DISCOVERY_GRACE);

    let (run, body) = good_curl(&w, Path::new("curl"), "/index.html");
    assert_eq!(run.transfers[0].status, 200, "harness: {run:?}");
    assert!(
        body == nginx_index(&w.dir),
        "curl's body differs from the served file"
    );
    let status = preloaded
        .wait_timeout(Duration::from_secs(30))
        .expect("the preloaded process did not exit");
    assert!(
        status.success(),
        "the preloaded process exited with {status}"
    );

    let spans = w.finish(2);
    w.assert_counts(&spans, 1, 1);
    assert_curl_pair(&w, &spans, &run, "/index.html", NGINX, CURL);
    assert_nothing_else(&w, &spans);

    let log = w.agent.stderr();
    assert!(
        log.lines().any(|l| l.contains("not a TLS library")
            && l.contains(&lib_text)
            && l.contains("no_symbols")),
        "the agent did not skip {lib_text} as no_symbols:\n{}",
        w.agent.logs()
    );
    assert!(
        !log.lines()
            .any(|l| l.contains("attached") && l.contains(&lib_text)),
        "the agent attached uprobes to {lib_text}, which has no SSL symbol:\n{}",
        w.agent.logs()
    );
    let stats = log
        .lines()
        .find(|l| l.contains("TLS discovery stats"))
        .unwrap_or_else(|| panic!("no `TLS discovery stats` line:\n{}", w.agent.logs()));
    let no_symbols: u64 = stats
        .split("\"no_symbols\": ")
        .nth(1)
        .and_then(|rest| {
            rest.split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or(0);
    assert!(no_symbols >= 1, "no_symbols not counted in {stats:?}");
}

/// A stripped copy of curl (no `.symtab`; its TLS is in the shared `libssl.so.3`, whose uprobes
/// cover every process mapping it) as the client of nginx over HTTPS: exactly one span pair, the
/// CLIENT span named after the copy.
#[test]
fn stripped_curl_client_is_traced() {
    require_root!();
    let mut w = World::start(
        "tls-stripped-curl",
        Peer::NginxTls,
        Via::SinkGrpc,
        Watch::Server,
    );
    let copy = w.dir.join("curl-stripped");
    fs::copy("/usr/bin/curl", &copy).expect("copy /usr/bin/curl");
    run_to_completion("strip", Command::new("strip").arg(&copy), CLIENT_TIMEOUT);
    let nm = run_captured("nm", Command::new("nm").arg(&copy), CLIENT_TIMEOUT);
    assert!(
        nm.stderr.contains("no symbols"),
        "harness: {} still has a symbol table: {nm:?}",
        copy.display()
    );

    let (run, body) = good_curl(&w, &copy, "/index.html");
    assert_eq!(run.transfers[0].status, 200, "harness: {run:?}");
    assert!(
        body == nginx_index(&w.dir),
        "curl's body differs from the served file"
    );

    let spans = w.finish(2);
    w.assert_counts(&spans, 1, 1);
    assert_curl_pair(
        &w,
        &spans,
        &run,
        "/index.html",
        NGINX,
        Service::Exact("curl-stripped"),
    );
    assert_nothing_else(&w, &spans);
}
