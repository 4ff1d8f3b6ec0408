//! OTLP export of the RED tables ([`super::metrics`]): one `ExportMetricsServiceRequest`
//! (`opentelemetry/proto/collector/metrics/v1/metrics_service.proto`) per interval with a
//! `ResourceMetrics` per process (its own resource, scope `sonde`), cumulative explicit-bucket
//! histograms with min and max (delta with `OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE`
//! `delta` or `lowmemory`).
//!
//! Transport: OTLP/gRPC on the tonic channel the span export uses (`MetricsService/Export`,
//! retried as [`super::otlp_grpc::export`] does), or OTLP/HTTP (`POST` of
//! `application/x-protobuf` to the metrics URL, retried on 429, 502, 503 and 504 as the OTLP
//! specification says, 100 ms then doubling, within the export timeout). Headers from
//! `OTEL_EXPORTER_OTLP_METRICS_HEADERS` or `OTEL_EXPORTER_OTLP_HEADERS`. The interval is
//! `OTEL_METRIC_EXPORT_INTERVAL` (milliseconds, default 60000), as for the SDK's periodic reader.

use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use opentelemetry_proto::{
    tonic::{
        collector::metrics::v1::{ExportMetricsServiceRequest, ExportMetricsServiceResponse},
        common::v1::InstrumentationScope,
        metrics::v1::{
            metric::Data, AggregationTemporality, Histogram as ProtoHistogram, HistogramDataPoint,
            Metric, ResourceMetrics, ScopeMetrics,
        },
        resource::v1::Resource as ProtoResource,
    },
    transform::common::tonic::{Attributes, ResourceAttributesWithSchema},
};
use opentelemetry_sdk::Resource;
use prost::Message as _;
use tonic::{metadata::MetadataMap, transport::Channel};

use super::{
    metrics::{Histogram, Instrument, RedTable},
    otlp_grpc, semconv,
};

/// The OTLP metrics service method.
const EXPORT_PATH: &str = "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export";
/// Default of `OTEL_METRIC_EXPORT_INTERVAL`.
const DEFAULT_INTERVAL: Duration = Duration::from_secs(60);
/// Delay before the first HTTP retry; doubled for each next one.
const FIRST_RETRY_DELAY: Duration = Duration::from_millis(100);

/// A process's resource, converted once.
#[derive(Debug, Clone)]
pub struct ProcessResource {
    resource: ProtoResource,
    schema_url: String,
}

impl From<&Resource> for ProcessResource {
    fn from(r: &Resource) -> Self {
        let r = ResourceAttributesWithSchema::from(r);
        Self {
            resource: ProtoResource {
                attributes: r.attributes.0,
                dropped_attributes_count: 0,
                entity_refs: Vec::new(),
            },
            schema_url: r.schema_url.unwrap_or_default(),
        }
    }
}

fn unix_nanos(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// The aggregation temporality of exported histograms
/// (`OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE`: `cumulative`, the default, or `delta`
/// and `lowmemory`, which both make histograms delta).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Temporality {
    /// Totals since each series' first exchange.
    Cumulative,
    /// What each series recorded since the previous export (min and max only on a series'
    /// first one).
    Delta,
}

impl Temporality {
    /// From `OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE`.
    pub fn from_env() -> Self {
        Self::parse(
            std::env::var("OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE")
                .ok()
                .as_deref(),
        )
    }

    fn parse(v: Option<&str>) -> Self {
        match v.map(|v| v.trim().to_ascii_lowercase()).as_deref() {
            Some("delta" | "lowmemory") => Self::Delta,
            _ => Self::Cumulative,
        }
    }
}

