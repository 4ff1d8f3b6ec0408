//! Payload capture from the read/write syscall family on TCP sockets, without kprobes.
//!
//! ```text
//! sys_enter_<call>(fd, buf|iov, ...)      save args in INFLIGHT[pid_tgid]
//!   sock:sock_{send,recv}_length(sk,...)  fired inside the call on the same thread for sockets:
//!                                         if IPv4/IPv6 TCP, remember `sk`
//! sys_exit_<call>(ret)                    if `sk` known and ret > 0: copy up to CAPTURE_BYTES of the
//!                                         user buffer, emit a DataEventHeader + payload
//! ```
//! Kernel prototypes (checked on 6.18): `sock_send_length`/`sock_recv_length` (since 6.3) fire in
//! `sock_sendmsg_nosec`/`sock_recvmsg_nosec`, which every hooked syscall reaches for a socket.
//! Other fds (files, pipes) never get an `sk`, so they are dropped at exit without a record.
//! That is the `tracepoint` capture mode: it needs neither kprobes nor BTF trampolines. Where the
//! kernel allows them, the `fentry` and `kprobe` modes give the same `sk` from the kernel's TCP
//! functions instead ([`crate::tcp`]); the records are identical.

use agent_common::{
    event::{AF_INET, AF_INET6, IPPROTO_TCP, MSG_PEEK},
    stats::Stat,
    DataSource, Direction,
};
use aya_ebpf::{
    helpers::{bpf_ktime_get_ns, bpf_probe_read_kernel_buf, bpf_probe_read_user},
    macros::tracepoint,
    programs::TracePointContext,
    EbpfContext as _,
};

use crate::{
    emit,
    helpers::{count, current_ids},
    maps::{floor, recover_in_progress, self_tgid, tp_layout, Inflight, INFLIGHT},
    socket::current_syscall,
    tls,
};

/// Offset of the first syscall argument in a `syscalls:sys_enter_*` record
/// (after the 8-byte common header and the `__syscall_nr` slot).
const SYSCALL_ARG0: usize = 16;
/// Offset of `ret` in a `syscalls:sys_exit_*` record.
const SYSCALL_RET: usize = 16;

/// User ABI `struct user_msghdr` prefix (`include/uapi/linux/socket.h`), up to `msg_iovlen`.
#[repr(C)]
#[derive(Clone, Copy)]
struct MsgHdr {
    name: u64,
    namelen: u64,
    iov: u64,
    iovlen: u64,
}

/// The `u64` at byte `off` of the tracepoint record, loaded directly from the context: the
/// verifier allows aligned reads of a tracepoint's record (`tp_prog_is_valid_access`), which
/// costs a load instead of a `bpf_probe_read_kernel` call per field.
#[inline(always)]
fn record_u64(ctx: &TracePointContext, off: usize) -> u64 {
    // SAFETY: `off` is a constant, 8-aligned offset inside every `syscalls:*` record.
    unsafe {
        ctx.as_ptr()
            .cast::<u8>()
            .add(off)
            .cast::<u64>()
            .read_volatile()
    }
}

#[inline(always)]
fn arg(ctx: &TracePointContext, i: usize) -> u64 {
    // Syscall tracepoint records hold 6 u64 argument slots after the header.
    record_u64(ctx, SYSCALL_ARG0 + 8 * i)
}

