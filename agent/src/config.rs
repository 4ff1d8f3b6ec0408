//! Command line and environment, validated once into typed values. No other module reads the
//! environment (the OpenTelemetry SDK's own `OTEL_BSP_*`/`OTEL_TRACES_SAMPLER*` variables excepted,
//! which the SDK reads itself).

use std::{path::PathBuf, time::Duration};

use clap::{Parser, ValueEnum};

use agent_common::limits::{DEFAULT_CAPTURE_BYTES, DEFAULT_RING_BUF_BYTES, MAX_CAPTURE_BYTES};

/// Sonde: see every HTTP request the processes on this host serve or make, as OpenTelemetry spans,
/// with no code change in the applications.
///
/// Sonde attaches eBPF programs to the kernel's syscall and socket tracepoints, rebuilds each TCP
/// connection's bytes, parses HTTP/1.x exchanges and exports one span per exchange: kind SERVER in
/// the process that accepted the connection, CLIENT in the one that connected. HTTPS is read in
/// plaintext from uprobes on OpenSSL/BoringSSL (`SSL_read`/`SSL_write`, shared libssl or linked
/// into an executable such as node), found in running and newly started processes; the startup
/// log names each TLS library attached.
///
/// Without an OTLP endpoint it prints one line per span on stdout. With
/// `OTEL_EXPORTER_OTLP_ENDPOINT` (or `--otlp-endpoint`) it exports OTLP over gRPC (default) or
/// HTTP/protobuf. Needs root (CAP_BPF, CAP_PERFMON, CAP_SYS_ADMIN for tracefs).
///
/// Examples:
///   sudo sonde                                   # every process, spans on stdout
///   sudo sonde --port 8080 --exe-name nginx      # only nginx's connections on port 8080
///   sudo OTEL_EXPORTER_OTLP_ENDPOINT=http://collector:4317 sonde
#[derive(Debug, Parser)]
#[command(name = "sonde", version, verbatim_doc_comment)]
pub struct Cli {
    /// Only trace these processes (tgid, as `ps` shows PID). Repeatable.
    #[arg(long = "pid", value_name = "TGID")]
    pub pids: Vec<u32>,

    /// Only trace connections whose local or remote port is one of these. Repeatable.
    #[arg(long = "port", value_name = "PORT")]
    pub ports: Vec<u16>,

    /// Only trace processes whose executable name (basename of /proc/<tgid>/exe, or `comm`)
    /// is one of these. Repeatable.
    #[arg(long = "exe-name", value_name = "NAME")]
    pub exe_names: Vec<String>,

    /// OTLP endpoint, e.g. `http://127.0.0.1:4317` (gRPC) or `http://127.0.0.1:4318` (HTTP).
    /// Unset: spans are printed on stdout.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT", value_name = "URL")]
    pub otlp_endpoint: Option<String>,

    /// OTLP endpoint for traces only; overrides `--otlp-endpoint` (used as is, no path appended).
    #[arg(long, env = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", value_name = "URL")]
    pub otlp_traces_endpoint: Option<String>,

    /// OTLP endpoint for metrics only; overrides `--otlp-endpoint` (used as is). Metrics are
    /// exported when this or `--otlp-endpoint` is set; the interval is `OTEL_METRIC_EXPORT_INTERVAL`
    /// (ms, default 60000), the temporality `OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE`.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", value_name = "URL")]
    pub otlp_metrics_endpoint: Option<String>,

