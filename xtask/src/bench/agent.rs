//! The agent under test and what it costs: starts `sonde` and measures one load window into an
//! [`AgentRun`].
//!
//! Sources, read before and after the window:
//! - CPU: the process CPU clock (`clock_getcpuclockid`, ns, every thread, living or exited), and the
//!   user/system split from `utime`/`stime` in `/proc/<tgid>/stat` (clock ticks);
//! - RSS peak: `VmHWM` in `/proc/<tgid>/status` (peak since the agent started);
//! - kernel probe time: `run_time_ns`/`run_cnt` in `/proc/<tgid>/fdinfo/<fd>` of each program fd
//!   the agent holds (exactly its programs), while `BPF_ENABLE_STATS` is held
//!   (what `kernel.bpf_stats_enabled=1` does, but released by the kernel when xtask exits, however it
//!   exits); program names from `bpftool prog show -j` when bpftool is installed;
//! - events lost, spans, HTTP requests and gRPC calls seen: the agent's Prometheus `/metrics`.

mod bpf;
mod metrics;

use std::{
    collections::BTreeMap,
    fs,
    path::Path,
    process::Command,
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};

use self::{
    bpf::BpfStats,
    metrics::{http_get, Metrics},
};
use super::child::{free_port, Child};

/// How long the agent may take to log `capture ready`.
const READY_TIMEOUT: Duration = Duration::from_secs(90);
/// How long to wait after the load for the agent to turn its backlog into spans.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(20);

/// A running `sonde`, tracing only the benchmark's port and exporting to rotel.
pub(super) struct Agent {
    child: Child,
    tgid: u32,
    prometheus_port: u16,
    /// `socket`, `fentry`, `kprobe` or `tracepoint` (from its `capture mode:` log line).
    pub(super) capture_mode: String,
    /// Started with `--floor`.
    floor: bool,
}

/// What the agent cost during one load window, and what it saw.
#[derive(Debug, Clone, Default)]
pub(super) struct AgentRun {
    pub(super) capture_mode: String,
    /// CPU time (user + system, all threads) from just before the load until the agent had turned
    /// it into spans (its span count stopped moving). Not included: the export of the last partial
    /// batch, which the SDK sends on its timer (`OTEL_BSP_SCHEDULE_DELAY`, 5 s) while the agent is
    /// otherwise idle.
    pub(super) cpu_ns: u64,
    /// The part of `cpu_ns` spent while the load ran (the rest: catching up after it).
    pub(super) cpu_during_load_ns: u64,
    pub(super) user_ns: u64,
    pub(super) system_ns: u64,
    /// `VmHWM` at the end of the window (peak since start), KiB.
    pub(super) rss_peak_kib: u64,
    /// `sonde_kernel_dropped_total` over the window, all reasons.
    pub(super) events_lost: u64,
    pub(super) events_lost_by_reason: BTreeMap<String, u64>,
    /// `sonde_spans_total` over the window, by outcome (`recorded`, `exported`, `dropped`, …).
    pub(super) spans: BTreeMap<String, u64>,
    /// `http_server_request_duration_seconds_count` (nginx side) over the window.
    pub(super) server_requests: u64,
    /// `http_client_request_duration_seconds_count` (load generator side) over the window.
    pub(super) client_requests: u64,
    /// `rpc_server_call_duration_seconds_count` (gRPC server side) over the window.
    pub(super) server_calls: u64,
    /// `rpc_client_call_duration_seconds_count` (load generator side) over the window.
    pub(super) client_calls: u64,
    /// gRPC calls, either side, that the agent saw end with a status other than `OK`.
    pub(super) calls_not_ok: u64,
    /// Sum over the agent's programs of `run_time_ns` during the load (not the settling after it).
    pub(super) probe_run_time_ns: u64,
    pub(super) probe_run_cnt: u64,
    /// (`run_time_ns`, `run_cnt`) by program name.
    pub(super) probes: BTreeMap<String, (u64, u64)>,
    /// Time from the end of the load until the span count stopped moving.
    pub(super) settle_seconds: f64,
    /// False when [`SETTLE_TIMEOUT`] ran out first.
    pub(super) settled: bool,
}

impl AgentRun {
    pub(super) fn spans_recorded(&self) -> u64 {
        self.spans.get("recorded").copied().unwrap_or(0)
    }
}

