//! The only module that knows the graph of stages.
//!
//! ```text
//!  kernel ──EVENTS ring buffer──▶ capture task ──capture_to_export (bounded)──▶ export task ──▶ OTLP / stdout
//!                                 (ringbuf::decode,                              (telemetry::export:
//!                                  conn::ConnTable,                               span per exchange,
//!                                  proto::http1)                                  provider per process)
//! ```
//! Drop policy: `capture_to_export` is bounded; when it is full the capture task waits, the ring
//! buffer fills, and the kernel drops (and counts, `ringbuf_full`) new records rather than ever
//! slowing the traced applications. Shutdown: stop signal → the capture task drains what is in the
//! ring and finishes → the channel closes → the export task flushes every provider.

use std::{
    collections::HashMap,
    future::Future,
    time::{Duration, Instant},
};

use aya::maps::{MapData, MapError, RingBuf};
use tokio::{
    io::{unix::AsyncFd, Interest},
    sync::{mpsc, watch},
};

use crate::{
    config::Config,
    conn::{ConnTable, Observed},
    probe::{
        self,
        tls_attach::{self, TlsAttacher},
        KernelCount, KernelStats, LoadParams, SocketCapture,
    },
    ringbuf::{self, Record},
    route::{RouteConfig, Router},
    telemetry::{
        clock::Clock,
        export::Exporter,
        scrape::{self, ScrapeRequest},
        self_telemetry::Snapshot,
    },
};

