//! Real peers: servers (Python `http.server`, nginx, Node `https`; plain or over TLS; nginx h2c;
//! Python grpcio) started per test on a fresh loopback port, and clients (curl, Python
//! `http.client`, Node `https`, a raw TCP exchange; curl `--http2-prior-knowledge`, `nghttp`,
//! `h2load`; grpcio) run to completion with their wall time.

use std::{
    collections::BTreeMap,
    fs,
    io::Write as _,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener},
    path::{Path, PathBuf},
    process::Command,
    sync::{
        atomic::{AtomicU32, Ordering},
        OnceLock,
    },
    time::{Duration, Instant},
};

use crate::{free_port, peers_dir, process::run_to_completion, process::Proc, TempDir};

const START_TIMEOUT: Duration = Duration::from_secs(30);
const CLIENT_TIMEOUT: Duration = Duration::from_secs(120);

/// Decoded size of `GET /chunked` on [`PyHttpServer`] (`CHUNKS` in `peers/http_server.py`).
pub const CHUNKED_BODY_BYTES: i64 = 600;
/// Size of nginx's static `/index.html`.
pub const NGINX_INDEX_BYTES: usize = 1234;

/// The real Python interpreter (`sys.executable`), so pyenv's shim does not sit between the test
/// and the peer: the peer's pid is the interpreter's.
pub fn python() -> PathBuf {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON
        .get_or_init(|| {
            let (_, out, _) = run_to_completion(
                "python3 (locating sys.executable)",
                Command::new("python3").args(["-c", "import sys; print(sys.executable)"]),
                Duration::from_secs(30),
            );
            PathBuf::from(out.trim())
        })
        .clone()
}

/// A listening server peer.
#[derive(Debug)]
pub struct Server {
    proc: Proc,
    port: u16,
    /// The address it listens on (`127.0.0.1` or `::1`).
    ip: IpAddr,
    /// Whether it speaks HTTPS.
    tls: bool,
}

impl Server {
    /// Spawns `cmd` as child `name` (logs in `dir`) and waits until it listens on `addr`;
    /// `tls`: it speaks HTTPS.
    pub fn spawn(
        name: &str,
        dir: &TempDir,
        cmd: &mut Command,
        addr: SocketAddr,
        tls: bool,
    ) -> Self {
        let mut proc = Proc::spawn(name, dir.path(), cmd);
        proc.wait_for_addr(addr, START_TIMEOUT);
        Self {
            proc,
            port: addr.port(),
            ip: addr.ip(),
            tls,
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    pub fn proc(&self) -> &Proc {
        &self.proc
    }

    pub fn ip(&self) -> IpAddr {
        self.ip
    }

    /// Whether it speaks HTTPS.
    pub fn tls(&self) -> bool {
        self.tls
    }

    /// `http://127.0.0.1:<port><path>` (`http://[::1]:<port><path>` on IPv6; `https://` over TLS).
    pub fn url(&self, path: &str) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}{path}", SocketAddr::new(self.ip, self.port))
    }
}

/// A self-signed certificate (CN and SAN `localhost`, SAN `127.0.0.1`) and its unencrypted key.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Makes `<dir>/cert.pem` and `<dir>/key.pem` with the `openssl` CLI (RSA 2048, valid 2 days), or
/// returns them if this test made them already.
pub fn self_signed_cert(dir: &TempDir) -> TlsFiles {
    let files = TlsFiles {
        cert: dir.join("cert.pem"),
        key: dir.join("key.pem"),
    };
    if !(files.cert.is_file() && files.key.is_file()) {
        run_to_completion(
            "openssl req",
            Command::new("openssl")
                .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout"])
                .arg(&files.key)
                .arg("-out")
                .arg(&files.cert)
                .args(["-days", "2", "-subj", "/CN=localhost", "-addext"])
                .arg("subjectAltName=DNS:localhost,IP:127.0.0.1"),
            Duration::from_secs(60),
        );
    }
    files
}

/// Starts `peers/http_server.py` (HTTP/1.1 keep-alive, `/status/<code>`, `/chunked`, `POST /echo`)
/// on `127.0.0.1`.
pub fn python_http_server(dir: &TempDir) -> Server {
    python_http_server_on(dir, IpAddr::V4(Ipv4Addr::LOCALHOST))
}

/// Starts `peers/http_server.py` listening on `ip` (`::1` gives an `AF_INET6` socket).
pub fn python_http_server_on(dir: &TempDir, ip: IpAddr) -> Server {
    let port = match ip {
        IpAddr::V4(_) => free_port(),
        IpAddr::V6(_) => free_port_v6().expect("IPv6 loopback (check ipv6_loopback() first)"),
    };
    python_server(dir, ip, port, None, None)
}

/// `peers/http_server.py --tls` (HTTPS with [`self_signed_cert`]) on `127.0.0.1` and a fresh port.
pub fn python_https_server(dir: &TempDir) -> Server {
    python_https_server_on_port(dir, free_port())
}

/// `peers/http_server.py --tls` on `127.0.0.1:port`, e.g. a port the agent already watches.
pub fn python_https_server_on_port(dir: &TempDir, port: u16) -> Server {
    let tls = self_signed_cert(dir);
    python_server(dir, IpAddr::V4(Ipv4Addr::LOCALHOST), port, Some(&tls), None)
}

/// Like [`python_https_server_on_port`], but the server loads its own copy of `libssl.so.3`
/// (`<dir>/private-lib/`, through `LD_LIBRARY_PATH`): a file no other process maps, so an agent
/// started earlier can only trace it by discovering the library after the process started.
/// Panics unless the server really mapped the copy.
pub fn python_https_server_with_private_libssl(dir: &TempDir, port: u16) -> Server {
    let tls = self_signed_cert(dir);
    let lib_dir = dir.join("private-lib");
    fs::create_dir_all(&lib_dir).expect("create private-lib");
    let system = python_libssl();
    let copy = lib_dir.join(system.file_name().expect("libssl has a file name"));
    fs::copy(&system, &copy)
        .unwrap_or_else(|e| panic!("copy {} to {}: {e}", system.display(), copy.display()));
    let server = python_server(
        dir,
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        port,
        Some(&tls),
        Some(&lib_dir),
    );
    let maps = fs::read_to_string(format!("/proc/{}/maps", server.pid())).unwrap_or_default();
    assert!(
        maps.contains(&*copy.to_string_lossy()),
        "harness: the server did not load {} (LD_LIBRARY_PATH ignored?)",
        copy.display()
    );
    server
}