impl Agent {
    /// Starts `bin` and waits for `capture ready`. `log` receives its stderr.
    /// `floor`: with `--floor` (every program returns at once; nothing is captured).
    pub(super) fn start(
        bin: &Path,
        port: u16,
        otlp_endpoint: &str,
        log: &Path,
        floor: bool,
    ) -> Result<Self> {
        let prometheus_port = free_port()?;
        let mut cmd = Command::new(bin);
        if floor {
            cmd.arg("--floor");
        }
        cmd.args(["--port", &port.to_string()])
            .args([
                "--prometheus-listen",
                &format!("127.0.0.1:{prometheus_port}"),
            ])
            .args(["--otlp-endpoint", otlp_endpoint])
            .env_remove("SONDE_LOG")
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT");
        let mut child = Child::spawn("sonde", &mut cmd, log, libc::SIGINT, true)?;
        let text = child.wait_for_log("capture ready", READY_TIMEOUT)?;
        child.wait_for_port(prometheus_port, Duration::from_secs(10))?;
        let capture_mode = text
            .lines()
            .find_map(|l| l.split_once("capture mode: ").map(|(_, rest)| rest))
            .and_then(|rest| rest.split([' ', '(', ';']).next())
            .unwrap_or("unknown")
            .to_owned();
        Ok(Self {
            tgid: child.tgid(),
            child,
            prometheus_port,
            capture_mode,
            floor,
        })
    }

    /// Runs `load` and measures the agent over it: kernel probe time over the load itself; CPU,
    /// spans and drops until the agent has turned what the load produced into spans.
    pub(super) fn measure<T>(&mut self, load: impl FnOnce() -> Result<T>) -> Result<(T, AgentRun)> {
        let names = bpf::program_names();
        let stats = BpfStats::enable()?;
        let cpu_before = self.cpu()?;
        let metrics_before = self.metrics()?;
        let bpf_before = self.programs()?;
        let out = load()?;
        let bpf_after = self.programs()?;
        let cpu_load_end = self.cpu()?;
        drop(stats);
        self.child.check_running()?;
        let load_end = Instant::now();
        // A floor agent records nothing: there is no backlog to wait for.
        let (metrics_after, settled) = if self.floor {
            (self.metrics()?, true)
        } else {
            self.settle(metrics_before.recorded())?
        };
        let settle_seconds = load_end.elapsed().as_secs_f64();
        let cpu_after = self.cpu()?;

        let mut run = AgentRun {
            capture_mode: self.capture_mode.clone(),
            cpu_ns: cpu_after.total_ns.saturating_sub(cpu_before.total_ns),
            cpu_during_load_ns: cpu_load_end.total_ns.saturating_sub(cpu_before.total_ns),
            user_ns: cpu_after.user_ns.saturating_sub(cpu_before.user_ns),
            system_ns: cpu_after.system_ns.saturating_sub(cpu_before.system_ns),
            rss_peak_kib: self.rss_peak_kib()?,
            settle_seconds,
            settled,
            ..AgentRun::default()
        };
        for (reason, after) in &metrics_after.dropped {
            let delta =
                after.saturating_sub(metrics_before.dropped.get(reason).copied().unwrap_or(0));
            run.events_lost += delta;
            run.events_lost_by_reason.insert(reason.clone(), delta);
        }
        for (outcome, after) in &metrics_after.spans {
            let before = metrics_before.spans.get(outcome).copied().unwrap_or(0);
            run.spans
                .insert(outcome.clone(), after.saturating_sub(before));
        }
        run.server_requests = metrics_after
            .server_requests
            .saturating_sub(metrics_before.server_requests);
        run.client_requests = metrics_after
            .client_requests
            .saturating_sub(metrics_before.client_requests);
        run.server_calls = metrics_after
            .server_calls
            .saturating_sub(metrics_before.server_calls);
        run.client_calls = metrics_after
            .client_calls
            .saturating_sub(metrics_before.client_calls);
        run.calls_not_ok = metrics_after
            .calls_not_ok
            .saturating_sub(metrics_before.calls_not_ok);
        for (id, (time_after, cnt_after)) in &bpf_after {
            let (time_before, cnt_before) = bpf_before.get(id).copied().unwrap_or((0, 0));
            let (time, cnt) = (
                time_after - time_before.min(*time_after),
                cnt_after - cnt_before.min(*cnt_after),
            );
            run.probe_run_time_ns += time;
            run.probe_run_cnt += cnt;
            let name = names.get(id).cloned().unwrap_or_else(|| format!("id {id}"));
            let entry = run.probes.entry(name).or_default();
            entry.0 += time;
            entry.1 += cnt;
        }
        Ok((out, run))
    }

