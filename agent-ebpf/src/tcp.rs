//! Socket identity from the kernel's TCP functions: the `fentry` and `kprobe` capture modes.
//!
//! They replace `sock:sock_{send,recv}_length` (Linux 6.3+, the `tracepoint` mode in
//! [`crate::data`]) on kernels that allow BPF trampolines or kprobes, and feed the very same
//! in-flight entry through [`crate::data::on_socket`], so records and spans are identical whichever
//! mode runs. Only the first argument is read, `struct sock *sk`, as an opaque key: no kernel
//! struct is walked, so no field offset is needed. The hooked functions are TCP's own, so the
//! socket is TCP (IPv4 or IPv6) by construction; `MSG_PEEK` is filtered at syscall entry.
//!
//! | function (`net/ipv4/tcp.c`) | direction | when |
//! |---|---|---|
//! | `tcp_sendmsg(sk, msg, size)` | egress | every send-family syscall on TCP |
//! | `tcp_sendpage(sk, page, offset, size, flags)` | egress | `sendfile` before Linux 6.5 (optional) |
//! | `tcp_recvmsg(sk, msg, len, ...)` | ingress | every receive-family syscall on TCP |
//! | `tcp_cleanup_rbuf(sk, copied)` | ingress | after the copy, so a `read` already blocked when the programs were attached is recovered (optional) |
//!
//! Userspace picks the mode by trying to load and attach (see `agent::probe::capture`).

use agent_common::Direction;
use aya_ebpf::{
    macros::{fentry, kprobe},
    programs::{FEntryContext, ProbeContext},
};

use crate::{data::on_socket, helpers::current_ids, maps::floor};

#[inline(always)]
fn mark(sk: u64, dir: Direction, at_end: bool) -> u32 {
    if sk != 0 && !floor() {
        let (pid_tgid, tgid, _) = current_ids();
        on_socket(pid_tgid, tgid, sk, dir, at_end);
    }
    0
}

/// `fentry/tcp_sendmsg`.
#[fentry(function = "tcp_sendmsg")]
pub fn fentry_tcp_sendmsg(ctx: FEntryContext) -> u32 {
    mark(ctx.arg::<u64>(0), Direction::Egress, false)
}

/// `fentry/tcp_sendpage` (Linux < 6.5).
#[fentry(function = "tcp_sendpage")]
pub fn fentry_tcp_sendpage(ctx: FEntryContext) -> u32 {
    mark(ctx.arg::<u64>(0), Direction::Egress, false)
}

/// `fentry/tcp_recvmsg`.
#[fentry(function = "tcp_recvmsg")]
pub fn fentry_tcp_recvmsg(ctx: FEntryContext) -> u32 {
    mark(ctx.arg::<u64>(0), Direction::Ingress, false)
}

/// `fentry/tcp_cleanup_rbuf`: only a call that copied bytes.
#[fentry(function = "tcp_cleanup_rbuf")]
pub fn fentry_tcp_cleanup_rbuf(ctx: FEntryContext) -> u32 {
    if ctx.arg::<i32>(1) <= 0 {
        return 0;
    }
    mark(ctx.arg::<u64>(0), Direction::Ingress, true)
}

/// `kprobe/tcp_sendmsg`.
#[kprobe]
pub fn kprobe_tcp_sendmsg(ctx: ProbeContext) -> u32 {
    mark(ctx.arg::<u64>(0).unwrap_or(0), Direction::Egress, false)
}

/// `kprobe/tcp_sendpage` (Linux < 6.5).
#[kprobe]
pub fn kprobe_tcp_sendpage(ctx: ProbeContext) -> u32 {
    mark(ctx.arg::<u64>(0).unwrap_or(0), Direction::Egress, false)
}

/// `kprobe/tcp_recvmsg`.
#[kprobe]
pub fn kprobe_tcp_recvmsg(ctx: ProbeContext) -> u32 {
    mark(ctx.arg::<u64>(0).unwrap_or(0), Direction::Ingress, false)
}

/// `kprobe/tcp_cleanup_rbuf`: only a call that copied bytes.
#[kprobe]
pub fn kprobe_tcp_cleanup_rbuf(ctx: ProbeContext) -> u32 {
    if ctx.arg::<i32>(1).unwrap_or(0) <= 0 {
        return 0;
    }
    mark(ctx.arg::<u64>(0).unwrap_or(0), Direction::Ingress, true)
}