/// The `libssl` Python's `ssl` module loads (read from the interpreter's own memory map).
fn python_libssl() -> PathBuf {
    let (_, out, _) = run_to_completion(
        "python3 (locating libssl)",
        Command::new(python()).args([
            "-c",
            "import ssl; print(next(l.split()[-1] for l in open('/proc/self/maps') \
             if '/libssl.so' in l))",
        ]),
        Duration::from_secs(30),
    );
    PathBuf::from(out.trim())
}

/// `peers/http_server.py` on `ip:port`; HTTPS with `tls`; `lib_dir` first in `LD_LIBRARY_PATH`.
fn python_server(
    dir: &TempDir,
    ip: IpAddr,
    port: u16,
    tls: Option<&TlsFiles>,
    lib_dir: Option<&Path>,
) -> Server {
    let mut cmd = Command::new(python());
    if let Some(lib_dir) = lib_dir {
        cmd.env("LD_LIBRARY_PATH", lib_dir);
    }
    cmd.arg(peers_dir().join("http_server.py"))
        .arg(port.to_string())
        .arg(ip.to_string());
    if let Some(tls) = tls {
        cmd.arg("--tls").arg(&tls.cert).arg(&tls.key);
    }
    Server::spawn(
        "http_server",
        dir,
        &mut cmd,
        SocketAddr::new(ip, port),
        tls.is_some(),
    )
}

/// A `[::1]` port that was free a moment ago, or `None` when IPv6 loopback cannot be bound.
pub fn free_port_v6() -> Option<u16> {
    let listener = TcpListener::bind((Ipv6Addr::LOCALHOST, 0)).ok()?;
    Some(listener.local_addr().ok()?.port())
}

/// Why IPv6 loopback is unusable for the tests (`socket.has_ipv6` false in the peers' Python, or
/// `[::1]` cannot be bound), or `None` when it works.
pub fn ipv6_loopback_unavailable() -> Option<String> {
    if free_port_v6().is_none() {
        return Some("cannot bind [::1]:0 (no IPv6 loopback)".to_owned());
    }
    let (_, out, _) = run_to_completion(
        "python3 (socket.has_ipv6)",
        Command::new(python()).args(["-c", "import socket; print(socket.has_ipv6)"]),
        Duration::from_secs(30),
    );
    (out.trim() != "True").then(|| format!("python's socket.has_ipv6 is {}", out.trim()))
}

/// Starts nginx (one foreground process) from `peers/nginx.conf` with everything under
/// `<dir>/nginx/`, serving `/index.html` ([`NGINX_INDEX_BYTES`] bytes, [`nginx_index`]),
/// `return 404` on `/status/404` and `return 500` on `/status/500`.
pub fn nginx(dir: &TempDir) -> Server {
    nginx_with(dir, None)
}

/// [`nginx`] over HTTPS (`listen … ssl`, [`self_signed_cert`], TLS 1.2 and 1.3).
pub fn nginx_tls(dir: &TempDir) -> Server {
    nginx_with(dir, Some(&self_signed_cert(dir)))
}

/// The content of nginx's `/index.html` in `dir` (what a client must receive).
pub fn nginx_index(dir: &TempDir) -> Vec<u8> {
    fs::read(dir.join("nginx/www/index.html")).expect("read nginx's index.html")
}

/// Starts nginx like [`nginx`] (same `www/index.html`), from the template `peers/<template>`, which
/// uses the placeholders `@DIR@` and `@PORT@` of `peers/nginx.conf`.
pub fn nginx_from_template(dir: &TempDir, template: &str) -> Server {
    nginx_from(dir, template, None)
}

fn nginx_with(dir: &TempDir, tls: Option<&TlsFiles>) -> Server {
    nginx_from(dir, "nginx.conf", tls)
}

fn nginx_from(dir: &TempDir, template: &str, tls: Option<&TlsFiles>) -> Server {
    let port = free_port();
    let root = dir.join("nginx");
    fs::create_dir_all(root.join("www")).expect("create the nginx www dir");
    let index: String = (0..NGINX_INDEX_BYTES)
        .map(|i| if i % 64 == 63 { '\n' } else { 'x' })
        .collect();
    fs::write(root.join("www/index.html"), index).expect("write index.html");
    let template = fs::read_to_string(peers_dir().join(template))
        .unwrap_or_else(|e| panic!("read peers/{template}: {e}"));
    let conf = template
        .replace("@DIR@", &root.to_string_lossy())
        .replace("@PORT@", &port.to_string())
        .replace("@SSL@", if tls.is_some() { " ssl" } else { "" })
        .replace(
            "@TLS@",
            &tls.map_or_else(String::new, |t| {
                format!(
                    "ssl_certificate {}; ssl_certificate_key {}; ssl_protocols TLSv1.2 TLSv1.3;",
                    t.cert.display(),
                    t.key.display()
                )
            }),
        );
    let conf_path = root.join("nginx.conf");
    fs::write(&conf_path, conf).expect("write nginx.conf");
    let mut cmd = Command::new("nginx");
    cmd.arg("-p")
        .arg(&root)
        .arg("-e")
        .arg(root.join("error.log"))
        .arg("-c")
        .arg(&conf_path);
    Server::spawn(
        "nginx",
        dir,
        &mut cmd,
        SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
        tls.is_some(),
    )
}

/// Why `node` cannot run the Node peers (not on `PATH`, or it fails), or `None` when it can.
pub fn node_unavailable() -> Option<String> {
    match Command::new("node").arg("--version").output() {
        Ok(out) if out.status.success() => None,
        Ok(out) => Some(format!("`node --version` failed ({})", out.status)),
        Err(e) => Some(format!("cannot run `node`: {e}")),
    }
}