    /// OTLP transport.
    #[arg(
        long,
        env = "OTEL_EXPORTER_OTLP_PROTOCOL",
        value_enum,
        default_value = "grpc"
    )]
    pub otlp_protocol: OtlpProtocol,

    /// OTLP export timeout in milliseconds.
    #[arg(
        long,
        env = "OTEL_EXPORTER_OTLP_TIMEOUT",
        value_name = "MS",
        default_value_t = 10_000
    )]
    pub otlp_timeout_ms: u64,

    /// Payload bytes captured per syscall (HTTP heads must fit; bodies are skipped by length).
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_CAPTURE_BYTES as u32,
          value_parser = clap::value_parser!(u32).range(64..=MAX_CAPTURE_BYTES as i64))]
    pub capture_bytes: u32,

    /// Size of the kernel→agent ring buffer in bytes (a power of two, at least 64 KiB). When it is
    /// full, events are dropped and counted; the traced applications are never slowed down.
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_RING_BUF_BYTES)]
    pub ring_buffer_bytes: u32,

    /// Forget connections that moved no bytes for this many seconds.
    #[arg(long, value_name = "SECS", default_value_t = 300)]
    pub conn_idle_timeout_secs: u64,

    /// Print the agent's own counters (events, drops, parse errors) every this many seconds at
    /// info level; 0 disables.
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    pub stats_interval_secs: u64,

    /// Serve RED metrics for Prometheus at `http://ADDR/metrics` (plus `/healthz`, `/readyz`),
    /// e.g. `0.0.0.0:9400`. Unset: no HTTP endpoint.
    #[arg(long, env = "SONDE_PROMETHEUS_LISTEN", value_name = "ADDR")]
    pub prometheus_listen: Option<std::net::SocketAddr>,

    /// A route pattern for `http.route`, span names and metric labels, e.g. `/users/{id}` or
    /// `/static/*` (first match wins). Repeatable. Paths no pattern matches get an inferred route:
    /// numeric, UUID and hex segments become `{id}`, a position with more than 10 distinct values
    /// becomes `{*}`, and each service keeps at most 100 routes.
    #[arg(long = "route", value_name = "PATTERN")]
    pub routes: Vec<String>,

    /// Do not attach uprobes to TLS libraries (OpenSSL/BoringSSL `SSL_read`/`SSL_write`); HTTPS
    /// then stays invisible.
    #[arg(long)]
    pub no_tls: bool,

    /// How syscalls are tied to their TCP socket. By default each mode is tried, best first
    /// (socket, fentry, kprobe, tracepoint), and the first the kernel accepts is used; the log
    /// says which, and why the better ones were refused. Naming one forces it (startup fails if
    /// the kernel refuses it).
    #[arg(
        long,
        env = "SONDE_CAPTURE",
        value_name = "MODE",
        default_value = "auto"
    )]
    pub capture: CaptureChoice,

    /// Print what this kernel and this process allow (BTF, ring buffer, kprobes, fentry,
    /// tracepoints, uprobes, lockdown, capabilities) and the capture mode that would be used,
    /// then exit: 0 if Sonde can run here, 1 otherwise. Starts no pipeline.
    #[arg(long)]
    pub check: bool,

    /// With spans on stdout (no OTLP endpoint), print a RED table (rate, error %, p50/p99 per
    /// service and route) every this many seconds; 0 disables.
    #[arg(long, value_name = "SECS", default_value_t = 10)]
    pub summary_interval_secs: u64,

    /// Log filter (`RUST_LOG` syntax), e.g. `debug` or `sonde=debug`.
    #[arg(long, env = "SONDE_LOG", default_value = "info")]
    pub log: String,

    /// Host name reported as `host.name` (default: the kernel's hostname).
    #[arg(long, value_name = "NAME")]
    pub host_name: Option<String>,

    /// eBPF object to load instead of the one built into the binary (development).
    #[arg(long, value_name = "PATH", hide = true)]
    pub ebpf_object: Option<PathBuf>,

    /// Every eBPF program returns at once: nothing is captured, and a benchmark measures what the
    /// attach points alone cost the application (`cargo xtask bench`'s floor runs).
    #[arg(long, hide = true)]
    pub floor: bool,
}

/// `--capture`: `auto` or one forced [`CaptureMode`](crate::probe::capture::CaptureMode).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum CaptureChoice {
    /// Try socket, fentry, kprobe, tracepoint in that order.
    Auto,
    /// socket only (the whole capture at the `sock` tracepoints, no syscall tracepoint).
    Socket,
    /// fentry only.
    Fentry,
    /// kprobe only.
    Kprobe,
    /// tracepoint only.
    Tracepoint,
}

impl CaptureChoice {
    /// The forced mode, `None` for `auto`.
    pub fn forced(self) -> Option<crate::probe::capture::CaptureMode> {
        use crate::probe::capture::CaptureMode;
        match self {
            Self::Auto => None,
            Self::Socket => Some(CaptureMode::Socket),
            Self::Fentry => Some(CaptureMode::Fentry),
            Self::Kprobe => Some(CaptureMode::Kprobe),
            Self::Tracepoint => Some(CaptureMode::Tracepoint),
        }
    }
}

/// OTLP transport, named as in `OTEL_EXPORTER_OTLP_PROTOCOL`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OtlpProtocol {
    /// OTLP/gRPC.
    #[value(name = "grpc")]
    Grpc,
    /// OTLP/HTTP with protobuf bodies.
    #[value(name = "http/protobuf")]
    HttpProtobuf,
}

/// Which processes and connections are traced. Empty lists match everything; non-empty lists
/// must all match (a connection passes when each given criterion has a match).
#[derive(Clone, Debug, Default)]
pub struct Selection {
    /// Allowed tgids.
    pub pids: Vec<u32>,
    /// Allowed local or remote ports.
    pub ports: Vec<u16>,
    /// Allowed executable names.
    pub exe_names: Vec<String>,
}

