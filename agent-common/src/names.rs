//! Map and program names as they appear in the eBPF ELF object. A rename here is an interface change.

/// Ring buffer carrying [`crate::DataEventHeader`] and [`crate::ConnEvent`] records to userspace.
pub const MAP_EVENTS: &str = "EVENTS";
/// Per-CPU array of `u64` counters indexed by [`crate::stats::Stat`].
pub const MAP_STATS: &str = "STATS";
/// In-flight syscall arguments keyed by `pid_tgid`.
pub const MAP_INFLIGHT: &str = "INFLIGHT";
/// Per-socket kernel state keyed by `sk`: byte sequence numbers, and whether it carries TLS.
pub const MAP_SOCK_STATE: &str = "SOCK_STATE";
/// Sockets the agent itself is connecting or connected with, keyed by `sk`.
pub const MAP_SELF_SOCKS: &str = "SELF_SOCKS";
/// Per thread (`pid_tgid`): the TLS library call in flight (between the entry uprobe and a
/// return-site uprobe) and the TCP socket the thread used last.
pub const MAP_THREAD_TLS: &str = "THREAD_TLS";
/// `(tgid, SSL *)` → the socket under it, learned from a socket syscall nested in an SSL call.
pub const MAP_SSL_SOCK: &str = "SSL_SOCK";
/// Scratch space, one slot per CPU (index: the CPU id; sized to the possible CPUs at load),
/// where a data record is assembled before it is copied to the ring buffer. An array, not a
/// per-CPU array: a per-CPU value is limited to 32 KiB.
pub const MAP_SCRATCH: &str = "SCRATCH";
/// Per-socket capture size (bytes) set by userspace for sockets whose protocol needs more than
/// the global one (HTTP/2), keyed by `sk`.
pub const MAP_SOCK_CAPTURE: &str = "SOCK_CAPTURE";

/// Global: the agent's own `tgid`, whose traffic is never captured.
pub const GLOBAL_SELF_TGID: &str = "SELF_TGID";
/// Global: field offsets of the `sock:*` tracepoints, read from tracefs at load time.
pub const GLOBAL_TP_LAYOUT: &str = "TP_LAYOUT";
/// Global: ring buffer fill level (bytes) whose crossing wakes the reader; otherwise the reader
/// drains on its own timer, so a busy host does not pay one wakeup per record.
pub const GLOBAL_WAKEUP_BYTES: &str = "WAKEUP_BYTES";
/// Global: payload bytes to capture per syscall (`<= MAX_CAPTURE_BYTES`).
pub const GLOBAL_CAPTURE_BYTES: &str = "CAPTURE_BYTES";
/// Global: 1 when the kernel has `bpf_task_pt_regs` and `bpf_get_current_task_btf` (Linux
/// 5.15+), so a syscall in progress at attach time is recovered from the task's saved registers;
/// 0 leaves that code unreachable, which older verifiers then never see.
pub const GLOBAL_RECOVER_IN_PROGRESS: &str = "RECOVER_IN_PROGRESS";
/// Global (`u32`): 1 makes every program return at once (`sonde --floor`, for `cargo xtask bench`).
pub const GLOBAL_FLOOR: &str = "FLOOR";
