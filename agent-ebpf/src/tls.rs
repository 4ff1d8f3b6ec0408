//! TLS plaintext from OpenSSL/BoringSSL, without OpenSSL struct offsets.
//!
//! ```text
//! SSL_write(ssl, buf, num)  / SSL_write_ex(ssl, buf, num, &written)   entry uprobe: save args
//! SSL_read(ssl, buf, num)   / SSL_read_ex(ssl, buf, num, &readbytes)  in THREAD_TLS[pid_tgid]
//!   write/read/send/recv on the socket, same thread    the capture calls `on_socket_syscall`: the
//!                                                      call's socket is now known (`SSL_SOCK`),
//!                                                      and its ciphertext is not reported (the
//!                                                      `tls` mark of `SOCK_STATE[sk]`)
//! `ret` instructions of those functions                 `ssl_return`: byte count from rax (or the
//!                                                      `_ex` out-parameter), copy the plaintext
//! ```
//! Returns are caught with plain uprobes on each `ret` instruction of the function (offsets found
//! by userspace with a disassembler), not uretprobes: a uretprobe rewrites the return address on
//! the user stack (and on 6.11+ x86-64 enters the kernel through the uretprobe syscall, which
//! seccomp filters have killed), so the traced application would pay; a uprobe on `ret` changes
//! nothing in the application's state.
//! Prototypes checked against OpenSSL 3.0 (`ssl/ssl_lib.c`) and BoringSSL (`ssl/ssl_lib.cc`).

use agent_common::{stats::Stat, DataSource};
use aya_ebpf::{
    helpers::{bpf_ktime_get_ns, bpf_probe_read_user},
    macros::uprobe,
    programs::{ProbeContext, RetProbeContext},
    EbpfContext as _,
};

use crate::{
    emit,
    helpers::{count, current_ids},
    maps::{
        floor, self_tgid, SockState, SslKey, SslSock, ThreadTls, TlsCall, SK_SSL, SOCK_STATE,
        SSL_SOCK, THREAD_TLS,
    },
};

#[inline(always)]
fn enter(ctx: &ProbeContext, write: bool, ex: bool) {
    if floor() {
        return;
    }
    let (pid_tgid, tgid, _) = current_ids();
    if tgid == self_tgid() {
        return;
    }
    let call = TlsCall {
        ssl: ctx.arg(0).unwrap_or(0),
        buf: ctx.arg(1).unwrap_or(0),
        out_len: if ex { ctx.arg(3).unwrap_or(0) } else { 0 },
        // SAFETY: helper without preconditions.
        ts_enter_ns: unsafe { bpf_ktime_get_ns() },
        sk: 0,
        fd: -1,
        write: u32::from(write),
    };
    match THREAD_TLS.get_ptr_mut(&pid_tgid) {
        // SAFETY: valid map value pointer for this program run.
        Some(t) => unsafe {
            (*t).call = call;
            (*t).in_call = 1;
        },
        None => {
            let t = ThreadTls {
                last: SslSock {
                    sk: 0,
                    fd: -1,
                    _pad: 0,
                },
                call,
                in_call: 1,
            };
            let _ = THREAD_TLS.insert(&pid_tgid, &t, 0);
        }
    }
}

/// `int SSL_read(SSL *ssl, void *buf, int num)`.
#[uprobe]
pub fn ssl_read_enter(ctx: ProbeContext) -> u32 {
    enter(&ctx, false, false);
    0
}

/// `int SSL_read_ex(SSL *ssl, void *buf, size_t num, size_t *readbytes)`.
#[uprobe]
pub fn ssl_read_ex_enter(ctx: ProbeContext) -> u32 {
    enter(&ctx, false, true);
    0
}

/// `int SSL_write(SSL *ssl, const void *buf, int num)`.
#[uprobe]
pub fn ssl_write_enter(ctx: ProbeContext) -> u32 {
    enter(&ctx, true, false);
    0
}

/// `int SSL_write_ex(SSL *ssl, const void *buf, size_t num, size_t *written)`.
#[uprobe]
pub fn ssl_write_ex_enter(ctx: ProbeContext) -> u32 {
    enter(&ctx, true, true);
    0
}

