//! gRPC beyond one grpcio run to completion: a `grpc_peer.py call` client kept running in the
//! background (so its channel can be opened before the agent starts and go on after it is
//! ready), the grpc-go server of `peers/grpc_go_peer.go` (built with Debian's Go on first use),
//! and the per-call span checks shared by the gRPC tests.

use std::{
    collections::BTreeSet,
    env,
    net::{Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    process::Command,
    sync::OnceLock,
    time::{Duration, Instant},
};

use crate::{
    agent::{Agent, Export},
    expect::{containment_mismatch, RpcSpan, Service},
    free_port, peers,
    peers::{GrpcCall, GrpcRun, GrpcServed, Server},
    peers_dir,
    process::{run_captured, Proc},
    span::{describe, Span, CLIENT, SERVER},
    OtlpSink, TempDir, World,
};

/// `service.name` of the Python peers (`python3`, `python3.11`).
pub const PYTHON: Service = Service::Prefix("python3");
/// The gRPC service both peers implement.
pub const SERVICE: &str = "sonde.test.Echo";
/// The grpc-go peer's executable name, hence its spans' `service.name`.
pub const GO_PEER: &str = "grpc_go_peer";

/// How far a CLIENT span's ends may stick out of its SERVER span's: the two syscalls race to
/// return (as in `tests/oracle.rs`), 1 ms. Inside the VM harness (`SONDE_EXPECT_CAPTURE` set by
/// `cargo xtask test --vm`, TCG emulation) a vCPU can be descheduled for milliseconds between
/// delivering a write's bytes and returning from it (seen: a server's last write returned 3.8 ms
/// after the client had read its bytes), so 10 ms there.
pub fn containment_slack() -> Duration {
    if env::var_os("SONDE_EXPECT_CAPTURE").is_some() {
        Duration::from_millis(10)
    } else {
        Duration::from_millis(1)
    }
}

const CLIENT_TIMEOUT: Duration = Duration::from_secs(120);
const GO_BUILD_TIMEOUT: Duration = Duration::from_secs(300);

/// `sonde.test.Echo/<method>`.
pub fn full(method: &str) -> String {
    format!("{SERVICE}/{method}")
}

/// The sink, the server `start_server` starts, and the agent watching its port (OTLP/gRPC).
pub fn grpc_world_with(name: &str, start_server: impl FnOnce(&TempDir) -> Server) -> World {
    GrpcStage::start(name, start_server).start_agent()
}

/// A gRPC [`World`] before its agent starts: temp dir, sink and server are up, so a client can
/// open its channel (and make calls) the agent will only find already established.
#[derive(Debug)]
pub struct GrpcStage {
    pub server: Server,
    pub sink: OtlpSink,
    pub dir: TempDir,
}

impl GrpcStage {
    pub fn start(name: &str, start_server: impl FnOnce(&TempDir) -> Server) -> Self {
        let dir = TempDir::new(name);
        let sink = OtlpSink::start(&dir);
        let server = start_server(&dir);
        Self { server, sink, dir }
    }

    pub fn port(&self) -> u16 {
        self.server.port()
    }

    /// Starts the agent (`--port` the server's), waits until it is ready, returns the world.
    pub fn start_agent(self) -> World {
        let Self { server, sink, dir } = self;
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
}

/// `peers/grpc_peer.py call PORT SPEC...` running in the background (stdout in the test's dir):
/// with a `wait:PATH` spec, it makes the calls before it, then idles with its channel open until
/// the test creates PATH ([`GrpcClient::release`]).
#[derive(Debug)]
pub struct GrpcClient {
    proc: Proc,
    started: Instant,
}

impl GrpcClient {
    /// Starts the client; `specs` as for [`peers::grpc_calls`], plus `wait:PATH`.
    pub fn spawn(dir: &TempDir, port: u16, specs: &[&str]) -> Self {
        let started = Instant::now();
        let mut cmd = Command::new(peers::python());
        cmd.arg(peers_dir().join("grpc_peer.py"))
            .args(["call", &port.to_string()])
            .args(specs);
        let proc = Proc::spawn("grpc_client", dir.path(), &mut cmd);
        Self { proc, started }
    }

    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    /// Waits until the client has reported `n` calls (it is then waiting, if its next spec is
    /// `wait:`) and returns them; panics if it exits first or takes longer than the client timeout.
    pub fn wait_for_calls(&mut self, n: usize) -> Vec<GrpcCall> {
        let got = crate::poll(CLIENT_TIMEOUT, || {
            let calls = parse_grpc_call_lines(&complete_lines(&self.proc.stdout()));
            if calls.len() >= n {
                return Some(Ok(calls));
            }
            self.proc.try_status().map(Err)
        });
        match got {
            Some(Ok(calls)) => calls,
            Some(Err(status)) => panic!(
                "harness: grpc_peer.py call exited ({status}) before its {n}th call:\n{}",
                self.proc.logs()
            ),
            None => {
                panic!("harness: grpc_peer.py call made fewer than {n} calls in {CLIENT_TIMEOUT:?}")
            }
        }
    }

    /// Lets a client waiting on `wait:path` go on.
    pub fn release(path: &Path) {
        std::fs::write(path, b"go\n").unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
    }

    /// Waits for the client to exit (it must exit 0: every call ended as its spec expects) and
    /// returns its run; `wall` spans from spawn to exit.
    pub fn finish(mut self) -> GrpcRun {
        let status = self.proc.wait_timeout(CLIENT_TIMEOUT).unwrap_or_else(|| {
            panic!("harness: grpc_peer.py call did not finish within {CLIENT_TIMEOUT:?}")
        });
        let wall = self.started.elapsed();
        assert!(
            status.success(),
            "harness: grpc_peer.py call failed ({status}):\n{}",
            self.proc.logs()
        );
        GrpcRun {
            pid: self.proc.pid(),
            wall,
            calls: parse_grpc_call_lines(&self.proc.stdout()),
        }
    }
}

/// `out` up to its last newline (a writer may be in the middle of the next line).
fn complete_lines(out: &str) -> String {
    out[..out.rfind('\n').map_or(0, |i| i + 1)].to_owned()
}

/// `grpc_peer.py call`'s `METHOD STATUS RESPONSES RESPONSE_BYTES` lines.
pub fn parse_grpc_call_lines(out: &str) -> Vec<GrpcCall> {
    out.lines()
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
        .collect()
}

/// Where the grpc-go peer is built: `<target>/e2e-go/` (the cargo target dir this test binary
/// runs from), else `tests/../target/e2e-go/`.
fn go_build_dir() -> PathBuf {
    let target = env::current_exe()
        .ok()
        .and_then(|exe| {
            // <target>/<profile>/deps/<test binary>
            let deps = exe.parent()?;
            (deps.file_name()? == "deps").then(|| deps.parent()?.parent().map(Path::to_path_buf))?
        })
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target.join("e2e-go")
}

/// Why the grpc-go peer cannot be built (no `go`, or no grpc-go sources in Debian's GOPATH), or
/// `None` when it can.
pub fn go_grpc_unavailable() -> Option<String> {
    match Command::new("go").arg("version").output() {
        Ok(out) if out.status.success() => {}
        Ok(out) => return Some(format!("`go version` failed ({})", out.status)),
        Err(e) => return Some(format!("cannot run `go` (apt golang-go): {e}")),
    }
    let grpc = Path::new("/usr/share/gocode/src/google.golang.org/grpc");
    (!grpc.is_dir()).then(|| format!("no {} (apt golang-google-grpc-dev)", grpc.display()))
}

/// The grpc-go peer's binary, built once per test process from `peers/grpc_go_peer.go` with
/// Debian's go1.19 and grpc-go 1.33 in GOPATH mode (offline: `GOPROXY=off`), and rebuilt only
/// when the source is newer than the binary. Panics if the build fails.
pub fn grpc_go_peer_binary() -> PathBuf {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY
        .get_or_init(|| {
            let source = peers_dir().join("grpc_go_peer.go");
            let dir = go_build_dir();
            let binary = dir.join(GO_PEER);
            let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
            let fresh = matches!(
                (modified(&binary), modified(&source)),
                (Some(built), Some(src)) if built >= src
            );
            if fresh {
                return binary;
            }
            std::fs::create_dir_all(&dir)
                .unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
            // Built under a temporary name, then renamed: a binary that exists is complete.
            let partial = dir.join(format!("{GO_PEER}.{}.partial", std::process::id()));
            let mut cmd = Command::new("go");
            cmd.arg("build")
                .arg("-o")
                .arg(&partial)
                .arg(&source)
                .current_dir(&dir)
                .env("GO111MODULE", "off")
                .env("GOPATH", "/usr/share/gocode")
                .env("GOPROXY", "off")
                .env("GOFLAGS", "")
                .env("GOCACHE", dir.join("cache"));
            let run = run_captured("go build grpc_go_peer", &mut cmd, GO_BUILD_TIMEOUT);
            assert!(
                run.status.success(),
                "harness: go build of {} failed ({}); needs apt golang-go and \
                 golang-google-grpc-dev:\n{}{}",
                source.display(),
                run.status,
                run.stdout,
                run.stderr
            );
            std::fs::rename(&partial, &binary).unwrap_or_else(|e| {
                panic!("rename {} to {}: {e}", partial.display(), binary.display())
            });
            binary
        })
        .clone()
}

/// Starts the grpc-go peer (`grpc_go_peer PORT`, same log lines as `grpc_peer.py serve`, so
/// [`peers::grpc_served`] reads its calls) on `127.0.0.1` and a fresh port.
pub fn grpc_go_server(dir: &TempDir) -> Server {
    let binary = grpc_go_peer_binary();
    let port = free_port();
    let mut cmd = Command::new(&binary);
    cmd.arg(port.to_string());
    Server::spawn(
        "grpc_go_server",
        dir,
        &mut cmd,
        SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
        false,
    )
}

/// The agent's `stats:` log lines (logged at shutdown, and periodically with a stats interval).
pub fn agent_stats_lines(agent: &Agent) -> String {
    let stderr = agent.stderr();
    let lines: Vec<&str> = stderr.lines().filter(|l| l.contains("stats: ")).collect();
    if lines.is_empty() {
        "(no `stats:` line in the agent's stderr)".to_owned()
    } else {
        lines.join("\n")
    }
}

/// One planned call and how both ends must report it.
#[derive(Debug, Clone, Copy)]
pub struct Call {
    /// The `grpc_peer.py call` spec.
    pub spec: &'static str,
    /// The method within [`SERVICE`].
    pub method: &'static str,
    /// The status the client gets (and its span must carry).
    pub client: &'static str,
    /// The statuses the server's span may carry (the first is what the server itself sends).
    pub server: &'static [&'static str],
    /// Whether the CLIENT span must contain the SERVER span (not past the client's deadline).
    pub contained: bool,
}

/// A call that ends `OK` on both sides.
pub const fn ok(spec: &'static str, method: &'static str) -> Call {
    Call {
        spec,
        method,
        client: "OK",
        server: &["OK"],
        contained: true,
    }
}

/// Harness checks: the client saw each call end as planned, and the server saw the same calls, in
/// the same order, all from one client port (one connection), which it returns.
pub fn check_run(run: &GrpcRun, served: &[GrpcServed], calls: &[Call]) -> u16 {
    let got: Vec<(&str, &str)> = run
        .calls
        .iter()
        .map(|c| (c.method.as_str(), c.status.as_str()))
        .collect();
    let want: Vec<(&str, &str)> = calls.iter().map(|c| (c.method, c.client)).collect();
    assert_eq!(got, want, "harness: the gRPC client's calls: {run:?}");
    let got: Vec<&str> = served.iter().map(|s| s.method.as_str()).collect();
    let want: Vec<&str> = calls.iter().map(|c| c.method).collect();
    assert_eq!(got, want, "harness: the calls the gRPC server saw");
    let ports: BTreeSet<u16> = served.iter().map(|s| s.client_port).collect();
    assert_eq!(
        ports.len(),
        1,
        "harness: the client used {} connections, want one: {served:?}",
        ports.len()
    );
    ports.into_iter().next().expect("one port")
}

/// The spans of `kind` for `method` that `expect` accepts the status of, in start order.
fn spans_of<'a>(spans: &'a [Span], kind: &str, expect: &RpcSpan) -> Vec<&'a Span> {
    let mut found: Vec<&Span> = spans
        .iter()
        .filter(|s| {
            s.kind == kind
                && s.attr_str("rpc.method") == Some(expect.method.as_str())
                && expect.status_accepted(s)
        })
        .collect();
    found.sort_by_key(|s| s.start_time_unix_nano);
    found
}