/// Why the agent stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Loading or attaching the eBPF programs failed.
    #[error(transparent)]
    Load(#[from] probe::LoadError),
    /// The exporter could not be set up.
    #[error(transparent)]
    Export(#[from] crate::telemetry::export::ExportError),
    /// The ring buffer fd could not be registered with the runtime.
    #[error("cannot poll the ring buffer")]
    Poll(#[source] std::io::Error),
    /// The Prometheus endpoint's address could not be bound.
    #[error("cannot listen on `{addr}` for the Prometheus endpoint")]
    Bind {
        /// `--prometheus-listen`.
        addr: std::net::SocketAddr,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The TLS discovery thread could not be started.
    #[error("cannot start the TLS discovery thread")]
    Thread(#[source] std::io::Error),
}

/// Batches of exchanges sent from capture to export at once.
const CAPTURE_TO_EXPORT_BATCHES: usize = 256;
/// Period at which the ring buffer is drained without a wakeup (records only wake the reader once
/// an eighth of the ring is full, see `GLOBAL_WAKEUP_BYTES`). Bounds span latency, not loss.
const DRAIN_PERIOD: Duration = Duration::from_millis(50);
/// Period of table maintenance (idle connections, stats).
const MAINTENANCE_PERIOD: Duration = Duration::from_secs(5);

/// What the probes are loaded with, from the configuration.
pub fn load_params(config: &Config) -> LoadParams {
    LoadParams {
        self_tgid: std::process::id(),
        capture_bytes: config.capture_bytes,
        ring_buffer_bytes: config.ring_buffer_bytes,
        object: config.ebpf_object.clone(),
        tls: config.tls,
        capture: config.capture,
        floor: config.floor,
    }
}

/// Runs the agent until `shutdown` resolves.
///
/// # Errors
/// [`RunError`] when the probes or the exporter cannot be set up.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), RunError> {
    let clock = Clock::sample();
    let probes = probe::load(&load_params(&config))?;
    let (programs, events, kernel_stats, socket_capture, tls_loaded) = probes.split();
    // TLS libraries already mapped are attached before reporting ready; later ones by the thread.
    let mut attacher = TlsAttacher::new(programs, tls_loaded);
    tokio::task::block_in_place(|| attacher.scan(None));
    let (exec_tx, exec_rx) = std::sync::mpsc::channel();
    let tls_thread = tls_attach::spawn(attacher, exec_rx).map_err(RunError::Thread)?;
    let (snapshot_tx, snapshot_rx) = watch::channel(Snapshot::default());
    let exporter = Exporter::new(
        config.export.clone(),
        config.prometheus_listen.is_some(),
        config.span_queue,
        Router::new(config.routes.clone(), RouteConfig::default()),
        config.host_name.clone(),
        clock,
        snapshot_rx,
    )?;
    let scrape_listener = match config.prometheus_listen {
        Some(addr) => Some((
            scrape::bind(addr)
                .await
                .map_err(|source| RunError::Bind { addr, source })?,
            addr,
        )),
        None => None,
    };
    // SAFETY: the ring buffer map owns its fd, which stays open and unchanged for as long as the
    // `AsyncFd` owns the map.
    let ring = unsafe { AsyncFd::register_with_interest(events, Interest::READABLE) }
        .map_err(|e| RunError::Poll(e.into()))?;

    let (capture_to_export, export_rx) = mpsc::channel(CAPTURE_TO_EXPORT_BATCHES);
    let (stop_tx, stop_rx) = watch::channel(false);
    let table = ConnTable::new(config.selection.clone(), config.conn_idle_timeout);
    let capture = tokio::spawn(capture_task(Capture {
        ring,
        kernel_stats,
        socket_capture,
        snapshots: snapshot_tx,
        execs: exec_tx,
        table,
        capture_to_export,
        stop: stop_rx,
        stats_interval: config.stats_interval,
        ring_bytes: config.ring_buffer_bytes,
    }));
    let mut exporter = exporter;
    if config.summary_interval.is_some() {
        exporter.enable_summary();
    }
    let (scrape_tx, scrape_rx) = mpsc::channel(8);
    let export = tokio::spawn(export_task(
        export_rx,
        scrape_rx,
        exporter,
        config.conn_idle_timeout,
        config.summary_interval,
    ));
    if let Some((listener, addr)) = scrape_listener {
        tracing::info!(%addr, "serving Prometheus metrics at /metrics");
        tokio::spawn(scrape::serve(listener, scrape_tx, stop_tx.subscribe()));
    } else {
        drop(scrape_tx);
    }
    match &config.export {
        crate::config::Export::Console => tracing::info!("capture ready; printing spans on stdout"),
        crate::config::Export::Otlp {
            endpoint, protocol, ..
        } => {
            tracing::info!(%endpoint, ?protocol, "capture ready; exporting OTLP");
        }
    }

    shutdown.await;
    tracing::info!("shutting down: draining the ring buffer and flushing spans");
    let _ = stop_tx.send(true);
    if let Err(e) = capture.await {
        tracing::error!(error = %e, "capture task failed");
    }
    if let Err(e) = export.await {
        tracing::error!(error = %e, "export task failed");
    }
    // The capture task dropped the exec sender, so the TLS thread has ended; dropping what it
    // returns detaches every program.
    match tokio::task::spawn_blocking(move || tls_thread.join()).await {
        Ok(Ok(attacher)) => {
            let s = attacher.stats();
            tracing::info!(attached = s.attached, skipped = ?s.skipped, "TLS discovery stats");
        }
        _ => tracing::error!("TLS discovery thread failed"),
    }
    Ok(())
}

/// Counts of records the capture task could not decode, by reason.
#[derive(Default)]
struct CaptureStats {
    records: u64,
    decode_errors: HashMap<&'static str, u64>,
    /// Most ring-buffer bytes read in one drain pass since the last publish.
    pass_bytes_peak: u64,
    /// Per-socket capture sizes the kernel map refused (`sonde.conn.events{event=
    /// "socket_capture_failed"}`): those sockets keep the global capture size.
    socket_capture_failed: u64,
}

/// Ring-buffer bytes a record of `len` bytes occupies: an 8-byte header, rounded up to 8
/// (`kernel/bpf/ringbuf.c`, `BPF_RINGBUF_HDR_SZ`).
fn ring_footprint(len: usize) -> u64 {
    (len as u64 + 8).div_ceil(8) * 8
}

/// Reads every record currently in the ring buffer into the table.
fn drain(
    ring: &mut RingBuf<MapData>,
    table: &mut ConnTable,
    stats: &mut CaptureStats,
    execs: &std::sync::mpsc::Sender<u32>,
    out: &mut Vec<Observed>,
) {
    let now = Instant::now();
    let mut pass_bytes = 0;
    while let Some(item) = ring.next() {
        stats.records += 1;
        pass_bytes += ring_footprint(item.len());
        match ringbuf::decode(&item) {
            Ok(Record::Data(d)) => table.on_data(&d, now, out),
            Ok(Record::Conn(c)) => table.on_conn_event(&c, now, out),
            // The TLS thread ends only after this task; a send error means it died (logged there).
            Ok(Record::Exec(e)) => {
                table.on_exec(e.tgid, now);
                let _ = execs.send(e.tgid);
            }
            Err(e) => *stats.decode_errors.entry(e.reason()).or_default() += 1,
        }
    }
    stats.pass_bytes_peak = stats.pass_bytes_peak.max(pass_bytes);
}

/// What the capture task owns and talks to.
struct Capture {
    /// The kernel's records.
    ring: AsyncFd<RingBuf<MapData>>,
    /// The kernel's counters.
    kernel_stats: KernelStats,
    /// The kernel's per-socket capture sizes (set from the table's requests).
    socket_capture: SocketCapture,
    /// Where cumulative counters are published for the self-telemetry.
    snapshots: watch::Sender<Snapshot>,
    /// Exec'd tgids, for the TLS discovery thread.
    execs: std::sync::mpsc::Sender<u32>,
    /// The connection table (owned here only).
    table: ConnTable,
    /// Completed exchanges, to the export task.
    capture_to_export: mpsc::Sender<Vec<Observed>>,
    /// Shutdown signal.
    stop: watch::Receiver<bool>,
    /// Period of the stats log line.
    stats_interval: Option<Duration>,
    /// Size of the ring buffer, bytes.
    ring_bytes: u32,
}

async fn capture_task(c: Capture) {
    let Capture {
        mut ring,
        kernel_stats,
        mut socket_capture,
        snapshots,
        execs,
        mut table,
        capture_to_export,
        mut stop,
        stats_interval,
        ring_bytes,
    } = c;
    let mut stats = CaptureStats::default();
    let mut maintenance = tokio::time::interval(MAINTENANCE_PERIOD);
    let mut drain_tick = tokio::time::interval(DRAIN_PERIOD);
    drain_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_stats_log = Instant::now();
    loop {
        let mut out = Vec::new();
        tokio::select! {
            guard = ring.readable_mut() => {
                let mut guard = match guard {
                    Ok(g) => g,
                    Err(e) => {
                        tracing::error!(error = %e, "ring buffer polling failed; capture stops");
                        break;
                    }
                };
                drain(guard.get_inner_mut(), &mut table, &mut stats, &execs, &mut out);
                guard.clear_ready();
            }
            _ = drain_tick.tick() => drain(ring.get_mut(), &mut table, &mut stats, &execs, &mut out),
            _ = maintenance.tick() => {
                let now = Instant::now();
                table.gc(now);
                let kernel = kernel_stats.read_stats();
                if stats_interval.is_some_and(|i| now.duration_since(last_stats_log) >= i) {
                    last_stats_log = now;
                    log_stats(&kernel, &table, &stats);
                }
                publish(&snapshots, kernel, &table, &mut stats, &capture_to_export, ring_bytes);
            }
            _ = stop.changed() => {
                drain(ring.get_mut(), &mut table, &mut stats, &execs, &mut out);
                if !out.is_empty() {
                    let _ = capture_to_export.send(out).await;
                }
                let kernel = kernel_stats.read_stats();
                log_stats(&kernel, &table, &stats);
                publish(&snapshots, kernel, &table, &mut stats, &capture_to_export, ring_bytes);
                break;
            }
        }
        for (sk, bytes) in table.take_capture_requests() {
            if let Err(e) = socket_capture.set(sk, bytes) {
                stats.socket_capture_failed += 1;
                tracing::debug!(error = %e, sk, "per-socket capture size not applied");
            }
        }
        if !out.is_empty() && capture_to_export.send(out).await.is_err() {
            break;
        }
    }
}

/// Publishes the cumulative counters for the self-telemetry (latest value wins).
/// `kernel`: the kernel counters read once for this publish (and the log line beside it).
fn publish(
    snapshots: &watch::Sender<Snapshot>,
    kernel: Result<Vec<KernelCount>, MapError>,
    table: &ConnTable,
    stats: &mut CaptureStats,
    capture_to_export: &mpsc::Sender<Vec<Observed>>,
    ring_bytes: u32,
) {
    let ring_utilization =
        std::mem::take(&mut stats.pass_bytes_peak) as f64 / f64::from(ring_bytes);
    let _ = snapshots.send(Snapshot {
        ring_utilization: ring_utilization.min(1.0),
        capture_to_export_depth: (capture_to_export.max_capacity() - capture_to_export.capacity())
            as u64,
        kernel: kernel.unwrap_or_default(),
        conn: table
            .stats()
            .counters
            .iter()
            .map(|(k, v)| (*k, *v))
            .chain(
                (stats.socket_capture_failed > 0)
                    .then_some(("socket_capture_failed", stats.socket_capture_failed)),
            )
            .collect(),
        parse: table
            .stats()
            .parse
            .iter()
            .map(|((protocol, reason), v)| (*protocol, *reason, *v))
            .collect(),
        decode_errors: stats.decode_errors.iter().map(|(k, v)| (*k, *v)).collect(),
        connections: table.len() as u64,
    });
}

fn log_stats(kernel: &Result<Vec<KernelCount>, MapError>, table: &ConnTable, stats: &CaptureStats) {
    let kernel = kernel
        .as_ref()
        .map(|counts| {
            agent_common::stats::Stat::ALL
                .iter()
                .map(|&s| {
                    let n: u64 = counts.iter().filter(|c| c.stat == s).map(|c| c.value).sum();
                    format!("{}={n}", s.name())
                })
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_else(|e| format!("unreadable ({e})"));
    let mut conn: Vec<_> = table
        .stats()
        .counters
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .chain(
            table
                .stats()
                .parse
                .iter()
                .map(|((p, k), v)| format!("{}.{k}={v}", p.name())),
        )
        .collect();
    conn.sort();
    let mut decode: Vec<_> = stats
        .decode_errors
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    decode.sort();
    tracing::info!(
        records = stats.records,
        connections = table.len(),
        "stats: kernel[{kernel}] conn[{}] decode_errors[{}]",
        conn.join(" "),
        decode.join(" ")
    );
}

async fn export_task(
    mut rx: mpsc::Receiver<Vec<Observed>>,
    mut scrapes: mpsc::Receiver<ScrapeRequest>,
    mut exporter: Exporter,
    idle: Duration,
    summary_interval: Option<Duration>,
) {
    let mut summary_tick =
        tokio::time::interval(summary_interval.unwrap_or(Duration::from_secs(3600)));
    summary_tick.tick().await;
    let mut summary_since = Instant::now();
    let mut maintenance = tokio::time::interval(MAINTENANCE_PERIOD);
    let mut metrics_tick = tokio::time::interval(exporter.metrics_interval());
    metrics_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    metrics_tick.tick().await;
    let mut errors = 0u64;
    loop {
        tokio::select! {
            batch = rx.recv() => {
                let Some(batch) = batch else { break };
                let now = Instant::now();
                for obs in batch {
                    if let Err(e) = exporter.record(obs, now) {
                        exporter.count_failed_span();
                        errors += 1;
                        if errors == 1 || errors.is_power_of_two() {
                            tracing::warn!(error = %e, errors, "span dropped");
                        }
                    }
                }
            }
            _ = maintenance.tick() => exporter.gc(Instant::now(), idle).await,
            _ = metrics_tick.tick() => {
                // Detached: the export task never waits for the collector.
                let _ = exporter.export_metrics();
            }
            Some(reply) = scrapes.recv() => {
                let _ = reply.send(exporter.render_prometheus());
            }
            _ = summary_tick.tick(), if summary_interval.is_some() => {
                let now = Instant::now();
                if let Some(table) = exporter.take_summary(now.duration_since(summary_since)) {
                    use std::io::Write as _;
                    let mut out = std::io::stdout().lock();
                    // A closed stdout must not stop the agent.
                    let _ = out.write_all(table.as_bytes()).and_then(|()| out.flush());
                }
                summary_since = now;
            }
        }
    }
    tracing::info!(
        spans = exporter.spans_recorded(),
        services = exporter.services(),
        "flushing spans"
    );
    exporter.shutdown().await;
}