/// Attached at every `ret` of the four functions above: reports the plaintext moved.
#[uprobe]
pub fn ssl_return(ctx: ProbeContext) -> u32 {
    if floor() {
        return 0;
    }
    let (pid_tgid, tgid, tid) = current_ids();
    let Some(t) = THREAD_TLS.get_ptr_mut(&pid_tgid) else {
        return 0;
    };
    // SAFETY: valid map value pointer for this program run; the call is copied out and closed.
    let (call, last) = unsafe {
        if (*t).in_call == 0 {
            return 0;
        }
        (*t).in_call = 0;
        ((*t).call, (*t).last)
    };
    let rc: i64 = RetProbeContext::new(ctx.as_ptr()).ret();
    let len = if call.out_len == 0 {
        // `int` count, <= 0 on error or WANT_READ/WANT_WRITE.
        let n = rc as i32;
        if n <= 0 {
            return 0;
        }
        n as u64
    } else {
        // 1 on success with the count in the out-parameter.
        if rc as i32 != 1 {
            return 0;
        }
        // SAFETY: helper-checked user read.
        match unsafe { bpf_probe_read_user(call.out_len as *const u64) } {
            Ok(n) if n > 0 => n,
            _ => return 0,
        }
    };
    let source = if call.write != 0 {
        DataSource::SslWrite
    } else {
        DataSource::SslRead
    };
    let (sk, fd) = if call.sk != 0 {
        (call.sk, call.fd)
    } else {
        let key = SslKey {
            tgid,
            _pad: 0,
            ssl: call.ssl,
        };
        // SAFETY: plain lookups of POD values.
        match unsafe { SSL_SOCK.get(&key) } {
            Some(s) => (s.sk, s.fd),
            // No socket syscall inside the call and none recorded for this SSL: the library reads
            // and writes through memory BIOs and the application moves the ciphertext itself
            // (Node.js). It does so on the same thread, reading the ciphertext just before
            // `SSL_read` and having finished the handshake's I/O before the first `SSL_write`,
            // so the thread's last socket is this connection's.
            None if last.sk != 0 => {
                remember(&key, last);
                count(source as u32, Stat::TlsSocketByThread, 1);
                (last.sk, last.fd)
            }
            None => {
                count(source as u32, Stat::TlsNoSocket, 1);
                return 0;
            }
        }
    };
    emit::payload(&emit::Payload {
        sk,
        source,
        fd,
        buf: call.buf,
        iovcnt: 0,
        len,
        ts_enter_ns: call.ts_enter_ns,
        // SAFETY: helper without preconditions.
        ts_exit_ns: unsafe { bpf_ktime_get_ns() },
        tgid,
        tid,
    });
    0
}

/// Records that `key`'s TLS connection runs on `sock` (until that socket closes, see
/// `forget_socket`).
#[inline(always)]
fn remember(key: &SslKey, sock: SslSock) {
    let _ = SSL_SOCK.insert(key, &sock, 0);
    let _ = SK_SSL.insert(&sock.sk, key, 0);
    match SOCK_STATE.get_ptr_mut(&sock.sk) {
        // SAFETY: valid map value pointer for this program run.
        Some(state) => unsafe { (*state).tls = 1 },
        None => {
            let state = SockState {
                seq: [0; 4],
                tls: 1,
            };
            let _ = SOCK_STATE.insert(&sock.sk, &state, 0);
        }
    }
}

/// Drops what is known about a closed socket's TLS connection (its `SOCK_STATE` entry, with the
/// TLS mark, is dropped by the caller).
#[inline(always)]
pub(crate) fn forget_socket(sk: u64) {
    // SAFETY: plain lookup of a POD value, copied before the entry is removed.
    if let Some(key) = unsafe { SK_SSL.get(&sk) }.copied() {
        let _ = SSL_SOCK.remove(&key);
        let _ = SK_SSL.remove(&sk);
    }
}

/// Called by every socket syscall exit on a TCP socket. If a TLS call is in flight on this thread,
/// the socket is the one under it: remember that (marking the socket TLS, whose later ciphertext
/// `emit::payload` then drops), and return `true` so the caller drops this ciphertext.
#[inline(always)]
pub(crate) fn on_socket_syscall(pid_tgid: u64, tgid: u32, sk: u64, fd: i32) -> bool {
    let last = SslSock { sk, fd, _pad: 0 };
    let Some(t) = THREAD_TLS.get_ptr_mut(&pid_tgid) else {
        let t = ThreadTls {
            last,
            call: TlsCall {
                ssl: 0,
                buf: 0,
                out_len: 0,
                ts_enter_ns: 0,
                sk: 0,
                fd: -1,
                write: 0,
            },
            in_call: 0,
        };
        let _ = THREAD_TLS.insert(&pid_tgid, &t, 0);
        return false;
    };
    // In place: stores instead of an LRU update on every socket syscall of every process.
    // SAFETY: valid map value pointer for this program run.
    let t = unsafe { &mut *t };
    t.last.sk = sk;
    t.last.fd = fd;
    if t.in_call == 0 {
        return false;
    }
    if t.call.sk == 0 {
        t.call.sk = sk;
        t.call.fd = fd;
    }
    let key = SslKey {
        tgid,
        _pad: 0,
        ssl: t.call.ssl,
    };
    remember(&key, last);
    true
}