/// `node peers/http_server.js` over HTTPS (Node `https`, OpenSSL linked into `/usr/bin/node`) with
/// [`self_signed_cert`] on `127.0.0.1` and a fresh port. Check [`node_unavailable`] first.
pub fn node_https_server(dir: &TempDir) -> Server {
    let tls = self_signed_cert(dir);
    node_server(dir, free_port(), Some(&tls))
}

/// `node peers/http_server.js` (Node `http`, plain HTTP/1.1) on `127.0.0.1:port`. Check
/// [`node_unavailable`] first.
pub fn node_http_server(dir: &TempDir, port: u16) -> Server {
    node_server(dir, port, None)
}

/// `node peers/http_server.js` on `127.0.0.1:port` (`/status/<code>` as `peers/http_server.py`,
/// and `/chunked/<n>`: n chunks in one corked `writev`); HTTPS with `tls`.
fn node_server(dir: &TempDir, port: u16, tls: Option<&TlsFiles>) -> Server {
    let mut cmd = Command::new("node");
    cmd.arg(peers_dir().join("http_server.js"))
        .arg(port.to_string());
    if let Some(tls) = tls {
        cmd.arg(&tls.cert).arg(&tls.key);
    }
    Server::spawn(
        "http_server_js",
        dir,
        &mut cmd,
        SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
        tls.is_some(),
    )
}

/// The body `peers/http_server.py` and `peers/http_server.js` send for `GET /status/<code>`.
pub fn status_body(code: i64) -> Vec<u8> {
    format!("status {code}\n").into_bytes()
}

/// One request/response as the client saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transfer {
    pub status: i64,
    /// Decoded response body bytes.
    pub body_bytes: i64,
    /// The client's ephemeral port (the server span's `network.peer.port`).
    pub local_port: u16,
    /// New connections opened for this transfer (curl only; 0 when a connection was reused).
    pub new_connections: Option<u32>,
}

/// A finished client process.
#[derive(Debug, Clone)]
pub struct ClientRun {
    pub pid: u32,
    /// Wall time from spawn to exit, an upper bound on every span it caused.
    pub wall: Duration,
    pub transfers: Vec<Transfer>,
}

impl ClientRun {
    /// Distinct client ports, i.e. TCP connections used.
    pub fn connections(&self) -> usize {
        let mut ports: Vec<u16> = self.transfers.iter().map(|t| t.local_port).collect();
        ports.sort_unstable();
        ports.dedup();
        ports.len()
    }
}

/// Runs curl once over `urls` (one connection reused when the server keeps it alive), plus
/// `extra_args` before the URLs. Bodies go to /dev/null.
pub fn curl(urls: &[String], extra_args: &[&str]) -> ClientRun {
    let dev_null = vec![PathBuf::from("/dev/null"); urls.len()];
    curl_to(Path::new("curl"), urls, extra_args, &dev_null)
}

/// One run of the curl executable `program`, over `urls`, the `i`-th body written to `outputs[i]`.
fn curl_to(program: &Path, urls: &[String], extra_args: &[&str], outputs: &[PathBuf]) -> ClientRun {
    curl_version_to(program, "--http1.1", urls, extra_args, outputs).0
}

/// One run of the curl executable `program` with the HTTP version option `version`
/// (`--http1.1`, `--http2-prior-knowledge`); also returns the HTTP version curl used for each
/// transfer (`%{http_version}`: `1.1`, `2`).
fn curl_version_to(
    program: &Path,
    version: &str,
    urls: &[String],
    extra_args: &[&str],
    outputs: &[PathBuf],
) -> (ClientRun, Vec<String>) {
    let mut cmd = Command::new(program);
    cmd.args(["--silent", "--show-error", version])
        .args([
            "--write-out",
            "%{http_code} %{size_download} %{local_port} %{num_connects} %{http_version}\\n",
        ])
        .args(extra_args);
    for (url, output) in urls.iter().zip(outputs) {
        cmd.arg("--output").arg(output).arg(url);
    }
    let (pid, out, wall) = run_to_completion("curl", &mut cmd, CLIENT_TIMEOUT);
    let versions = out
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.split_whitespace().nth(4).unwrap_or_default().to_owned())
        .collect();
    let run = ClientRun {
        pid,
        wall,
        transfers: parse_transfers("curl", &out),
    };
    (run, versions)
}

/// Runs curl once for `url` with `--http2-prior-knowledge` (HTTP/2 from the first byte, as h2c on
/// [`nginx_h2c`] needs), the body to /dev/null. Panics unless the transfer used HTTP/2.
///
/// One URL per run: Debian 12's curl 7.88.1 cannot reuse a prior-knowledge connection (every
/// transfer after the first fails with "Error in the HTTP2 framing layer", also with `-Z`; curl
/// issue 10634, fixed after 7.88.1).
pub fn curl_http2(url: &str) -> ClientRun {
    let urls = [url.to_owned()];
    let (run, versions) = curl_version_to(
        Path::new("curl"),
        "--http2-prior-knowledge",
        &urls,
        &[],
        &[PathBuf::from("/dev/null")],
    );
    assert!(
        versions == ["2"],
        "harness: curl --http2-prior-knowledge used HTTP version {versions:?} for {url}, want 2"
    );
    run
}

/// Runs curl like [`curl`], but saves each response body under `dir` and returns them in URL order
/// (to check that traffic reached the client unaltered).
pub fn curl_bodies(
    dir: &TempDir,
    urls: &[String],
    extra_args: &[&str],
) -> (ClientRun, Vec<Vec<u8>>) {
    curl_bodies_with(Path::new("curl"), dir, urls, extra_args)
}

/// [`curl_bodies`] with another curl executable, e.g. a stripped copy of `/usr/bin/curl`.
pub fn curl_bodies_with(
    program: &Path,
    dir: &TempDir,
    urls: &[String],
    extra_args: &[&str],
) -> (ClientRun, Vec<Vec<u8>>) {
    static RUNS: AtomicU32 = AtomicU32::new(0);
    let run_id = RUNS.fetch_add(1, Ordering::Relaxed);
    let outputs: Vec<PathBuf> = (0..urls.len())
        .map(|i| dir.join(&format!("curl-{run_id}-{i}.body")))
        .collect();
    let run = curl_to(program, urls, extra_args, &outputs);
    let bodies = outputs
        .iter()
        .map(|p| fs::read(p).unwrap_or_else(|e| panic!("read curl's output {}: {e}", p.display())))
        .collect();
    (run, bodies)
}

