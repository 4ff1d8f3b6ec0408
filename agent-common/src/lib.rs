//! Types that cross the kernel/user boundary, defined once for both sides.
//!
//! The eBPF programs in `agent-ebpf` write these `#[repr(C)]` records into the `EVENTS` ring buffer; the
//! daemon in `agent` decodes them with `TryFrom` (never by transmuting bytes into enums). Every record
//! starts with a `u32` [`EventKind`]. Sizes are checked at compile time so both sides agree.
#![no_std]

pub mod event;
pub mod limits;
pub mod names;
pub mod stats;

pub use event::{
    ConnEvent, DataEventHeader, DataSource, Direction, EventKind, ExecEvent, TracepointLayout,
};
