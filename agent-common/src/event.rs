//! Ring-buffer records and the enums they carry (as `u32`, decoded with `TryFrom`).

use crate::limits::MAX_CAPTURE_BYTES;

/// First `u32` of every ring-buffer record.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// A [`DataEventHeader`] followed by `captured` payload bytes.
    Data = 1,
    /// A [`ConnEvent`].
    Conn = 2,
    /// An [`ExecEvent`].
    Exec = 3,
}

impl TryFrom<u32> for EventKind {
    type Error = u32;
    fn try_from(v: u32) -> Result<Self, u32> {
        match v {
            1 => Ok(Self::Data),
            2 => Ok(Self::Conn),
            3 => Ok(Self::Exec),
            other => Err(other),
        }
    }
}

/// Which way the bytes moved, seen from the process that made the syscall.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Written by the process (`write`, `send*`, `writev`, `sendfile`).
    Egress = 0,
    /// Read by the process (`read`, `recv*`, `readv`).
    Ingress = 1,
}

impl TryFrom<u32> for Direction {
    type Error = u32;
    fn try_from(v: u32) -> Result<Self, u32> {
        match v {
            0 => Ok(Self::Egress),
            1 => Ok(Self::Ingress),
            other => Err(other),
        }
    }
}

/// What moved the bytes of a [`DataEventHeader`]: a socket syscall (the bytes as they cross the
/// socket) or a TLS library call (the plaintext on the application's side of the TLS layer).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DataSource {
    /// `read(2)`
    Read = 1,
    /// `write(2)`
    Write = 2,
    /// `readv(2)`
    Readv = 3,
    /// `writev(2)`
    Writev = 4,
    /// `recvfrom(2)` (and `recv(2)`, which libc maps onto it)
    Recvfrom = 5,
    /// `sendto(2)` (and `send(2)`)
    Sendto = 6,
    /// `recvmsg(2)`
    Recvmsg = 7,
    /// `sendmsg(2)`
    Sendmsg = 8,
    /// `sendfile(2)`: bytes come from a file, never captured, accounted by length.
    Sendfile = 9,
    /// OpenSSL/BoringSSL `SSL_read`/`SSL_read_ex`: decrypted bytes the application received.
    SslRead = 10,
    /// OpenSSL/BoringSSL `SSL_write`/`SSL_write_ex`: plaintext the application sent.
    SslWrite = 11,
}

impl DataSource {
    /// Direction of the bytes this syscall moves.
    pub const fn direction(self) -> Direction {
        match self {
            Self::Read | Self::Readv | Self::Recvfrom | Self::Recvmsg | Self::SslRead => {
                Direction::Ingress
            }
            Self::Write
            | Self::Writev
            | Self::Sendto
            | Self::Sendmsg
            | Self::Sendfile
            | Self::SslWrite => Direction::Egress,
        }
    }

    /// The syscall's name as in `syscalls:sys_enter_<name>`.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Write => "write",
            Self::Readv => "readv",
            Self::Writev => "writev",
            Self::Recvfrom => "recvfrom",
            Self::Sendto => "sendto",
            Self::Recvmsg => "recvmsg",
            Self::Sendmsg => "sendmsg",
            Self::Sendfile => "sendfile64",
            Self::SslRead => "SSL_read",
            Self::SslWrite => "SSL_write",
        }
    }

    /// Whether the bytes are TLS plaintext from a library uprobe (not socket bytes).
    pub const fn is_tls(self) -> bool {
        matches!(self, Self::SslRead | Self::SslWrite)
    }
}

impl TryFrom<u32> for DataSource {
    type Error = u32;
    fn try_from(v: u32) -> Result<Self, u32> {
        Ok(match v {
            1 => Self::Read,
            2 => Self::Write,
            3 => Self::Readv,
            4 => Self::Writev,
            5 => Self::Recvfrom,
            6 => Self::Sendto,
            7 => Self::Recvmsg,
            8 => Self::Sendmsg,
            9 => Self::Sendfile,
            10 => Self::SslRead,
            11 => Self::SslWrite,
            other => return Err(other),
        })
    }
}