/// Runs `peers/http_client.py` with `args` (`keepalive PORT PATH...` or `parallel PORT N PATH`).
pub fn python_client(args: &[String]) -> ClientRun {
    let mut cmd = Command::new(python());
    cmd.arg(peers_dir().join("http_client.py")).args(args);
    let (pid, out, wall) = run_to_completion("http_client.py", &mut cmd, CLIENT_TIMEOUT);
    ClientRun {
        pid,
        wall,
        transfers: parse_transfers("http_client.py", &out),
    }
}

/// `peers/http_client.py --tls keepalive PORT PATH...`: Python `http.client.HTTPSConnection`
/// (certificate not verified), one keep-alive connection, one GET per path.
pub fn python_https_client(port: u16, paths: &[&str]) -> ClientRun {
    let mut args = vec!["--tls".to_owned(), "keepalive".to_owned(), port.to_string()];
    args.extend(paths.iter().map(|p| (*p).to_owned()));
    python_client(&args)
}

/// `node peers/https_client.js --wait-ms W PORT PATH...`: Node `https.get` with a keep-alive agent
/// (one connection, certificate not verified), one GET per path, the first `wait` after node
/// started. Check [`node_unavailable`] first.
pub fn node_https_client(wait: Duration, port: u16, paths: &[&str]) -> ClientRun {
    node_client(&["--wait-ms", &wait.as_millis().to_string()], port, paths)
}

/// `node peers/https_client.js --plain PORT PATH...`: Node's `http.get` on one keep-alive
/// connection (plain HTTP/1.1, no User-Agent), one GET per path in order.
pub fn node_http_client(port: u16, paths: &[&str]) -> ClientRun {
    node_client(&["--plain"], port, paths)
}

fn node_client(options: &[&str], port: u16, paths: &[&str]) -> ClientRun {
    let mut cmd = Command::new("node");
    cmd.arg(peers_dir().join("https_client.js"))
        .args(options)
        .arg(port.to_string())
        .args(paths);
    let (pid, out, wall) = run_to_completion("https_client.js", &mut cmd, CLIENT_TIMEOUT);
    ClientRun {
        pid,
        wall,
        transfers: parse_transfers("https_client.js", &out),
    }
}

/// `peers/http_client.py stdin PORT`: a Python `http.client` connection opened at once and kept
/// alive, sending one GET per [`StdinClient::get`]. Killed by PID on drop.
#[derive(Debug)]
pub struct StdinClient {
    proc: Proc,
    /// The connection's client-side (ephemeral) port.
    pub local_port: u16,
    transfers: Vec<Transfer>,
    started: Instant,
}

impl StdinClient {
    /// Starts the client and waits until it is connected to `127.0.0.1:port`.
    pub fn connect(dir: &TempDir, port: u16) -> Self {
        let started = Instant::now();
        let mut cmd = Command::new(python());
        cmd.arg(peers_dir().join("http_client.py"))
            .args(["stdin", &port.to_string()]);
        let mut proc = Proc::spawn_piped("stdin_client", dir.path(), &mut cmd);
        let line = Self::line(&mut proc, 0);
        let local_port = line
            .strip_prefix("connected ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| {
                panic!("http_client.py stdin printed {line:?}, want \"connected <port>\"")
            });
        Self {
            proc,
            local_port,
            transfers: Vec::new(),
            started,
        }
    }

    /// Waits for the `index`-th stdout line (0-based) and returns it.
    fn line(proc: &mut Proc, index: usize) -> String {
        let got = crate::poll(CLIENT_TIMEOUT, || {
            let out = proc.stdout();
            // Only complete lines: the client may be writing the next one.
            let complete = &out[..out.rfind('\n').map_or(0, |i| i + 1)];
            if let Some(line) = complete.lines().nth(index) {
                return Some(Ok(line.to_owned()));
            }
            proc.try_status().map(Err)
        });
        match got {
            Some(Ok(line)) => line,
            Some(Err(status)) => panic!("http_client.py stdin exited ({status}) early"),
            None => {
                panic!("http_client.py stdin printed no line {index} within {CLIENT_TIMEOUT:?}")
            }
        }
    }

    /// Sends `GET path` on the kept-alive connection and returns what the client saw.
    pub fn get(&mut self, path: &str) -> Transfer {
        let stdin = self.proc.stdin().expect("the client's stdin is open");
        writeln!(stdin, "GET {path}")
            .and_then(|()| stdin.flush())
            .expect("write to http_client.py stdin");
        let line = Self::line(&mut self.proc, self.transfers.len() + 1);
        let transfer = parse_transfers("http_client.py stdin", &line)
            .pop()
            .expect("one transfer line");
        assert_eq!(
            transfer.local_port, self.local_port,
            "harness: http_client.py stdin changed connections"
        );
        self.transfers.push(transfer.clone());
        transfer
    }

    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    /// Sends `quit`, waits for a clean exit, and returns every transfer with the client's wall time.
    pub fn quit(mut self) -> ClientRun {
        if let Some(stdin) = self.proc.stdin() {
            let _ = writeln!(stdin, "quit");
        }
        self.proc.close_stdin();
        let status = self
            .proc
            .wait_timeout(CLIENT_TIMEOUT)
            .unwrap_or_else(|| panic!("http_client.py stdin did not exit after quit"));
        assert!(
            status.success(),
            "http_client.py stdin exited with {status}"
        );
        ClientRun {
            pid: self.proc.pid(),
            wall: self.started.elapsed(),
            transfers: std::mem::take(&mut self.transfers),
        }
    }
}

