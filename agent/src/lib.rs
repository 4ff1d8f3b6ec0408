//! Sonde's userspace daemon.
//!
//! # Data flow
//! ```text
//! probe (load/attach) → ringbuf (decode) → conn (table, reassembly by sk)
//!   → proto::http1 (sans-IO tracker) → exchange → telemetry (span, export) → OTLP / stdout
//! ```
//! # Layout
//! - [`config`]: CLI and environment → typed [`config::Config`].
//! - [`pipeline`]: spawns the stages and wires their channels.
//! - [`probe`]: eBPF object loading, tracefs, attach table.
//! - [`ringbuf`]: ring-buffer record decoding.
//! - [`conn`]: connection table keyed by `sk`; role/tuple resolution.
//! - [`proto`]: protocol parsers (no I/O).
//! - [`exchange`]: the protocol-independent exchange type.
//! - [`enrich`]: process metadata.
//! - [`route`]: request path → low-cardinality route template (`http.route`, span names).
//! - [`telemetry`]: spans and their export.

pub mod config;
pub mod conn;
pub mod enrich;
pub mod exchange;
pub mod pipeline;
pub mod probe;
pub mod proto;
pub mod ringbuf;
pub mod route;
pub mod telemetry;

pub use pipeline::{run, RunError};
