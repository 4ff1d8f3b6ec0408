//! The Prometheus text exposition (format 0.0.4) of every observed process's RED metrics,
//! following the OpenTelemetry → Prometheus compatibility rules
//! (<https://opentelemetry.io/docs/specs/otel/compatibility/prometheus_and_openmetrics/>):
//!
//! - names: `.` → `_`, plus the unit suffix (`s` → `_seconds`, `By` → `_bytes`):
//!   `http.server.request.duration` → `http_server_request_duration_seconds_{bucket,sum,count}`;
//! - label names: attribute keys with `.` → `_`;
//! - resource identity: `job` = `service.name`, `instance` = `<host.name>:<process.pid>` on every
//!   series, and one `target_info` gauge per process carrying the other resource attributes.
//!
//! Input: the RED table of each process ([`super::metrics`], cumulative) with that process's
//! `Resource`, and pull readers (an SDK `ManualReader`) for the agent's own metrics. Output: one
//! text body; each metric family's `# HELP`/`# TYPE` appears once.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    sync::{Arc, Weak},
    time::Duration,
};

use opentelemetry::{KeyValue, Value};
use opentelemetry_sdk::{
    error::OTelSdkResult,
    metrics::{
        data::{AggregatedMetrics, Histogram, MetricData, ResourceMetrics},
        reader::MetricReader,
        InstrumentKind, ManualReader, Pipeline, Temporality,
    },
    Resource,
};

use super::{
    metrics::{Instrument, RedTable},
    semconv,
};

/// A `ManualReader` that the meter provider and the scrape handler share.
#[derive(Debug, Clone, Default)]
pub struct SharedReader(Arc<ManualReader>);

impl MetricReader for SharedReader {
    fn register_pipeline(&self, pipeline: Weak<Pipeline>) {
        self.0.register_pipeline(pipeline);
    }
    fn collect(&self, rm: &mut ResourceMetrics) -> OTelSdkResult {
        self.0.collect(rm)
    }
    fn force_flush(&self) -> OTelSdkResult {
        self.0.force_flush()
    }
    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.0.shutdown_with_timeout(timeout)
    }
    fn temporality(&self, kind: InstrumentKind) -> Temporality {
        self.0.temporality(kind)
    }
}

/// Prometheus metric name for an OTel instrument name and unit.
pub fn metric_name(name: &str, unit: &str) -> String {
    let mut out = sanitize(name);
    let suffix = match unit {
        "s" => "_seconds",
        "By" => "_bytes",
        _ => "",
    };
    if !out.ends_with(suffix) {
        out.push_str(suffix);
    }
    out
}

/// Label or metric name: characters outside `[a-zA-Z0-9_:]` become `_`.
fn sanitize(s: &str) -> String {
    let mut out: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    out
}

/// Label value with `\`, `"` and newlines escaped.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn value_str(v: &Value) -> String {
    v.to_string()
}

/// `job` and `instance` of a process's resource.
fn identity(resource: &Resource) -> (String, String) {
    let get = |k: &str| {
        resource
            .get(&opentelemetry::Key::from(k.to_owned()))
            .map(|v| value_str(&v))
    };
    let job = get(semconv::SERVICE_NAME).unwrap_or_else(|| "unknown_service".to_owned());
    let instance = format!(
        "{}:{}",
        get(semconv::HOST_NAME).unwrap_or_default(),
        get(semconv::PROCESS_PID).unwrap_or_default()
    );
    (job, instance)
}

fn labels(base: &[(String, String)], attrs: &[KeyValue], extra: Option<(&str, &str)>) -> String {
    let mut pairs: Vec<(String, String)> = base.to_vec();
    pairs.extend(
        attrs
            .iter()
            .map(|kv| (sanitize(kv.key.as_str()), value_str(&kv.value))),
    );
    if let Some((k, v)) = extra {
        pairs.push((k.to_owned(), v.to_owned()));
    }
    let body: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
        .collect();
    format!("{{{}}}", body.join(","))
}

/// Prometheus float formatting (`+Inf`, integers without a fraction).
fn num(v: f64) -> String {
    if v.is_infinite() {
        if v > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        }
    } else {
        format!("{v}")
    }
}

/// One metric family being assembled across processes.
#[derive(Default)]
struct Family {
    help: String,
    kind: &'static str,
    lines: Vec<String>,
}

/// The `job`/`instance` labels of a process, after pushing its `target_info` line.
fn process_labels(resource: &Resource, target_info: &mut Vec<String>) -> Vec<(String, String)> {
    let (job, instance) = identity(resource);
    let base = vec![("job".to_owned(), job), ("instance".to_owned(), instance)];
    let mut resource_attrs: Vec<KeyValue> = resource
        .iter()
        .filter(|(k, _)| !matches!(k.as_str(), "service.name"))
        .map(|(k, v)| KeyValue::new(k.clone(), v.clone()))
        .collect();
    resource_attrs.sort_by(|a, b| a.key.as_str().cmp(b.key.as_str()));
    target_info.push(format!(
        "target_info{} 1",
        labels(&base, &resource_attrs, None)
    ));
    base
}