/// Runs `peers/oracle_client.py PORT REQUEST...`: Python `http.client`, one keep-alive connection
/// (reopened after the server closes it), one request per `METHOD,PATH,BODY_BYTES,SPLIT_MS` spec, in
/// order (see the script for the split-head mode).
pub fn python_oracle_client(port: u16, requests: &[String]) -> ClientRun {
    let mut cmd = Command::new(python());
    cmd.arg(peers_dir().join("oracle_client.py"))
        .arg(port.to_string())
        .args(requests);
    let (pid, out, wall) = run_to_completion("oracle_client.py", &mut cmd, CLIENT_TIMEOUT);
    ClientRun {
        pid,
        wall,
        transfers: parse_transfers("oracle_client.py", &out),
    }
}

/// Runs `peers/http_client.py headers PORT PATH HEADER...`: one GET with extra request headers
/// (`"Name: value"`).
pub fn python_client_with_headers(port: u16, path: &str, headers: &[&str]) -> ClientRun {
    let mut args = vec!["headers".to_owned(), port.to_string(), path.to_owned()];
    args.extend(headers.iter().map(|h| (*h).to_owned()));
    python_client(&args)
}

/// What `peers/load_client.py` reported.
#[derive(Debug, Clone)]
pub struct LoadRun {
    pub pid: u32,
    pub wall: Duration,
    /// Requests answered as expected, by (method, path, status).
    pub ok: BTreeMap<(String, String, i64), u64>,
    /// Requests that failed (exception, unexpected status or body).
    pub failed: u64,
    /// What went wrong with each failed request.
    pub errors: Vec<String>,
    /// Connections opened.
    pub connections: u64,
}

impl LoadRun {
    pub fn ok_total(&self) -> u64 {
        self.ok.values().sum()
    }
}

/// How long a load run may take.
const LOAD_TIMEOUT: Duration = Duration::from_secs(600);

/// Runs `peers/load_client.py PORT THREADS REQUESTS BODY_BYTES` against [`python_http_server`]:
/// `threads` keep-alive connections, `requests` in all, cycling `POST /echo` (a `body_bytes` body,
/// echoed), `GET /status/202` and `GET /status/404`.
pub fn python_load(port: u16, threads: u32, requests: u64, body_bytes: u64) -> LoadRun {
    let mut cmd = Command::new(python());
    cmd.arg(peers_dir().join("load_client.py")).args([
        port.to_string(),
        threads.to_string(),
        requests.to_string(),
        body_bytes.to_string(),
    ]);
    let (pid, out, wall) = run_to_completion("load_client.py", &mut cmd, LOAD_TIMEOUT);
    let mut run = LoadRun {
        pid,
        wall,
        ok: BTreeMap::new(),
        failed: u64::MAX,
        errors: Vec::new(),
        connections: 0,
    };
    for line in out.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let num = |s: &str| -> u64 {
            s.parse()
                .unwrap_or_else(|_| panic!("load_client.py printed an unexpected line {line:?}"))
        };
        match f.as_slice() {
            ["ok", method, path, status, count] => {
                let status = i64::try_from(num(status)).expect("status fits i64");
                run.ok.insert(
                    ((*method).to_owned(), (*path).to_owned(), status),
                    num(count),
                );
            }
            ["error", ..] => run.errors.push(line["error ".len()..].to_owned()),
            ["failed", n] => run.failed = num(n),
            ["connections", n] => run.connections = num(n),
            _ => panic!("load_client.py printed an unexpected line {line:?}"),
        }
    }
    assert_ne!(
        run.failed,
        u64::MAX,
        "load_client.py printed no summary:\n{out}"
    );
    run
}

/// Runs `peers/raw_tcp.py MODE PORT`: a server and a client in one process exchanging non-HTTP bytes.
pub fn raw_tcp(mode: &str, port: u16) -> ClientRun {
    let mut cmd = Command::new(python());
    cmd.arg(peers_dir().join("raw_tcp.py"))
        .args([mode, &port.to_string()]);
    let (pid, out, wall) = run_to_completion("raw_tcp.py", &mut cmd, CLIENT_TIMEOUT);
    assert_eq!(
        out.trim(),
        "done",
        "raw_tcp.py {mode} did not complete its exchanges"
    );
    ClientRun {
        pid,
        wall,
        transfers: Vec::new(),
    }
}

/// Parses "<status> <body bytes> <local port> [<new connections>]" lines.
fn parse_transfers(client: &str, out: &str) -> Vec<Transfer> {
    out.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let parse = |i: usize| -> i64 {
                fields
                    .get(i)
                    .and_then(|f| f.parse().ok())
                    .unwrap_or_else(|| panic!("{client} printed an unexpected line {line:?}"))
            };
            Transfer {
                status: parse(0),
                body_bytes: parse(1),
                local_port: u16::try_from(parse(2))
                    .unwrap_or_else(|_| panic!("{client}: bad port in {line:?}")),
                new_connections: fields.get(3).and_then(|f| f.parse().ok()),
            }
        })
        .collect()
}

/// Starts nginx from `peers/nginx_h2.conf`: h2c with prior knowledge on `127.0.0.1` (nginx 1.22's
/// `listen … http2` without `ssl`), the same files and `return`s as [`nginx`], and an access log
/// ([`nginx_access_log`]) of what nginx saw.
pub fn nginx_h2c(dir: &TempDir) -> Server {
    nginx_from_template(dir, "nginx_h2.conf")
}

/// One line of the access log of [`nginx_h2c`] (`log_format sonde` in `peers/nginx_h2.conf`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NginxRequest {
    /// `$remote_port`: the client's ephemeral port.
    pub client_port: u16,
    pub status: i64,
    pub method: String,
    /// `$request_uri`.
    pub uri: String,
    /// `$server_protocol`: `HTTP/2.0` for h2c.
    pub protocol: String,
    /// `$body_bytes_sent`: the response body (DATA payload) bytes.
    pub body_bytes: i64,
    /// `$connection`: nginx's connection serial number.
    pub connection: u64,
    /// `$http_user_agent` (`-` when the client sent none).
    pub user_agent: String,
}

