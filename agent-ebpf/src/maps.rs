//! Every map and global of the eBPF side, in one place. Names match `agent_common::names`.

use agent_common::{
    event::MAX_DATA_RECORD_BYTES,
    limits::{
        DEFAULT_CAPTURE_BYTES, DEFAULT_RING_BUF_BYTES, MAX_CAPTURE_BYTES, MAX_CAPTURE_SOCKETS,
        MAX_INFLIGHT_SYSCALLS, MAX_SELF_SOCKETS, MAX_SOCKETS,
    },
    stats::STATS_SLOTS,
    TracepointLayout,
};
use aya_ebpf::{
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf},
};

/// Arguments of a hooked syscall, saved at `sys_enter_*` until its `sys_exit_*` on the same thread.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct Inflight {
    /// `agent_common::DataSource` as `u32`.
    pub(crate) source: u32,
    /// File descriptor argument.
    pub(crate) fd: i32,
    /// User buffer (`read`/`write`/`send*`/`recv*`) or `struct iovec *` (`readv`/`writev`/`*msg`).
    pub(crate) buf: u64,
    /// Number of iovecs; 0 for a plain buffer.
    pub(crate) iovcnt: u64,
    /// Syscall entry time, monotonic ns.
    pub(crate) ts_enter_ns: u64,
    /// `struct sock *` learned from `sock:sock_{send,recv}_length`; 0 while unknown (not a TCP socket).
    pub(crate) sk: u64,
    /// 0 for an entry made at `sys_enter_*`. `1 + Direction` for an entry made at
    /// `sock_{send,recv}_length` because the syscall was already in progress when the programs were
    /// attached: its arguments are then recovered from the task's saved registers at exit.
    pub(crate) late: u32,
    /// Explicit padding.
    pub(crate) _pad: u32,
}

/// Records to userspace. Resized by userspace at load time.
#[map]
pub(crate) static EVENTS: RingBuf = RingBuf::with_byte_size(DEFAULT_RING_BUF_BYTES, 0);

/// Per-CPU counters indexed by `agent_common::stats::slot(program, stat)`.
#[map]
pub(crate) static STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(STATS_SLOTS, 0);

/// In-flight syscalls keyed by `pid_tgid`.
#[map]
pub(crate) static INFLIGHT: HashMap<u64, Inflight> =
    HashMap::with_max_entries(MAX_INFLIGHT_SYSCALLS, 0);

/// What the kernel side keeps per socket; one lookup per record serves both fields.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct SockState {
    /// Next byte offset per stream: `[egress, ingress, tls egress, tls ingress]`.
    pub(crate) seq: [u64; 4],
    /// 1 once a TLS library call moved bytes over the socket: its ciphertext is not reported.
    pub(crate) tls: u64,
}

/// [`SockState`] by `sk`, from the socket's first record (or first TLS call) until it opens
/// again or closes.
#[map]
pub(crate) static SOCK_STATE: LruHashMap<u64, SockState> =
    LruHashMap::with_max_entries(MAX_SOCKETS, 0);

/// The agent's own client sockets, from `connect(2)` (the `SYN_SENT` transition runs in the
/// caller's context) until `CLOSE`.
#[map]
pub(crate) static SELF_SOCKS: LruHashMap<u64, u8> =
    LruHashMap::with_max_entries(MAX_SELF_SOCKETS, 0);

/// A TLS library call between its entry uprobe and a return-site uprobe.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct TlsCall {
    /// `SSL *`.
    pub(crate) ssl: u64,
    /// Plaintext buffer.
    pub(crate) buf: u64,
    /// `size_t *` receiving the byte count (`SSL_read_ex`/`SSL_write_ex`), or 0.
    pub(crate) out_len: u64,
    /// Entry time, monotonic ns.
    pub(crate) ts_enter_ns: u64,
    /// Socket learned from a nested socket syscall, or 0.
    pub(crate) sk: u64,
    /// File descriptor of that socket, or -1.
    pub(crate) fd: i32,
    /// 1 for `SSL_write*`, 0 for `SSL_read*`.
    pub(crate) write: u32,
}

/// Key of [`SSL_SOCK`]: an `SSL *` is only unique within its process.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct SslKey {
    pub(crate) tgid: u32,
    pub(crate) _pad: u32,
    pub(crate) ssl: u64,
}

/// Value of [`SSL_SOCK`].
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct SslSock {
    pub(crate) sk: u64,
    pub(crate) fd: i32,
    pub(crate) _pad: u32,
}

/// The socket under each `SSL *`, for calls served from OpenSSL's buffer without a syscall.
#[map]
pub(crate) static SSL_SOCK: LruHashMap<SslKey, SslSock> =
    LruHashMap::with_max_entries(MAX_SOCKETS, 0);

/// What the TLS capture keeps per thread; one lookup per socket record serves both fields.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct ThreadTls {
    /// The TCP socket the thread moved bytes on last (`sk` 0: none yet): ties a TLS library that
    /// does its own socket I/O through memory BIOs (Node.js) to its socket.
    pub(crate) last: SslSock,
    /// The TLS library call in flight, valid while `in_call` is 1.
    pub(crate) call: TlsCall,
    /// 1 between a TLS call's entry uprobe and its return-site uprobe.
    pub(crate) in_call: u64,
}

/// [`ThreadTls`] by `pid_tgid`, from the thread's first socket record or TLS call.
#[map]
pub(crate) static THREAD_TLS: LruHashMap<u64, ThreadTls> =
    LruHashMap::with_max_entries(MAX_INFLIGHT_SYSCALLS, 0);

