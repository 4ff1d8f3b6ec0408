//! Loading and attaching the eBPF programs.
//!
//! [`HOOKS`] is the table of every tracepoint program and where it attaches; [`load`] does the work
//! and returns the live [`Probes`]. `tracefs` finds (or mounts) tracefs and reads tracepoint
//! layouts. TLS uprobes attach per library file, as processes map them: [`tls_targets`] finds the
//! files and their functions, [`tls_attach`] owns the programs and attaches.

pub mod capture;
pub mod check;
mod load;
pub mod tls_attach;
pub mod tls_targets;
mod tracefs;

pub use load::{
    describe_refusals, load, KernelCount, KernelStats, LoadError, LoadParams, Probes, SocketCapture,
};

/// Whether the agent can run without a hook.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Need {
    /// Startup fails when it cannot attach.
    Required,
    /// Skipped with a logged reason.
    Optional,
}

/// One eBPF program and its attach point.
#[derive(Clone, Copy, Debug)]
pub struct Hook {
    /// Program name in the ELF object (the fn name in `agent-ebpf`).
    pub program: &'static str,
    /// Tracepoint category (`syscalls`, `sock`).
    pub category: &'static str,
    /// Tracepoint name.
    pub name: &'static str,
    /// Whether it may be missing.
    pub need: Need,
}

const fn tp(program: &'static str, category: &'static str, need: Need) -> Hook {
    Hook {
        program,
        category,
        name: program,
        need,
    }
}

/// The tracepoint programs of `agent-ebpf` every capture mode uses (the socket hooks are in
/// [`capture`]). The lifecycle one and the basic read/write family are required: without them no
/// record can be tied to a TCP connection.
pub const HOOKS: &[Hook] = &[
    tp("inet_sock_set_state", "sock", Need::Required),
    tp("sys_enter_read", "syscalls", Need::Required),
    tp("sys_exit_read", "syscalls", Need::Required),
    tp("sys_enter_write", "syscalls", Need::Required),
    tp("sys_exit_write", "syscalls", Need::Required),
    tp("sys_enter_recvfrom", "syscalls", Need::Required),
    tp("sys_exit_recvfrom", "syscalls", Need::Required),
    tp("sys_enter_sendto", "syscalls", Need::Required),
    tp("sys_exit_sendto", "syscalls", Need::Required),
    tp("sys_enter_readv", "syscalls", Need::Optional),
    tp("sys_exit_readv", "syscalls", Need::Optional),
    tp("sys_enter_writev", "syscalls", Need::Optional),
    tp("sys_exit_writev", "syscalls", Need::Optional),
    tp("sys_enter_recvmsg", "syscalls", Need::Optional),
    tp("sys_exit_recvmsg", "syscalls", Need::Optional),
    tp("sys_enter_sendmsg", "syscalls", Need::Optional),
    tp("sys_exit_sendmsg", "syscalls", Need::Optional),
    tp("sys_enter_sendfile64", "syscalls", Need::Optional),
    tp("sys_exit_sendfile64", "syscalls", Need::Optional),
    Hook {
        program: "sched_process_exec",
        category: "sched",
        name: "sched_process_exec",
        need: Need::Optional,
    },
];