impl Selection {
    /// Whether a process passes the tgid and executable-name criteria.
    pub fn process_matches(&self, tgid: u32, exe_name: &str) -> bool {
        (self.pids.is_empty() || self.pids.contains(&tgid))
            && (self.exe_names.is_empty() || self.exe_names.iter().any(|n| n == exe_name))
    }

    /// Whether a connection passes the port criterion.
    pub fn ports_match(&self, local_port: u16, peer_port: u16) -> bool {
        self.ports.is_empty() || self.ports.contains(&local_port) || self.ports.contains(&peer_port)
    }
}

/// Where spans go.
#[derive(Clone, Debug)]
pub enum Export {
    /// One human-readable line per span on stdout.
    Console,
    /// OTLP to a collector.
    Otlp {
        /// Full traces URL for HTTP (`.../v1/traces`), or the gRPC endpoint.
        endpoint: String,
        /// Full metrics URL for HTTP (`.../v1/metrics`), or the gRPC endpoint; `None`: no metrics.
        metrics_endpoint: Option<String>,
        /// Transport.
        protocol: OtlpProtocol,
        /// Per-export timeout.
        timeout: Duration,
    },
}

/// Spans queued per process before the batch processor drops (when `OTEL_BSP_MAX_QUEUE_SIZE` is
/// unset).
pub const DEFAULT_SPAN_QUEUE: usize = 65_536;

/// Validated configuration handed to [`crate::run`].
#[derive(Clone, Debug)]
pub struct Config {
    /// Traced processes and connections.
    pub selection: Selection,
    /// Span destination.
    pub export: Export,
    /// Bytes captured per syscall.
    pub capture_bytes: u32,
    /// Ring buffer size in bytes.
    pub ring_buffer_bytes: u32,
    /// Idle connection timeout.
    pub conn_idle_timeout: Duration,
    /// Console RED table interval (`None`: off, or not console export).
    pub summary_interval: Option<Duration>,
    /// Self-telemetry log interval (`None`: off).
    pub stats_interval: Option<Duration>,
    /// `host.name`.
    pub host_name: String,
    /// Attach TLS library uprobes.
    pub tls: bool,
    /// Forced capture mode (`None`: try them all).
    pub capture: Option<crate::probe::capture::CaptureMode>,
    /// Address of the Prometheus scrape endpoint.
    pub prometheus_listen: Option<std::net::SocketAddr>,
    /// Configured route patterns.
    pub routes: crate::route::Patterns,
    /// Span queue per process: `OTEL_BSP_MAX_QUEUE_SIZE`, or [`DEFAULT_SPAN_QUEUE`] (Sonde's
    /// spans come in bursts from the kernel, so the SDK's default of 2048 drops under load).
    pub span_queue: usize,
    /// Alternative eBPF object.
    pub ebpf_object: Option<PathBuf>,
    /// `--floor`: the programs return at once.
    pub floor: bool,
}

/// A configuration value that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The ring buffer size is not a power of two of at least 64 KiB.
    #[error("`--ring-buffer-bytes` must be a power of two >= 65536, got {0}")]
    RingBufferSize(u32),
    /// A `--route` pattern is malformed.
    #[error(transparent)]
    Route(#[from] crate::route::PatternError),
    /// The endpoint is not an http(s) URL.
    #[error("OTLP endpoint `{0}` must start with http:// or https://")]
    Endpoint(String),
    /// `OTEL_BSP_MAX_QUEUE_SIZE` is not a positive integer.
    #[error("OTEL_BSP_MAX_QUEUE_SIZE must be a positive integer, got `{0}`")]
    SpanQueue(String),
}

/// `OTEL_BSP_MAX_QUEUE_SIZE`, or [`DEFAULT_SPAN_QUEUE`] when unset.
fn span_queue_from_env() -> Result<usize, ConfigError> {
    match std::env::var("OTEL_BSP_MAX_QUEUE_SIZE") {
        Err(_) => Ok(DEFAULT_SPAN_QUEUE),
        Ok(v) => match v.trim().parse::<usize>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(ConfigError::SpanQueue(v)),
        },
    }
}

