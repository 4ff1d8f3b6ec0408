//! The whole capture at the socket hook: the `tracepoint` mode without any syscall tracepoint.
//!
//! ```text
//! sock:sock_{send,recv}_length(sk, family, protocol, ret, flags)
//!     fired in sock_sendmsg / sock_recvmsg once the bytes moved (a receive's bytes are in the
//!     user buffer, a send's are still there); for IPv4/IPv6 TCP, ret > 0, not MSG_PEEK:
//!   task's saved user registers (bpf_task_pt_regs): syscall number (orig_ax) and arguments
//!   copy up to CAPTURE_BYTES of the user buffer, emit a DataEventHeader + payload
//! ```
//!
//! Nothing runs for a read or write on a file or pipe, and no map is touched per syscall: with no
//! `syscalls:*` tracepoint enabled, the kernel's syscall path is not even slowed by the tracepoint
//! check. The records are those of the enter/exit pair in [`crate::data`] (which stays the
//! fallback where `bpf_task_pt_regs` (Linux 5.15) or kernel BTF is missing), except that both
//! timestamps are the hook's: a send's entry time is not known, so a client's request starts when
//! its send returned (on loopback after the peer's receive processing, a few µs late).
//!
//! Calls whose arguments are not read here (`sendmmsg`, `recvmmsg`, `splice`, io_uring, 32-bit
//! syscalls) are counted (`Stat::OtherCall`) and not captured, as the pair does not see them either.

use agent_common::{stats::Stat, DataSource, Direction};
use aya_ebpf::{helpers::bpf_ktime_get_ns, macros::tracepoint, programs::TracePointContext};

use crate::{
    data::{len_record, user_buffer, LenRecord},
    emit,
    helpers::{count, current_ids},
    maps::{floor, self_tgid},
    tls,
};

/// The syscall the current task is in (or returning from), from its saved user registers.
pub(crate) struct Syscall {
    /// `ax`: [`AX_IN_SYSCALL`] until the syscall returns, then its result.
    ax: u64,
    /// `orig_ax`: the syscall number (x86-64 numbering).
    nr: u64,
    /// `di`, `si`, `dx`: the first three arguments.
    pub(crate) args: [u64; 3],
}

/// `-ENOSYS`, which the x86-64 entry code stores in `ax` until the syscall returns
/// (`arch/x86/entry/entry_64.S`): a task whose `ax` differs is not inside a syscall (a kernel
/// thread, an io_uring worker).
const AX_IN_SYSCALL: u64 = (-38i64) as u64;

/// The current task's syscall registers. `struct pt_regs` is the x86-64 user ABI
/// (`arch/x86/include/uapi/asm/ptrace.h`): `ax` at 80, `dx` 96, `si` 104, `di` 112, `orig_ax`
/// 120. `bpf_task_pt_regs` returns a BTF-typed pointer, so the five words are plain loads that
/// the verifier checks against the kernel's `struct pt_regs` (no helper call per read).
#[cfg(bpf_target_arch = "x86_64")]
#[inline(always)]
pub(crate) fn current_syscall() -> Option<Syscall> {
    use aya_ebpf::helpers::{bpf_get_current_task_btf, generated::bpf_task_pt_regs};
    const AX: usize = 10;
    const DX: usize = 12;
    const SI: usize = 13;
    const DI: usize = 14;
    const ORIG_AX: usize = 15;
    // SAFETY: helpers without preconditions.
    let regs = unsafe { bpf_task_pt_regs(bpf_get_current_task_btf()) } as usize as *const u64;
    if regs.is_null() {
        return None;
    }
    // SAFETY: in-bounds words of the task's `struct pt_regs`; the verifier turns BTF-pointer
    // loads into fault-tolerant ones.
    let word = |i: usize| unsafe { core::ptr::read_volatile(regs.add(i)) };
    Some(Syscall {
        ax: word(AX),
        nr: word(ORIG_AX),
        args: [word(DI), word(SI), word(DX)],
    })
}

/// Other architectures: userspace never attaches the socket-mode programs there, and syscalls in
/// progress at attach time are not recovered.
#[cfg(not(bpf_target_arch = "x86_64"))]
#[inline(always)]
pub(crate) fn current_syscall() -> Option<Syscall> {
    None
}

/// What an x86-64 syscall number moves: the source, whether `arg1` is a `struct user_msghdr *`,
/// and whether `arg2` is an iovec count.
#[inline(always)]
fn source_of(nr: u64) -> Option<(DataSource, bool, bool)> {
    Some(match nr {
        0 => (DataSource::Read, false, false),
        1 => (DataSource::Write, false, false),
        19 => (DataSource::Readv, false, true),
        20 => (DataSource::Writev, false, true),
        40 => (DataSource::Sendfile, false, false),
        44 => (DataSource::Sendto, false, false),
        45 => (DataSource::Recvfrom, false, false),
        46 => (DataSource::Sendmsg, true, false),
        47 => (DataSource::Recvmsg, true, false),
        _ => return None,
    })
}

/// Captures the bytes of the socket call that fired `sock_{send,recv}_length`.
#[inline(always)]
fn capture(ctx: &TracePointContext, dir: Direction) {
    if floor() {
        return;
    }
    let (pid_tgid, tgid, tid) = current_ids();
    if tgid == self_tgid() {
        return;
    }
    let Some(LenRecord { sk, ret }) = len_record(ctx, dir) else {
        return;
    };
    if ret <= 0 {
        return;
    }
    let known = current_syscall()
        .filter(|call| call.ax == AX_IN_SYSCALL)
        .and_then(|call| source_of(call.nr).map(|s| (call, s)));
    let Some((call, (source, buf_is_msghdr, has_iovcnt))) = known else {
        let program = match dir {
            Direction::Egress => DataSource::Write,
            Direction::Ingress => DataSource::Read,
        };
        count(program as u32, Stat::OtherCall, 1);
        return;
    };
    if source.direction() != dir {
        count(source as u32, Stat::OtherCall, 1);
        return;
    }
    let [fd, arg1, arg2] = call.args;
    let fd = fd as i32;
    let iovcnt = if has_iovcnt { arg2 } else { 0 };
    let (buf, iovcnt) = user_buffer(source, arg1, iovcnt, buf_is_msghdr);
    if tls::on_socket_syscall(pid_tgid, tgid, sk, fd) {
        count(source as u32, Stat::TlsCiphertextSkipped, 1);
        return;
    }
    // One clock read for both times: the hook fires once the bytes moved.
    // SAFETY: helper without preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    emit::payload(&emit::Payload {
        sk,
        source,
        fd,
        buf,
        iovcnt,
        len: ret as u64,
        ts_enter_ns: now,
        ts_exit_ns: now,
        tgid,
        tid,
    });
}

/// `sock:sock_send_length`, socket-hook capture of a send.
#[tracepoint]
pub fn sock_send_capture(ctx: TracePointContext) -> u32 {
    capture(&ctx, Direction::Egress);
    0
}

/// `sock:sock_recv_length`, socket-hook capture of a receive.
#[tracepoint]
pub fn sock_recv_capture(ctx: TracePointContext) -> u32 {
    capture(&ctx, Direction::Ingress);
    0
}
