//! Span export through the OpenTelemetry SDK's batch span processor, one per observed process.
//!
//! A batch processor exports with a single `Resource`, and Sonde reports for many processes, each
//! with its own `service.name` and `process.pid`. So each process gets its own processor (created
//! on its first exchange, shut down after `idle` without one), running as a tokio task (not a
//! thread per process), fed the `SpanData` that [`super::tracer::SpanMaker`] makes (no SDK tracer:
//! the spans are finished when they are made). OTLP/gRPC processors share one tonic channel (one
//! HTTP/2 connection to the collector). The SDK reads `OTEL_BSP_*`; `OTEL_TRACES_SAMPLER*` apply
//! through the SDK's sampler.
//!
//! RED metrics: each process also gets its own table ([`super::metrics::RedTable`]), exported
//! every `OTEL_METRIC_EXPORT_INTERVAL` over OTLP ([`super::metrics_export`], in a task of its own),
//! once more when the process goes idle or the agent stops, and rendered on `/metrics`.

use std::{
    collections::HashMap,
    sync::{atomic::Ordering, Arc},
    time::{Duration, Instant, SystemTime},
};

use opentelemetry::{metrics::MeterProvider as _, KeyValue};
use opentelemetry_otlp::{Protocol, WithExportConfig as _, WithTonicConfig as _};
use opentelemetry_sdk::{
    metrics::{periodic_reader_with_async_runtime::PeriodicReader, SdkMeterProvider},
    runtime,
    trace::SpanProcessor as _,
    Resource,
};
use tokio::sync::watch;

use super::{
    clock::Clock,
    console::ConsoleExporter,
    metrics::{RedTable, Sample},
    metrics_export::{self, MetricsExporter, ProcessResource, Temporality},
    otlp_grpc::GrpcSpanExporter,
    prometheus::{self, SharedReader},
    self_telemetry::{self, ExportCounters, Snapshot},
    semconv, span,
    span_queue::{self, SpanQueue},
    summary::Summary,
    tracer::SpanMaker,
};
use crate::{
    config::{Export, OtlpProtocol},
    conn::Observed,
    enrich::process::ProcessInfo,
    exchange::{ExchangeKind, Role},
    route::{Route, Router},
};

/// Why the exporter could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The OTLP endpoint is not a valid URI.
    #[error("invalid OTLP endpoint `{endpoint}`")]
    Endpoint {
        /// The configured endpoint.
        endpoint: String,
        /// Cause.
        #[source]
        source: tonic::transport::Error,
    },
    /// The SDK refused the exporter configuration.
    #[error("cannot build the OTLP exporter")]
    Build(#[source] opentelemetry_otlp::ExporterBuildError),
}

struct Service {
    /// The bounded batch span processor ([`span_queue::processor`]) exporting with this
    /// process's resource.
    processor: SpanQueue,
    /// RED metrics of this process (when exported over OTLP or to Prometheus).
    red: Option<Red>,
    last_used: Instant,
}

/// A process's RED table with its resource in the two forms its readers need.
struct Red {
    table: RedTable,
    /// For the Prometheus exposition (`job`, `instance`, `target_info`).
    resource: Resource,
    /// For OTLP.
    otlp_resource: ProcessResource,
}

/// The agent's own meters (self-telemetry, through the SDK).
struct Meters {
    provider: SdkMeterProvider,
    /// Pull reader for `/metrics`, with the resource it reports.
    scrape: Option<(Resource, SharedReader)>,
}

/// Turns [`Observed`] exchanges into exported spans and metrics. Owned by the export task.
pub struct Exporter {
    export: Export,
    channel: Option<tonic::transport::Channel>,
    metrics_channel: Option<tonic::transport::Channel>,
    prometheus: bool,
    /// Span queue size per process (`OTEL_BSP_MAX_QUEUE_SIZE` or Sonde's default).
    span_queue: usize,
    /// Routes of server exchanges, per process (keyed by tgid).
    router: Router,
    host_name: String,
    clock: Clock,
    services: HashMap<Arc<ProcessInfo>, Service>,
    /// The agent's own meters (self-telemetry), when metrics are exported.
    agent: Option<Meters>,
    /// Where RED metrics go over OTLP, if they do.
    metrics_exporter: Option<MetricsExporter>,
    /// RED export period (`OTEL_METRIC_EXPORT_INTERVAL`).
    metrics_interval: Duration,
    /// RED export temporality (`OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE`).
    temporality: Temporality,
    /// Counters the self-telemetry reads.
    counters: Arc<ExportCounters>,
    /// Span fields → exportable spans (sampler, ids, limits from the environment).
    spans: SpanMaker,
    /// The console's RED table (console export only).
    summary: Option<Summary>,
}

