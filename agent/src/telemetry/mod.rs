//! Exchanges → OpenTelemetry spans, and their export.
//!
//! - [`semconv`]: the only place attribute keys are spelled.
//! - [`clock`]: kernel monotonic time → wall-clock time, converted once here.
//! - [`span`]: the pure mapping from an [`crate::exchange::Exchange`] to span fields (HTTP family);
//!   [`rpc`]: the RPC family's names, attributes and status rule.
//! - [`metrics`]: the RED histograms each exchange is recorded in (Sonde's own table per process);
//!   [`metrics_export`]: their OTLP export.
//! - [`prometheus`]: their Prometheus text exposition; [`scrape`]: the HTTP endpoint serving it.
//! - [`self_telemetry`]: the agent's own counters, on the same pipes.
//! - [`summary`]: the console's periodic RED table.
//! - [`console`]: the one-line-per-span stdout exporter used when no OTLP endpoint is set.
//! - [`otlp_encode`]: OTLP trace requests encoded straight from the SDK's span data;
//!   [`otlp_grpc`]: the OTLP/gRPC span exporter that sends them (each batch encoded once).
//! - `span_queue`: the bounded, counted queue in front of each process's batch span processor.
//! - [`tracer`]: span fields → the SDK's `SpanData` (sampler, ids, limits), without its tracer.
//! - [`export`]: one SDK batch span processor per observed process (its own `Resource`), OTLP or
//!   console.

pub mod clock;
pub mod console;
pub mod export;
pub mod metrics;
pub mod metrics_export;
pub mod otlp_encode;
pub mod otlp_grpc;
pub mod prometheus;
pub mod rpc;
pub mod scrape;
pub mod self_telemetry;
pub mod semconv;
pub mod span;
pub(crate) mod span_queue;
pub mod summary;
pub mod tracer;
