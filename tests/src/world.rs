//! One test's world: a temp dir, the OTLP sink (optionally behind rotel), a server peer, and the
//! agent filtered to that server's port. Fields drop in declaration order, so the agent is killed
//! first and the temp dir (kept on failure) last.

use std::{
    net::{IpAddr, Ipv6Addr},
    time::Duration,
};

use crate::{
    agent::{Agent, Export},
    expect::{HttpSpan, Service},
    otlp::{OtlpSink, Rotel},
    peers::{self, ClientRun, Server},
    span::{describe, Span, CLIENT, SERVER},
    TempDir,
};

/// How long spans may take to reach the sink once the traffic is over.
pub const SPAN_TIMEOUT: Duration = Duration::from_secs(30);

/// How long rotel gets to forward the agent's last export.
const GATEWAY_SETTLE: Duration = Duration::from_secs(1);

/// How the agent exports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` = the sink's gRPC port.
    SinkGrpc,
    /// `OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf` and the sink's HTTP port.
    SinkHttpProtobuf,
    /// `--otlp-endpoint` + `--otlp-protocol http/protobuf` flags, the sink's HTTP port.
    SinkHttpFlags,
    /// gRPC to rotel, which forwards to the sink.
    Rotel,
    /// No endpoint: spans printed on the agent's stdout.
    Console,
}

/// Which ports the agent is told to watch (`--port`), besides the server's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Watch<'a> {
    /// Only the server's port.
    Server,
    /// The server's port and these.
    AlsoPorts(&'a [u16]),
    /// The server's port and the ports the agent exports to (sink, rotel): its own export traffic
    /// then passes the filter and must be dropped by the agent itself.
    AlsoExporterPorts,
}

/// Which server peer to start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    Python,
    /// `peers/http_server.py` on `[::1]` (check [`peers::ipv6_loopback_unavailable`] first).
    PythonIpv6,
    Nginx,
    /// `peers/http_server.py --tls` (HTTPS, self-signed certificate in the temp dir).
    PythonTls,
    /// nginx with `listen … ssl` (self-signed certificate in the temp dir).
    NginxTls,
    /// `peers/http_server.js` over HTTPS on `node` (check [`peers::node_unavailable`] first).
    NodeTls,
}

#[derive(Debug)]
pub struct World {
    pub agent: Agent,
    pub gateway: Option<Rotel>,
    pub server: Server,
    pub sink: OtlpSink,
    pub dir: TempDir,
}

impl World {
    /// Python `http.server` peer, agent exporting OTLP/gRPC straight to the sink.
    pub fn python(name: &str) -> Self {
        Self::start(name, Peer::Python, Via::SinkGrpc, Watch::Server)
    }

    /// nginx peer, agent exporting OTLP/gRPC straight to the sink.
    pub fn nginx(name: &str) -> Self {
        Self::start(name, Peer::Nginx, Via::SinkGrpc, Watch::Server)
    }

    /// Starts everything; the agent gets `--port` for every port `watch` names.
    pub fn start(name: &str, peer: Peer, via: Via, watch: Watch<'_>) -> Self {
        Self::start_with_args(name, peer, via, watch, &[])
    }

    /// Like [`World::start`], with `agent_args` added to the agent's command line.
    pub fn start_with_args(
        name: &str,
        peer: Peer,
        via: Via,
        watch: Watch<'_>,
        agent_args: &[&str],
    ) -> Self {
        Stage::start(name, peer, via).start_agent(watch, agent_args)
    }

    /// Starts the sink and the agent (OTLP/gRPC, `--port` a fresh port), and only then the server,
    /// through `start_server(dir, port)`: for servers that must appear after the agent is ready.
    pub fn start_server_after_agent(
        name: &str,
        start_server: impl FnOnce(&TempDir, u16) -> Server,
    ) -> Self {
        let dir = TempDir::new(name);
        let sink = OtlpSink::start(&dir);
        let port = crate::free_port();
        let agent = Agent::start(&dir, &[port], &[], &Export::Grpc(sink.grpc_endpoint()));
        let server = start_server(&dir, port);
        assert_eq!(server.port(), port, "harness: the server took another port");
        Self {
            agent,
            gateway: None,
            server,
            sink,
            dir,
        }
    }

    pub fn port(&self) -> u16 {
        self.server.port()
    }

    /// Waits until `expected` spans for the server's port reached the sink (or [`SPAN_TIMEOUT`]),
    /// stops the agent with SIGTERM (asserting exit status 0: it flushes there), and returns every
    /// span for that port, so late duplicates count too.
    pub fn finish(&mut self, expected: usize) -> Vec<Span> {
        let port = self.port();
        self.sink
            .wait_for_spans(|s| s.is_for_port(port), expected, SPAN_TIMEOUT);
        self.agent.stop_cleanly();
        if self.gateway.is_some() {
            // Let rotel forward whatever the agent flushed on SIGTERM (its batch timeout is 200 ms).
            std::thread::sleep(GATEWAY_SETTLE);
        }
        self.sink.spans_where(|s| s.is_for_port(port))
    }