/// Waits until nginx's access log in `dir` has `expected` lines (nginx writes a request's line
/// when it closes the stream, which may be just after the client has the whole response) and
/// returns every line. Panics if it has fewer after [`CLIENT_TIMEOUT`], or more.
pub fn nginx_access_log(dir: &TempDir, expected: usize) -> Vec<NginxRequest> {
    let path = dir.join("nginx/access.log");
    let read = || fs::read_to_string(&path).unwrap_or_default();
    let complete = |text: &str| text.lines().filter(|l| !l.trim().is_empty()).count();
    crate::poll(CLIENT_TIMEOUT, || {
        let text = read();
        (complete(&text) >= expected).then_some(())
    });
    let text = read();
    let lines: Vec<NginxRequest> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let f: Vec<&str> = line.splitn(9, ' ').collect();
            let bad = || panic!("harness: unexpected nginx access log line {line:?}");
            let [port, status, method, uri, protocol, body, connection, _requests, user_agent] =
                f[..]
            else {
                bad()
            };
            NginxRequest {
                client_port: port.parse().unwrap_or_else(|_| bad()),
                status: status.parse().unwrap_or_else(|_| bad()),
                method: method.to_owned(),
                uri: uri.to_owned(),
                protocol: protocol.to_owned(),
                body_bytes: body.parse().unwrap_or_else(|_| bad()),
                connection: connection.parse().unwrap_or_else(|_| bad()),
                user_agent: user_agent.to_owned(),
            }
        })
        .collect();
    assert_eq!(
        lines.len(),
        expected,
        "harness: nginx logged {} requests, want {expected}:\n{text}",
        lines.len()
    );
    lines
}

/// One stream as `nghttp -s` reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NghttpStream {
    pub stream_id: u32,
    pub status: i64,
    /// The request path (`:path`).
    pub path: String,
}

/// A finished `nghttp` run.
#[derive(Debug, Clone)]
pub struct NghttpRun {
    pub pid: u32,
    pub wall: Duration,
    /// One per requested URI, in `nghttp`'s (completion) order.
    pub streams: Vec<NghttpStream>,
    /// Whether every request's HEADERS was sent before the first response HEADERS arrived, i.e.
    /// all streams were open at once on the connection (from `nghttp -v`'s frame log).
    pub all_requests_before_any_response: bool,
}

/// Runs `nghttp -n -v -s URI...` (nghttp2's client; h2c with prior knowledge for `http://`, no
/// Upgrade): every URI requested at once, as concurrent streams on one connection, bodies
/// discarded.
pub fn nghttp(urls: &[String]) -> NghttpRun {
    let mut cmd = Command::new("nghttp");
    cmd.args(["-n", "-v", "-s"]).args(urls);
    let (pid, out, wall) = run_to_completion("nghttp", &mut cmd, CLIENT_TIMEOUT);
    NghttpRun {
        pid,
        wall,
        streams: parse_nghttp_stats(&out),
        all_requests_before_any_response: nghttp_requests_first(&out),
    }
}

/// The `Request timing` table of `nghttp -s`: `id responseEnd requestStart process code size
/// request path` rows.
fn parse_nghttp_stats(out: &str) -> Vec<NghttpStream> {
    let table = out.split_once("request path").map_or("", |(_, rest)| rest);
    table
        .lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let [id, _end, _start, _process, code, _size, path] = f[..] else {
                return None;
            };
            Some(NghttpStream {
                stream_id: id.parse().ok()?,
                status: code.parse().ok()?,
                path: path.to_owned(),
            })
        })
        .collect()
}

/// From `nghttp -v`'s frame log: whether the last `send HEADERS frame` comes before the first
/// `recv HEADERS frame`.
fn nghttp_requests_first(out: &str) -> bool {
    let lines: Vec<&str> = out.lines().collect();
    let last_send = lines.iter().rposition(|l| l.contains("send HEADERS frame"));
    let first_recv = lines.iter().position(|l| l.contains("recv HEADERS frame"));
    matches!((last_send, first_recv), (Some(s), Some(r)) if s < r)
}

/// What `h2load` reported.
#[derive(Debug, Clone)]
pub struct H2loadRun {
    pub pid: u32,
    pub wall: Duration,
    /// `requests: N total, N started, N done, N succeeded, N failed, N errored, N timeout`
    /// (h2load counts responses with status 4xx and 5xx as failed, not succeeded).
    pub done: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub errored: u64,
    pub timeout: u64,
    /// `status codes: N 2xx, N 3xx, N 4xx, N 5xx`.
    pub status_2xx: u64,
    pub status_4xx: u64,
    pub status_5xx: u64,
    /// The whole output, for failure messages.
    pub output: String,
}

/// Runs `h2load -n REQUESTS -c CLIENTS -m STREAMS URI...` (h2c with prior knowledge for
/// `http://`): `clients` connections, at most `streams` concurrent streams on each, the URIs used
/// round-robin.
pub fn h2load(urls: &[String], requests: u32, clients: u32, streams: u32) -> H2loadRun {
    let mut cmd = Command::new("h2load");
    cmd.args(["-n", &requests.to_string()])
        .args(["-c", &clients.to_string()])
        .args(["-m", &streams.to_string()])
        .args(urls);
    let (pid, out, wall) = run_to_completion("h2load", &mut cmd, LOAD_TIMEOUT);
    let field = |line_prefix: &str, label: &str| -> u64 {
        out.lines()
            .find_map(|l| l.trim().strip_prefix(line_prefix))
            .and_then(|rest| {
                rest.split(',')
                    .find_map(|part| part.trim().strip_suffix(label)?.trim().parse().ok())
            })
            .unwrap_or_else(|| panic!("h2load printed no `{line_prefix} … {label}`:\n{out}"))
    };
    H2loadRun {
        pid,
        wall,
        done: field("requests:", "done"),
        succeeded: field("requests:", "succeeded"),
        failed: field("requests:", "failed"),
        errored: field("requests:", "errored"),
        timeout: field("requests:", "timeout"),
        status_2xx: field("status codes:", "2xx"),
        status_4xx: field("status codes:", "4xx"),
        status_5xx: field("status codes:", "5xx"),
        output: out,
    }
}