impl Exporter {
    /// Prepares the exporter; OTLP connections are opened lazily on first export.
    ///
    /// # Errors
    /// [`ExportError::Endpoint`] for an unparsable gRPC endpoint.
    /// `prometheus`: keep pull readers for the `/metrics` endpoint. `router`: route inference
    /// and configured patterns for span names, `http.route` and metric labels.
    pub fn new(
        export: Export,
        prometheus: bool,
        span_queue: usize,
        router: Router,
        host_name: String,
        clock: Clock,
        snapshots: watch::Receiver<Snapshot>,
    ) -> Result<Self, ExportError> {
        let lazy_channel = |endpoint: &String, timeout: Duration| {
            tonic::transport::Endpoint::from_shared(endpoint.clone())
                .map(|e| e.timeout(timeout).connect_lazy())
                .map_err(|source| ExportError::Endpoint {
                    endpoint: endpoint.clone(),
                    source,
                })
        };
        let (channel, metrics_channel) = match &export {
            Export::Otlp {
                endpoint,
                metrics_endpoint,
                protocol: OtlpProtocol::Grpc,
                timeout,
            } => {
                let traces = lazy_channel(endpoint, *timeout)?;
                let metrics = match metrics_endpoint {
                    Some(m) if m == endpoint => Some(traces.clone()),
                    Some(m) => Some(lazy_channel(m, *timeout)?),
                    None => None,
                };
                (Some(traces), metrics)
            }
            _ => (None, None),
        };
        let metrics_exporter = match (&export, &metrics_channel) {
            (
                Export::Otlp {
                    protocol: OtlpProtocol::Grpc,
                    timeout,
                    ..
                },
                Some(channel),
            ) => Some(MetricsExporter::grpc(channel.clone(), *timeout)),
            (
                Export::Otlp {
                    metrics_endpoint: Some(endpoint),
                    protocol: OtlpProtocol::HttpProtobuf,
                    timeout,
                    ..
                },
                _,
            ) => Some(MetricsExporter::http(endpoint.clone(), *timeout)),
            _ => None,
        };
        let mut exporter = Self {
            export,
            channel,
            metrics_channel,
            metrics_exporter,
            metrics_interval: metrics_export::interval_from_env(),
            temporality: Temporality::from_env(),
            prometheus,
            span_queue,
            router,
            host_name,
            clock,
            services: HashMap::new(),
            agent: None,
            counters: Arc::new(ExportCounters::default()),
            spans: SpanMaker::default(),
            summary: None,
        };
        let me = ProcessInfo::read(std::process::id(), b"sonde\0\0\0\0\0\0\0\0\0\0\0");
        exporter.agent = exporter.new_meter(exporter.resource(&me))?;
        if let Some(agent) = &exporter.agent {
            let meter = agent.provider.meter(semconv::SCOPE_NAME);
            self_telemetry::register(&meter, snapshots, Arc::clone(&exporter.counters));
        }
        Ok(exporter)
    }

    /// Spans recorded so far.
    pub fn spans_recorded(&self) -> u64 {
        self.counters.spans_recorded.load(Ordering::Relaxed)
    }

    /// Number of live per-process span processors.
    pub fn services(&self) -> usize {
        self.services.len()
    }

    fn resource(&self, p: &ProcessInfo) -> Resource {
        let mut attrs = vec![
            KeyValue::new(semconv::PROCESS_PID, i64::from(p.tgid)),
            KeyValue::new(semconv::PROCESS_EXECUTABLE_NAME, p.exe_name.clone()),
            KeyValue::new(semconv::HOST_NAME, self.host_name.clone()),
        ];
        if let Some(path) = &p.exe_path {
            attrs.push(KeyValue::new(
                semconv::PROCESS_EXECUTABLE_PATH,
                path.clone(),
            ));
        }
        Resource::builder()
            .with_service_name(p.exe_name.clone())
            .with_attributes(attrs)
            .build()
    }

    fn new_service(&self, p: &ProcessInfo) -> Result<Service, ExportError> {
        let resource = self.resource(p);
        let mut processor = match &self.export {
            Export::Console => {
                span_queue::processor(ConsoleExporter::default(), self.span_queue, &self.counters)
            }
            Export::Otlp {
                endpoint,
                protocol,
                timeout,
                ..
            } => match (protocol, &self.channel) {
                (OtlpProtocol::Grpc, Some(channel)) => span_queue::processor(
                    GrpcSpanExporter::new(channel.clone(), *timeout),
                    self.span_queue,
                    &self.counters,
                ),
                _ => {
                    let exporter = opentelemetry_otlp::SpanExporter::builder()
                        .with_http()
                        .with_protocol(Protocol::HttpBinary)
                        .with_endpoint(endpoint.clone())
                        .with_timeout(*timeout)
                        .build()
                        .map_err(ExportError::Build)?;
                    span_queue::processor(exporter, self.span_queue, &self.counters)
                }
            },
        };
        // What the SDK's tracer provider does when it is built.
        processor.set_resource(&resource);
        let red = (self.metrics_exporter.is_some() || self.prometheus).then(|| Red {
            table: RedTable::default(),
            otlp_resource: ProcessResource::from(&resource),
            resource,
        });
        Ok(Service {
            processor,
            red,
            last_used: Instant::now(),
        })
    }

