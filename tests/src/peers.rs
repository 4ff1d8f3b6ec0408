//! Real peers: servers (Python `http.server`, nginx) started per test on a fresh loopback port, and
//! clients (curl, Python `http.client`, a raw TCP exchange) run to completion with their wall time.

use std::{fs, path::PathBuf, process::Command, sync::OnceLock, time::Duration};

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

    /// `http://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

/// Starts `peers/http_server.py` (HTTP/1.1 keep-alive, `/status/<code>`, `/chunked`, `POST /echo`).
pub fn python_http_server(dir: &TempDir) -> Server {
    let port = free_port();
    let mut cmd = Command::new(python());
    cmd.arg(peers_dir().join("http_server.py"))
        .arg(port.to_string());
    let mut proc = Proc::spawn("http_server", dir.path(), &mut cmd);
    proc.wait_for_port(port, START_TIMEOUT);
    Server { proc, port }
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
    Server { proc, port }
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