/// Saves the arguments of a syscall at entry. `buf_is_msghdr`: `arg1` is a `struct user_msghdr *`.
#[inline(always)]
fn enter(ctx: &TracePointContext, source: DataSource, iov_arg: Option<usize>, buf_is_msghdr: bool) {
    if floor() {
        return;
    }
    let (pid_tgid, tgid, _) = current_ids();
    if tgid == self_tgid() {
        return;
    }
    // Peeked bytes are read again by a later call: the peek is not captured.
    let flags_arg = match source {
        DataSource::Recvfrom => Some(3),
        DataSource::Recvmsg => Some(2),
        _ => None,
    };
    if flags_arg.is_some_and(|i| arg(ctx, i) as i32 & MSG_PEEK != 0) {
        return;
    }
    let fd = arg(ctx, 0) as i32;
    let iovcnt = iov_arg.map_or(0, |i| arg(ctx, i));
    let (buf, iovcnt) = user_buffer(source, arg(ctx, 1), iovcnt, buf_is_msghdr);
    let entry = Inflight {
        source: source as u32,
        fd,
        buf,
        iovcnt,
        ts_enter_ns: unsafe { bpf_ktime_get_ns() },
        sk: 0,
        late: 0,
        _pad: 0,
    };
    if INFLIGHT.insert(&pid_tgid, &entry, 0).is_err() {
        count(source as u32, Stat::InflightFull, 1);
    }
}

/// Bytes of a `sock_{send,recv}_length` record read at once (its fields end at 28 on 6.18).
const LEN_RECORD_WINDOW: usize = 32;

/// `N` bytes at `off` within `head`, if they fit.
#[inline(always)]
fn field<const N: usize>(head: &[u8; LEN_RECORD_WINDOW], off: u32) -> Option<[u8; N]> {
    let off = off as usize;
    if off > LEN_RECORD_WINDOW - N {
        return None;
    }
    let mut out = [0u8; N];
    let mut i = 0;
    while i < N {
        out[i] = *head.get(off + i)?;
        i += 1;
    }
    Some(out)
}

/// The fields of a `sock:sock_{send,recv}_length` record the programs use.
pub(crate) struct LenRecord {
    /// `void *sk`.
    pub(crate) sk: u64,
    /// `int ret`: bytes moved, or `-errno`.
    pub(crate) ret: i32,
}

/// Reads a `sock_{send,recv}_length` record: `None` unless it is about an IPv4/IPv6 TCP socket
/// and, for a receive (`dir` ingress), not a `MSG_PEEK` (peeked bytes are read again later).
#[inline(always)]
pub(crate) fn len_record(ctx: &TracePointContext, dir: Direction) -> Option<LenRecord> {
    let l = tp_layout();
    // One helper call for the whole record head instead of one per field; the fields are then
    // picked out at the offsets tracefs gave (bounds-checked, so a kernel with a wider record just
    // fails the check instead of reading garbage).
    // Left uninitialised (the helper's destination may be): zeroing it would cost a `memset`
    // subprogram call per record.
    let mut head = core::mem::MaybeUninit::<[u8; LEN_RECORD_WINDOW]>::uninit();
    // SAFETY: `ctx` points at the tracepoint record, at least as long as its last field; the
    // helper fills all of `head` or fails (then `head` is not read).
    let head = unsafe {
        bpf_probe_read_kernel_buf(
            ctx.as_ptr().cast::<u8>().cast_const(),
            &mut *head.as_mut_ptr(),
        )
        .ok()?;
        head.assume_init()
    };
    let sk = field::<8>(&head, l.len_sk).map(u64::from_ne_bytes)?;
    let family = field::<2>(&head, l.len_family).map(u16::from_ne_bytes)?;
    let protocol = field::<2>(&head, l.len_protocol).map(u16::from_ne_bytes)?;
    let ret = field::<4>(&head, l.len_ret).map(i32::from_ne_bytes)?;
    let flags = field::<4>(&head, l.len_flags).map(i32::from_ne_bytes)?;
    if protocol != IPPROTO_TCP || (family != AF_INET && family != AF_INET6) {
        return None;
    }
    if dir == Direction::Ingress && flags & MSG_PEEK != 0 {
        return None;
    }
    Some(LenRecord { sk, ret })
}

/// Marks the in-flight syscall of this thread as being on TCP socket `sk`.
#[inline(always)]
fn mark_socket(ctx: &TracePointContext, dir: Direction) {
    if floor() {
        return;
    }
    let (pid_tgid, tgid, _) = current_ids();
    if let Some(r) = len_record(ctx, dir) {
        on_socket(pid_tgid, tgid, r.sk, dir, true);
    }
}

