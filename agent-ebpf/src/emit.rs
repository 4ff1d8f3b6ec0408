//! Assembling a data record (header + payload prefix) and writing it to the ring buffer; shared
//! by the socket syscall exits (`data.rs`) and the TLS return sites (`tls.rs`).

use agent_common::{
    event::DATA_HEADER_BYTES,
    limits::{MAX_CAPTURE_BYTES, MAX_IOVECS, PROTOCOL_CAPTURE_BYTES, SKIP_SOCKET},
    stats::Stat,
    DataEventHeader, DataSource, EventKind,
};
use aya_ebpf::helpers::{
    bpf_probe_read_user,
    generated::{
        bpf_get_current_comm as get_current_comm, bpf_get_smp_processor_id,
        bpf_probe_read_user as read_user_raw,
    },
};

use crate::{
    helpers::count,
    maps::{capture_bytes, wakeup_flags, SockState, EVENTS, SCRATCH, SOCK_CAPTURE, SOCK_STATE},
};

/// `v & MASK`, emitted even when the compiler can prove `v` is already in range (it often can;
/// the verifier, tracking a sum over loop iterations, cannot).
macro_rules! opaque_mask {
    ($v:expr, $mask:expr) => {{
        let mut v = $v as u64;
        // SAFETY: a register-only AND; no memory access.
        unsafe {
            core::arch::asm!("{v} &= {m}", v = inout(reg) v, m = const $mask);
        }
        v as usize
    }};
}

/// `min(a, b)` without a branch: `d = a - b; d &= d s>> 63; d + b`. Exact when `a - b` fits in an
/// `i64`, as here: `b` is at most [`MAX_CAPTURE_BYTES`] and `a` an iovec length the kernel accepted
/// (at most `SSIZE_MAX`, or the syscall fails with `EINVAL`). A branch would fork the verifier's
/// state in every unrolled iteration of the iovec loop, and the forks would join again: 2^n states
/// for n iovecs (Linux 6.1 refused 32 iovecs with E2BIG, 5.10 ran for minutes).
#[inline(always)]
fn min_branchless(a: u64, b: u64) -> u64 {
    let mut d = a.wrapping_sub(b);
    // SAFETY: register-only arithmetic; no memory access.
    unsafe {
        core::arch::asm!(
            "{t} = {d}",
            "{t} s>>= 63",
            "{d} &= {t}",
            d = inout(reg) d,
            t = out(reg) _,
        );
    }
    d.wrapping_add(b)
}

/// User ABI `struct iovec`.
#[repr(C)]
#[derive(Clone, Copy)]
struct Iovec {
    base: u64,
    len: u64,
}

/// One payload to report.
pub(crate) struct Payload {
    /// The connection's `struct sock *`.
    pub(crate) sk: u64,
    /// What moved the bytes.
    pub(crate) source: DataSource,
    /// File descriptor (-1 when unknown).
    pub(crate) fd: i32,
    /// User buffer, or `struct iovec *` when `iovcnt > 0`; 0 for nothing to copy.
    pub(crate) buf: u64,
    /// Number of iovecs; 0 for a plain buffer.
    pub(crate) iovcnt: u64,
    /// Bytes moved.
    pub(crate) len: u64,
    /// Call entry time, monotonic ns.
    pub(crate) ts_enter_ns: u64,
    /// Call exit time (when the bytes had moved), monotonic ns.
    pub(crate) ts_exit_ns: u64,
    /// Process.
    pub(crate) tgid: u32,
    /// Thread.
    pub(crate) tid: u32,
}

/// Copies up to `n` user bytes from `src` into the scratch payload at `off`.
/// Returns the bytes copied (0 on a failed read, counted).
#[inline(always)]
fn copy_user(program: u32, scratch: *mut u8, off: usize, src: u64, n: usize) -> usize {
    // Masks make both bounds explicit for the verifier: off < MAX, n < 2 * MAX, and the scratch
    // area holds header + 3 * MAX. The length is masked right before the call: the compiler may
    // spill the unchecked value before the `min` and pass the reloaded copy, and Linux 6.1's
    // verifier does not carry the check over to a spilled copy ("R2 min value is negative").
    let off = opaque_mask!(off, MAX_CAPTURE_BYTES - 1);
    let n = if n > MAX_CAPTURE_BYTES {
        MAX_CAPTURE_BYTES
    } else {
        n
    };
    let n = opaque_mask!(n, 2 * MAX_CAPTURE_BYTES - 1);
    // SAFETY: dst lies within the per-CPU scratch value (see SCRATCH_BYTES); the helper checks src.
    let ret = unsafe {
        read_user_raw(
            scratch.add(DATA_HEADER_BYTES + off).cast(),
            n as u32,
            src as *const core::ffi::c_void,
        )
    };
    if ret == 0 {
        n
    } else {
        count(program, Stat::ReadUserFailed, 1);
        0
    }
}