/// Payload moved by one syscall on a TCP socket; `captured` payload bytes follow it in the record.
///
/// # Source
/// `agent-ebpf/src/data.rs`: arguments at `syscalls:sys_enter_*`, the socket (`sk`, family, protocol)
/// from `sock:sock_send_length` / `sock:sock_recv_length` fired inside that syscall on the same thread,
/// the result at `syscalls:sys_exit_*`. `agent-ebpf/src/socket.rs` (socket mode): all of it at
/// `sock:sock_{send,recv}_length`, the arguments from the task's saved registers.
/// `agent-ebpf/src/tls.rs`: TLS plaintext at the library's return sites. Only IPv4/IPv6 TCP
/// sockets produce records.
/// # Units
/// `ts_*_ns`: `CLOCK_MONOTONIC` nanoseconds (`bpf_ktime_get_ns`). `len`, `seq`, `captured`: bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct DataEventHeader {
    /// [`EventKind::Data`].
    pub kind: u32,
    /// [`Direction`] as `u32`.
    pub direction: u32,
    /// Syscall entry time (the socket-mode hook's time, equal to `ts_exit_ns`, in that mode).
    pub ts_enter_ns: u64,
    /// Syscall exit time (socket mode: when `sock_{send,recv}_length` fired).
    pub ts_exit_ns: u64,
    /// Kernel address of the `struct sock`: the connection's identity while it lives.
    pub sk: u64,
    /// Offset of this payload in the direction's byte stream since the socket was first seen
    /// (TLS plaintext has its own stream per direction). A jump means records were lost.
    pub seq: u64,
    /// Bytes the syscall moved (its return value).
    pub len: u64,
    /// Process (thread group) id.
    pub tgid: u32,
    /// Thread id.
    pub tid: u32,
    /// File descriptor the syscall used.
    pub fd: i32,
    /// Payload bytes following this header (`<= MAX_CAPTURE_BYTES`, `<= len`).
    pub captured: u32,
    /// [`DataSource`] as `u32`.
    pub source: u32,
    /// Explicit padding.
    pub _pad: u32,
    /// `comm` of the calling thread (`bpf_get_current_comm`, NUL-padded) on a stream's first
    /// record (`seq == 0`), zeroes on later ones: names short-lived processes that exit before
    /// userspace can read `/proc/<tgid>` when it meets the connection.
    pub comm: [u8; 16],
}

// The kernel side writes `comm` with two 8-byte stores.
const _: () = assert!(core::mem::offset_of!(DataEventHeader, comm) % 8 == 0);

/// A TCP state change of an IPv4/IPv6 socket.
///
/// # Source
/// `sock:inet_sock_set_state` (`agent-ebpf/src/conn.rs`). `ESTABLISHED` from `SYN_SENT` marks a client
/// (connect) socket, from `SYN_RECV` an accepted (server) socket; a move to `CLOSE` ends it.
/// # Units
/// `ts_ns`: `CLOCK_MONOTONIC` nanoseconds. Ports in host byte order. Addresses in network order;
/// IPv4 in the first 4 bytes when `family == AF_INET`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ConnEvent {
    /// [`EventKind::Conn`].
    pub kind: u32,
    /// `AF_INET` (2) or `AF_INET6` (10).
    pub family: u16,
    /// `CONN_FLAG_*` bits.
    pub flags: u16,
    /// Time of the state change.
    pub ts_ns: u64,
    /// Kernel address of the `struct sock`.
    pub sk: u64,
    /// Previous `TCP_*` state.
    pub oldstate: u32,
    /// New `TCP_*` state.
    pub newstate: u32,
    /// Local port.
    pub sport: u16,
    /// Remote port.
    pub dport: u16,
    /// `tgid` of the task that was current (often unrelated: state changes run in softirq).
    pub tgid: u32,
    /// Local address.
    pub saddr: [u8; 16],
    /// Remote address.
    pub daddr: [u8; 16],
}