/// The current thread (`pid_tgid`, `tgid`) is moving bytes in direction `dir` on TCP socket `sk`:
/// ties its in-flight syscall to `sk`. Called by every capture mode's socket hook, at or before
/// the end of the socket call (`sock:sock_{send,recv}_length`, or kprobe/fentry on the kernel's
/// TCP functions, see [`crate::tcp`]). `at_end`: the hook fires once the bytes are moved, so a
/// syscall that began before the programs were attached can still be recovered at its exit.
#[inline(always)]
pub(crate) fn on_socket(pid_tgid: u64, tgid: u32, sk: u64, dir: Direction, at_end: bool) {
    let Some(entry) = INFLIGHT.get_ptr_mut(&pid_tgid) else {
        if !at_end {
            return;
        }
        // No `sys_enter_*` was seen: the syscall began before the programs were attached (an
        // idle keep-alive server blocked in `read`). Its exit recovers the arguments.
        if tgid != self_tgid() {
            let late = Inflight {
                source: 0,
                fd: -1,
                buf: 0,
                iovcnt: 0,
                // SAFETY: helper without preconditions.
                ts_enter_ns: unsafe { bpf_ktime_get_ns() },
                sk,
                late: 1 + dir as u32,
                _pad: 0,
            };
            let _ = INFLIGHT.insert(&pid_tgid, &late, 0);
        }
        return;
    };
    // SAFETY: pointer from a successful lookup, valid for this program run.
    let entry = unsafe { &mut *entry };
    let Ok(source) = DataSource::try_from(entry.source) else {
        return;
    };
    if source.direction() == dir {
        entry.sk = sk;
    }
}

/// Completes a late [`Inflight`] entry (see its `late` field) with the arguments saved in the
/// task's registers, the same way `enter` would have.
#[inline(always)]
fn recover_late(
    entry: &mut Inflight,
    source: DataSource,
    iov_arg: Option<usize>,
    buf_is_msghdr: bool,
) -> bool {
    if entry.late != 1 + source.direction() as u32 {
        return false;
    }
    if !recover_in_progress() {
        count(source as u32, Stat::InProgressAtAttach, 1);
        return false;
    }
    // At `sys_exit_*` the registers still hold the arguments (`ax` already holds the result).
    let Some(call) = current_syscall() else {
        return false;
    };
    let [fd, buf, arg2] = call.args;
    entry.source = source as u32;
    entry.fd = fd as i32;
    let iovcnt = if iov_arg.is_some() { arg2 } else { 0 };
    (entry.buf, entry.iovcnt) = user_buffer(source, buf, iovcnt, buf_is_msghdr);
    true
}

/// The user memory a socket syscall moved, from its arguments: `(buffer or iovec array, iovec
/// count)`. `arg1` is the buffer, the iovec array, or (`buf_is_msghdr`) a `struct user_msghdr *`,
/// read here (valid for the whole call); `iovcnt` is the iovec-count argument (0 when none).
/// `(0, _)` for `sendfile` (file bytes, accounted by length only) and `(0, 0)` for an unreadable
/// `msghdr`. Shared by the syscall entry, the late recovery at exit, and the socket-mode hook.
#[inline(always)]
pub(crate) fn user_buffer(
    source: DataSource,
    arg1: u64,
    iovcnt: u64,
    buf_is_msghdr: bool,
) -> (u64, u64) {
    if buf_is_msghdr {
        // SAFETY: reading user memory through a helper that tolerates bad pointers.
        return match unsafe { bpf_probe_read_user(arg1 as *const MsgHdr) } {
            Ok(m) => (m.iov, m.iovlen),
            Err(_) => (0, 0),
        };
    }
    if matches!(source, DataSource::Sendfile) {
        (0, iovcnt)
    } else {
        (arg1, iovcnt)
    }
}