/// Starts `peers/grpc_peer.py serve PORT`: Python grpcio serving `sonde.test.Echo` (see the
/// script) on `127.0.0.1` and a fresh port, plaintext HTTP/2. Read its calls with
/// [`grpc_served`].
pub fn grpc_server(dir: &TempDir) -> Server {
    let port = free_port();
    let mut cmd = Command::new(python());
    cmd.arg(peers_dir().join("grpc_peer.py"))
        .args(["serve", &port.to_string()]);
    Server::spawn(
        "grpc_server",
        dir,
        &mut cmd,
        SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
        false,
    )
}

/// One call as [`grpc_server`]'s handler saw it start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrpcServed {
    /// The method name within `sonde.test.Echo` (`Unary`).
    pub method: String,
    /// The client's ephemeral port (from grpc's peer string `ipv4:127.0.0.1:PORT`).
    pub client_port: u16,
    /// Calls in their handlers when this one started, itself included.
    pub inflight: u32,
}

/// Waits until [`grpc_server`] logged `expected` calls and returns them (panics if it logged
/// fewer after [`CLIENT_TIMEOUT`], or more).
pub fn grpc_served(server: &Server, expected: usize) -> Vec<GrpcServed> {
    let calls = |out: &str| -> Vec<GrpcServed> {
        // Only complete lines: the server may be writing the next one.
        out[..out.rfind('\n').map_or(0, |i| i + 1)]
            .lines()
            .filter_map(|l| l.strip_prefix("call "))
            .map(|rest| {
                let bad = || panic!("harness: grpc_peer.py serve printed {rest:?}");
                let [method, peer, inflight] = rest.split(' ').collect::<Vec<_>>()[..] else {
                    bad()
                };
                GrpcServed {
                    method: method.to_owned(),
                    client_port: peer
                        .rsplit(':')
                        .next()
                        .and_then(|p| p.parse().ok())
                        .unwrap_or_else(|| bad()),
                    inflight: inflight.parse().unwrap_or_else(|_| bad()),
                }
            })
            .collect()
    };
    crate::poll(CLIENT_TIMEOUT, || {
        (calls(&server.proc.stdout()).len() >= expected).then_some(())
    });
    let out = server.proc.stdout();
    let got = calls(&out);
    assert_eq!(
        got.len(),
        expected,
        "harness: grpc_peer.py serve logged {} calls, want {expected}:\n{out}",
        got.len()
    );
    got
}

/// One call as the gRPC client saw it end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrpcCall {
    /// The method name within `sonde.test.Echo` (`Unary`).
    pub method: String,
    /// The grpc status name (`OK`, `NOT_FOUND`, `DEADLINE_EXCEEDED`, ...).
    pub status: String,
    pub responses: u32,
    pub response_bytes: u64,
}

/// A finished `grpc_peer.py call` run.
#[derive(Debug, Clone)]
pub struct GrpcRun {
    pub pid: u32,
    /// Wall time from spawn to exit, an upper bound on every span it caused.
    pub wall: Duration,
    /// In the order the calls ended.
    pub calls: Vec<GrpcCall>,
}

/// Runs `peers/grpc_peer.py call PORT SPEC...`: one grpcio channel (one HTTP/2 connection) to
/// `127.0.0.1:port`, the specs in order (see the script: `unary[:BYTES]`, `server_stream`,
/// `client_stream`, `bidi`, `fail[:CODE]`, `slow:MS`, `concurrent:N[:HOLD_MS]`). Panics unless
/// every call ended as its spec expects.
pub fn grpc_calls(port: u16, specs: &[&str]) -> GrpcRun {
    let mut cmd = Command::new(python());
    cmd.arg(peers_dir().join("grpc_peer.py"))
        .args(["call", &port.to_string()])
        .args(specs);
    let (pid, out, wall) = run_to_completion("grpc_peer.py call", &mut cmd, CLIENT_TIMEOUT);
    let calls = out
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let bad = || panic!("harness: grpc_peer.py call printed {line:?}");
            let [method, status, responses, bytes] = line.split(' ').collect::<Vec<_>>()[..] else {
                bad()
            };
            GrpcCall {
                method: method.to_owned(),
                status: status.to_owned(),
                responses: responses.parse().unwrap_or_else(|_| bad()),
                response_bytes: bytes.parse().unwrap_or_else(|_| bad()),
            }
        })
        .collect();
    GrpcRun { pid, wall, calls }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The tail of a real `nghttp -n -v -s` run against `peers/nginx_h2.conf` (nghttp 1.52.0).
    const NGHTTP: &str = "\
[  0.000] send HEADERS frame <length=39, flags=0x25, stream_id=13>
          :path: /index.html
[  0.000] send HEADERS frame <length=21, flags=0x25, stream_id=15>
          :path: /status/404
[  0.000] recv (stream_id=13) :status: 200
[  0.000] recv HEADERS frame <length=108, flags=0x04, stream_id=13>
[  0.000] recv HEADERS frame <length=20, flags=0x04, stream_id=15>
***** Statistics *****

Request timing:
          URI: request URI

sorted by 'complete'

id  responseEnd requestStart  process code size request path
 13      +235us        +70us    164us  200   1K /index.html
 15      +252us        +71us    180us  404  153 /status/404
";

    #[test]
    fn nghttp_stats_and_frame_order() {
        assert_eq!(
            parse_nghttp_stats(NGHTTP),
            [
                NghttpStream {
                    stream_id: 13,
                    status: 200,
                    path: "/index.html".to_owned()
                },
                NghttpStream {
                    stream_id: 15,
                    status: 404,
                    path: "/status/404".to_owned()
                },
            ]
        );
        assert!(nghttp_requests_first(NGHTTP));
        let interleaved = NGHTTP.replacen(
            "[  0.000] send HEADERS frame <length=21",
            "[  0.000] recv HEADERS frame <length=1, flags=0x04, stream_id=1>\n[  0.000] send \
             HEADERS frame <length=21",
            1,
        );
        assert!(!nghttp_requests_first(&interleaved));
    }
}

// ---- HTTP/2 over TLS and hypercorn (http2_tls.rs, http2_hypercorn.rs) ----