    /// The agent's meter provider and scrape reader, when metrics are exported over OTLP and/or
    /// served to Prometheus.
    fn new_meter(&self, resource: Resource) -> Result<Option<Meters>, ExportError> {
        let otlp = match &self.export {
            Export::Otlp {
                metrics_endpoint: Some(endpoint),
                protocol,
                timeout,
                ..
            } => Some((endpoint, protocol, timeout)),
            _ => None,
        };
        if otlp.is_none() && !self.prometheus {
            return Ok(None);
        }
        let mut builder = SdkMeterProvider::builder().with_resource(resource.clone());
        if let Some((endpoint, protocol, timeout)) = otlp {
            let exporter = match (protocol, &self.metrics_channel) {
                (OtlpProtocol::Grpc, Some(channel)) => {
                    opentelemetry_otlp::MetricExporter::builder()
                        .with_tonic()
                        .with_channel(channel.clone())
                        .with_timeout(*timeout)
                        .build()
                }
                _ => opentelemetry_otlp::MetricExporter::builder()
                    .with_http()
                    .with_protocol(Protocol::HttpBinary)
                    .with_endpoint(endpoint.clone())
                    .with_timeout(*timeout)
                    .build(),
            }
            .map_err(ExportError::Build)?;
            // Interval from OTEL_METRIC_EXPORT_INTERVAL (read by the SDK); a tokio task.
            builder =
                builder.with_reader(PeriodicReader::builder(exporter, runtime::Tokio).build());
        }
        let scrape = self.prometheus.then(SharedReader::default);
        if let Some(reader) = &scrape {
            builder = builder.with_reader(reader.clone());
        }
        let provider = builder.build();
        Ok(Some(Meters {
            provider,
            scrape: scrape.map(|r| (resource, r)),
        }))
    }

    /// The Prometheus exposition of every live process's RED metrics and the agent's own.
    pub fn render_prometheus(&self) -> String {
        let tables: Vec<(&Resource, &RedTable)> = if self.prometheus {
            self.services
                .values()
                .filter_map(|s| s.red.as_ref())
                .map(|r| (&r.resource, &r.table))
                .collect()
        } else {
            Vec::new()
        };
        let readers: Vec<_> = self.agent.iter().filter_map(|m| m.scrape.clone()).collect();
        prometheus::render(&tables, &readers)
    }

    /// How often [`Self::export_metrics`] should run.
    pub fn metrics_interval(&self) -> Duration {
        self.metrics_interval
    }

    /// Exports every live process's RED metrics over OTLP (cumulative), in a task of its own so
    /// that the caller never waits for the collector. Nothing happens without an OTLP metrics
    /// endpoint or without data.
    /// Returns the export's task, if one was started.
    pub fn export_metrics(&mut self) -> Option<tokio::task::JoinHandle<()>> {
        let exporter = self.metrics_exporter.as_ref()?;
        let tables = self
            .services
            .values_mut()
            .filter_map(|s| s.red.as_mut())
            .map(|r| (&r.otlp_resource, &mut r.table));
        let body = metrics_export::encode_request(tables, SystemTime::now(), self.temporality);
        spawn_metrics_export(exporter, &self.counters, body)
    }