/// The first 8 bytes of the HTTP/2 client preface (RFC 9113 §3.4), as a little-endian `u64`.
const H2_PREFACE_HEAD: u64 = u64::from_le_bytes(*b"PRI * HT");

/// Whether `p`'s bytes start with the HTTP/2 client preface: one 8-byte user read (two with
/// iovecs), done only for the first record of a stream.
#[inline(always)]
fn starts_with_h2_preface(p: &Payload) -> bool {
    if p.buf == 0 || p.len < 8 {
        return false;
    }
    let src = if p.iovcnt == 0 {
        p.buf
    } else {
        // SAFETY: helper-checked user read of the first iovec.
        match unsafe { bpf_probe_read_user(p.buf as *const Iovec) } {
            Ok(iov) if iov.len >= 8 => iov.base,
            _ => return false,
        }
    };
    // SAFETY: helper-checked user read of 8 bytes.
    unsafe { bpf_probe_read_user(src as *const u64) }.is_ok_and(|head| head == H2_PREFACE_HEAD)
}

/// Next byte offset of `p`'s stream (socket bytes and TLS plaintext have separate streams per
/// direction), advanced by `p.len`; `state` is the socket's entry, if it has one.
#[inline(always)]
fn next_seq(p: &Payload, state: Option<*mut SockState>) -> u64 {
    let idx = (p.source.direction() as usize & 1) + if p.source.is_tls() { 2 } else { 0 };
    match state {
        Some(s) => {
            // SAFETY: valid map value pointer; idx < 4.
            let s = unsafe { &mut *s };
            let Some(slot) = s.seq.get_mut(idx) else {
                return 0;
            };
            let seq = *slot;
            *slot = seq.wrapping_add(p.len);
            seq
        }
        None => {
            // Element by element: `[0; 4]` and an indexed store become a `memset` call.
            let at = |i: usize| if idx == i { p.len } else { 0 };
            let state = SockState {
                seq: [at(0), at(1), at(2), at(3)],
                tls: 0,
            };
            let _ = SOCK_STATE.insert(&p.sk, &state, 0);
            0
        }
    }
}

