//! Real peers: servers (Python `http.server`, nginx) started per test on a fresh loopback port, and
//! clients (curl, Python `http.client`, a raw TCP exchange) run to completion with their wall time.

use std::{
    collections::BTreeMap,
    fs,
    io::Write as _,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener},
    path::PathBuf,
    process::Command,
    sync::OnceLock,
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
}

impl Server {
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

    /// `http://127.0.0.1:<port><path>` (`http://[::1]:<port><path>` on IPv6).
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", SocketAddr::new(self.ip, self.port))
    }
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
    let mut cmd = Command::new(python());
    cmd.arg(peers_dir().join("http_server.py"))
        .arg(port.to_string())
        .arg(ip.to_string());
    let mut proc = Proc::spawn("http_server", dir.path(), &mut cmd);
    proc.wait_for_addr(SocketAddr::new(ip, port), START_TIMEOUT);
    Server { proc, port, ip }
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
/// `<dir>/nginx/`, serving `/index.html` ([`NGINX_INDEX_BYTES`] bytes), `return 404` on
/// `/status/404` and `return 500` on `/status/500`.
pub fn nginx(dir: &TempDir) -> Server {
    let port = free_port();
    let root = dir.join("nginx");
    fs::create_dir_all(root.join("www")).expect("create the nginx www dir");
    let index: String = (0..NGINX_INDEX_BYTES)
        .map(|i| if i % 64 == 63 { '\n' } else { 'x' })
        .collect();
    fs::write(root.join("www/index.html"), index).expect("write index.html");
    let template =
        fs::read_to_string(peers_dir().join("nginx.conf")).expect("read peers/nginx.conf");
    let conf = template
        .replace("@DIR@", &root.to_string_lossy())
        .replace("@PORT@", &port.to_string());
    let conf_path = root.join("nginx.conf");
    fs::write(&conf_path, conf).expect("write nginx.conf");
    let mut cmd = Command::new("nginx");
    cmd.arg("-p")
        .arg(&root)
        .arg("-e")
        .arg(root.join("error.log"))
        .arg("-c")
        .arg(&conf_path);
    let mut proc = Proc::spawn("nginx", dir.path(), &mut cmd);
    proc.wait_for_port(port, START_TIMEOUT);
    Server {
        proc,
        port,
        ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
    }
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
    let mut cmd = Command::new("curl");
    cmd.args(["--silent", "--show-error", "--http1.1"])
        .args([
            "--write-out",
            "%{http_code} %{size_download} %{local_port} %{num_connects}\\n",
        ])
        .args(extra_args);
    for url in urls {
        cmd.args(["--output", "/dev/null", url]);
    }
    let (pid, out, wall) = run_to_completion("curl", &mut cmd, CLIENT_TIMEOUT);
    ClientRun {
        pid,
        wall,
        transfers: parse_transfers("curl", &out),
    }
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
