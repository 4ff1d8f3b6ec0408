//! Harness for the privileged end-to-end tests: real peers, the real agent, a real OTLP receiver.
//!
//! # Layout
//! - [`process`]: child processes with logs in files, killed by PID when dropped.
//! - [`otlp`]: the independent OTLP sink (`peers/otlp_sink.py`, official protos + grpcio) and the
//!   rotel gateway in front of it.
//! - [`span`]: the sink's JSON lines flattened into [`Span`]s.
//! - [`agent`]: `$SONDE_BIN` started with filters and an exporter, ready once it logs `capture ready`.
//! - [`peers`]: the servers (Python `http.server`, nginx over HTTP/1.1, h2c and TLS, hypercorn,
//!   grpcio) and the clients (curl, Python `http.client`, nghttp, h2load, grpcio, raw TCP).
//! - [`expect`]: the attribute contracts of an HTTP span and an RPC span, checked field by field.
//! - [`grpc_extra`]: the gRPC tests' shared calls, checks and the grpc-go peer's build.
//! - [`h2_nginx`]: the nginx HTTP/2 tests' checks against nginx's access log (h2c and TLS).
//! - [`world`]: one test's temp dir + sink (+ rotel) + server + agent, torn down in that reverse order.
//!
//! Each test builds its own world in a [`TempDir`] on fresh loopback ports, drives real traffic, stops
//! the agent with SIGTERM (which flushes), then asserts exact span counts. Every process a test starts
//! is killed by PID when its guard drops, also when the test panics; the logs of every process are then
//! printed, and the temp dir is kept.

pub mod agent;
pub mod expect;
pub mod grpc_extra;
pub mod h2_nginx;
pub mod otlp;
pub mod peers;
pub mod process;
pub mod span;
pub mod world;

use std::{
    env, fs,
    net::TcpListener,
    path::{Path, PathBuf},
    sync::atomic::{AtomicU32, Ordering},
    thread,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

pub use agent::{Agent, Export};
pub use otlp::{OtlpSink, Rotel};
pub use span::{AttrValue, Span};
pub use world::{Peer, Via, Watch, World};

/// Whether the tests run as root (they load eBPF programs).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Returns from the test, printing `skipping: needs root`, unless running as root.
#[macro_export]
macro_rules! require_root {
    () => {
        if !$crate::is_root() {
            println!("skipping: needs root");
            return;
        }
    };
}

/// A loopback port that was free a moment ago (bound to `127.0.0.1:0`, read, released).
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener
        .local_addr()
        .expect("local_addr of a bound listener")
        .port()
}

/// `tests/peers`, where the peer programs and configs live.
pub fn peers_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("peers")
}

/// This machine's host name, as the agent should report it in `host.name`.
pub fn host_name() -> String {
    fs::read_to_string("/proc/sys/kernel/hostname")
        .expect("read /proc/sys/kernel/hostname")
        .trim()
        .to_owned()
}

/// Polls `check` every 50 ms until it returns `Some` or `timeout` passes.
pub fn poll<T>(timeout: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return Some(v);
        }
        if std::time::Instant::now() >= deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// A per-test scratch directory, removed on drop unless the test panicked (then kept and printed).
#[derive(Debug)]
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// Creates `$TMPDIR/sonde-e2e-<name>-<pid>-<n>-<nanos>`.
    pub fn new(name: &str) -> Self {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let path = env::temp_dir().join(format!(
            "sonde-e2e-{name}-{}-{}-{nanos}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        fs::create_dir_all(&path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
        Self { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!("kept test files in {}", self.path.display());
        } else {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

/// Scrapes `http://<listen>/metrics` until the series named `metric` with the label `label`
/// (`reason="ringbuf_full"`) has a value above 0, or `timeout` passes; returns that value.
pub fn wait_for_positive_series(
    listen: &str,
    metric: &str,
    label: &str,
    timeout: Duration,
) -> Option<u64> {
    poll(timeout, || {
        scrape_series(listen, metric, label).filter(|n| *n > 0)
    })
}

/// The exposition at `http://<listen>/metrics`, or `None` if the scrape failed.
pub fn scrape(listen: &str) -> Option<String> {
    let out = std::process::Command::new("curl")
        .args(["-sf", &format!("http://{listen}/metrics")])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Scrapes `http://<listen>/metrics` once: the value of the first series named `metric` with the
/// label `label` (`outcome="dropped"`), or `None` if it is absent or the scrape failed.
pub fn scrape_series(listen: &str, metric: &str, label: &str) -> Option<u64> {
    scrape(listen)?
        .lines()
        .find(|l| l.starts_with(&format!("{metric}{{")) && l.contains(label))
        .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
}