fn data_point(
    attributes: &[opentelemetry::KeyValue],
    start: SystemTime,
    now: SystemTime,
    bounds: &[f64],
    h: &Histogram,
) -> HistogramDataPoint {
    let known = |v: f64| (h.count > 0 && v.is_finite()).then_some(v);
    HistogramDataPoint {
        attributes: Attributes::from(attributes.iter().cloned()).0,
        start_time_unix_nano: unix_nanos(start),
        time_unix_nano: unix_nanos(now),
        count: h.count,
        sum: Some(h.sum),
        bucket_counts: h.counts.clone(),
        explicit_bounds: bounds.to_vec(),
        min: known(h.min),
        max: known(h.max),
        ..Default::default()
    }
}

/// The metrics of one process's table: one OTLP metric per instrument with data, one data
/// point per series that recorded into it (over the interval, for delta).
fn metrics_of(table: &mut RedTable, now: SystemTime, temporality: Temporality) -> Vec<Metric> {
    let deltas: Vec<_> = match temporality {
        Temporality::Cumulative => Vec::new(),
        Temporality::Delta => table
            .series_mut()
            .iter_mut()
            .map(|s| s.take_delta(now))
            .collect(),
    };
    Instrument::ALL
        .iter()
        .filter_map(|&instrument| {
            let bounds = instrument.bounds();
            let data_points: Vec<HistogramDataPoint> = table
                .series()
                .iter()
                .enumerate()
                .filter_map(|(i, s)| {
                    let cumulative = s.histogram(instrument)?;
                    let (start, h) = match deltas.get(i) {
                        Some(d) => (d.start, d.histogram(instrument)),
                        None => (s.start, cumulative),
                    };
                    (h.count > 0).then(|| data_point(&s.attributes, start, now, bounds, h))
                })
                .collect();
            let aggregation_temporality = match temporality {
                Temporality::Cumulative => AggregationTemporality::Cumulative,
                Temporality::Delta => AggregationTemporality::Delta,
            } as i32;
            (!data_points.is_empty()).then(|| Metric {
                name: instrument.name().to_owned(),
                description: instrument.description().to_owned(),
                unit: instrument.unit().to_owned(),
                data: Some(Data::Histogram(ProtoHistogram {
                    data_points,
                    aggregation_temporality,
                })),
                ..Default::default()
            })
        })
        .collect()
}

/// The request for `processes` at `now`; `None` when no table has data (for the interval).
/// A delta export marks what it encodes as sent.
pub fn encode_request<'a>(
    processes: impl IntoIterator<Item = (&'a ProcessResource, &'a mut RedTable)>,
    now: SystemTime,
    temporality: Temporality,
) -> Option<Vec<u8>> {
    let resource_metrics: Vec<ResourceMetrics> = processes
        .into_iter()
        .filter_map(|(resource, table)| {
            let metrics = metrics_of(table, now, temporality);
            (!metrics.is_empty()).then(|| ResourceMetrics {
                resource: Some(resource.resource.clone()),
                scope_metrics: vec![ScopeMetrics {
                    scope: Some(InstrumentationScope {
                        name: semconv::SCOPE_NAME.to_owned(),
                        ..Default::default()
                    }),
                    metrics,
                    schema_url: String::new(),
                }],
                schema_url: resource.schema_url.clone(),
            })
        })
        .collect();
    (!resource_metrics.is_empty())
        .then(|| ExportMetricsServiceRequest { resource_metrics }.encode_to_vec())
}

/// Where the requests go.
#[derive(Debug, Clone)]
enum Target {
    Grpc {
        channel: Channel,
        headers: MetadataMap,
    },
    Http {
        client: reqwest::Client,
        url: String,
        headers: reqwest::header::HeaderMap,
    },
}

/// Sends encoded metrics requests. Cheap to clone (each export runs in its own task).
#[derive(Debug, Clone)]
pub struct MetricsExporter {
    target: Target,
    timeout: Duration,
}

/// `OTEL_METRIC_EXPORT_INTERVAL` (milliseconds; unset, empty, zero or unparsable: 60 s).
pub fn interval_from_env() -> Duration {
    parse_interval(std::env::var("OTEL_METRIC_EXPORT_INTERVAL").ok().as_deref())
}

