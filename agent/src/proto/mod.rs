//! Sans-IO protocol parsers: bytes in, exchanges out. No tokio, no clock, no OS state here;
//! timestamps arrive as arguments so every parser is unit-testable from bytes.

pub mod http1;

/// One syscall's worth of bytes in one direction of a connection.
///
/// # Units
/// `start_ns`/`end_ns`: the syscall's entry/exit, `CLOCK_MONOTONIC` nanoseconds.
/// `len`: bytes the syscall moved; only the first `data.len()` (`<= len`) were captured. The rest,
/// `len - data.len()`, is a hole of known size: it counts for framing (body lengths) but its content
/// is unknown.
#[derive(Clone, Copy, Debug)]
pub struct Chunk<'a> {
    /// Syscall entry time.
    pub start_ns: u64,
    /// Syscall exit time.
    pub end_ns: u64,
    /// Captured prefix of the payload.
    pub data: &'a [u8],
    /// Total payload length.
    pub len: u64,
}