/// The `SSL_SOCK` key recorded for each socket, so the entry is dropped when the socket closes
/// (an `SSL *` is often reused by the next connection once freed).
#[map]
pub(crate) static SK_SSL: LruHashMap<u64, SslKey> = LruHashMap::with_max_entries(MAX_SOCKETS, 0);

/// Scratch space big enough for a header plus three times the capture size, so that offset
/// (masked below `MAX_CAPTURE_BYTES`) + length (masked below `2 * MAX_CAPTURE_BYTES`) bounds are
/// provable to the verifier with masks alone.
pub(crate) const SCRATCH_BYTES: usize = MAX_DATA_RECORD_BYTES + 2 * MAX_CAPTURE_BYTES;

/// Record assembly area, one slot per CPU (indexed by `bpf_get_smp_processor_id`); userspace
/// sizes it to the possible CPUs. Programs run with migration disabled, so a slot is only shared
/// the way a per-CPU value would be.
#[map]
pub(crate) static SCRATCH: Array<[u8; SCRATCH_BYTES]> = Array::with_max_entries(1, 0);

/// Per-socket verdict from userspace, by `sk`: a capture size (`PROTOCOL_CAPTURE_BYTES` for
/// HTTP/2), or `SKIP_SOCKET` (no record for the socket's syscalls). Looked up once per socket
/// record; removed when the socket opens or closes (`inet_sock_set_state`).
#[map]
pub(crate) static SOCK_CAPTURE: LruHashMap<u64, u32> =
    LruHashMap::with_max_entries(MAX_CAPTURE_SOCKETS, 0);

/// The agent's own `tgid` (set by userspace): its syscalls are never captured.
#[unsafe(no_mangle)]
static SELF_TGID: u32 = 0;

/// Fill level from which records wake the reader (set by userspace).
#[unsafe(no_mangle)]
static WAKEUP_BYTES: u64 = 0;

/// Payload bytes to capture per syscall, `<= MAX_CAPTURE_BYTES` (set by userspace).
#[unsafe(no_mangle)]
static CAPTURE_BYTES: u32 = DEFAULT_CAPTURE_BYTES as u32;

/// 1 when the kernel has the helpers that recover a syscall in progress at attach time (set by
/// userspace from a helper probe; see `names::GLOBAL_RECOVER_IN_PROGRESS`).
#[unsafe(no_mangle)]
static RECOVER_IN_PROGRESS: u32 = 0;

/// 1: every program returns at once, so a benchmark measures what the attach points alone cost
/// (`sonde --floor`; set by userspace).
#[unsafe(no_mangle)]
static FLOOR: u32 = 0;

/// Field offsets of the `sock:*` tracepoints (set by userspace from tracefs `format` files).
#[unsafe(no_mangle)]
static TP_LAYOUT: TracepointLayout = TracepointLayout {
    len_sk: 0,
    len_family: 0,
    len_protocol: 0,
    len_flags: 0,
    state_skaddr: 0,
    state_oldstate: 0,
    state_newstate: 0,
    state_sport: 0,
    state_dport: 0,
    state_family: 0,
    state_protocol: 0,
    state_saddr: 0,
    state_daddr: 0,
    state_saddr_v6: 0,
    state_daddr_v6: 0,
    len_ret: 0,
};

/// The agent's own `tgid`.
#[inline(always)]
pub(crate) fn self_tgid() -> u32 {
    // SAFETY: a read of a global the loader may have patched; volatile so it is not const-folded.
    unsafe { core::ptr::read_volatile(&SELF_TGID) }
}

/// Payload bytes to capture per syscall.
#[inline(always)]
pub(crate) fn capture_bytes() -> u32 {
    // SAFETY: as above.
    unsafe { core::ptr::read_volatile(&CAPTURE_BYTES) }
}

/// `bpf_ringbuf_output`/`submit` flags for a record of `size` bytes: wake the reader only with
/// the record that makes the waiting bytes cross `WAKEUP_BYTES`. Forcing a wakeup with every
/// record above the threshold (until the reader has drained) cost a self-IPI per record (an MSR
/// write, a VM exit under a hypervisor): 180 of 1,793 capture samples in `perf`. A crossing the
/// reader misses (it was already draining) is covered by its own timer.
#[inline(always)]
pub(crate) fn wakeup_flags(size: u64) -> u64 {
    // SAFETY: as above.
    let threshold = unsafe { core::ptr::read_volatile(&WAKEUP_BYTES) };
    let waiting = EVENTS.query(u64::from(BPF_RB_AVAIL_DATA));
    if waiting < threshold && waiting + size >= threshold {
        u64::from(BPF_RB_FORCE_WAKEUP)
    } else {
        u64::from(BPF_RB_NO_WAKEUP)
    }
}

/// Whether a syscall in progress at attach time can be recovered. The global lives in a frozen
/// read-only map, so the verifier knows its value and skips the code it guards when it is 0: a
/// kernel without `bpf_task_pt_regs` (before 5.15) then accepts the programs.
#[inline(always)]
pub(crate) fn recover_in_progress() -> bool {
    // SAFETY: as above.
    unsafe { core::ptr::read_volatile(&RECOVER_IN_PROGRESS) != 0 }
}

/// Whether every program is to return at once (`sonde --floor`). A frozen read-only global: the
/// verifier knows its value and drops the branch not taken, so it costs nothing otherwise.
#[inline(always)]
pub(crate) fn floor() -> bool {
    // SAFETY: as above.
    unsafe { core::ptr::read_volatile(&FLOOR) != 0 }
}

/// Tracepoint field offsets.
#[inline(always)]
pub(crate) fn tp_layout() -> TracepointLayout {
    // SAFETY: as above.
    unsafe { core::ptr::read_volatile(&TP_LAYOUT) }
}