fn parse_interval(ms: Option<&str>) -> Duration {
    ms.and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|ms| *ms > 0)
        .map_or(DEFAULT_INTERVAL, Duration::from_millis)
}

impl MetricsExporter {
    /// OTLP/gRPC on `channel`.
    pub fn grpc(channel: Channel, timeout: Duration) -> Self {
        Self {
            target: Target::Grpc {
                channel,
                headers: otlp_grpc::headers_from_env("OTEL_EXPORTER_OTLP_METRICS_HEADERS"),
            },
            timeout,
        }
    }

    /// OTLP/HTTP with protobuf bodies, to `url` (the full metrics URL, `…/v1/metrics`).
    pub fn http(url: String, timeout: Duration) -> Self {
        let headers =
            otlp_grpc::headers_from_env("OTEL_EXPORTER_OTLP_METRICS_HEADERS").into_headers();
        Self {
            target: Target::Http {
                client: reqwest::Client::new(),
                url,
                headers,
            },
            timeout,
        }
    }

    /// Sends one encoded request, retrying transient failures within the export timeout.
    ///
    /// # Errors
    /// A description of the last failure.
    pub async fn export(&self, body: Vec<u8>) -> Result<(), String> {
        let deadline = Instant::now() + self.timeout;
        let body = Bytes::from(body);
        match &self.target {
            Target::Grpc { channel, headers } => {
                let response: ExportMetricsServiceResponse =
                    otlp_grpc::export(channel, EXPORT_PATH, headers, body, deadline)
                        .await
                        .map_err(|status| format!("OTLP/gRPC metrics export failed: {status}"))?;
                if let Some(p) = response.partial_success {
                    if p.rejected_data_points > 0 || !p.error_message.is_empty() {
                        tracing::debug!(
                            rejected = p.rejected_data_points,
                            message = p.error_message,
                            "the collector rejected part of a metrics export"
                        );
                    }
                }
                Ok(())
            }
            Target::Http {
                client,
                url,
                headers,
            } => {
                let mut delay = FIRST_RETRY_DELAY;
                loop {
                    let left = deadline.saturating_duration_since(Instant::now());
                    let sent = client
                        .post(url)
                        .headers(headers.clone())
                        .header(reqwest::header::CONTENT_TYPE, "application/x-protobuf")
                        .timeout(left)
                        .body(body.clone())
                        .send()
                        .await;
                    let retry = match &sent {
                        Ok(r) if r.status().is_success() => return Ok(()),
                        Ok(r) => matches!(r.status().as_u16(), 429 | 502 | 503 | 504),
                        Err(e) => e.is_connect() || e.is_timeout(),
                    };
                    if !retry || Instant::now() + delay >= deadline {
                        return Err(match sent {
                            Ok(r) => format!("OTLP/HTTP metrics export failed: {}", r.status()),
                            Err(e) => format!("OTLP/HTTP metrics export failed: {e}"),
                        });
                    }
                    tokio::time::sleep(delay).await;
                    delay = delay.saturating_mul(2);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::metrics::test_support::{record, server_get};
    use opentelemetry::KeyValue;

    #[test]
    fn request_carries_each_process_with_cumulative_histograms() {
        let ex = server_get(30_000_000, Some(0), Some(12));
        let mut table = RedTable::default();
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(100);
        record(&mut table, &ex, start);
        record(&mut table, &ex, start);
        let resource = ProcessResource::from(
            &Resource::builder_empty()
                .with_attributes([KeyValue::new("service.name", "nginx")])
                .build(),
        );
        let mut empty = RedTable::default();
        let now = start + Duration::from_secs(5);
        let bytes = encode_request(
            [(&resource, &mut table), (&resource, &mut empty)],
            now,
            Temporality::Cumulative,
        )
        .unwrap();
        let req = ExportMetricsServiceRequest::decode(bytes.as_slice()).unwrap();
        assert_eq!(req.resource_metrics.len(), 1, "the empty table is left out");
        let rm = &req.resource_metrics[0];
        assert_eq!(
            rm.resource.as_ref().unwrap().attributes[0].key,
            "service.name"
        );
        let metrics = &rm.scope_metrics[0].metrics;
        let names: Vec<&str> = metrics.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "http.server.request.duration",
                "http.server.request.body.size",
                "http.server.response.body.size"
            ]
        );
        let Some(Data::Histogram(h)) = &metrics[0].data else {
            panic!("not a histogram")
        };
        assert_eq!(
            h.aggregation_temporality,
            AggregationTemporality::Cumulative as i32
        );
        let dp = &h.data_points[0];
        assert_eq!(dp.count, 2);
        assert_eq!(dp.bucket_counts.iter().sum::<u64>(), 2);
        assert_eq!(dp.explicit_bounds, semconv::HTTP_DURATION_BOUNDARIES_S);
        assert_eq!(dp.start_time_unix_nano, 100_000_000_000);
        assert_eq!(dp.time_unix_nano, 105_000_000_000);
        assert_eq!(dp.min, Some(0.03));
        assert!(assert_sum(dp.sum, 0.06));
        assert_eq!(metrics[0].unit, "s");
        assert_eq!(metrics[2].unit, "By");
    }

    #[test]
    fn delta_exports_send_each_interval_once() {
        let ex = server_get(1_000_000, None, None);
        let resource = ProcessResource::from(&Resource::builder_empty().build());
        let mut table = RedTable::default();
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(100);
        record(&mut table, &ex, t0);
        record(&mut table, &ex, t0);
        let counts = |bytes: Vec<u8>| -> (u64, u64, i32) {
            let req = ExportMetricsServiceRequest::decode(bytes.as_slice()).unwrap();
            let Some(Data::Histogram(h)) =
                &req.resource_metrics[0].scope_metrics[0].metrics[0].data
            else {
                panic!("not a histogram")
            };
            let dp = &h.data_points[0];
            (dp.count, dp.start_time_unix_nano, h.aggregation_temporality)
        };
        let t1 = t0 + Duration::from_secs(1);
        let first = encode_request([(&resource, &mut table)], t1, Temporality::Delta).unwrap();
        assert_eq!(
            counts(first),
            (2, 100_000_000_000, AggregationTemporality::Delta as i32)
        );
        // Nothing new: nothing to send.
        let t2 = t1 + Duration::from_secs(1);
        assert!(encode_request([(&resource, &mut table)], t2, Temporality::Delta).is_none());
        record(&mut table, &ex, t2);
        let t3 = t2 + Duration::from_secs(1);
        let third = encode_request([(&resource, &mut table)], t3, Temporality::Delta).unwrap();
        assert_eq!(counts(third).0, 1);
        assert_eq!(
            counts(encode_request([(&resource, &mut table)], t3, Temporality::Cumulative).unwrap())
                .0,
            3
        );
    }

    #[test]
    fn temporality_preference_is_read_like_the_sdk() {
        assert_eq!(Temporality::parse(None), Temporality::Cumulative);
        assert_eq!(Temporality::parse(Some("Delta")), Temporality::Delta);
        assert_eq!(Temporality::parse(Some("lowmemory")), Temporality::Delta);
        assert_eq!(
            Temporality::parse(Some("cumulative")),
            Temporality::Cumulative
        );
        assert_eq!(Temporality::parse(Some("bogus")), Temporality::Cumulative);
    }

    fn assert_sum(sum: Option<f64>, want: f64) -> bool {
        sum.is_some_and(|s| (s - want).abs() < 1e-12)
    }

    #[test]
    fn interval_is_milliseconds_else_a_minute() {
        assert_eq!(parse_interval(Some("1000")), Duration::from_secs(1));
        assert_eq!(parse_interval(Some(" 250 ")), Duration::from_millis(250));
        for bad in [None, Some(""), Some("0"), Some("1s")] {
            assert_eq!(parse_interval(bad), Duration::from_secs(60), "{bad:?}");
        }
    }
}
