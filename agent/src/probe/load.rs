//! Loads the eBPF object, sizes its maps, patches its globals, attaches the capture mode's socket
//! hooks (see [`capture`]) and every [`HOOKS`] entry, and holds the links for as long as
//! [`Probes`] lives (dropping it detaches everything).

use std::path::PathBuf;

use agent_common::{
    names,
    stats::{self, Stat},
};
use aya::{
    maps::{HashMap, MapData, MapError, PerCpuArray, RingBuf},
    programs::{TracePoint, UProbe},
    Btf, Ebpf, EbpfError, EbpfLoader,
};

use super::{
    capture::{self, CaptureMode, Chosen, Refusal},
    tracefs, Hook, Need, HOOKS,
};

/// The eBPF object built by `agent/build.rs` (empty when built with `AYA_BUILD_SKIP=1`).
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/agent-ebpf"));

/// Why the probes could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The binary was built without its eBPF object.
    #[error("this binary was built without its eBPF object (AYA_BUILD_SKIP); rebuild with `cargo xtask build`")]
    NoObject,
    /// Reading an alternative object failed.
    #[error("cannot read eBPF object `{path}`")]
    ReadObject {
        /// Path given with `--ebpf-object`.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// tracefs is not mounted and mounting it failed.
    #[error("tracefs is not mounted at /sys/kernel/tracing and mounting it failed (needs CAP_SYS_ADMIN)")]
    Tracefs {
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// tracefs is mounted but this process may not read it.
    #[error("cannot read tracefs at `{}`: run sonde as root (CAP_SYS_ADMIN, CAP_BPF, CAP_PERFMON)", path.display())]
    TracefsAccess {
        /// Mount point.
        path: PathBuf,
    },
    /// A tracepoint's format file is missing: the kernel lacks that tracepoint.
    #[error("tracepoint `{tracepoint}` is not available on this kernel (sock:sock_send_length and sock:sock_recv_length need Linux 6.3+)")]
    TracepointFormat {
        /// `category:name`.
        tracepoint: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// A tracepoint lacks a field the programs read.
    #[error("tracepoint `{tracepoint}` has no field `{field}` on this kernel")]
    TracepointField {
        /// `category:name`.
        tracepoint: String,
        /// Field name.
        field: String,
    },
    /// The object could not be parsed or its maps created.
    #[error("loading the eBPF object failed (are you root? CAP_BPF and CAP_PERFMON are needed)")]
    Object(#[source] Box<EbpfError>),
    /// The kernel refused to create the ring buffer map.
    #[error("the kernel refused the BPF ring buffer map `{name}` ({io_error}): BPF_MAP_TYPE_RINGBUF needs Linux 5.8+; nothing can be captured without it")]
    RingBuffer {
        /// Map name.
        name: String,
        /// The kernel's answer.
        io_error: std::io::Error,
    },
    /// A program in [`HOOKS`] is missing from the object.
    #[error("program `{0}` is missing from the eBPF object")]
    MissingProgram(&'static str),
    /// A map is missing from the object.
    #[error("map `{0}` is missing from the eBPF object")]
    MissingMap(&'static str),
    /// A map has an unexpected type.
    #[error("map `{name}` has an unexpected type")]
    Map {
        /// Map name.
        name: &'static str,
        /// Cause.
        #[source]
        source: MapError,
    },
    /// A required program failed to load or attach.
    #[error("cannot attach `{program}` to tracepoint `{category}:{name}`: {reason} (`--log debug` shows the verifier log)")]
    Attach {
        /// Program name.
        program: &'static str,
        /// Tracepoint category.
        category: &'static str,
        /// Tracepoint name.
        name: &'static str,
        /// The kernel's answer, without the verifier log.
        reason: String,
    },
    /// No capture mode could tie syscalls to sockets on this kernel.
    #[error("no capture mode works on this kernel: {}. Run `sonde --check` for a capability report", describe_refusals(.0))]
    NoCaptureMode(Vec<Refusal>),
}

/// `fentry (tcp_sendmsg: …); kprobe (…)`.
pub fn describe_refusals(refusals: &[Refusal]) -> String {
    refusals
        .iter()
        .map(|r| format!("{} refused ({})", r.mode, r.reason))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Loaded, attached programs and the maps userspace reads.
pub struct Probes {
    /// Owns the programs and their links; the TLS uprobes are loaded, not yet attached.
    programs: Ebpf,
    /// Data and connection records.
    events: RingBuf<MapData>,
    /// Kernel counters.
    stats: KernelStats,
    /// Whether the TLS uprobe programs loaded.
    tls_loaded: bool,
    /// The capture mode attached.
    capture: CaptureMode,
    /// Per-socket capture sizes.
    socket_capture: SocketCapture,
}

/// The kernel's per-socket capture sizes (map `SOCK_CAPTURE`): userspace raises a socket's to
/// [`agent_common::limits::PROTOCOL_CAPTURE_BYTES`] once its protocol needs it (HTTP/2) and
/// removes the entry when the connection ends.
pub struct SocketCapture {
    map: HashMap<MapData, u64, u32>,
}

impl SocketCapture {
    /// Sets socket `sk`'s capture size (`Some(bytes)`) or forgets it (`None`).
    ///
    /// # Errors
    /// [`MapError`] when the kernel refuses the update (a removal of an entry the LRU already
    /// evicted is not an error).
    pub fn set(&mut self, sk: u64, bytes: Option<u32>) -> Result<(), MapError> {
        match bytes {
            Some(bytes) => self.map.insert(&sk, &bytes, 0),
            None => match self.map.remove(&sk) {
                Err(MapError::KeyNotFound) => Ok(()),
                other => other,
            },
        }
    }
}

impl Probes {
    /// Splits into the programs (dropping them detaches everything), the ring buffer and the
    /// kernel counters, so each can have its own owner. The flag tells whether the TLS uprobe
    /// programs are loaded and ready to attach.
    /// The capture mode in use.
    pub fn capture_mode(&self) -> CaptureMode {
        self.capture
    }

    /// Separates the parts (see [`Probes::split`]'s fields).
    pub fn split(self) -> (Ebpf, RingBuf<MapData>, KernelStats, SocketCapture, bool) {
        (
            self.programs,
            self.events,
            self.stats,
            self.socket_capture,
            self.tls_loaded,
        )
    }
}

/// The kernel-side counters (`STATS`).
pub struct KernelStats {
    stats: PerCpuArray<MapData, u64>,
}

/// One kernel counter of one program, summed over CPUs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelCount {
    /// The capture point ([`stats::program_name`]): `read`, `SSL_write`, `inet_sock_set_state`…
    pub program: &'static str,
    /// What is counted.
    pub stat: Stat,
    /// Cumulative value since load (records, or bytes for the byte counters).
    pub value: u64,
}

impl KernelStats {
    /// Sums the per-CPU kernel counters; only non-zero ones, by program then [`Stat::ALL`] order.
    ///
    /// # Errors
    /// [`MapError`] when the map cannot be read.
    pub fn read_stats(&self) -> Result<Vec<KernelCount>, MapError> {
        let mut out = Vec::new();
        for program in 1..stats::PROGRAM_COUNT {
            let Some(name) = stats::program_name(program) else {
                continue;
            };
            for stat in Stat::ALL {
                let value: u64 = self.stats.get(&stats::slot(program, stat), 0)?.iter().sum();
                if value > 0 {
                    out.push(KernelCount {
                        program: name,
                        stat,
                        value,
                    });
                }
            }
        }
        Ok(out)
    }
}

/// Load parameters.
#[derive(Clone, Debug)]
pub struct LoadParams {
    /// The agent's own tgid (never captured).
    pub self_tgid: u32,
    /// Payload bytes captured per syscall.
    pub capture_bytes: u32,
    /// Ring buffer bytes.
    pub ring_buffer_bytes: u32,
    /// Alternative object file.
    pub object: Option<PathBuf>,
    /// Load the TLS uprobe programs.
    pub tls: bool,
    /// The forced capture mode, or `None` to try them all, best first.
    pub capture: Option<CaptureMode>,
    /// Every program returns at once (`--floor`).
    pub floor: bool,
}

/// Loads (does not attach) the TLS uprobe programs; `false`, with the reason logged, when this
/// kernel refuses them (TLS traffic then stays invisible, everything else works).
pub(super) fn load_tls_programs(ebpf: &mut Ebpf) -> bool {
    let programs = super::tls_targets::TLS_FUNCTIONS
        .iter()
        .map(|(_, program)| *program)
        .chain([super::tls_attach::RETURN_PROGRAM]);
    for name in programs {
        let result = match ebpf.program_mut(name) {
            Some(p) => <&mut UProbe>::try_from(p).and_then(UProbe::load),
            None => {
                tracing::warn!(
                    program = name,
                    "TLS disabled: program missing from the eBPF object"
                );
                return false;
            }
        };
        if let Err(e) = result {
            tracing::warn!(program = name, error = %e, "TLS disabled: uprobe program refused by the kernel");
            tracing::debug!(?e, "uprobe load failure detail");
            return false;
        }
    }
    true
}

/// The parsed object with its maps created and globals set, nothing loaded into the kernel yet.
pub(super) struct Opened {
    /// The object.
    pub(super) ebpf: Ebpf,
    /// Whether the `tracepoint` capture mode's tracepoints exist (`Err(reason)` if not).
    pub(super) tracepoints: Result<(), String>,
    /// Whether the kernel has the helpers that recover a syscall in progress at attach time
    /// (`Err(reason)` if not; the code that needs them is then left unreachable).
    pub(super) recover_in_progress: Result<(), String>,
}

/// Whether the kernel lets tracepoint programs read a task's saved user registers:
/// `bpf_get_current_task_btf` (Linux 5.11, and it needs the kernel's BTF) and `bpf_task_pt_regs`
/// (5.15), found by loading a probe program for each, as libbpf's helper probe does.
pub(super) fn probe_recover_in_progress() -> Result<(), String> {
    use aya::{
        programs::ProgramType,
        sys::{is_helper_supported, BpfHelper},
    };
    if !std::path::Path::new(KERNEL_BTF).exists() {
        return Err(format!(
            "this kernel has no BTF ({KERNEL_BTF}), which bpf_get_current_task_btf needs"
        ));
    }
    for (helper, name, since) in [
        (
            BpfHelper::BPF_FUNC_get_current_task_btf,
            "bpf_get_current_task_btf",
            "5.11",
        ),
        (BpfHelper::BPF_FUNC_task_pt_regs, "bpf_task_pt_regs", "5.15"),
    ] {
        match is_helper_supported(ProgramType::TracePoint, helper) {
            Ok(true) => {}
            Ok(false) => return Err(format!("this kernel lacks {name} (Linux {since}+)")),
            Err(e) => return Err(format!("probing {name} failed: {e}")),
        }
    }
    Ok(())
}

/// Reads the object, mounts tracefs if needed, reads the tracepoint layouts and creates the maps.
///
/// # Errors
/// [`LoadError`] for a missing object, tracefs, tracepoint field or a refused map.
pub(super) fn open(params: &LoadParams) -> Result<Opened, LoadError> {
    let owned;
    let object: &[u8] = match &params.object {
        Some(path) => {
            owned = std::fs::read(path).map_err(|source| LoadError::ReadObject {
                path: path.clone(),
                source,
            })?;
            &owned
        }
        None => EBPF_OBJECT,
    };
    if object.is_empty() {
        return Err(LoadError::NoObject);
    }
    let tracefs = tracefs::ensure_mounted()?;
    let (layout, tracepoints) = tracefs::tracepoint_layout(&tracefs)?;
    raise_memlock_rlimit();
    if params.floor {
        tracing::warn!("--floor: every eBPF program returns at once; nothing is captured");
    }
    let recover_in_progress = probe_recover_in_progress();
    let recover = u32::from(recover_in_progress.is_ok());

    // Wake the reader when an eighth of the ring is waiting; below that it drains on its timer.
    let wakeup_bytes = u64::from(params.ring_buffer_bytes / 8);
    // One scratch slot per possible CPU (the kernel indexes it by CPU id).
    let cpus = aya::util::nr_cpus().map_or(1, std::num::NonZeroU32::get);
    let ebpf = EbpfLoader::new()
        .override_global(names::GLOBAL_SELF_TGID, &params.self_tgid, true)
        .override_global(names::GLOBAL_CAPTURE_BYTES, &params.capture_bytes, true)
        .override_global(names::GLOBAL_WAKEUP_BYTES, &wakeup_bytes, true)
        .override_global(names::GLOBAL_TP_LAYOUT, &layout, true)
        .override_global(names::GLOBAL_RECOVER_IN_PROGRESS, &recover, true)
        .override_global(names::GLOBAL_FLOOR, &u32::from(params.floor), true)
        .map_max_entries(names::MAP_EVENTS, params.ring_buffer_bytes)
        .map_max_entries(names::MAP_SCRATCH, cpus)
        .load(object)
        .map_err(|e| match e {
            EbpfError::MapError(MapError::CreateError { name, io_error })
                if name == names::MAP_EVENTS && io_error.raw_os_error() == Some(libc::EINVAL) =>
            {
                LoadError::RingBuffer { name, io_error }
            }
            other => LoadError::Object(Box::new(other)),
        })?;
    Ok(Opened {
        ebpf,
        tracepoints,
        recover_in_progress,
    })
}

/// Loads and attaches the capture mode and everything in [`HOOKS`], logging each program attached
/// or skipped.
///
/// # Errors
/// [`LoadError`] naming the tracepoint, program or map that failed, or every capture mode's
/// refusal.
pub fn load(params: &LoadParams) -> Result<Probes, LoadError> {
    let Opened {
        mut ebpf,
        tracepoints,
        recover_in_progress,
    } = open(params)?;
    let chosen = attach_capture(
        &mut ebpf,
        params.capture,
        &tracepoints,
        &recover_in_progress,
    )?;
    attach_hooks(&mut ebpf, chosen.mode.uses_syscall_tracepoints())?;
    if let (Err(why), true) = (&recover_in_progress, chosen.mode.uses_syscall_tracepoints()) {
        tracing::warn!(
            "syscalls already in progress when the probes attach are not recovered: {why}; the \
             first message a connection receives after attach can be missed (counted as \
             sonde.kernel.dropped reason=in_progress_at_attach)"
        );
    }

    let events = RingBuf::try_from(
        ebpf.take_map(names::MAP_EVENTS)
            .ok_or(LoadError::MissingMap(names::MAP_EVENTS))?,
    )
    .map_err(|source| LoadError::Map {
        name: names::MAP_EVENTS,
        source,
    })?;
    let stats = PerCpuArray::try_from(
        ebpf.take_map(names::MAP_STATS)
            .ok_or(LoadError::MissingMap(names::MAP_STATS))?,
    )
    .map_err(|source| LoadError::Map {
        name: names::MAP_STATS,
        source,
    })?;
    let socket_capture = SocketCapture {
        map: HashMap::try_from(
            ebpf.take_map(names::MAP_SOCK_CAPTURE)
                .ok_or(LoadError::MissingMap(names::MAP_SOCK_CAPTURE))?,
        )
        .map_err(|source| LoadError::Map {
            name: names::MAP_SOCK_CAPTURE,
            source,
        })?,
    };
    let tls_loaded = params.tls && load_tls_programs(&mut ebpf);
    Ok(Probes {
        programs: ebpf,
        events,
        stats: KernelStats { stats },
        tls_loaded,
        capture: chosen.mode,
        socket_capture,
    })
}

/// Loads and attaches every [`HOOKS`] tracepoint (the `syscalls` ones only if `syscalls`: the
/// capture mode needs them); an optional one the kernel refuses is skipped with a warning. Returns
/// how many attached.
///
/// # Errors
/// [`LoadError::Attach`] for a required one, [`LoadError::MissingProgram`].
pub(super) fn attach_hooks(ebpf: &mut Ebpf, syscalls: bool) -> Result<usize, LoadError> {
    let mut attached = 0usize;
    let hooks: Vec<&Hook> = HOOKS
        .iter()
        .filter(|h| syscalls || h.category != "syscalls")
        .collect();
    for hook in &hooks {
        let program = ebpf
            .program_mut(hook.program)
            .ok_or(LoadError::MissingProgram(hook.program))?;
        let result = <&mut TracePoint>::try_from(program).and_then(|tp| {
            tp.load()?;
            tp.attach(hook.category, hook.name)
        });
        match result {
            Ok(_) => {
                attached += 1;
                tracing::debug!(
                    program = hook.program,
                    "attached tracepoint {}:{}",
                    hook.category,
                    hook.name
                );
            }
            Err(source) if hook.need == Need::Optional => {
                tracing::debug!(?source, "attach failure detail");
                tracing::warn!(
                    program = hook.program,
                    error = %capture::short_reason(&source),
                    "skipped optional tracepoint {}:{}; its syscall's traffic is not seen",
                    hook.category,
                    hook.name
                );
            }
            Err(source) => {
                tracing::debug!(?source, "attach failure detail");
                return Err(LoadError::Attach {
                    program: hook.program,
                    category: hook.category,
                    name: hook.name,
                    reason: format!("{}{}", capture::short_reason(&source), kernel_hint()),
                });
            }
        }
    }
    tracing::info!(
        attached,
        total = hooks.len(),
        "attached tracepoints: {}",
        hooks.iter().map(|h| h.name).collect::<Vec<_>>().join(", ")
    );
    Ok(attached)
}

/// Attaches the first capture mode the kernel accepts among the candidates, and logs the choice
/// with the reason each better mode was refused.
fn attach_capture(
    ebpf: &mut Ebpf,
    forced: Option<CaptureMode>,
    tracepoints: &Result<(), String>,
    registers: &Result<(), String>,
) -> Result<Chosen, LoadError> {
    let modes = capture::candidates(forced);
    let btf = if modes.contains(&CaptureMode::Fentry) {
        kernel_btf()
    } else {
        Err("not needed".to_owned())
    };
    let kernel = capture::Kernel {
        btf: &btf,
        tracepoints,
        registers,
    };
    let chosen = capture::attach(ebpf, &modes, &kernel).map_err(LoadError::NoCaptureMode)?;
    for (target, reason) in &chosen.skipped {
        tracing::warn!(
            mode = %chosen.mode,
            "optional hook {target} refused ({reason}); the traffic only it sees is missed"
        );
    }
    tracing::info!(
        forced = forced.is_some(),
        "capture mode: {} (hooks: {}){}",
        chosen.mode,
        chosen.attached.join(", "),
        if chosen.refused.is_empty() {
            String::new()
        } else {
            format!("; {}", describe_refusals(&chosen.refused))
        }
    );
    Ok(chosen)
}

/// The running kernel's BTF (`CONFIG_DEBUG_INFO_BTF`).
const KERNEL_BTF: &str = "/sys/kernel/btf/vmlinux";

/// What about this kernel may explain a refused program: lockdown `confidentiality` (no kernel
/// memory reads). Empty when that does not apply.
fn kernel_hint() -> String {
    let mut hint = String::new();
    let lockdown = std::fs::read_to_string("/sys/kernel/security/lockdown").unwrap_or_default();
    if lockdown.contains("[confidentiality]") {
        hint.push_str(
            "; kernel lockdown is `confidentiality`, which forbids eBPF tracing (reading kernel \
             memory)",
        );
    }
    hint
}

/// The running kernel's BTF, or why it cannot be read.
pub(super) fn kernel_btf() -> Result<Btf, String> {
    Btf::from_sys_fs().map_err(|e| format!("/sys/kernel/btf/vmlinux: {e}"))
}

/// Kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK; newer ones use the memory cgroup.
/// Raising it may fail without CAP_SYS_RESOURCE, which is harmless on those newer kernels.
fn raise_memlock_rlimit() {
    let rlim = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: plain syscall with a valid pointer.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &rlim) } != 0 {
        tracing::debug!("could not raise RLIMIT_MEMLOCK (fine on Linux 5.11+)");
    }
}
