//! The capture mode: which hooks tie each syscall to its TCP socket (`sk`), chosen by trying.
//!
//! | mode | hooks | needs |
//! |---|---|---|
//! | `socket` | `sock:sock_send_length`, `sock:sock_recv_length` only: the whole capture there, syscall arguments from the task's registers; no syscall tracepoint | Linux 6.3+, BTF, `bpf_task_pt_regs` (5.15), x86-64 |
//! | `fentry` | BPF trampolines on `tcp_sendmsg`, `tcp_recvmsg` (+ `tcp_sendpage`, `tcp_cleanup_rbuf`) | BTF, `CONFIG_DYNAMIC_FTRACE_WITH_DIRECT_CALLS`, no lockdown `confidentiality` |
//! | `kprobe` | kprobes on the same functions | `CONFIG_KPROBES` |
//! | `tracepoint` | `sock:sock_send_length`, `sock:sock_recv_length` | Linux 6.3+ |
//!
//! `fentry`, `kprobe` and `tracepoint` tie the `syscalls:sys_{enter,exit}_*` pair of every read and
//! write to its socket through the same in-flight entry (see `agent-ebpf/src/tcp.rs` and
//! `data.rs`); `socket` needs no pair (`agent-ebpf/src/socket.rs`), so no program runs for a file or
//! pipe and no map is touched per syscall. Records and spans are identical, except that in
//! `socket` mode a send's record carries the time it returned for both timestamps. [`attach`] tries the modes in order (or only the forced one): loads and
//! attaches a mode's required hooks, and on the first refusal unloads what it attached and moves
//! on, keeping a one-line reason per refusal. The choice is made by what the kernel accepts, never
//! by its version number. The programs read only the `sk` argument as an opaque key, so no kernel
//! struct offset is involved; BTF is needed only to attach trampolines.

use std::fmt;

use aya::{
    programs::{FEntry, KProbe, ProgramError, TracePoint},
    Btf, Ebpf,
};

use super::Need;

/// How syscalls are tied to their socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum CaptureMode {
    /// The whole capture at `sock:sock_{send,recv}_length`, with no syscall tracepoint: cheapest.
    Socket,
    /// fentry (BPF trampolines) on the kernel's TCP functions.
    Fentry,
    /// kprobes on the same functions.
    Kprobe,
    /// `sock:sock_{send,recv}_length` tracepoints (Linux 6.3+).
    Tracepoint,
}

impl CaptureMode {
    /// Every mode, best first: the order `auto` tries them in.
    pub const ALL: [Self; 4] = [Self::Socket, Self::Fentry, Self::Kprobe, Self::Tracepoint];

    /// Lower-case name, as on the command line.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Socket => "socket",
            Self::Fentry => "fentry",
            Self::Kprobe => "kprobe",
            Self::Tracepoint => "tracepoint",
        }
    }

    /// Whether the mode needs the `syscalls:sys_{enter,exit}_*` tracepoints of [`super::HOOKS`].
    pub const fn uses_syscall_tracepoints(self) -> bool {
        !matches!(self, Self::Socket)
    }

    /// The mode's hooks: (eBPF program, kernel function or `sock` tracepoint, need).
    fn hooks(self) -> &'static [(&'static str, &'static str, Need)] {
        match self {
            Self::Socket => &[
                ("sock_send_capture", "sock_send_length", Need::Required),
                ("sock_recv_capture", "sock_recv_length", Need::Required),
            ],
            Self::Fentry => &[
                ("fentry_tcp_sendmsg", "tcp_sendmsg", Need::Required),
                ("fentry_tcp_recvmsg", "tcp_recvmsg", Need::Required),
                ("fentry_tcp_sendpage", "tcp_sendpage", Need::Optional),
                (
                    "fentry_tcp_cleanup_rbuf",
                    "tcp_cleanup_rbuf",
                    Need::Optional,
                ),
            ],
            Self::Kprobe => &[
                ("kprobe_tcp_sendmsg", "tcp_sendmsg", Need::Required),
                ("kprobe_tcp_recvmsg", "tcp_recvmsg", Need::Required),
                ("kprobe_tcp_sendpage", "tcp_sendpage", Need::Optional),
                (
                    "kprobe_tcp_cleanup_rbuf",
                    "tcp_cleanup_rbuf",
                    Need::Optional,
                ),
            ],
            Self::Tracepoint => &[
                ("sock_send_length", "sock_send_length", Need::Required),
                ("sock_recv_length", "sock_recv_length", Need::Required),
            ],
        }
    }
}

impl fmt::Display for CaptureMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What the kernel said about one mode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// The mode refused.
    pub mode: CaptureMode,
    /// One line: the hook and the kernel's answer (`tcp_sendmsg: Operation not permitted`).
    pub reason: String,
}

/// The mode in use and how it was reached.
#[derive(Debug)]
pub struct Chosen {
    /// The mode attached.
    pub mode: CaptureMode,
    /// Its hooks attached (kernel function or tracepoint names).
    pub attached: Vec<&'static str>,
    /// Its optional hooks the kernel refused, with the reason.
    pub skipped: Vec<(&'static str, String)>,
    /// The better modes tried first and refused.
    pub refused: Vec<Refusal>,
}

/// Inputs the modes need besides the loaded object.
pub struct Kernel<'a> {
    /// The running kernel's BTF, or why it could not be read.
    pub btf: &'a Result<Btf, String>,
    /// Why the `sock_*_length` tracepoints are unusable, if they are.
    pub tracepoints: &'a Result<(), String>,
    /// Why programs cannot read a task's saved registers (`bpf_task_pt_regs`), if they cannot.
    pub registers: &'a Result<(), String>,
}

