//! The one home of sizes used on both sides of the boundary.

/// Largest payload prefix copied from one syscall's buffer into a [`crate::DataEventHeader`] record.
///
/// # Units
/// Bytes. Longer payloads are still accounted by length (`len`), so the userspace stream keeps its
/// framing: the uncaptured tail becomes a hole of known size. Must be a power of two (the eBPF code
/// masks offsets with `MAX_CAPTURE_BYTES - 1` to satisfy the verifier).
pub const MAX_CAPTURE_BYTES: usize = 16384;

/// Payload bytes captured per syscall unless configured (`--capture-bytes`) or raised for a
/// socket whose protocol needs more ([`PROTOCOL_CAPTURE_BYTES`]).
///
/// # Units
/// Bytes.
pub const DEFAULT_CAPTURE_BYTES: usize = 4096;

/// Payload bytes captured per syscall on a socket userspace marked (map `SOCK_CAPTURE`) because
/// its protocol cannot skip an uncaptured tail by length: HTTP/2, where one read often holds
/// many frames and a header block cut in a hole is lost. Applies only to syscalls that move more
/// than the global capture size, so other sockets pay nothing.
///
/// # Units
/// Bytes, `<= MAX_CAPTURE_BYTES`.
pub const PROTOCOL_CAPTURE_BYTES: usize = MAX_CAPTURE_BYTES;

/// The per-socket verdict (map `SOCK_CAPTURE`) that sends no record at all for the socket's
/// syscalls: userspace ignores the connection (`--pid`/`--port`/`--exe-name`, unresolvable, the
/// agent's own) or no protocol claimed it (opaque). TLS-library records of the socket still go.
pub const SKIP_SOCKET: u32 = 0;

/// Capacity of the per-socket capture-size table (LRU; one entry per marked socket).
pub const MAX_CAPTURE_SOCKETS: u32 = 16384;

/// Maximum number of `iovec` entries copied for `readv`/`writev`/`sendmsg`/`recvmsg`.
///
/// 264: gRPC's C core writes each HTTP/2 frame header, and each HPACK field of a request, as its
/// own iovec (7 or more per unary request; 20 concurrent calls made one `sendmsg` of 90), up to
/// its `MAX_WRITE_IOVEC` of 260 per call (at 256, 200 concurrent calls lost the last 4 iovecs'
/// frames, and with them the CLIENT spans of the calls that followed); nginx gathers up to 64.
/// Not the kernel's 1024 (`UIO_MAXIOV`): Linux 6.1's verifier walks the code after the loop once
/// per way out of it, and at 1024 iterations refused `sys_exit_read` with E2BIG (1M instructions).
/// The loop stops at the last iovec or once the capture size is reached, so a short `writev`
/// pays for its own iovecs only; bytes of iovecs past this are accounted by length (a hole).
pub const MAX_IOVECS: usize = 264;

/// Default size of the `EVENTS` ring buffer. Userspace may resize it at load time.
///
/// 8 MiB: at 35k req/s on loopback (about 48 MB/s of records) nothing was lost, and the reader
/// is woken at 1/8 fill. The kernel maps the data pages twice for the consumer (wrap-around), so
/// the agent's RSS shows twice this size; 16 MiB put 32 MB of RSS on every host.
///
/// # Units
/// Bytes; a power of two and a multiple of the page size, as `BPF_MAP_TYPE_RINGBUF` requires.
pub const DEFAULT_RING_BUF_BYTES: u32 = 8 << 20;

/// Capacity of the in-flight syscall table (one entry per thread inside a hooked syscall).
pub const MAX_INFLIGHT_SYSCALLS: u32 = 16384;

/// Capacity of the per-socket sequence table (LRU; one entry per TCP socket seen moving bytes).
pub const MAX_SOCKETS: u32 = 65536;

/// Capacity of the table of the agent's own client sockets (its export connections).
pub const MAX_SELF_SOCKETS: u32 = 1024;

const _: () = assert!(MAX_CAPTURE_BYTES.is_power_of_two());
const _: () = assert!(DEFAULT_CAPTURE_BYTES <= MAX_CAPTURE_BYTES);