impl Config {
    /// Validates the command line (and the environment clap merged into it).
    ///
    /// # Errors
    /// [`ConfigError`] naming the offending option.
    pub fn from_cli(cli: &Cli) -> Result<Self, ConfigError> {
        if !cli.ring_buffer_bytes.is_power_of_two() || cli.ring_buffer_bytes < 65536 {
            return Err(ConfigError::RingBufferSize(cli.ring_buffer_bytes));
        }
        let export = match (&cli.otlp_traces_endpoint, &cli.otlp_endpoint) {
            (None, None) => Export::Console,
            (traces, base) => {
                let endpoint = match (traces, base) {
                    (Some(t), _) => t.trim().to_owned(),
                    (None, Some(b)) => {
                        let b = b.trim().trim_end_matches('/');
                        match cli.otlp_protocol {
                            OtlpProtocol::Grpc => b.to_owned(),
                            OtlpProtocol::HttpProtobuf => format!("{b}/v1/traces"),
                        }
                    }
                    (None, None) => unreachable!("handled above"),
                };
                let metrics_endpoint = match (&cli.otlp_metrics_endpoint, base) {
                    (Some(m), _) => Some(m.trim().to_owned()),
                    (None, Some(b)) => {
                        let b = b.trim().trim_end_matches('/');
                        Some(match cli.otlp_protocol {
                            OtlpProtocol::Grpc => b.to_owned(),
                            OtlpProtocol::HttpProtobuf => format!("{b}/v1/metrics"),
                        })
                    }
                    (None, None) => None,
                };
                for e in std::iter::once(&endpoint).chain(&metrics_endpoint) {
                    if !(e.starts_with("http://") || e.starts_with("https://")) {
                        return Err(ConfigError::Endpoint(e.clone()));
                    }
                }
                Export::Otlp {
                    endpoint,
                    metrics_endpoint,
                    protocol: cli.otlp_protocol,
                    timeout: Duration::from_millis(cli.otlp_timeout_ms),
                }
            }
        };
        let export_is_console = matches!(export, Export::Console);
        Ok(Self {
            selection: Selection {
                pids: cli.pids.clone(),
                ports: cli.ports.clone(),
                exe_names: cli.exe_names.clone(),
            },
            export,
            capture_bytes: cli.capture_bytes,
            ring_buffer_bytes: cli.ring_buffer_bytes,
            conn_idle_timeout: Duration::from_secs(cli.conn_idle_timeout_secs.max(1)),
            summary_interval: (cli.summary_interval_secs > 0 && export_is_console)
                .then(|| Duration::from_secs(cli.summary_interval_secs)),
            stats_interval: (cli.stats_interval_secs > 0)
                .then(|| Duration::from_secs(cli.stats_interval_secs)),
            host_name: cli.host_name.clone().unwrap_or_else(kernel_hostname),
            tls: !cli.no_tls,
            capture: cli.capture.forced(),
            prometheus_listen: cli.prometheus_listen,
            span_queue: span_queue_from_env()?,
            routes: crate::route::Patterns::parse(&cli.routes)?,
            ebpf_object: cli.ebpf_object.clone(),
            floor: cli.floor,
        })
    }
}

fn kernel_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "unknown".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cli(args: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once("sonde").chain(args.iter().copied())).unwrap()
    }

    #[test]
    fn http_protocol_appends_traces_path() {
        let c = Config::from_cli(&cli(&[
            "--otlp-endpoint",
            "http://127.0.0.1:4318/",
            "--otlp-protocol",
            "http/protobuf",
        ]))
        .unwrap();
        match c.export {
            Export::Otlp {
                endpoint,
                metrics_endpoint,
                protocol,
                ..
            } => {
                assert_eq!(endpoint, "http://127.0.0.1:4318/v1/traces");
                assert_eq!(
                    metrics_endpoint.as_deref(),
                    Some("http://127.0.0.1:4318/v1/metrics")
                );
                assert_eq!(protocol, OtlpProtocol::HttpProtobuf);
            }
            Export::Console => panic!("expected OTLP"),
        }
    }

    #[test]
    fn bad_ring_buffer_size_is_rejected() {
        let err = Config::from_cli(&cli(&["--ring-buffer-bytes", "100000"])).unwrap_err();
        assert!(err.to_string().contains("--ring-buffer-bytes"));
    }

    #[test]
    fn endpoint_without_scheme_is_rejected() {
        let err = Config::from_cli(&cli(&["--otlp-endpoint", "collector:4317"])).unwrap_err();
        assert!(err.to_string().contains("collector:4317"));
    }

    #[test]
    fn selection_needs_every_given_criterion() {
        let s = Selection {
            pids: vec![7],
            ports: vec![80],
            exe_names: vec!["nginx".into()],
        };
        assert!(s.process_matches(7, "nginx"));
        assert!(!s.process_matches(8, "nginx"));
        assert!(!s.process_matches(7, "curl"));
        assert!(s.ports_match(80, 5000));
        assert!(s.ports_match(5000, 80));
        assert!(!s.ports_match(5000, 5001));
        assert!(Selection::default().process_matches(1, "x"));
    }
}