/// Emits the record for a finished syscall.
#[inline(always)]
fn exit(ctx: &TracePointContext, source: DataSource, iov_arg: Option<usize>, buf_is_msghdr: bool) {
    if floor() {
        return;
    }
    let (pid_tgid, tgid, tid) = current_ids();
    let Some(entry) = INFLIGHT.get_ptr(&pid_tgid) else {
        return;
    };
    // SAFETY: pointer from a successful lookup; copied out before the entry is removed.
    let mut entry = unsafe { *entry };
    let _ = INFLIGHT.remove(&pid_tgid);
    if entry.sk == 0 {
        return;
    }
    if entry.late != 0 && !recover_late(&mut entry, source, iov_arg, buf_is_msghdr) {
        return;
    }
    // `ret` is at a fixed offset of every sys_exit record.
    let ret = record_u64(ctx, SYSCALL_RET) as i64;
    if ret <= 0 {
        return;
    }
    let Ok(source) = DataSource::try_from(entry.source) else {
        return;
    };
    if tls::on_socket_syscall(pid_tgid, tgid, entry.sk, entry.fd) {
        count(source as u32, Stat::TlsCiphertextSkipped, 1);
        return;
    }
    emit::payload(&emit::Payload {
        sk: entry.sk,
        source,
        fd: entry.fd,
        buf: entry.buf,
        iovcnt: entry.iovcnt,
        len: ret as u64,
        ts_enter_ns: entry.ts_enter_ns,
        // SAFETY: helper without preconditions.
        ts_exit_ns: unsafe { bpf_ktime_get_ns() },
        tgid,
        tid,
    });
}

macro_rules! syscall_pair {
    ($enter:ident, $exit:ident, $source:expr, $iov_arg:expr, $msghdr:expr) => {
        #[tracepoint]
        pub fn $enter(ctx: TracePointContext) -> u32 {
            enter(&ctx, $source, $iov_arg, $msghdr);
            0
        }

        #[tracepoint]
        pub fn $exit(ctx: TracePointContext) -> u32 {
            exit(&ctx, $source, $iov_arg, $msghdr);
            0
        }
    };
}

syscall_pair!(sys_enter_read, sys_exit_read, DataSource::Read, None, false);
syscall_pair!(
    sys_enter_write,
    sys_exit_write,
    DataSource::Write,
    None,
    false
);
syscall_pair!(
    sys_enter_readv,
    sys_exit_readv,
    DataSource::Readv,
    Some(2),
    false
);
syscall_pair!(
    sys_enter_writev,
    sys_exit_writev,
    DataSource::Writev,
    Some(2),
    false
);
syscall_pair!(
    sys_enter_recvfrom,
    sys_exit_recvfrom,
    DataSource::Recvfrom,
    None,
    false
);
syscall_pair!(
    sys_enter_sendto,
    sys_exit_sendto,
    DataSource::Sendto,
    None,
    false
);
syscall_pair!(
    sys_enter_recvmsg,
    sys_exit_recvmsg,
    DataSource::Recvmsg,
    None,
    true
);
syscall_pair!(
    sys_enter_sendmsg,
    sys_exit_sendmsg,
    DataSource::Sendmsg,
    None,
    true
);
syscall_pair!(
    sys_enter_sendfile64,
    sys_exit_sendfile64,
    DataSource::Sendfile,
    None,
    false
);

/// `sock:sock_send_length`: the in-flight egress syscall on this thread is on socket `sk`.
#[tracepoint]
pub fn sock_send_length(ctx: TracePointContext) -> u32 {
    mark_socket(&ctx, Direction::Egress);
    0
}

/// `sock:sock_recv_length`: the in-flight ingress syscall on this thread is on socket `sk`.
#[tracepoint]
pub fn sock_recv_length(ctx: TracePointContext) -> u32 {
    mark_socket(&ctx, Direction::Ingress);
    0
}
