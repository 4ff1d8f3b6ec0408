//! Attaching the TLS uprobes to each library file as processes map it.
//!
//! One thread owns the loaded programs (and so every link: dropping it at shutdown detaches all).
//! It scans every process at start, rescans periodically (a process may `dlopen` libssl long after
//! exec, as Python does on `import ssl`), and scans a process shortly after each exec it is told
//! about. Each file (device + inode) is analysed once; uprobes attach to the file, so every process
//! mapping it, now or later, is covered.

use std::{
    collections::{HashMap, HashSet},
    sync::mpsc::{Receiver, RecvTimeoutError},
    thread,
    time::{Duration, Instant},
};

use aya::{
    programs::{
        uprobe::{UProbeAttachLocation, UProbeAttachPoint, UProbeLinkId, UProbeScope},
        ProgramError, UProbe,
    },
    Ebpf,
};

use super::tls_targets::{self, Candidate, FileId, TlsTarget};

/// Program attached at every return site of the TLS functions.
pub const RETURN_PROGRAM: &str = "ssl_return";

/// Attach attempts per file before it is given up (logged as a warning each time).
const MAX_ATTACH_TRIES: u32 = 3;

/// How often every process is rescanned for newly mapped TLS libraries.
const RESCAN_PERIOD: Duration = Duration::from_secs(10);
/// Delays after an exec at which that process is scanned: at once for its executable (statically
/// linked OpenSSL, as in node, must be attached before the first request), then for the libraries
/// the dynamic loader maps within milliseconds, then for modules interpreters load later.
const AFTER_EXEC: [Duration; 4] = [
    Duration::ZERO,
    Duration::from_millis(50),
    Duration::from_millis(500),
    Duration::from_secs(2),
];

/// Counters of the TLS discovery, by reason (self-telemetry).
#[derive(Debug, Default, Clone)]
pub struct TlsStats {
    /// Files attached.
    pub attached: u64,
    /// Files skipped, by reason (`no_symbols`, `not_elf`, `open`, `attach_failed`).
    pub skipped: HashMap<&'static str, u64>,
}

/// Owns the programs; attaches TLS uprobes to library files. See the module docs.
pub struct TlsAttacher {
    programs: Ebpf,
    enabled: bool,
    seen: HashSet<FileId>,
    failures: HashMap<FileId, u32>,
    stats: TlsStats,
}

impl TlsAttacher {
    /// Takes ownership of the loaded programs. With `enabled == false` (TLS programs not loaded,
    /// or `--no-tls`) it only keeps the tracepoint links alive.
    pub fn new(programs: Ebpf, enabled: bool) -> Self {
        Self {
            programs,
            enabled,
            seen: HashSet::new(),
            failures: HashMap::new(),
            stats: TlsStats::default(),
        }
    }

    /// Scans process `pid` (or every process) and attaches to new TLS library files.
    pub fn scan(&mut self, pid: Option<u32>) {
        if !self.enabled {
            return;
        }
        let pids = pid.map_or_else(tls_targets::all_pids, |p| vec![p]);
        for pid in pids {
            for c in tls_targets::candidates(pid) {
                if self.seen.contains(&c.id) {
                    continue;
                }
                self.consider(&c);
            }
        }
    }

    fn consider(&mut self, c: &Candidate) {
        match tls_targets::analyze(c) {
            Ok(target) => match self.attach(&target) {
                Ok(sites) => {
                    self.seen.insert(c.id.clone());
                    self.stats.attached += 1;
                    let names: Vec<_> = target.functions.iter().map(|f| f.symbol).collect();
                    tracing::info!(
                        file = %target.display,
                        functions = %names.join(", "),
                        return_sites = sites,
                        "TLS: attached OpenSSL-API uprobes"
                    );
                }
                Err(e) => {
                    *self.stats.skipped.entry("attach_failed").or_default() += 1;
                    let tries = self.failures.entry(c.id.clone()).or_default();
                    *tries += 1;
                    if *tries >= MAX_ATTACH_TRIES {
                        self.seen.insert(c.id.clone());
                        tracing::warn!(file = %target.display, error = %e, "TLS: cannot attach uprobes; giving up, this library's traffic stays encrypted to Sonde");
                    } else {
                        tracing::warn!(file = %target.display, error = %e, "TLS: cannot attach uprobes; will retry");
                    }
                }
            },
            // The process may have exited mid-scan: try the file again through another process.
            Err(tls_targets::TargetError::Open) => {
                *self.stats.skipped.entry("open").or_default() += 1;
            }
            Err(e) => {
                self.seen.insert(c.id.clone());
                let reason = match e {
                    tls_targets::TargetError::NotElf => "not_elf",
                    _ => "no_symbols",
                };
                *self.stats.skipped.entry(reason).or_default() += 1;
                tracing::debug!(file = %c.path, reason, "TLS: not a TLS library");
            }
        }
    }

