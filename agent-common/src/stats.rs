//! Kernel-side counters: every event the programs drop or skip is counted here with its reason,
//! per capture point ([`Program`]).
//!
//! The `STATS` per-CPU array has [`STATS_SLOTS`] entries: slot [`slot`]`(program, stat)` =
//! `program * STAT_COUNT + stat`.

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
    /// A syscall already in progress when the programs were attached moved bytes, but this kernel
    /// cannot read its arguments from the task's saved registers (`bpf_task_pt_regs`, Linux
    /// 5.15+): it was not captured.
    InProgressAtAttach = 11,
    /// Bytes moved on a TCP socket by a call whose arguments the socket-hook capture does not
    /// read (`sendmmsg`, `recvmmsg`, `splice`, io_uring, 32-bit syscalls): no record was sent.
    OtherCall = 12,
    /// Socket syscalls not sent because userspace marked the socket skipped
    /// ([`crate::limits::SKIP_SOCKET`]: ignored or opaque connection).
    SkippedSocket = 13,
}

/// Number of [`Stat`] slots in the `STATS` map.
pub const STAT_COUNT: u32 = 14;

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
        Stat::InProgressAtAttach,
        Stat::OtherCall,
        Stat::SkippedSocket,
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
            Stat::InProgressAtAttach => "in_progress_at_attach",
            Stat::OtherCall => "other_call",
            Stat::SkippedSocket => "skipped_socket",
        }
    }
}

/// The capture point a counter belongs to: the hook whose record was written, dropped or skipped.
///
/// Data records use their [`DataSource`](crate::DataSource) discriminant (1..=11), so a data
/// record's program is `source as u32`; the two lifecycle tracepoints follow.
pub const PROGRAM_INET_SOCK_SET_STATE: u32 = 12;
/// `sched:sched_process_exec`; see [`PROGRAM_INET_SOCK_SET_STATE`].
pub const PROGRAM_SCHED_PROCESS_EXEC: u32 = 13;
/// Number of program ids (0 is unused).
pub const PROGRAM_COUNT: u32 = 14;
/// Number of entries in the `STATS` map.
pub const STATS_SLOTS: u32 = PROGRAM_COUNT * STAT_COUNT;

/// Index of `stat` for `program` in the `STATS` map.
#[inline(always)]
pub const fn slot(program: u32, stat: Stat) -> u32 {
    program * STAT_COUNT + stat as u32
}

/// Stable label of a program id: the syscall or library function (`read`, `SSL_write`) for data
/// records, the tracepoint name otherwise; `None` for ids no program uses.
pub fn program_name(program: u32) -> Option<&'static str> {
    match program {
        PROGRAM_INET_SOCK_SET_STATE => Some("inet_sock_set_state"),
        PROGRAM_SCHED_PROCESS_EXEC => Some("sched_process_exec"),
        other => crate::DataSource::try_from(other).ok().map(|s| s.name()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_slot_is_in_range_and_named_programs_are_distinct() {
        let mut names = [""; PROGRAM_COUNT as usize];
        for p in 1..PROGRAM_COUNT {
            names[p as usize] = program_name(p).expect("every id but 0 is a program");
            assert!(slot(p, Stat::TlsSocketByThread) < STATS_SLOTS);
        }
        for (i, a) in names.iter().enumerate().skip(1) {
            assert!(!names[i + 1..].contains(a), "{a} twice");
        }
        assert_eq!(program_name(0), None);
        assert_eq!(program_name(PROGRAM_COUNT), None);
    }
}
