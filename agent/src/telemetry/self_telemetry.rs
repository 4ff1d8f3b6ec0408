//! The agent's own telemetry, on the same pipes as the RED metrics (OTLP and `/metrics`), with
//! its own resource (`service.name = sonde`): what the kernel side captured and dropped, what the
//! connection table and parsers did, what was exported.
//!
//! Input: a [`Snapshot`] of cumulative counters, published by the capture task on a `watch`
//! channel (latest value wins), plus the exporter's own counters. Output: observable instruments
//! read at each collection.
//!
//! | instrument | kind | attributes |
//! |---|---|---|
//! | `sonde.kernel.records` | counter | `kind`: `data`, `conn`, `exec` |
//! | `sonde.kernel.dropped` | counter | `reason`: `ringbuf_full`, `read_user_failed`, `inflight_full`, `tls_no_socket` |
//! | `sonde.kernel.bytes` (`By`) | counter | `kind`: `captured`, `truncated` |
//! | `sonde.kernel.tls` | counter | `event`: `ciphertext_skipped`, `socket_by_thread` |
//! | `sonde.conn.events` | counter | `event`: `opened`, `filtered`, `not_http`, `seq_gap`, … |
//! | `sonde.parse.errors` | counter | `protocol`, `reason` |
//! | `sonde.decode.errors` | counter | `reason` |
//! | `sonde.connections` | gauge | — |
//! | `sonde.queue.depth` | gauge | `queue`: `capture_to_export` |
//! | `sonde.spans` | counter | `outcome`: `recorded`, `failed` (before the SDK), `exported`, `export_failed` (OTLP, after retries) |

use std::sync::{
    atomic::{AtomicU64, Ordering},
    Arc,
};

use agent_common::stats::Stat;
use opentelemetry::{metrics::Meter, KeyValue};
use tokio::sync::watch;