    /// Attaches the entry and return-site uprobes of `target`, all or nothing: on an error the
    /// links made so far are detached. Returns the return sites attached.
    fn attach(&mut self, target: &TlsTarget) -> Result<usize, ProgramError> {
        let mut links = Vec::new();
        let result = self.attach_all(target, &mut links);
        if result.is_err() {
            for (name, link) in links {
                if let Ok(p) = program(&mut self.programs, name) {
                    let _ = p.detach(link);
                }
            }
        }
        result
    }

    fn attach_all(
        &mut self,
        target: &TlsTarget,
        links: &mut Vec<(&'static str, UProbeLinkId)>,
    ) -> Result<usize, ProgramError> {
        for f in &target.functions {
            let prog = program(&mut self.programs, f.program)?;
            let entry = UProbeAttachPoint {
                location: UProbeAttachLocation::SymbolOffset(f.symbol, f.entry_offset),
                cookie: None,
            };
            links.push((
                f.program,
                prog.attach([entry], &target.path, UProbeScope::AllProcesses)?,
            ));
        }
        let points: Vec<UProbeAttachPoint<'_>> = target
            .functions
            .iter()
            .flat_map(|f| {
                f.ret_offsets.iter().map(|&off| UProbeAttachPoint {
                    location: UProbeAttachLocation::SymbolOffset(f.symbol, off),
                    cookie: None,
                })
            })
            .collect();
        let sites = points.len();
        let prog = program(&mut self.programs, RETURN_PROGRAM)?;
        links.push((
            RETURN_PROGRAM,
            prog.attach(points, &target.path, UProbeScope::AllProcesses)?,
        ));
        Ok(sites)
    }

    /// Discovery counters so far.
    pub fn stats(&self) -> &TlsStats {
        &self.stats
    }
}

fn program<'a>(programs: &'a mut Ebpf, name: &'static str) -> Result<&'a mut UProbe, ProgramError> {
    let p = programs.program_mut(name).ok_or(ProgramError::NotLoaded)?;
    <&mut UProbe>::try_from(p)
}

/// Runs the attacher on its own thread until `execs` is closed: scans after each exec'd tgid
/// received and a full rescan every [`RESCAN_PERIOD`] (the caller does the initial scan before it
/// reports ready). Returns the attacher (its programs still attached) when the channel closes, so
/// the caller decides when to detach.
///
/// # Errors
/// The OS refused a new thread.
pub fn spawn(
    mut attacher: TlsAttacher,
    execs: Receiver<u32>,
) -> std::io::Result<thread::JoinHandle<TlsAttacher>> {
    thread::Builder::new()
        .name("sonde-tls".into())
        .spawn(move || {
            let mut next_rescan = Instant::now() + RESCAN_PERIOD;
            let mut due: Vec<(Instant, u32)> = Vec::new();
            loop {
                let now = Instant::now();
                let wake = due
                    .iter()
                    .map(|d| d.0)
                    .chain([next_rescan])
                    .min()
                    .unwrap_or(next_rescan);
                match execs.recv_timeout(wake.saturating_duration_since(now)) {
                    Ok(tgid) => {
                        if attacher.enabled {
                            due.extend(AFTER_EXEC.iter().map(|d| (now + *d, tgid)));
                        }
                    }
                    Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => break,
                }
                let now = Instant::now();
                let (ready, later): (Vec<_>, Vec<_>) = due.into_iter().partition(|d| d.0 <= now);
                due = later;
                for (_, tgid) in ready {
                    attacher.scan(Some(tgid));
                }
                if now >= next_rescan {
                    attacher.scan(None);
                    next_rescan = now + RESCAN_PERIOD;
                }
            }
            attacher
        })
}
