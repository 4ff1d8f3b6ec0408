//! The agent under test: `$SONDE_BIN` (set by `cargo xtask test`) with filters and an exporter.
//!
//! Ready once its stderr contains `capture ready` (probes attached); stopped with SIGTERM, on
//! which it flushes every pending span and exits 0.

use std::{
    env,
    path::PathBuf,
    process::{Command, ExitStatus},
    time::Duration,
};

use crate::{process::Proc, TempDir};

/// What the agent logs on stderr once its probes are attached.
pub const READY_MARKER: &str = "capture ready";
/// How long the agent may take to load and attach its probes.
pub const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the agent may take to flush and exit after SIGTERM.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// Where the agent sends spans.
#[derive(Debug, Clone)]
pub enum Export {
    /// OTLP/gRPC through `OTEL_EXPORTER_OTLP_ENDPOINT` (gRPC is the default protocol).
    Grpc(String),
    /// OTLP/HTTP protobuf through `OTEL_EXPORTER_OTLP_ENDPOINT` + `OTEL_EXPORTER_OTLP_PROTOCOL`.
    HttpProtobuf(String),
    /// The `--otlp-endpoint URL --otlp-protocol PROTOCOL` flags instead of the environment.
    Flags {
        endpoint: String,
        protocol: &'static str,
    },
    /// No endpoint: one line per span on stdout.
    Console,
}

/// The path of the agent binary under test.
pub fn sonde_bin() -> PathBuf {
    let bin = env::var_os("SONDE_BIN").map(PathBuf::from).unwrap_or_else(|| {
        panic!("SONDE_BIN is not set: run the end-to-end tests with `cargo xtask test` (or set it to target/release/sonde)")
    });
    assert!(bin.is_file(), "SONDE_BIN={} does not exist", bin.display());
    bin
}

/// A running agent, killed by PID on drop (its logs are printed if the test failed).
#[derive(Debug)]
pub struct Agent {
    proc: Proc,
}

impl Agent {
    /// Starts the agent with `--port` for each of `ports` plus `extra_args`, exporting per `export`,
    /// and waits until it is ready. Inherited `OTEL_*` variables are removed first.
    pub fn start(dir: &TempDir, ports: &[u16], extra_args: &[&str], export: &Export) -> Self {
        Self::start_with_env(dir, ports, extra_args, export, &[])
    }

    /// Like [`Agent::start`], with `env` set for the agent after the harness's own `OTEL_*`
    /// defaults (so a test can set, say, `OTEL_TRACES_SAMPLER`).
    pub fn start_with_env(
        dir: &TempDir,
        ports: &[u16],
        extra_args: &[&str],
        export: &Export,
        env: &[(&str, &str)],
    ) -> Self {
        let mut cmd = Command::new(sonde_bin());
        for port in ports {
            cmd.args(["--port", &port.to_string()]);
        }
        cmd.args(extra_args);
        for (key, _) in env::vars_os() {
            if key.to_string_lossy().starts_with("OTEL_") {
                cmd.env_remove(key);
            }
        }
        // NO_COLOR: plain logs in failure messages.
        cmd.env("OTEL_BSP_SCHEDULE_DELAY", "200")
            .env("OTEL_METRIC_EXPORT_INTERVAL", "1000")
            .env("NO_COLOR", "1");
        match export {
            Export::Grpc(endpoint) => {
                cmd.env("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint);
            }
            Export::HttpProtobuf(endpoint) => {
                cmd.env("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
                    .env("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf");
            }
            Export::Flags { endpoint, protocol } => {
                cmd.args(["--otlp-endpoint", endpoint, "--otlp-protocol", protocol]);
            }
            Export::Console => {}
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut proc = Proc::spawn("sonde", dir.path(), &mut cmd);
        let ready = crate::poll(READY_TIMEOUT, || {
            if proc.stderr().contains(READY_MARKER) {
                return Some(true);
            }
            proc.try_status().map(|_| false)
        });
        match ready {
            Some(true) => {
                check_capture_mode(&proc.stderr());
                Self { proc }
            }
            Some(false) => panic!(
                "the agent exited ({:?}) before logging `{READY_MARKER}`",
                proc.try_status()
            ),
            None => panic!("the agent did not log `{READY_MARKER}` within {READY_TIMEOUT:?}"),
        }
    }

    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    /// Sends SIGTERM (the agent flushes its spans) and waits for it to exit.
    pub fn stop(&mut self) -> ExitStatus {
        self.proc.terminate(STOP_TIMEOUT)
    }

    /// Stops the agent and asserts that it exited with status 0.
    pub fn stop_cleanly(&mut self) {
        let status = self.stop();
        assert!(
            status.success(),
            "the agent exited with {status} after SIGTERM"
        );
    }

    pub fn stdout(&self) -> String {
        self.proc.stdout()
    }

    pub fn stderr(&self) -> String {
        self.proc.stderr()
    }

    /// The agent's stdout and stderr tails, for assertion messages.
    pub fn logs(&self) -> String {
        self.proc.logs()
    }

    /// `name=N` from the `kernel[…]` section of the agent's last `stats:` line on stderr (the
    /// shutdown one once it stopped): a kernel counter summed over every program.
    pub fn kernel_stat(&self, name: &str) -> Option<u64> {
        self.stat("kernel", name)
    }

    /// `name=N` from the `conn[…]` section of the agent's last `stats:` line: a connection-table
    /// or parse counter (`http2.unpaired_response`), `None` when absent (it logs non-zero ones).
    pub fn conn_stat(&self, name: &str) -> Option<u64> {
        self.stat("conn", name)
    }

    fn stat(&self, section: &str, name: &str) -> Option<u64> {
        let stderr = self.stderr();
        let line = stderr
            .lines()
            .rev()
            .find(|l| l.contains("stats: kernel["))?;
        let values = line
            .split(&format!(" {section}["))
            .nth(1)?
            .split(']')
            .next()?;
        values
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('=')?.parse().ok())
    }
}

/// With `SONDE_EXPECT_CAPTURE=<mode>` (set by `cargo xtask test --vm`, together with
/// `SONDE_CAPTURE`, which the agent inherits), the agent must have logged that it captures in
/// that mode: the same test then proves each mode's spans, not just whichever mode ran.
fn check_capture_mode(stderr: &str) {
    let Ok(want) = env::var("SONDE_EXPECT_CAPTURE") else {
        return;
    };
    let marker = format!("capture mode: {want} ");
    assert!(
        stderr.contains(&marker),
        "SONDE_EXPECT_CAPTURE={want}, but the agent did not log `{marker}`:\n{stderr}"
    );
}