    /// Stops the agent (SIGINT: it flushes and exits) and fails if it did not exit cleanly.
    pub(super) fn stop(mut self) -> Result<()> {
        let status = self.child.stop()?;
        if !status.success() {
            bail!("sonde exited with {status}");
        }
        Ok(())
    }

    /// Polls `/metrics` until the recorded span count has grown and then not moved for one poll
    /// interval: the agent has processed its backlog. Returns the last metrics and whether that
    /// happened before [`SETTLE_TIMEOUT`].
    fn settle(&mut self, recorded_before: u64) -> Result<(Metrics, bool)> {
        let deadline = Instant::now() + SETTLE_TIMEOUT;
        let mut last = self.metrics()?;
        loop {
            thread::sleep(Duration::from_millis(250));
            self.child.check_running()?;
            let now = self.metrics()?;
            let settled = now.recorded() == last.recorded() && now.recorded() > recorded_before;
            last = now;
            if settled {
                return Ok((last, true));
            }
            if Instant::now() > deadline {
                return Ok((last, false));
            }
        }
    }

    fn cpu(&self) -> Result<Cpu> {
        let total_ns = process_cpu_ns(self.tgid)?;
        let stat = fs::read_to_string(format!("/proc/{}/stat", self.tgid))?;
        let (user_ticks, system_ticks) = parse_stat_times(&stat)?;
        // SAFETY: sysconf has no preconditions.
        let hz = u64::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) }).unwrap_or(100);
        Ok(Cpu {
            total_ns,
            user_ns: user_ticks * 1_000_000_000 / hz,
            system_ns: system_ticks * 1_000_000_000 / hz,
        })
    }

    fn rss_peak_kib(&self) -> Result<u64> {
        let status = fs::read_to_string(format!("/proc/{}/status", self.tgid))?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .context("no VmHWM in /proc/<tgid>/status")
    }

    fn metrics(&self) -> Result<Metrics> {
        let text = http_get(self.prometheus_port, "/metrics")?;
        Ok(Metrics::parse(&text))
    }

    /// `prog_id` → (`run_time_ns`, `run_cnt`) of every BPF program fd the agent holds.
    fn programs(&self) -> Result<BTreeMap<u32, (u64, u64)>> {
        let programs = bpf::programs(self.tgid)?;
        if programs.is_empty() {
            bail!("sonde (tgid {}) holds no BPF program fd", self.tgid);
        }
        Ok(programs)
    }
}

struct Cpu {
    total_ns: u64,
    user_ns: u64,
    system_ns: u64,
}

/// CPU time of every thread of `tgid` (living or exited), from its process CPU clock.
fn process_cpu_ns(tgid: u32) -> Result<u64> {
    let pid = libc::pid_t::try_from(tgid)?;
    let mut clock: libc::clockid_t = 0;
    // SAFETY: `clock` is a valid out pointer.
    let rc = unsafe { libc::clock_getcpuclockid(pid, &mut clock) };
    if rc != 0 {
        bail!("clock_getcpuclockid({tgid}) failed: error {rc}");
    }
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out pointer.
    if unsafe { libc::clock_gettime(clock, &mut ts) } != 0 {
        bail!(
            "clock_gettime(CPU clock of {tgid}): {}",
            std::io::Error::last_os_error()
        );
    }
    Ok(u64::try_from(ts.tv_sec)? * 1_000_000_000 + u64::try_from(ts.tv_nsec)?)
}

/// (`utime`, `stime`) in clock ticks: fields 14 and 15 of `/proc/<tgid>/stat`, counted after the
/// `comm` field, which may itself hold spaces and parentheses.
fn parse_stat_times(stat: &str) -> Result<(u64, u64)> {
    let rest = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .context("no `)` in /proc/<tgid>/stat")?;
    // `rest` starts at field 3 (state).
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| -> Result<u64> {
        fields
            .get(n - 3)
            .context("/proc/<tgid>/stat is too short")?
            .parse()
            .context("/proc/<tgid>/stat field is not a number")
    };
    Ok((field(14)?, field(15)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_times_skip_a_comm_with_spaces_and_parentheses() {
        let stat =
            "4242 (tokio (rt) x) S 1 4242 4242 0 -1 4194560 100 0 0 0 37 12 0 0 20 0 9 0 123";
        assert_eq!(parse_stat_times(stat).unwrap(), (37, 12));
    }
}