/// Renders the exposition of the processes' RED `tables` and of the SDK `readers`.
pub fn render(tables: &[(&Resource, &RedTable)], readers: &[(Resource, SharedReader)]) -> String {
    let mut families: BTreeMap<String, Family> = BTreeMap::new();
    let mut target_info = Vec::new();
    for (resource, table) in tables {
        let base = process_labels(resource, &mut target_info);
        for instrument in Instrument::ALL {
            let name = metric_name(instrument.name(), instrument.unit());
            let family = families.entry(name.clone()).or_default();
            family.help = instrument.description().to_owned();
            family.kind = "histogram";
            for series in table.series() {
                let Some(h) = series.histogram(instrument).filter(|h| h.count > 0) else {
                    continue;
                };
                histogram_point(
                    &mut family.lines,
                    &name,
                    &base,
                    &series.attributes,
                    HistogramPoint {
                        bounds: instrument.bounds(),
                        counts: &h.counts,
                        sum: h.sum,
                        count: h.count,
                    },
                );
            }
        }
    }
    for (resource, reader) in readers {
        let mut rm = ResourceMetrics::default();
        if reader.collect(&mut rm).is_err() {
            continue;
        }
        let base = process_labels(resource, &mut target_info);
        for scope in rm.scope_metrics() {
            for metric in scope.metrics() {
                let name = metric_name(metric.name(), metric.unit());
                let family = families.entry(name.clone()).or_default();
                family.help = metric.description().to_owned();
                match metric.data() {
                    AggregatedMetrics::F64(MetricData::Histogram(h)) => {
                        family.kind = "histogram";
                        histogram_lines(&mut family.lines, &name, &base, h, |v| v);
                    }
                    AggregatedMetrics::U64(MetricData::Histogram(h)) => {
                        family.kind = "histogram";
                        histogram_lines(&mut family.lines, &name, &base, h, |v| v as f64);
                    }
                    AggregatedMetrics::U64(MetricData::Gauge(g)) => {
                        family.kind = "gauge";
                        for dp in g.data_points() {
                            let attrs: Vec<KeyValue> = dp.attributes().cloned().collect();
                            family.lines.push(format!(
                                "{name}{} {}",
                                labels(&base, &attrs, None),
                                dp.value()
                            ));
                        }
                    }
                    AggregatedMetrics::U64(MetricData::Sum(s)) => {
                        family.kind = if s.is_monotonic() { "counter" } else { "gauge" };
                        let name = if s.is_monotonic() {
                            format!("{name}_total")
                        } else {
                            name.clone()
                        };
                        for dp in s.data_points() {
                            let attrs: Vec<KeyValue> = dp.attributes().cloned().collect();
                            family.lines.push(format!(
                                "{name}{} {}",
                                labels(&base, &attrs, None),
                                dp.value()
                            ));
                        }
                    }
                    _ => {}
                }
            }
        }
    }
    let mut out = String::new();
    if !target_info.is_empty() {
        out.push_str("# HELP target_info Target metadata\n# TYPE target_info gauge\n");
        for l in &target_info {
            let _ = writeln!(out, "{l}");
        }
    }
    for (name, f) in &families {
        if f.lines.is_empty() {
            continue;
        }
        let counter_name = if f.kind == "counter" {
            format!("{name}_total")
        } else {
            name.clone()
        };
        let _ = writeln!(out, "# HELP {counter_name} {}", f.help.replace('\n', " "));
        let _ = writeln!(out, "# TYPE {counter_name} {}", f.kind);
        for l in &f.lines {
            let _ = writeln!(out, "{l}");
        }
    }
    out
}

/// One histogram data point's numbers.
struct HistogramPoint<'a> {
    bounds: &'a [f64],
    counts: &'a [u64],
    sum: f64,
    count: u64,
}

/// The `_bucket` (cumulative, `le` up to `+Inf`), `_sum` and `_count` lines of one data point.
fn histogram_point(
    lines: &mut Vec<String>,
    name: &str,
    base: &[(String, String)],
    attrs: &[KeyValue],
    p: HistogramPoint<'_>,
) {
    let mut cumulative = 0u64;
    for (i, c) in p.counts.iter().enumerate() {
        cumulative += c;
        let le = p.bounds.get(i).copied().unwrap_or(f64::INFINITY);
        lines.push(format!(
            "{name}_bucket{} {cumulative}",
            labels(base, attrs, Some(("le", &num(le))))
        ));
    }
    lines.push(format!(
        "{name}_sum{} {}",
        labels(base, attrs, None),
        num(p.sum)
    ));
    lines.push(format!(
        "{name}_count{} {}",
        labels(base, attrs, None),
        p.count
    ));
}