/// Writes the record for `p` to the ring buffer, counting bytes captured and truncated, or the
/// drop when the ring buffer is full.
#[inline(always)]
pub(crate) fn payload(p: &Payload) {
    let state = SOCK_STATE.get_ptr_mut(&p.sk);
    // SAFETY: read of a valid map value pointer.
    if !p.source.is_tls() && state.is_some_and(|s| unsafe { (*s).tls } != 0) {
        // Ciphertext of a socket whose plaintext the TLS uprobes report.
        count(p.source as u32, Stat::TlsCiphertextSkipped, 1);
        return;
    }
    // The socket's verdict from userspace: a capture size, or skip. TLS-library records are
    // never skipped: they are the plaintext of a socket whose ciphertext alone looked opaque.
    // SAFETY: read-only use of a map value pointer.
    let verdict = unsafe { SOCK_CAPTURE.get(&p.sk) }.copied();
    if verdict == Some(SKIP_SOCKET) && !p.source.is_tls() {
        count(p.source as u32, Stat::SkippedSocket, 1);
        return;
    }
    let seq = next_seq(p, state);
    // SAFETY: helper without preconditions.
    let cpu = unsafe { bpf_get_smp_processor_id() };
    let Some(scratch) = SCRATCH.get_ptr_mut(cpu) else {
        return;
    };
    let scratch = scratch.cast::<u8>();
    let mut limit = capture_bytes() as u64;
    if seq == 0 && starts_with_h2_preface(p) {
        // The first bytes of an HTTP/2 connection (prior knowledge, or TLS plaintext after ALPN):
        // raise its capture now, before userspace, which reads records up to 50 ms later, could.
        let raised = PROTOCOL_CAPTURE_BYTES as u32;
        let _ = SOCK_CAPTURE.insert(&p.sk, &raised, 0);
        limit = PROTOCOL_CAPTURE_BYTES as u64;
    } else if let Some(raised) = verdict.filter(|v| *v != SKIP_SOCKET) {
        limit = u64::from(raised);
    }
    let mut want = if p.len < limit { p.len } else { limit } as usize;
    if want > MAX_CAPTURE_BYTES {
        want = MAX_CAPTURE_BYTES;
    }
    let mut captured = 0usize;
    if p.buf != 0 && want > 0 {
        if p.iovcnt == 0 {
            captured = copy_user(p.source as u32, scratch, 0, p.buf, want);
        } else {
            // Each iteration only forks to leave the loop (see `min_branchless`), so the verifier
            // walks MAX_IOVECS states, not 2^MAX_IOVECS. At most the bytes the syscall moved are
            // read: a receive buffer's pages past them may not be faulted in.
            for i in 0..MAX_IOVECS {
                if i as u64 >= p.iovcnt || captured >= want {
                    break;
                }
                // SAFETY: helper-checked user read of one iovec.
                let Ok(iov) = (unsafe { bpf_probe_read_user((p.buf as *const Iovec).add(i)) })
                else {
                    count(p.source as u32, Stat::ReadUserFailed, 1);
                    break;
                };
                let n = min_branchless(iov.len, (want - captured) as u64);
                let off = opaque_mask!(captured, MAX_CAPTURE_BYTES - 1);
                let n = opaque_mask!(n, 2 * MAX_CAPTURE_BYTES - 1);
                // SAFETY: dst lies within the per-CPU scratch value (off < MAX, n < 2 * MAX, and
                // it holds header + 3 * MAX); the helper checks src.
                let ret = unsafe {
                    read_user_raw(
                        scratch.add(DATA_HEADER_BYTES + off).cast(),
                        n as u32,
                        iov.base as *const core::ffi::c_void,
                    )
                };
                if ret != 0 {
                    count(p.source as u32, Stat::ReadUserFailed, 1);
                    break;
                }
                captured += n;
            }
        }
    }
    let captured = opaque_mask!(captured, 2 * MAX_CAPTURE_BYTES - 1);

    // The header is written in place with aligned stores (array values are 8-byte aligned): no
    // stack copy, no `memmove` subprogram call.
    // SAFETY: the scratch value is larger than the header and 8-byte aligned.
    let h = unsafe { &mut *scratch.cast::<DataEventHeader>() };
    h.kind = EventKind::Data as u32;
    h.direction = p.source.direction() as u32;
    h.ts_enter_ns = p.ts_enter_ns;
    h.ts_exit_ns = p.ts_exit_ns;
    h.sk = p.sk;
    h.seq = seq;
    h.len = p.len;
    h.tgid = p.tgid;
    h.tid = p.tid;
    h.fd = p.fd;
    h.captured = captured as u32;
    h.source = p.source as u32;
    h._pad = 0;
    // Userspace names a process from `comm` only when it meets a connection (its first record)
    // and `/proc` is already gone, so the helper runs once per stream, not per record; it writes
    // straight into the header (a zeroed stack copy would be a `memset` call).
    let comm = h.comm.as_mut_ptr();
    // SAFETY: 16 writable bytes of the scratch value.
    let filled = seq == 0 && unsafe { get_current_comm(comm.cast(), h.comm.len() as u32) } == 0;
    if !filled {
        // Volatile, or the two stores are merged back into a `memset` call.
        // SAFETY: as above; 8-byte aligned (asserted next to `DataEventHeader`).
        unsafe {
            comm.cast::<u64>().write_volatile(0);
            comm.cast::<u64>().add(1).write_volatile(0);
        }
    }
    let size = DATA_HEADER_BYTES + captured;
    // SAFETY: `size` <= DATA_HEADER_BYTES + 2 * MAX_CAPTURE_BYTES - 1 < SCRATCH_BYTES.
    let ret = unsafe {
        aya_ebpf::helpers::generated::bpf_ringbuf_output(
            core::ptr::addr_of!(EVENTS).cast_mut().cast(),
            scratch.cast(),
            size as u64,
            wakeup_flags(size as u64),
        )
    };
    if ret == 0 {
        count(p.source as u32, Stat::DataEvents, 1);
        count(p.source as u32, Stat::BytesCaptured, captured as u64);
        count(
            p.source as u32,
            Stat::BytesTruncated,
            p.len - captured as u64,
        );
    } else {
        count(p.source as u32, Stat::RingbufFull, 1);
    }
}
