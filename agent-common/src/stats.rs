//! Kernel-side counters: every event the programs drop or skip is counted here with its reason.

/// Index into the per-CPU `STATS` array.
///
/// Explicit discriminants; ids are never reused.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stat {
    /// Data records written to the ring buffer.
    DataEvents = 0,
    /// Connection records written to the ring buffer.
    ConnEvents = 1,
    /// A record was lost because the ring buffer was full (the application was not slowed down).
    RingbufFull = 2,
    /// Reading the syscall's user buffer failed (page not resident, bad pointer); the record was
    /// sent with no payload, so the stream keeps its framing.
    ReadUserFailed = 3,
    /// The in-flight syscall table was full; that syscall was not captured.
    InflightFull = 4,
    /// Payload bytes beyond the capture size (accounted by length, not copied).
    BytesTruncated = 5,
    /// Payload bytes copied.
    BytesCaptured = 6,
    /// A TLS call returned data but its socket was never seen (no nested socket syscall yet).
    TlsNoSocket = 7,
    /// Socket records not sent because the socket carries TLS (its plaintext is sent instead).
    TlsCiphertextSkipped = 8,
    /// Exec records written.
    ExecEvents = 9,
    /// A TLS connection whose library does its own socket I/O outside `SSL_read`/`SSL_write`
    /// (memory BIOs, as Node.js does) was tied to the socket last used by the same thread.
    TlsSocketByThread = 10,
}

/// Number of [`Stat`] slots in the `STATS` map.
pub const STAT_COUNT: u32 = 11;

impl Stat {
    /// Every counter, in index order.
    pub const ALL: [Stat; STAT_COUNT as usize] = [
        Stat::DataEvents,
        Stat::ConnEvents,
        Stat::RingbufFull,
        Stat::ReadUserFailed,
        Stat::InflightFull,
        Stat::BytesTruncated,
        Stat::BytesCaptured,
        Stat::TlsNoSocket,
        Stat::TlsCiphertextSkipped,
        Stat::ExecEvents,
        Stat::TlsSocketByThread,
    ];

    /// Stable snake_case name used as the `reason`/`kind` label in self-telemetry.
    pub const fn name(self) -> &'static str {
        match self {
            Stat::DataEvents => "data_events",
            Stat::ConnEvents => "conn_events",
            Stat::RingbufFull => "ringbuf_full",
            Stat::ReadUserFailed => "read_user_failed",
            Stat::InflightFull => "inflight_full",
            Stat::BytesTruncated => "bytes_truncated",
            Stat::BytesCaptured => "bytes_captured",
            Stat::TlsNoSocket => "tls_no_socket",
            Stat::TlsCiphertextSkipped => "tls_ciphertext_skipped",
            Stat::ExecEvents => "exec_events",
            Stat::TlsSocketByThread => "tls_socket_by_thread",
        }
    }
}