    /// Asserts, for each transfer of `run` (curl fetching `paths` from this world's Python
    /// `http.server`, in order), its SERVER span and its CLIENT span among `spans`, with every
    /// attribute of the contract.
    pub fn assert_curl_to_python(&self, spans: &[Span], run: &ClientRun, paths: &[&str]) {
        assert_eq!(
            run.transfers.len(),
            paths.len(),
            "harness: curl made {} transfers for {} paths",
            run.transfers.len(),
            paths.len()
        );
        // The peers listen on loopback only.
        let address = match self.server.ip() {
            IpAddr::V4(_) => "127.0.0.1",
            IpAddr::V6(_) => "::1",
        };
        for (t, path) in run.transfers.iter().zip(paths) {
            HttpSpan::server("GET", path, t.status, self.port())
                .address(address)
                .service(Service::Prefix("python3"))
                .pid(self.server.pid())
                .client_port(t.local_port)
                .user_agent_prefix("curl/")
                .response_body_size(t.body_bytes)
                .max_duration(run.wall)
                .assert(one(spans, SERVER, path));
            HttpSpan::client("GET", path, t.status, self.port())
                .address(address)
                .service(Service::Exact("curl"))
                .pid(run.pid)
                .user_agent_prefix("curl/")
                .response_body_size(t.body_bytes)
                .max_duration(run.wall)
                .assert(one(spans, CLIENT, path));
        }
    }

    /// Asserts exactly `servers` SERVER and `clients` CLIENT spans among `spans` (and nothing else),
    /// printing them all otherwise.
    pub fn assert_counts(&self, spans: &[Span], servers: usize, clients: usize) {
        let got_servers = spans.iter().filter(|s| s.is_server()).count();
        let got_clients = spans.iter().filter(|s| s.is_client()).count();
        assert!(
            got_servers == servers && got_clients == clients && spans.len() == servers + clients,
            "want exactly {servers} SERVER and {clients} CLIENT spans for port {}, got {got_servers} SERVER, \
             {got_clients} CLIENT, {} in all:\n{}",
            self.port(),
            spans.len(),
            describe(spans),
        );
    }
}

/// A [`World`] before its agent starts: temp dir, sink (+ rotel) and server are up, so a test can
/// open connections the agent will only find already established.
#[derive(Debug)]
pub struct Stage {
    pub gateway: Option<Rotel>,
    pub server: Server,
    pub sink: OtlpSink,
    pub dir: TempDir,
    via: Via,
}

impl Stage {
    pub fn start(name: &str, peer: Peer, via: Via) -> Self {
        let dir = TempDir::new(name);
        let sink = OtlpSink::start(&dir);
        let server = match peer {
            Peer::Python => peers::python_http_server(&dir),
            Peer::PythonIpv6 => peers::python_http_server_on(&dir, IpAddr::V6(Ipv6Addr::LOCALHOST)),
            Peer::Nginx => peers::nginx(&dir),
            Peer::PythonTls => peers::python_https_server(&dir),
            Peer::NginxTls => peers::nginx_tls(&dir),
            Peer::NodeTls => peers::node_https_server(&dir),
        };
        let gateway = (via == Via::Rotel).then(|| Rotel::start(&dir, &sink));
        Self {
            gateway,
            server,
            sink,
            dir,
            via,
        }
    }

    pub fn port(&self) -> u16 {
        self.server.port()
    }

    /// Starts the agent (`--port` for every port `watch` names, then `agent_args`), waits until it
    /// is ready, and returns the whole world.
    pub fn start_agent(self, watch: Watch<'_>, agent_args: &[&str]) -> World {
        self.start_agent_with_env(watch, agent_args, &[])
    }

    /// Like [`Stage::start_agent`], with extra environment variables for the agent.
    pub fn start_agent_with_env(
        self,
        watch: Watch<'_>,
        agent_args: &[&str],
        env: &[(&str, &str)],
    ) -> World {
        let Self {
            gateway,
            server,
            sink,
            dir,
            via,
        } = self;
        let export = match (via, &gateway) {
            (Via::SinkGrpc, _) => Export::Grpc(sink.grpc_endpoint()),
            (Via::SinkHttpProtobuf, _) => Export::HttpProtobuf(sink.http_endpoint()),
            (Via::SinkHttpFlags, _) => Export::Flags {
                endpoint: sink.http_endpoint(),
                protocol: "http/protobuf",
            },
            (Via::Rotel, Some(rotel)) => Export::Grpc(rotel.grpc_endpoint()),
            (Via::Console, _) => Export::Console,
            (Via::Rotel, None) => unreachable!("rotel is started for Via::Rotel"),
        };
        let mut ports = vec![server.port()];
        match watch {
            Watch::Server => {}
            Watch::AlsoPorts(extra) => ports.extend_from_slice(extra),
            Watch::AlsoExporterPorts => {
                ports.extend([sink.grpc_port(), sink.http_port()]);
                ports.extend(gateway.as_ref().map(Rotel::grpc_port));
            }
        }
        let agent = Agent::start_with_env(&dir, &ports, agent_args, &export, env);
        World {
            agent,
            gateway,
            server,
            sink,
            dir,
        }
    }
}

/// The one span of `kind` (`SPAN_KIND_SERVER`/`SPAN_KIND_CLIENT`) whose `url.path` is `path`.
pub fn one<'a>(spans: &'a [Span], kind: &str, path: &str) -> &'a Span {
    one_where(spans, kind, path, "", |_| true)
}

/// The one span of `kind` with `url.path` `path` that also satisfies `which` (described by `what`
/// in the failure message).
pub fn one_where<'a>(
    spans: &'a [Span],
    kind: &str,
    path: &str,
    what: &str,
    which: impl Fn(&Span) -> bool,
) -> &'a Span {
    let found: Vec<&Span> = spans
        .iter()
        .filter(|s| s.kind == kind && s.attr_str("url.path") == Some(path) && which(s))
        .collect();
    let what = if what.is_empty() {
        String::new()
    } else {
        format!(" {what}")
    };
    assert!(
        found.len() == 1,
        "want exactly one {kind} span with url.path {path:?}{what}, found {}:\n{}",
        found.len(),
        describe(spans)
    );
    found[0]
}