/// Tries `modes` in order and keeps the first one whose required hooks all attach.
///
/// # Errors
/// Every mode's [`Refusal`] when none attached.
pub fn attach(
    ebpf: &mut Ebpf,
    modes: &[CaptureMode],
    kernel: &Kernel<'_>,
) -> Result<Chosen, Vec<Refusal>> {
    let mut refused = Vec::new();
    for &mode in modes {
        match attach_mode(ebpf, mode, kernel) {
            Ok((attached, skipped)) => {
                return Ok(Chosen {
                    mode,
                    attached,
                    skipped,
                    refused,
                })
            }
            Err(reason) => {
                unload_mode(ebpf, mode);
                refused.push(Refusal { mode, reason });
            }
        }
    }
    Err(refused)
}

type Attached = (Vec<&'static str>, Vec<(&'static str, String)>);

fn attach_mode(
    ebpf: &mut Ebpf,
    mode: CaptureMode,
    kernel: &Kernel<'_>,
) -> Result<Attached, String> {
    match mode {
        CaptureMode::Fentry => {
            if let Err(e) = kernel.btf {
                return Err(format!("no kernel BTF: {e}"));
            }
        }
        CaptureMode::Kprobe => {}
        CaptureMode::Tracepoint => kernel.tracepoints.clone()?,
        CaptureMode::Socket => {
            if !cfg!(target_arch = "x86_64") {
                return Err("the syscall registers are read with the x86-64 layout only".into());
            }
            kernel.tracepoints.clone()?;
            kernel.registers.clone()?;
        }
    }
    let mut attached = Vec::new();
    let mut skipped = Vec::new();
    for &(program, target, need) in mode.hooks() {
        let Some(p) = ebpf.program_mut(program) else {
            return Err(format!(
                "program `{program}` is missing from the eBPF object"
            ));
        };
        let result = match mode {
            CaptureMode::Fentry => <&mut FEntry>::try_from(p).and_then(|p| {
                let btf = kernel.btf.as_ref().expect("checked above");
                p.load(target, btf)?;
                p.attach().map(drop)
            }),
            CaptureMode::Kprobe => <&mut KProbe>::try_from(p).and_then(|p| {
                p.load()?;
                p.attach(target, 0).map(drop)
            }),
            CaptureMode::Socket | CaptureMode::Tracepoint => <&mut TracePoint>::try_from(p)
                .and_then(|p| {
                    p.load()?;
                    p.attach("sock", target).map(drop)
                }),
        };
        match result {
            Ok(()) => attached.push(target),
            Err(e) => {
                tracing::debug!(program, error = ?e, "capture mode {mode}: {target} refused");
                let reason = short_reason(&e);
                match need {
                    Need::Required => return Err(format!("{target}: {reason}")),
                    Need::Optional => skipped.push((target, reason)),
                }
            }
        }
    }
    Ok((attached, skipped))
}

/// Detaches and unloads whatever of `mode` was attached before a refusal.
pub(super) fn unload_mode(ebpf: &mut Ebpf, mode: CaptureMode) {
    for &(program, _, _) in mode.hooks() {
        let result = match ebpf.program_mut(program) {
            Some(aya::programs::Program::FEntry(p)) => p.unload(),
            Some(aya::programs::Program::KProbe(p)) => p.unload(),
            Some(aya::programs::Program::TracePoint(p)) => p.unload(),
            _ => Ok(()),
        };
        // Unloading a program that never loaded is an error aya reports; nothing to undo then.
        drop(result);
    }
}

/// The kernel's answer without the verifier log (that one is logged at debug level).
pub fn short_reason(e: &ProgramError) -> String {
    match e {
        ProgramError::LoadError { io_error, .. } => {
            format!("the kernel refused to load the program ({io_error})")
        }
        ProgramError::SyscallError(s) => format!("{}: {}", s.call, s.io_error),
        other => {
            // aya's messages name a file or step; the cause says what went wrong there.
            let mut text = other.to_string();
            let mut cause = std::error::Error::source(other);
            while let Some(c) = cause {
                text.push_str(": ");
                text.push_str(&c.to_string());
                cause = c.source();
            }
            text
        }
    }
}

/// The modes to try: the forced one, or all of them best first.
pub fn candidates(forced: Option<CaptureMode>) -> Vec<CaptureMode> {
    match forced {
        Some(mode) => vec![mode],
        None => CaptureMode::ALL.to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_mode_has_a_send_and_a_receive_hook_required() {
        for mode in CaptureMode::ALL {
            let required: Vec<_> = mode
                .hooks()
                .iter()
                .filter(|(_, _, need)| *need == Need::Required)
                .map(|(_, target, _)| *target)
                .collect();
            assert_eq!(required.len(), 2, "{mode}: {required:?}");
        }
        assert_eq!(candidates(None), CaptureMode::ALL);
        assert_eq!(candidates(Some(CaptureMode::Kprobe)), [CaptureMode::Kprobe]);
    }
}