/// Cumulative counters published by the capture task.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Kernel counters (`STATS` map), summed over CPUs.
    pub kernel: Vec<(Stat, u64)>,
    /// Connection-table and parser counters by name (`conn_opened`, `hole_in_head`, …).
    pub conn: Vec<(&'static str, u64)>,
    /// Ring-buffer records that could not be decoded, by reason.
    pub decode_errors: Vec<(&'static str, u64)>,
    /// Connections currently in the table.
    pub connections: u64,
    /// Batches waiting in the capture → export channel.
    pub capture_to_export_depth: u64,
}

/// Counters the export task keeps.
#[derive(Debug, Default)]
pub struct ExportCounters {
    /// Spans handed to the SDK.
    pub spans_recorded: AtomicU64,
    /// Spans dropped because their process's exporter could not be built.
    pub spans_failed: AtomicU64,
    /// Spans the OTLP collector accepted.
    pub spans_exported: AtomicU64,
    /// Spans in batches the OTLP export failed for, after retries (dead or refusing collector).
    pub spans_export_failed: AtomicU64,
}

/// Where a connection-table counter goes: `sonde.conn.events{event}` for the table's own,
/// `sonde.parse.errors{protocol="http1",reason}` for the HTTP/1 tracker's.
fn classify(name: &'static str) -> (bool, &'static str) {
    match name.strip_prefix("conn_") {
        Some(event) => (true, event),
        None if matches!(name, "seq_gap" | "data_after_close") => (true, name),
        None => (false, name),
    }
}

/// Registers the instruments on `meter`; they read `snapshots` and `export` at each collection.
pub fn register(meter: &Meter, snapshots: watch::Receiver<Snapshot>, export: Arc<ExportCounters>) {
    let kernel = |attr: &'static str, pick: fn(Stat) -> Option<&'static str>| {
        let rx = snapshots.clone();
        move |observer: &dyn opentelemetry::metrics::AsyncInstrument<u64>| {
            for (stat, value) in &rx.borrow().kernel {
                if let Some(label) = pick(*stat) {
                    observer.observe(*value, &[KeyValue::new(attr, label)]);
                }
            }
        }
    };
    meter
        .u64_observable_counter("sonde.kernel.records")
        .with_description("Records the eBPF programs wrote to the ring buffer.")
        .with_callback(kernel("kind", |s| match s {
            Stat::DataEvents => Some("data"),
            Stat::ConnEvents => Some("conn"),
            Stat::ExecEvents => Some("exec"),
            _ => None,
        }))
        .build();
    meter
        .u64_observable_counter("sonde.kernel.dropped")
        .with_description("Records the eBPF programs could not deliver, by reason.")
        .with_callback(kernel("reason", |s| match s {
            Stat::RingbufFull => Some("ringbuf_full"),
            Stat::ReadUserFailed => Some("read_user_failed"),
            Stat::InflightFull => Some("inflight_full"),
            Stat::TlsNoSocket => Some("tls_no_socket"),
            _ => None,
        }))
        .build();
    meter
        .u64_observable_counter("sonde.kernel.bytes")
        .with_unit("By")
        .with_description("Payload bytes copied, and bytes accounted by length only.")
        .with_callback(kernel("kind", |s| match s {
            Stat::BytesCaptured => Some("captured"),
            Stat::BytesTruncated => Some("truncated"),
            _ => None,
        }))
        .build();
    meter
        .u64_observable_counter("sonde.kernel.tls")
        .with_description("TLS bookkeeping in the kernel programs.")
        .with_callback(kernel("event", |s| match s {
            Stat::TlsCiphertextSkipped => Some("ciphertext_skipped"),
            Stat::TlsSocketByThread => Some("socket_by_thread"),
            _ => None,
        }))
        .build();
    let rx = snapshots.clone();
    meter
        .u64_observable_counter("sonde.conn.events")
        .with_description("Connection-table events, by kind.")
        .with_callback(move |o| {
            for (name, value) in &rx.borrow().conn {
                if let (true, event) = classify(name) {
                    o.observe(*value, &[KeyValue::new("event", event)]);
                }
            }
        })
        .build();
    let rx = snapshots.clone();
    meter
        .u64_observable_counter("sonde.parse.errors")
        .with_description("Protocol parser drops and repairs, by protocol and reason.")
        .with_callback(move |o| {
            for (name, value) in &rx.borrow().conn {
                if let (false, reason) = classify(name) {
                    o.observe(
                        *value,
                        &[
                            KeyValue::new("protocol", "http1"),
                            KeyValue::new("reason", reason),
                        ],
                    );
                }
            }
        })
        .build();
    let rx = snapshots.clone();
    meter
        .u64_observable_counter("sonde.decode.errors")
        .with_description("Ring-buffer records that could not be decoded, by reason.")
        .with_callback(move |o| {
            for (reason, value) in &rx.borrow().decode_errors {
                o.observe(*value, &[KeyValue::new("reason", *reason)]);
            }
        })
        .build();
    let rx = snapshots.clone();
    meter
        .u64_observable_gauge("sonde.queue.depth")
        .with_description("Items waiting between pipeline stages.")
        .with_callback(move |o| {
            o.observe(
                rx.borrow().capture_to_export_depth,
                &[KeyValue::new("queue", "capture_to_export")],
            );
        })
        .build();
    let rx = snapshots;
    meter
        .u64_observable_gauge("sonde.connections")
        .with_description("Connections tracked.")
        .with_callback(move |o| o.observe(rx.borrow().connections, &[]))
        .build();
    meter
        .u64_observable_counter("sonde.spans")
        .with_description("Spans handed to the SDK, or dropped before it.")
        .with_callback(move |o| {
            o.observe(
                export.spans_recorded.load(Ordering::Relaxed),
                &[KeyValue::new("outcome", "recorded")],
            );
            o.observe(
                export.spans_failed.load(Ordering::Relaxed),
                &[KeyValue::new("outcome", "failed")],
            );
            o.observe(
                export.spans_exported.load(Ordering::Relaxed),
                &[KeyValue::new("outcome", "exported")],
            );
            o.observe(
                export.spans_export_failed.load(Ordering::Relaxed),
                &[KeyValue::new("outcome", "export_failed")],
            );
        })
        .build();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conn_counters_are_split_between_table_and_parser() {
        assert_eq!(classify("conn_opened"), (true, "opened"));
        assert_eq!(classify("seq_gap"), (true, "seq_gap"));
        assert_eq!(classify("hole_in_head"), (false, "hole_in_head"));
    }
}
