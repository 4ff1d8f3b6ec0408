//! Where the benchmark ran: CPU, cores, memory, kernel, load average, the sonde commit and the
//! versions of the peers, read from `/proc`, git, dpkg and the tools themselves.

use std::{fs, path::Path, process::Command};

use serde_json::{json, Value};

use crate::exec;

/// Where and with what the benchmark ran.
pub(in crate::bench) struct Machine {
    pub(in crate::bench) date: String,
    pub(in crate::bench) cpu: String,
    pub(in crate::bench) cores: usize,
    pub(in crate::bench) memory: String,
    pub(in crate::bench) kernel: String,
    pub(in crate::bench) loadavg: String,
    pub(in crate::bench) commit: String,
    pub(in crate::bench) sonde_version: String,
    /// (tool, version) for nginx, wrk, hey, oha, h2load (nghttp2-client), grpcio.
    pub(in crate::bench) versions: Vec<(&'static str, String)>,
    /// Other `sonde` processes found at the start (they would skew both sides).
    pub(in crate::bench) other_agents: Vec<u32>,
}

impl Machine {
    pub(in crate::bench) fn probe(date: String, sonde: &Path) -> Self {
        let read = |p: &str| fs::read_to_string(p).unwrap_or_default();
        let cpuinfo = read("/proc/cpuinfo");
        let cpu = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name")?.split_once(':'))
            .map_or_else(|| "unknown".to_owned(), |(_, v)| v.trim().to_owned());
        let memory = read("/proc/meminfo")
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map_or_else(
                || "unknown".to_owned(),
                |kib| format!("{:.1} GiB", kib as f64 / 1024.0 / 1024.0),
            );
        let repo = crate::build::repo_root();
        let git = |args: &[&str]| exec::output(Command::new("git").arg("-C").arg(repo).args(args));
        let commit = match git(&["rev-parse", "--short=12", "HEAD"]) {
            Ok(c) => {
                let dirty = git(&["status", "--porcelain", "--untracked-files=no"])
                    .is_ok_and(|s| !s.trim().is_empty());
                format!(
                    "{}{}",
                    c.trim(),
                    if dirty {
                        " (+ uncommitted changes)"
                    } else {
                        ""
                    }
                )
            }
            Err(_) => "unknown".to_owned(),
        };
        let sonde_version = exec::output(Command::new(sonde).arg("--version"))
            .map_or_else(|_| "unknown".to_owned(), |v| v.trim().to_owned());
        let dpkg = |p: &str| {
            exec::output(Command::new("dpkg-query").args(["-W", "-f=${Version}", p]))
                .map_or_else(|_| "not installed".to_owned(), |v| v.trim().to_owned())
        };
        let oha = exec::output(Command::new("oha").arg("--version"))
            .map_or_else(|_| "not installed".to_owned(), |v| v.trim().to_owned());
        Self {
            date,
            cpu,
            cores: std::thread::available_parallelism().map_or(0, usize::from),
            memory,
            kernel: read("/proc/sys/kernel/osrelease").trim().to_owned(),
            loadavg: read("/proc/loadavg")
                .split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" "),
            commit,
            sonde_version,
            versions: vec![
                ("nginx", dpkg("nginx")),
                ("wrk", dpkg("wrk")),
                ("hey", dpkg("hey")),
                ("oha", oha),
                ("h2load", dpkg("nghttp2-client")),
                ("grpcio", crate::bench::grpc::grpcio_version()),
            ],
            other_agents: other_sonde_processes(),
        }
    }

    pub(super) fn to_json(&self) -> Value {
        json!({
            "date": self.date,
            "cpu": self.cpu,
            "cores": self.cores,
            "memory": self.memory,
            "kernel": self.kernel,
            "loadavg_at_start": self.loadavg,
            "sonde_commit": self.commit,
            "sonde_version": self.sonde_version,
            "versions": self.versions.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_, _>>(),
            "other_sonde_processes": self.other_agents,
        })
    }
}

/// tgids of running processes named `sonde`.
fn other_sonde_processes() -> Vec<u32> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|tgid| {
            fs::read_to_string(format!("/proc/{tgid}/comm")).is_ok_and(|c| c.trim() == "sonde")
        })
        .collect()
}