/// Every way `spans` differ from `calls` (made one after another by `run` over one connection
/// from `client_port`): per (method, client status), as many SERVER and CLIENT spans as calls,
/// each matching its contract (`server_service`/`client_service`: the two ends' `service.name`),
/// paired in start order, and when [`Call::contained`] the CLIENT span containing the SERVER span.
pub fn call_mismatches(
    w: &World,
    spans: &[Span],
    run: &GrpcRun,
    client_port: u16,
    calls: &[Call],
    (server_service, client_service): (Service, Service),
) -> Vec<String> {
    let mut failures = Vec::new();
    let mut groups: Vec<(Call, usize)> = Vec::new();
    for call in calls {
        match groups
            .iter_mut()
            .find(|(c, _)| c.method == call.method && c.client == call.client)
        {
            Some((_, n)) => *n += 1,
            None => groups.push((*call, 1)),
        }
    }
    for (call, n) in groups {
        let method = full(call.method);
        let mut server = RpcSpan::server(&method, call.server[0], w.port());
        for alternative in &call.server[1..] {
            server = server.or_status(alternative);
        }
        let server = server
            .service(server_service)
            .pid(w.server.pid())
            .client_port(client_port)
            .max_duration(run.wall);
        let client = RpcSpan::client(&method, call.client, w.port())
            .service(client_service)
            .pid(run.pid)
            .max_duration(run.wall);
        let servers = spans_of(spans, SERVER, &server);
        let clients = spans_of(spans, CLIENT, &client);
        let label = format!("{method} ({})", call.client);
        for (kind, found, statuses) in [
            (SERVER, &servers, server.statuses.join("|")),
            (CLIENT, &clients, call.client.to_owned()),
        ] {
            if found.len() != n {
                failures.push(format!(
                    "{label}: want {n} {kind} spans with rpc.method {method:?} and \
                     rpc.response.status_code {statuses}, found {}",
                    found.len()
                ));
            }
        }
        for (expect, found) in [(&server, &servers), (&client, &clients)] {
            for span in found {
                for m in expect.mismatches(span) {
                    failures.push(format!("{label} {}: {m}", span.kind));
                }
            }
        }
        if call.contained && servers.len() == n && clients.len() == n {
            for (i, (c, s)) in clients.iter().zip(&servers).enumerate() {
                if let Some(m) = containment_mismatch(c, s, containment_slack()) {
                    failures.push(format!("{label} call {i}: {m}"));
                }
            }
        }
    }
    failures
}

/// Panics listing every failure, every span and `extra` (the agent's stats), unless `failures` is
/// empty.
pub fn assert_no_failures(failures: &[String], spans: &[Span], extra: &str) {
    assert!(
        failures.is_empty(),
        "{} mismatches:\n  - {}\nall spans:\n{}\n{extra}",
        failures.len(),
        failures.join("\n  - "),
        describe(spans)
    );
}