/// A process called `execve(2)`: it may now map TLS libraries the agent has not attached to yet.
///
/// # Source
/// `sched:sched_process_exec` (`agent-ebpf/src/exec.rs`).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ExecEvent {
    /// [`EventKind::Exec`].
    pub kind: u32,
    /// The process that exec'd.
    pub tgid: u32,
    /// Time of the exec, `CLOCK_MONOTONIC` nanoseconds.
    pub ts_ns: u64,
}

/// Byte offsets of the `sock:*` tracepoint fields the programs read, parsed by userspace from
/// `/sys/kernel/tracing/events/sock/<name>/format` and set as a global before load, so no layout is
/// compiled in.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct TracepointLayout {
    /// `sock_send_length`/`sock_recv_length`: `void *sk`.
    pub len_sk: u32,
    /// `sock_send_length`/`sock_recv_length`: `__u16 family`.
    pub len_family: u32,
    /// `sock_send_length`/`sock_recv_length`: `__u16 protocol`.
    pub len_protocol: u32,
    /// `sock_recv_length`: `int flags` (to skip `MSG_PEEK`).
    pub len_flags: u32,
    /// `inet_sock_set_state`: `const void *skaddr`.
    pub state_skaddr: u32,
    /// `inet_sock_set_state`: `int oldstate`.
    pub state_oldstate: u32,
    /// `inet_sock_set_state`: `int newstate`.
    pub state_newstate: u32,
    /// `inet_sock_set_state`: `__u16 sport`.
    pub state_sport: u32,
    /// `inet_sock_set_state`: `__u16 dport`.
    pub state_dport: u32,
    /// `inet_sock_set_state`: `__u16 family`.
    pub state_family: u32,
    /// `inet_sock_set_state`: `__u16 protocol`.
    pub state_protocol: u32,
    /// `inet_sock_set_state`: `__u8 saddr[4]`.
    pub state_saddr: u32,
    /// `inet_sock_set_state`: `__u8 daddr[4]`.
    pub state_daddr: u32,
    /// `inet_sock_set_state`: `__u8 saddr_v6[16]`.
    pub state_saddr_v6: u32,
    /// `inet_sock_set_state`: `__u8 daddr_v6[16]`.
    pub state_daddr_v6: u32,
    /// `sock_send_length`/`sock_recv_length`: `int ret` (bytes moved, or `-errno`).
    pub len_ret: u32,
}

/// `AF_INET`.
pub const AF_INET: u16 = 2;
/// `AF_INET6`.
pub const AF_INET6: u16 = 10;
/// `IPPROTO_TCP`.
pub const IPPROTO_TCP: u16 = 6;
/// `MSG_PEEK`: data is left in the queue and will be read again.
pub const MSG_PEEK: i32 = 2;

/// [`ConnEvent::flags`]: the socket was connected by the agent itself (its `connect(2)` ran in the
/// agent's tgid). Lets userspace recognise the far end of the agent's own export connection.
pub const CONN_FLAG_OWN: u16 = 1;

/// `TCP_ESTABLISHED` (include/net/tcp_states.h).
pub const TCP_ESTABLISHED: u32 = 1;
/// `TCP_SYN_SENT`.
pub const TCP_SYN_SENT: u32 = 2;
/// `TCP_SYN_RECV`.
pub const TCP_SYN_RECV: u32 = 3;
/// `TCP_CLOSE`.
pub const TCP_CLOSE: u32 = 7;
/// `TCP_LISTEN`.
pub const TCP_LISTEN: u32 = 10;

/// Size of a data record's header in bytes.
pub const DATA_HEADER_BYTES: usize = size_of::<DataEventHeader>();
/// Largest data record: header plus [`MAX_CAPTURE_BYTES`].
pub const MAX_DATA_RECORD_BYTES: usize = DATA_HEADER_BYTES + MAX_CAPTURE_BYTES;

const _: () = assert!(size_of::<DataEventHeader>() == 88);
const _: () = assert!(size_of::<ConnEvent>() == 72);
const _: () = assert!(size_of::<ExecEvent>() == 16);
const _: () = assert!(size_of::<TracepointLayout>() == 64);

#[cfg(feature = "user")]
// SAFETY: plain `#[repr(C)]` integers with explicit padding; every bit pattern is valid.
unsafe impl aya::Pod for TracepointLayout {}