/// Starts nginx from `peers/nginx_h2_tls.conf`: HTTP/2 over TLS (`listen … ssl http2`, ALPN `h2`,
/// [`self_signed_cert`], TLS 1.2 and 1.3) on `127.0.0.1`, with the files, `return`s and access log
/// ([`nginx_access_log`]) of [`nginx_h2c`].
pub fn nginx_h2_tls(dir: &TempDir) -> Server {
    nginx_from(dir, "nginx_h2_tls.conf", Some(&self_signed_cert(dir)))
}

/// Runs curl once over `urls` with `--http2 --insecure` plus `extra_args` (over TLS: HTTP/2 by
/// ALPN, every transfer on one connection when the server keeps it), saving each body under `dir`;
/// returns the run and the bodies in URL order. Panics unless every transfer used HTTP/2.
pub fn curl_h2_tls(
    dir: &TempDir,
    urls: &[String],
    extra_args: &[&str],
) -> (ClientRun, Vec<Vec<u8>>) {
    static RUNS: AtomicU32 = AtomicU32::new(0);
    let run_id = RUNS.fetch_add(1, Ordering::Relaxed);
    let outputs: Vec<PathBuf> = (0..urls.len())
        .map(|i| dir.join(&format!("curl-h2-{run_id}-{i}.body")))
        .collect();
    let mut args = vec!["--insecure"];
    args.extend_from_slice(extra_args);
    let (run, versions) = curl_version_to(Path::new("curl"), "--http2", urls, &args, &outputs);
    assert!(
        versions.len() == urls.len() && versions.iter().all(|v| v == "2"),
        "harness: curl --http2 used HTTP versions {versions:?} for {urls:?}, want 2 for each"
    );
    let bodies = outputs
        .iter()
        .map(|p| fs::read(p).unwrap_or_else(|e| panic!("read curl's output {}: {e}", p.display())))
        .collect();
    (run, bodies)
}

/// Runs curl once for the `http://` URL `url` with `--http2` (no prior knowledge: an HTTP/1.1
/// request with `Upgrade: h2c`, answered `101` then over HTTP/2 on stream 1 by a server that
/// upgrades), the body to /dev/null. Panics unless curl ended on HTTP/2, i.e. the upgrade happened.
pub fn curl_h2c_upgrade(url: &str) -> ClientRun {
    let urls = [url.to_owned()];
    let (run, versions) = curl_version_to(
        Path::new("curl"),
        "--http2",
        &urls,
        &[],
        &[PathBuf::from("/dev/null")],
    );
    assert!(
        versions == ["2"],
        "harness: curl --http2 used HTTP version {versions:?} for {url}, want 2 (no h2c upgrade?)"
    );
    run
}

/// Body size of `GET /ok` on [`hypercorn_h2c`] (`OK_BODY` in `peers/asgi_app.py`).
pub const HYPERCORN_OK_BYTES: i64 = 18;
/// Body size of `GET /missing` (404) on [`hypercorn_h2c`] (`MISSING_BODY` in `peers/asgi_app.py`).
pub const HYPERCORN_MISSING_BYTES: i64 = 10;

/// Starts hypercorn (PyPI) serving `peers/asgi_app.py` (`/ok` 200, `/missing` 404) on `127.0.0.1`
/// and a fresh port, cleartext: HTTP/1.1, h2c with prior knowledge, and h2c by `Upgrade`.
/// `--workers 0`: the interpreter itself serves, so the server's pid is [`python`]'s. Read what it
/// served with [`hypercorn_requests`].
pub fn hypercorn_h2c(dir: &TempDir) -> Server {
    let port = free_port();
    let app = format!("{}:app", peers_dir().join("asgi_app.py").display());
    let mut cmd = Command::new(python());
    cmd.args(["-m", "hypercorn", "--workers", "0", "--bind"])
        .arg(format!("127.0.0.1:{port}"))
        .arg(app);
    Server::spawn(
        "hypercorn",
        dir,
        &mut cmd,
        SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
        false,
    )
}

/// One request as `peers/asgi_app.py` saw it (its `request …` line).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AsgiRequest {
    /// The ASGI scope's `http_version`: `1.1` or `2`.
    pub http_version: String,
    /// The client's ephemeral port.
    pub client_port: u16,
    pub method: String,
    pub path: String,
    pub status: i64,
    pub body_bytes: i64,
    /// The `User-Agent` header (`-` when the client sent none).
    pub user_agent: String,
}

/// Waits until [`hypercorn_h2c`]'s app logged `expected` requests and returns them (panics if it
/// logged fewer after [`CLIENT_TIMEOUT`], or more).
pub fn hypercorn_requests(server: &Server, expected: usize) -> Vec<AsgiRequest> {
    let requests = |out: &str| -> Vec<AsgiRequest> {
        // Only complete lines: the app may be writing the next one.
        out[..out.rfind('\n').map_or(0, |i| i + 1)]
            .lines()
            .filter_map(|l| l.strip_prefix("request "))
            .map(|rest| {
                let bad = || panic!("harness: asgi_app.py printed {rest:?}");
                let f: Vec<&str> = rest.splitn(7, ' ').collect();
                let [version, port, method, path, status, body, user_agent] = f[..] else {
                    bad()
                };
                AsgiRequest {
                    http_version: version.to_owned(),
                    client_port: port.parse().unwrap_or_else(|_| bad()),
                    method: method.to_owned(),
                    path: path.to_owned(),
                    status: status.parse().unwrap_or_else(|_| bad()),
                    body_bytes: body.parse().unwrap_or_else(|_| bad()),
                    user_agent: user_agent.to_owned(),
                }
            })
            .collect()
    };
    crate::poll(CLIENT_TIMEOUT, || {
        (requests(&server.proc.stdout()).len() >= expected).then_some(())
    });
    let out = server.proc.stdout();
    let got = requests(&out);
    assert_eq!(
        got.len(),
        expected,
        "harness: asgi_app.py logged {} requests, want {expected}:\n{out}",
        got.len()
    );
    got
}

// ---- gRPC join and grpc-go ----
