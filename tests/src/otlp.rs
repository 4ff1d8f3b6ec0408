//! The OTLP side: the independent Python sink every test asserts against, and rotel (a real
//! OpenTelemetry collector) as an optional gateway in front of it.

use std::{fs, path::PathBuf, process::Command, sync::OnceLock, time::Duration};

use crate::{
    free_port,
    peers::python,
    process::{run_to_completion, Proc},
    span::{describe, parse_sink_output, Span},
    TempDir,
};

const START_TIMEOUT: Duration = Duration::from_secs(30);

/// `peers/otlp_sink.py`: OTLP over gRPC and HTTP on loopback, one JSON line per export request.
#[derive(Debug)]
pub struct OtlpSink {
    proc: Proc,
    out: PathBuf,
    grpc_port: u16,
    http_port: u16,
}

impl OtlpSink {
    /// Starts the sink on two fresh ports, writing to `<dir>/otlp_sink.jsonl`, and waits until both
    /// ports accept connections.
    pub fn start(dir: &TempDir) -> Self {
        let (grpc_port, http_port) = (free_port(), free_port());
        let out = dir.join("otlp_sink.jsonl");
        fs::write(&out, "").expect("create the sink's output file");
        let mut cmd = Command::new(python());
        cmd.arg(crate::peers_dir().join("otlp_sink.py"))
            .env("OTLP_SINK_OUT", &out)
            .env("OTLP_SINK_GRPC_PORT", grpc_port.to_string())
            .env("OTLP_SINK_HTTP_PORT", http_port.to_string());
        let mut proc = Proc::spawn("otlp_sink", dir.path(), &mut cmd);
        proc.wait_for_port(grpc_port, START_TIMEOUT);
        proc.wait_for_port(http_port, START_TIMEOUT);
        Self {
            proc,
            out,
            grpc_port,
            http_port,
        }
    }

    /// `http://127.0.0.1:<grpc port>` (for `OTEL_EXPORTER_OTLP_ENDPOINT` with the gRPC protocol).
    pub fn grpc_endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.grpc_port)
    }

    /// `http://127.0.0.1:<http port>` (for `OTEL_EXPORTER_OTLP_ENDPOINT` with `http/protobuf`).
    pub fn http_endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    pub fn grpc_port(&self) -> u16 {
        self.grpc_port
    }

    pub fn http_port(&self) -> u16 {
        self.http_port
    }

    /// The raw JSON lines received so far.
    pub fn raw(&self) -> String {
        fs::read_to_string(&self.out).unwrap_or_default()
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<Span> {
        parse_sink_output(&self.raw())
    }

    /// Every span received so far that matches `predicate`.
    pub fn spans_where(&self, predicate: impl Fn(&Span) -> bool) -> Vec<Span> {
        self.spans().into_iter().filter(|s| predicate(s)).collect()
    }

    /// Polls the sink's file until at least `expected_count` spans match `predicate` or `timeout`
    /// passes, then returns the matching spans (possibly fewer or more than expected: assert on the
    /// result, preferably again after [`crate::Agent::stop`] so late extra spans are caught too).
    pub fn wait_for_spans(
        &self,
        predicate: impl Fn(&Span) -> bool,
        expected_count: usize,
        timeout: Duration,
    ) -> Vec<Span> {
        crate::poll(timeout, || {
            let spans = self.spans_where(&predicate);
            (spans.len() >= expected_count).then_some(spans)
        })
        .unwrap_or_else(|| self.spans_where(&predicate))
    }

    /// Every span received, one per line, for assertion messages.
    pub fn describe(&self) -> String {
        describe(&self.spans())
    }

    pub fn proc(&self) -> &Proc {
        &self.proc
    }
}

/// The rotel collector binary shipped in the `rotel` wheel (`pip install --pre rotel`).
pub fn rotel_binary() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let (_, out, _) = run_to_completion(
            "python3 (locating rotel)",
            Command::new(python()).args([
                "-c",
                "import rotel,os;print(os.path.dirname(rotel.__file__))",
            ]),
            Duration::from_secs(30),
        );
        PathBuf::from(out.trim()).join("rotel-agent")
    })
    .clone()
}

/// rotel receiving OTLP on loopback and forwarding it (OTLP/gRPC) to an [`OtlpSink`].
#[derive(Debug)]
pub struct Rotel {
    proc: Proc,
    grpc_port: u16,
    http_port: u16,
}

impl Rotel {
    pub fn start(dir: &TempDir, sink: &OtlpSink) -> Self {
        let (grpc_port, http_port) = (free_port(), free_port());
        let mut cmd = Command::new(rotel_binary());
        cmd.arg("start")
            .args(["--otlp-grpc-endpoint", &format!("127.0.0.1:{grpc_port}")])
            .args(["--otlp-http-endpoint", &format!("127.0.0.1:{http_port}")])
            .args([
                "--exporter",
                "otlp",
                "--otlp-exporter-endpoint",
                &sink.grpc_endpoint(),
            ])
            .args(["--batch-timeout", "200ms"])
            .args(["--debug-log", "traces"])
            .arg("--pid-file")
            .arg(dir.join("rotel.pid"))
            .arg("--log-file")
            .arg(dir.join("rotel.log"));
        let mut proc = Proc::spawn("rotel", dir.path(), &mut cmd);
        proc.wait_for_port(grpc_port, START_TIMEOUT);
        proc.wait_for_port(http_port, START_TIMEOUT);
        Self {
            proc,
            grpc_port,
            http_port,
        }
    }

    pub fn grpc_endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.grpc_port)
    }

    pub fn http_endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    pub fn grpc_port(&self) -> u16 {
        self.grpc_port
    }

    pub fn proc(&self) -> &Proc {
        &self.proc
    }
}