    /// Records the span of one exchange, consuming it (its strings become attribute values).
    ///
    /// # Errors
    /// [`ExportError`] when a new process's exporter cannot be built (the span is dropped).
    pub fn record(&mut self, obs: Observed, now: Instant) -> Result<(), ExportError> {
        if !self.services.contains_key(&obs.process) {
            let service = self.new_service(&obs.process)?;
            self.services.insert(Arc::clone(&obs.process), service);
        }
        let Some(service) = self.services.get_mut(&obs.process) else {
            return Ok(());
        };
        service.last_used = now;
        let route: Option<Arc<str>> = match (&obs.exchange.kind, obs.exchange.conn.role) {
            (ExchangeKind::Http(http), Role::Server) if !http.path.is_empty() => {
                match self
                    .router
                    .route(u64::from(obs.exchange.conn.tgid), &http.path)
                {
                    Route::Inferred(route) => Some(route),
                    Route::Pattern(pattern) => Some(Arc::from(pattern)),
                    Route::Overflow => None,
                }
            }
            (ExchangeKind::Http(_), _) | (ExchangeKind::Rpc(_), _) => None,
        };
        if let Some(summary) = &mut self.summary {
            let role = obs.exchange.conn.role;
            let (_, kind) = span::span_kind(role);
            let target = match (&obs.exchange.kind, role) {
                (ExchangeKind::Rpc(call), _) => call.method.clone(),
                (ExchangeKind::Http(_), Role::Server) => route.as_deref().unwrap_or("-").to_owned(),
                (ExchangeKind::Http(_), Role::Client) => obs.exchange.conn.peer.to_string(),
            };
            let duration =
                Duration::from_nanos(obs.exchange.end_ns.saturating_sub(obs.exchange.start_ns));
            let error = match &obs.exchange.kind {
                ExchangeKind::Http(http) => span::is_error(role, http.status),
                ExchangeKind::Rpc(call) => super::rpc::is_error(role, call.status),
            };
            summary.record(&obs.process.exe_name, kind, &target, error, duration);
        }
        let sample = Sample::of(&obs.exchange);
        let fields = span::into_fields(obs.exchange, &self.clock, route);
        if let Some(red) = &mut service.red {
            red.table.record(sample, &fields.attributes, fields.end);
        }
        if let Some(span) = self.spans.make(fields) {
            service.processor.on_end(span);
        }
        self.counters.spans_recorded.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Shuts down the span processors of processes idle for `idle` (flushing their spans).
    pub async fn gc(&mut self, now: Instant, idle: Duration) {
        let stale: Vec<_> = self
            .services
            .iter()
            .filter(|(_, s)| now.duration_since(s.last_used) >= idle)
            .map(|(k, _)| Arc::clone(k))
            .collect();
        let mut gone = Vec::new();
        for key in stale {
            if let Some(mut s) = self.services.remove(&key) {
                self.router.forget_service(u64::from(key.tgid));
                gone.extend(s.red.take());
                shutdown(s).await;
            }
        }
        // Their last totals, since the previous periodic export.
        if let Some(exporter) = &self.metrics_exporter {
            let body = metrics_export::encode_request(
                gone.iter_mut().map(|r| (&r.otlp_resource, &mut r.table)),
                SystemTime::now(),
                self.temporality,
            );
            spawn_metrics_export(exporter, &self.counters, body);
        }
    }

    /// Keeps the console's RED table (`--summary-interval-secs`).
    pub fn enable_summary(&mut self) {
        self.summary = Some(Summary::default());
    }

    /// The RED table of the interval that just ended (`elapsed` long), if anything happened.
    pub fn take_summary(&mut self, elapsed: Duration) -> Option<String> {
        let s = self.summary.as_mut()?;
        (!s.is_empty()).then(|| s.take_table(elapsed))
    }

    /// Counts a span dropped before reaching the SDK.
    pub fn count_failed_span(&self) {
        self.counters.spans_failed.fetch_add(1, Ordering::Relaxed);
    }

    /// Flushes and shuts down every span processor, and exports the RED metrics one last time.
    pub async fn shutdown(mut self) {
        if let Some(last) = self.export_metrics() {
            let _ = last.await;
        }
        if let Some(agent) = self.agent.take() {
            let _ = tokio::task::spawn_blocking(move || agent.provider.shutdown()).await;
        }
        for (_, s) in self.services.drain() {
            shutdown(s).await;
        }
    }
}

/// Sends an encoded RED metrics request (if any) in a task of its own, counting the outcome.
fn spawn_metrics_export(
    exporter: &MetricsExporter,
    counters: &Arc<ExportCounters>,
    body: Option<Vec<u8>>,
) -> Option<tokio::task::JoinHandle<()>> {
    let body = body?;
    let exporter = exporter.clone();
    let counters = Arc::clone(counters);
    Some(tokio::spawn(async move {
        match exporter.export(body).await {
            Ok(()) => {
                counters.metric_exports.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                let failed = counters
                    .metric_exports_failed
                    .fetch_add(1, Ordering::Relaxed)
                    + 1;
                if failed == 1 || failed.is_power_of_two() {
                    tracing::warn!(error = %e, failed, "RED metrics export failed");
                }
            }
        }
    }))
}

/// The SDK's shutdown blocks the calling thread until the batch task answers, so it runs on the
/// blocking pool while the batch and reader tasks keep running on the runtime. Metrics are
/// collected and exported one last time.
async fn shutdown(service: Service) {
    let Service { processor, .. } = service;
    match tokio::task::spawn_blocking(move || processor.shutdown()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "span processor shutdown failed; unexported spans were lost");
        }
        Err(e) => tracing::warn!(error = %e, "provider shutdown task failed"),
    }
}
