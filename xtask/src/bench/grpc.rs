//! The gRPC server under load: Python grpcio (`grpc_server.py`, embedded and written to the run
//! directory) serving the unary echo `sonde.bench.Echo/Unary` over h2c on a free loopback port,
//! and the request message the load generator sends it.
//!
//! h2load sees only `:status`, which is 200 for every gRPC call, failed or not; so the server is
//! checked once with nghttp, sending exactly the load's request, for `grpc-status: 0`.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{bail, Context as _, Result};

use super::{
    child::{free_port, Child},
    load::Target,
};
use crate::exec;

/// The server's source.
const SERVER_PY: &str = include_str!("grpc_server.py");
/// The method each call invokes (`/{service}/{method}`, the HTTP/2 `:path`).
pub(super) const PATH: &str = "/sonde.bench.Echo/Unary";
/// Size of the request message (echoed as the response), in bytes, without gRPC's 5-byte prefix.
pub(super) const MESSAGE_BYTES: usize = 1024;

/// A running gRPC server; stopped when dropped.
pub(super) struct GrpcServer {
    pub(super) port: u16,
    /// One length-prefixed message: the body of every call.
    message: PathBuf,
    _child: Child,
}

impl GrpcServer {
    /// Writes the server and the message under `<run_dir>/grpc/`, starts the server (grpcio must
    /// be installed: [`ensure_grpcio`]) and checks one call.
    pub(super) fn start(run_dir: &Path) -> Result<Self> {
        let root = run_dir.join("grpc");
        fs::create_dir_all(&root).context("create the gRPC server dir")?;
        let script = root.join("grpc_server.py");
        fs::write(&script, SERVER_PY).with_context(|| format!("write {}", script.display()))?;
        let message = root.join("message.bin");
        fs::write(&message, grpc_message(&[b'x'; MESSAGE_BYTES]))
            .with_context(|| format!("write {}", message.display()))?;
        let port = free_port()?;
        let mut cmd = Command::new("python3");
        cmd.arg(&script).arg(port.to_string());
        let mut child = Child::spawn(
            "grpc server",
            &mut cmd,
            &run_dir.join("grpc-server.log"),
            libc::SIGTERM,
            false,
        )?;
        child.wait_for_port(port, Duration::from_secs(30))?;
        let server = Self {
            port,
            message,
            _child: child,
        };
        server.check()?;
        Ok(server)
    }

    /// What the load generator sends: the message, POSTed to [`PATH`].
    pub(super) fn target(&self) -> Target {
        Target {
            url: format!("http://127.0.0.1:{}{PATH}", self.port),
            grpc_message: Some(self.message.clone()),
        }
    }

    /// One call with nghttp (h2c, prior knowledge), the load's headers and body: fails unless
    /// the trailers say `grpc-status: 0`.
    fn check(&self) -> Result<()> {
        let target = self.target();
        let mut cmd = Command::new("nghttp");
        cmd.args(["-v", "-n", "-d"])
            .arg(&self.message)
            .args(["-H", "content-type: application/grpc", "-H", "te: trailers"])
            .arg(&target.url);
        let out = exec::output(&mut cmd)?;
        if !out
            .lines()
            .any(|l| l.trim_end().ends_with("grpc-status: 0"))
        {
            bail!(
                "the gRPC server did not answer `{}` with grpc-status 0:\n{out}",
                exec::display(&cmd)
            );
        }
        Ok(())
    }
}

/// `message` as gRPC frames it: a 0 byte (not compressed), the length (4 bytes, big-endian), the
/// bytes.
fn grpc_message(message: &[u8]) -> Vec<u8> {
    let len = u32::try_from(message.len()).expect("a bench message is small");
    let mut framed = Vec::with_capacity(5 + message.len());
    framed.push(0);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(message);
    framed
}

/// Installs grpcio with pip when `python3` cannot import it.
pub(super) fn ensure_grpcio() -> Result<()> {
    if exec::output(Command::new("python3").args(["-c", "import grpc"])).is_ok() {
        return Ok(());
    }
    exec::run(Command::new("python3").args(["-m", "pip", "install", "grpcio"]))
}

/// The grpcio version `python3` imports, or `not installed`.
pub(super) fn grpcio_version() -> String {
    exec::output(Command::new("python3").args(["-c", "import grpc; print(grpc.__version__)"]))
        .map_or_else(|_| "not installed".to_owned(), |v| v.trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::grpc_message;

    #[test]
    fn messages_are_length_prefixed() {
        assert_eq!(grpc_message(b"abc"), [0, 0, 0, 0, 3, b'a', b'b', b'c']);
    }
}