/// [`histogram_point`] for every data point of an SDK histogram; `to_f64` converts its sums.
fn histogram_lines<T: Copy>(
    lines: &mut Vec<String>,
    name: &str,
    base: &[(String, String)],
    h: &Histogram<T>,
    to_f64: impl Fn(T) -> f64,
) {
    for dp in h.data_points() {
        let attrs: Vec<KeyValue> = dp.attributes().cloned().collect();
        let bounds: Vec<f64> = dp.bounds().collect();
        let counts: Vec<u64> = dp.bucket_counts().collect();
        histogram_point(
            lines,
            name,
            base,
            &attrs,
            HistogramPoint {
                bounds: &bounds,
                counts: &counts,
                sum: to_f64(dp.sum()),
                count: dp.count(),
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::metrics::test_support::{record, server_get};
    use opentelemetry::metrics::MeterProvider as _;
    use opentelemetry_sdk::metrics::SdkMeterProvider;

    /// The resource of nginx, pid 42 on host `h1`.
    fn nginx_resource() -> Resource {
        Resource::builder_empty()
            .with_attributes([
                KeyValue::new("service.name", "nginx"),
                KeyValue::new("host.name", "h1"),
                KeyValue::new("process.pid", 42),
            ])
            .build()
    }

    #[test]
    fn renders_a_red_table_with_its_process_identity() {
        let ex = server_get(50_000_000, None, Some(7));
        let mut table = RedTable::default();
        record(&mut table, &ex, std::time::SystemTime::now());
        record(&mut table, &ex, std::time::SystemTime::now());
        let resource = nginx_resource();
        let text = render(&[(&resource, &table)], &[]);
        let l = "job=\"nginx\",instance=\"h1:42\",http_request_method=\"GET\",http_response_status_code=\"200\",network_protocol_version=\"1.1\",url_scheme=\"http\"";
        for want in [
            format!("http_server_request_duration_seconds_bucket{{{l},le=\"0.025\"}} 0"),
            format!("http_server_request_duration_seconds_bucket{{{l},le=\"0.05\"}} 2"),
            format!("http_server_request_duration_seconds_count{{{l}}} 2"),
            format!("http_server_request_duration_seconds_sum{{{l}}} 0.1"),
            format!("http_server_response_body_size_bytes_sum{{{l}}} 14"),
            "# TYPE http_server_response_body_size_bytes histogram".to_owned(),
        ] {
            assert!(text.contains(&want), "missing {want:?} in\n{text}");
        }
        // No request body was seen: no request-body series, and no client families.
        assert!(
            !text.contains("http_server_request_body_size_bytes_count"),
            "{text}"
        );
        assert!(!text.contains("# TYPE http_client"), "{text}");
    }

    #[test]
    fn names_follow_the_otel_prometheus_rules() {
        assert_eq!(
            metric_name("http.server.request.duration", "s"),
            "http_server_request_duration_seconds"
        );
        assert_eq!(
            metric_name("http.server.request.body.size", "By"),
            "http_server_request_body_size_bytes"
        );
        assert_eq!(
            sanitize("http.response.status_code"),
            "http_response_status_code"
        );
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }

    #[test]
    fn renders_histograms_with_cumulative_buckets_and_identity() {
        let reader = SharedReader::default();
        let resource = nginx_resource();
        let provider = SdkMeterProvider::builder()
            .with_resource(resource.clone())
            .with_reader(reader.clone())
            .build();
        let h = provider
            .meter("sonde")
            .f64_histogram("http.server.request.duration")
            .with_unit("s")
            .with_description("Duration of HTTP server requests.")
            .with_boundaries(vec![0.1, 1.0])
            .build();
        let attrs = [KeyValue::new("http.response.status_code", 200)];
        h.record(0.05, &attrs);
        h.record(0.5, &attrs);
        h.record(5.0, &attrs);
        let text = render(&[], &[(resource, reader)]);
        let l = "job=\"nginx\",instance=\"h1:42\",http_response_status_code=\"200\"";
        for want in [
            "# TYPE http_server_request_duration_seconds histogram".to_owned(),
            format!("http_server_request_duration_seconds_bucket{{{l},le=\"0.1\"}} 1"),
            format!("http_server_request_duration_seconds_bucket{{{l},le=\"1\"}} 2"),
            format!("http_server_request_duration_seconds_bucket{{{l},le=\"+Inf\"}} 3"),
            format!("http_server_request_duration_seconds_count{{{l}}} 3"),
            format!("http_server_request_duration_seconds_sum{{{l}}} 5.55"),
            "target_info{job=\"nginx\",instance=\"h1:42\",host_name=\"h1\",process_pid=\"42\"} 1"
                .to_owned(),
        ] {
            assert!(text.contains(&want), "missing {want:?} in\n{text}");
        }
        assert_eq!(
            text.matches("# TYPE http_server_request_duration_seconds")
                .count(),
            1
        );
    }
}
