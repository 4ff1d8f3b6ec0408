//! The OTLP receiver the agent exports to: rotel (the collector in the `rotel` pip wheel) with its
//! blackhole exporter, so spans and metrics go over real OTLP/gRPC and are then discarded.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{bail, Result};

use super::child::{free_port, Child};
use crate::exec;

/// The rotel pre-release `cargo xtask test` installs too (xtask/src/test/peers.rs).
const ROTEL_REQUIREMENT: &str = "rotel==0.0.1a15";

/// rotel (from the `rotel` pip wheel) receiving OTLP/gRPC and discarding it (`--exporter blackhole`).
pub(super) struct Rotel {
    grpc_port: u16,
    _child: Child,
}

impl Rotel {
    pub(super) fn start(run_dir: &Path) -> Result<Self> {
        let bin = rotel_binary()?;
        let (grpc_port, http_port) = (free_port()?, free_port()?);
        let mut cmd = Command::new(bin);
        cmd.arg("start")
            .args(["--otlp-grpc-endpoint", &format!("127.0.0.1:{grpc_port}")])
            .args(["--otlp-http-endpoint", &format!("127.0.0.1:{http_port}")])
            .args(["--exporter", "blackhole"])
            .arg("--pid-file")
            .arg(run_dir.join("rotel.pid"))
            .arg("--log-file")
            .arg(run_dir.join("rotel-agent.log"));
        let mut child = Child::spawn(
            "rotel",
            &mut cmd,
            &run_dir.join("rotel.log"),
            libc::SIGTERM,
            false,
        )?;
        child.wait_for_port(grpc_port, Duration::from_secs(20))?;
        Ok(Self {
            grpc_port,
            _child: child,
        })
    }

    pub(super) fn grpc_endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.grpc_port)
    }
}

/// The `rotel-agent` binary inside the `rotel` wheel, installed with pip when missing.
fn rotel_binary() -> Result<PathBuf> {
    let locate = || {
        exec::output(Command::new("python3").args([
            "-c",
            "import rotel,os;print(os.path.dirname(rotel.__file__))",
        ]))
    };
    let dir = match locate() {
        Ok(dir) => dir,
        Err(_) => {
            exec::run(
                Command::new("python3")
                    .args(["-m", "pip", "install", "--pre"])
                    .arg(ROTEL_REQUIREMENT),
            )?;
            locate()?
        }
    };
    let bin = PathBuf::from(dir.trim()).join("rotel-agent");
    if !bin.is_file() {
        bail!("the rotel wheel has no {}", bin.display());
    }
    Ok(bin)
}
