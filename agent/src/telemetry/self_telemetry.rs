//! The agent's own telemetry, on the same pipes as the RED metrics (OTLP and `/metrics`), with
//! its own resource (`service.name = sonde`): what the kernel side captured and dropped, what the
//! connection table and parsers did, what was exported.
//!
//! `program` is the capture point a kernel counter belongs to: the syscall or TLS function of a
//! data record (`read`, `sendfile64`, `SSL_write`), or `inet_sock_set_state` /
//! `sched_process_exec`. Only counters that are non-zero are reported.
//!
//! Input: a [`Snapshot`] of cumulative counters, published by the capture task on a `watch`
//! channel (latest value wins), plus the exporter's own counters. Output: observable instruments
//! read at each collection.
//!
//! | instrument | kind | attributes |
//! |---|---|---|
//! | `sonde.kernel.records` | counter | `kind`: `data`, `conn`, `exec`; `program` |
//! | `sonde.kernel.dropped` | counter | `reason`: `ringbuf_full`, `read_user_failed`, `inflight_full`, `tls_no_socket`; `program` |
//! | `sonde.kernel.bytes` (`By`) | counter | `kind`: `captured`, `truncated`; `program` |
//! | `sonde.kernel.tls` | counter | `event`: `ciphertext_skipped`, `socket_by_thread`; `program` |
//! | `sonde.ringbuf.utilization` (`1`) | gauge | — |
//! | `sonde.conn.events` | counter | `event`: `opened`, `filtered`, `detected_http1`, `detected_http2`, `opaque`, `seq_gap`, … |
//! | `sonde.parse.errors` | counter | `protocol`: `http1`, `http2`; `reason` (each parser's stats type) |
//! | `sonde.decode.errors` | counter | `reason` |
//! | `sonde.connections` | gauge | — |
//! | `sonde.queue.depth` | gauge | `queue`: `capture_to_export` |
//! | `sonde.spans` | counter | `outcome`: `recorded`, `failed` (before the SDK), `dropped` (export queue full), `exported`, `export_failed` (after retries, or timed out) |

use std::sync::{
    atomic::{AtomicU64, Ordering},
    Arc,
};

use agent_common::stats::Stat;

use crate::{probe::KernelCount, proto::Protocol};
use opentelemetry::{metrics::Meter, KeyValue};
use tokio::sync::watch;

/// Cumulative counters published by the capture task.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Kernel counters (`STATS` map) per program, summed over CPUs; non-zero ones only.
    pub kernel: Vec<KernelCount>,
    /// Peak ring-buffer fill over the last publish period, as a fraction of its size: the most
    /// bytes one drain pass read (it includes records written during the pass, so it errs high).
    pub ring_utilization: f64,
    /// Connection-table counters by name (`conn_opened`, `seq_gap`, …).
    pub conn: Vec<(&'static str, u64)>,
    /// Parser counters by protocol and reason (`hole_in_head`, `hpack_unknown_index`, …).
    pub parse: Vec<(Protocol, &'static str, u64)>,
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
    /// Spans the OTLP collector (or the console) accepted.
    pub spans_exported: AtomicU64,
    /// Spans in batches the OTLP export failed for, after retries (dead or refusing collector),
    /// or that timed out.
    pub spans_export_failed: AtomicU64,
    /// Sampled spans dropped because their process's export queue was full.
    pub spans_dropped: AtomicU64,
    /// RED metrics export requests the OTLP collector accepted.
    pub metric_exports: AtomicU64,
    /// RED metrics export requests that failed after retries (the data stays cumulative in the
    /// table, so the next export carries it).
    pub metric_exports_failed: AtomicU64,
}

/// The `event` label of a connection-table counter: its name without the `conn_` prefix the
/// table's log line uses (`conn_opened` → `opened`; `seq_gap` stays).
fn event_label(name: &'static str) -> &'static str {
    name.strip_prefix("conn_").unwrap_or(name)
}

/// Registers the instruments on `meter`; they read `snapshots` and `export` at each collection.
pub fn register(meter: &Meter, snapshots: watch::Receiver<Snapshot>, export: Arc<ExportCounters>) {
    let kernel = |attr: &'static str, pick: fn(Stat) -> Option<&'static str>| {
        let rx = snapshots.clone();
        move |observer: &dyn opentelemetry::metrics::AsyncInstrument<u64>| {
            for c in &rx.borrow().kernel {
                if let Some(label) = pick(c.stat) {
                    observer.observe(
                        c.value,
                        &[
                            KeyValue::new(attr, label),
                            KeyValue::new("program", c.program),
                        ],
                    );
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
            Stat::InProgressAtAttach => Some("in_progress_at_attach"),
            Stat::OtherCall => Some("other_call"),
            _ => None,
        }))
        .build();
    meter
        .u64_observable_counter("sonde.kernel.skipped")
        .with_description(
            "Socket syscalls the eBPF programs did not send because the agent ignores the \
             connection (filtered, or no protocol claimed it).",
        )
        .with_callback(kernel("reason", |s| match s {
            Stat::SkippedSocket => Some("skipped_socket"),
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
                o.observe(*value, &[KeyValue::new("event", event_label(name))]);
            }
        })
        .build();
    let rx = snapshots.clone();
    meter
        .u64_observable_counter("sonde.parse.errors")
        .with_description("Protocol parser drops and repairs, by protocol and reason.")
        .with_callback(move |o| {
            for (protocol, reason, value) in &rx.borrow().parse {
                o.observe(
                    *value,
                    &[
                        KeyValue::new("protocol", protocol.name()),
                        KeyValue::new("reason", *reason),
                    ],
                );
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
    let rx = snapshots.clone();
    meter
        .f64_observable_gauge("sonde.ringbuf.utilization")
        .with_unit("1")
        .with_description(
            "Peak fill of the kernel ring buffer over the last 5 s, as a fraction of its size.",
        )
        .with_callback(move |o| o.observe(rx.borrow().ring_utilization, &[]))
        .build();
    let rx = snapshots;
    meter
        .u64_observable_gauge("sonde.connections")
        .with_description("Connections tracked.")
        .with_callback(move |o| o.observe(rx.borrow().connections, &[]))
        .build();
    let metrics = Arc::clone(&export);
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
            o.observe(
                export.spans_dropped.load(Ordering::Relaxed),
                &[KeyValue::new("outcome", "dropped")],
            );
        })
        .build();
    meter
        .u64_observable_counter("sonde.metric_exports")
        .with_description("OTLP export requests of the RED metrics, by outcome.")
        .with_callback(move |o| {
            o.observe(
                metrics.metric_exports.load(Ordering::Relaxed),
                &[KeyValue::new("outcome", "exported")],
            );
            o.observe(
                metrics.metric_exports_failed.load(Ordering::Relaxed),
                &[KeyValue::new("outcome", "failed")],
            );
        })
        .build();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conn_event_labels_drop_the_log_prefix() {
        assert_eq!(event_label("conn_opened"), "opened");
        assert_eq!(event_label("conn_detected_http2"), "detected_http2");
        assert_eq!(event_label("seq_gap"), "seq_gap");
    }
}
