//! RED metrics from exchanges: the HTTP duration and body-size histograms of the OpenTelemetry
//! semantic conventions (<https://opentelemetry.io/docs/specs/semconv/http/http-metrics/>) and the
//! RPC call durations (`rpc.server.call.duration`, `rpc.client.call.duration`,
//! <https://opentelemetry.io/docs/specs/semconv/rpc/rpc-metrics/>), recorded for every exchange
//! (before any trace sampling), per process.
//!
//! Aggregated here, in one table per process, not through the SDK's instruments: the SDK hashes
//! the attribute set with SipHash and takes its locks once per instrument, three times per HTTP
//! exchange (~0.8 µs per exchange, `cargo bench -p sonde -- span_build`, 2026-12-01). Here one
//! lookup with a fast hash finds the exchange's series, whose histograms (duration, request and
//! response body) are updated in place. The table is owned by the export task; it is read for
//! OTLP export ([`super::metrics_export`]) and for the Prometheus exposition
//! ([`super::prometheus`]). Temporality: cumulative, from each series' first exchange; a delta
//! export takes the difference from what it sent last ([`Series::take_delta`]).
//!
//! # Units
//! Durations in seconds (`s`), body sizes in bytes (`By`).

use std::{
    collections::HashMap,
    hash::{BuildHasher as _, BuildHasherDefault, Hasher},
    time::SystemTime,
};

use opentelemetry::{KeyValue, Value};

use super::semconv;
use crate::exchange::{Exchange, ExchangeKind, Role};

/// Span attributes an RPC call's metrics keep (low cardinality: no peer port, no user agent).
const RPC_METRIC_KEYS: [&str; 6] = [
    semconv::RPC_SYSTEM_NAME,
    semconv::RPC_METHOD,
    semconv::RPC_RESPONSE_STATUS_CODE,
    semconv::ERROR_TYPE,
    semconv::SERVER_ADDRESS,
    semconv::SERVER_PORT,
];

/// Bucket boundaries of the body-size histograms, in bytes: the SDK's default explicit buckets
/// (the semantic conventions advise none).
pub const BODY_SIZE_BOUNDARIES: [f64; 15] = [
    0.0, 5.0, 10.0, 25.0, 50.0, 75.0, 100.0, 250.0, 500.0, 750.0, 1000.0, 2500.0, 5000.0, 7500.0,
    10000.0,
];

/// Series per family and process beyond which exchanges go to the overflow series (attribute
/// `otel.metric.overflow=true`), as the SDK's default cardinality limit does.
pub const MAX_SERIES_PER_FAMILY: usize = 2000;

/// Most metric attributes a family keeps (HTTP clients: 8).
const MAX_METRIC_ATTRIBUTES: usize = 8;

/// The attribute marking the overflow series (OpenTelemetry metrics SDK specification,
/// "Cardinality limits").
const OVERFLOW_KEY: &str = "otel.metric.overflow";

/// Which exchanges a series counts: its instruments and its attribute subset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    /// `http.server.request.duration` and the server body sizes.
    HttpServer,
    /// `http.client.request.duration` and the client body sizes.
    HttpClient,
    /// `rpc.server.call.duration`.
    RpcServer,
    /// `rpc.client.call.duration`.
    RpcClient,
}

/// One histogram instrument.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Instrument {
    /// A family's duration histogram.
    Duration(Family),
    /// An HTTP family's request body size histogram.
    RequestBody(Family),
    /// An HTTP family's response body size histogram.
    ResponseBody(Family),
}

impl Instrument {
    /// Every instrument, in export order.
    pub const ALL: [Self; 8] = [
        Self::Duration(Family::HttpServer),
        Self::Duration(Family::HttpClient),
        Self::RequestBody(Family::HttpServer),
        Self::ResponseBody(Family::HttpServer),
        Self::RequestBody(Family::HttpClient),
        Self::ResponseBody(Family::HttpClient),
        Self::Duration(Family::RpcServer),
        Self::Duration(Family::RpcClient),
    ];

    /// Semantic-convention metric name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Duration(Family::HttpServer) => semconv::HTTP_SERVER_REQUEST_DURATION,
            Self::Duration(Family::HttpClient) => semconv::HTTP_CLIENT_REQUEST_DURATION,
            Self::Duration(Family::RpcServer) => semconv::RPC_SERVER_CALL_DURATION,
            Self::Duration(Family::RpcClient) => semconv::RPC_CLIENT_CALL_DURATION,
            Self::RequestBody(Family::HttpClient) => semconv::HTTP_CLIENT_REQUEST_BODY_SIZE,
            Self::RequestBody(_) => semconv::HTTP_SERVER_REQUEST_BODY_SIZE,
            Self::ResponseBody(Family::HttpClient) => semconv::HTTP_CLIENT_RESPONSE_BODY_SIZE,
            Self::ResponseBody(_) => semconv::HTTP_SERVER_RESPONSE_BODY_SIZE,
        }
    }

    /// UCUM unit.
    pub fn unit(self) -> &'static str {
        match self {
            Self::Duration(_) => "s",
            Self::RequestBody(_) | Self::ResponseBody(_) => "By",
        }
    }

    /// Description, as the semantic conventions word it.
    pub fn description(self) -> &'static str {
        match self {
            Self::Duration(Family::HttpServer) => "Duration of HTTP server requests.",
            Self::Duration(Family::HttpClient) => "Duration of HTTP client requests.",
            Self::Duration(Family::RpcServer) => "Duration of incoming remote procedure calls.",
            Self::Duration(Family::RpcClient) => "Duration of outgoing remote procedure calls.",
            Self::RequestBody(Family::HttpClient) => "Size of HTTP client request bodies.",
            Self::RequestBody(_) => "Size of HTTP server request bodies.",
            Self::ResponseBody(Family::HttpClient) => "Size of HTTP client response bodies.",
            Self::ResponseBody(_) => "Size of HTTP server response bodies.",
        }
    }

    /// Explicit bucket boundaries.
    pub fn bounds(self) -> &'static [f64] {
        match self {
            Self::Duration(_) => &semconv::HTTP_DURATION_BOUNDARIES_S,
            Self::RequestBody(_) | Self::ResponseBody(_) => &BODY_SIZE_BOUNDARIES,
        }
    }
}

/// An explicit-bucket histogram: `counts[i]` holds the values in `(bounds[i-1], bounds[i]]`, the
/// last bucket those above every bound (the OTLP `HistogramDataPoint` layout).
#[derive(Debug, Clone, PartialEq)]
pub struct Histogram {
    /// Per-bucket counts, `bounds.len() + 1` of them.
    pub counts: Vec<u64>,
    /// Values recorded.
    pub count: u64,
    /// Their sum.
    pub sum: f64,
    /// Smallest value (`+inf` while empty).
    pub min: f64,
    /// Largest value (`-inf` while empty).
    pub max: f64,
}

impl Histogram {
    fn new(bounds: &[f64]) -> Self {
        Self {
            counts: vec![0; bounds.len() + 1],
            count: 0,
            sum: 0.0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
        }
    }

    /// What `self` (cumulative) added since `earlier` (an older copy of it). Min and max of
    /// the difference are unknown: infinite.
    fn since(&self, earlier: &Self) -> Self {
        Self {
            counts: self
                .counts
                .iter()
                .zip(earlier.counts.iter().chain(std::iter::repeat(&0)))
                .map(|(now, then)| now.saturating_sub(*then))
                .collect(),
            count: self.count.saturating_sub(earlier.count),
            sum: self.sum - earlier.sum,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
        }
    }

    fn record(&mut self, bounds: &[f64], v: f64) {
        let i = bounds.partition_point(|&b| b < v);
        if let Some(c) = self.counts.get_mut(i) {
            *c += 1;
        }
        self.count += 1;
        self.sum += v;
        self.min = self.min.min(v);
        self.max = self.max.max(v);
    }
}

/// One attribute set of one family, with its histograms.
#[derive(Debug, Clone)]
pub struct Series {
    /// Which instruments it feeds.
    pub family: Family,
    /// Metric attributes, sorted by key.
    pub attributes: Vec<KeyValue>,
    /// When its first exchange was recorded (the cumulative start time).
    pub start: SystemTime,
    /// Durations, seconds.
    pub duration: Histogram,
    /// HTTP request body sizes, bytes (empty for RPC).
    pub request_body: Histogram,
    /// HTTP response body sizes, bytes (empty for RPC).
    pub response_body: Histogram,
    /// What the last delta export sent, and when.
    sent: Option<Box<Sent>>,
}

/// The cumulative state a delta export last sent of a series.
#[derive(Debug, Clone)]
struct Sent {
    at: SystemTime,
    duration: Histogram,
    request_body: Histogram,
    response_body: Histogram,
}

/// A series' histograms over one delta interval.
#[derive(Debug, Clone)]
pub struct Delta {
    /// Interval start: the previous delta export, or the series' first exchange.
    pub start: SystemTime,
    /// Durations.
    pub duration: Histogram,
    /// Request body sizes.
    pub request_body: Histogram,
    /// Response body sizes.
    pub response_body: Histogram,
}

impl Delta {
    /// The histogram of `instrument` (its family is the series').
    pub fn histogram(&self, instrument: Instrument) -> &Histogram {
        match instrument {
            Instrument::Duration(_) => &self.duration,
            Instrument::RequestBody(_) => &self.request_body,
            Instrument::ResponseBody(_) => &self.response_body,
        }
    }
}

impl Series {
    /// What the series recorded since the previous call (delta temporality), then remembers
    /// that as sent. The first call returns everything, min and max included.
    pub fn take_delta(&mut self, now: SystemTime) -> Delta {
        let delta = match &self.sent {
            None => Delta {
                start: self.start,
                duration: self.duration.clone(),
                request_body: self.request_body.clone(),
                response_body: self.response_body.clone(),
            },
            Some(sent) => Delta {
                start: sent.at,
                duration: self.duration.since(&sent.duration),
                request_body: self.request_body.since(&sent.request_body),
                response_body: self.response_body.since(&sent.response_body),
            },
        };
        self.sent = Some(Box::new(Sent {
            at: now,
            duration: self.duration.clone(),
            request_body: self.request_body.clone(),
            response_body: self.response_body.clone(),
        }));
        delta
    }

    /// The histogram of `instrument`, when it belongs to this series' family.
    pub fn histogram(&self, instrument: Instrument) -> Option<&Histogram> {
        match instrument {
            Instrument::Duration(f) if f == self.family => Some(&self.duration),
            Instrument::RequestBody(f) if f == self.family => Some(&self.request_body),
            Instrument::ResponseBody(f) if f == self.family => Some(&self.response_body),
            _ => None,
        }
    }
}

/// A `Hasher` for keys that are already hashes.
#[derive(Default)]
struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// The RED series of one process. See the module docs.
#[derive(Debug, Default)]
pub struct RedTable {
    series: Vec<Series>,
    /// Attribute-set hash (with the family) → indices into `series`.
    index: HashMap<u64, Vec<u32>, BuildHasherDefault<PassThrough>>,
    per_family: [usize; 4],
    hasher: foldhash::fast::FixedState,
}

/// What an exchange adds to its series, taken before its strings move into the span.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    family: Family,
    /// Duration, seconds.
    seconds: f64,
    request_body: Option<u64>,
    response_body: Option<u64>,
}

impl Sample {
    /// The sample of `ex`.
    pub fn of(ex: &Exchange) -> Self {
        let (family, request_body, response_body) = match (&ex.kind, ex.conn.role) {
            (ExchangeKind::Http(h), Role::Server) => (
                Family::HttpServer,
                h.request_body_bytes,
                h.response_body_bytes,
            ),
            (ExchangeKind::Http(h), Role::Client) => (
                Family::HttpClient,
                h.request_body_bytes,
                h.response_body_bytes,
            ),
            (ExchangeKind::Rpc(_), Role::Server) => (Family::RpcServer, None, None),
            (ExchangeKind::Rpc(_), Role::Client) => (Family::RpcClient, None, None),
        };
        Self {
            family,
            seconds: ex.end_ns.saturating_sub(ex.start_ns) as f64 / 1e9,
            request_body,
            response_body,
        }
    }
}

/// Whether a span attribute is one of `family`'s metric attributes (the low-cardinality subset:
/// no path, no peer port, no user agent; clients keep the server they called).
fn keeps(family: Family, key: &str) -> bool {
    match family {
        Family::HttpServer | Family::HttpClient => {
            matches!(
                key,
                semconv::HTTP_REQUEST_METHOD
                    | semconv::HTTP_RESPONSE_STATUS_CODE
                    | semconv::URL_SCHEME
                    | semconv::NETWORK_PROTOCOL_VERSION
                    | semconv::ERROR_TYPE
                    | semconv::HTTP_ROUTE
            ) || (family == Family::HttpClient
                && matches!(key, semconv::SERVER_ADDRESS | semconv::SERVER_PORT))
        }
        Family::RpcServer | Family::RpcClient => RPC_METRIC_KEYS.contains(&key),
    }
}

fn hash_value(h: &mut impl Hasher, v: &Value) {
    match v {
        Value::Bool(b) => h.write_u8(u8::from(*b)),
        Value::I64(i) => h.write_i64(*i),
        Value::F64(f) => h.write_u64(f.to_bits()),
        Value::String(s) => h.write(s.as_str().as_bytes()),
        other => h.write(other.to_string().as_bytes()),
    }
}

impl RedTable {
    /// Records one exchange's `sample`, given its span's attributes (built once per exchange;
    /// the metric ones are picked out of them). `now`: the wall-clock time a new series starts
    /// at.
    pub fn record(&mut self, sample: Sample, span_attributes: &[KeyValue], now: SystemTime) {
        let family = sample.family;
        // The metric attributes, picked once (at most 8 of a span's: see `keeps`).
        let mut kept: [Option<&KeyValue>; MAX_METRIC_ATTRIBUTES] = [None; MAX_METRIC_ATTRIBUTES];
        let mut n = 0;
        let mut h = self.hasher.build_hasher();
        h.write_u8(family as u8);
        for kv in span_attributes {
            if keeps(family, kv.key.as_str()) {
                if let Some(slot) = kept.get_mut(n) {
                    *slot = Some(kv);
                    n += 1;
                    h.write(kv.key.as_str().as_bytes());
                    hash_value(&mut h, &kv.value);
                }
            }
        }
        let kept = kept.get(..n).unwrap_or_default();
        let hash = h.finish();
        let found = self.index.get(&hash).and_then(|ids| {
            ids.iter().copied().find(|&i| {
                self.series.get(i as usize).is_some_and(|s| {
                    // Stored sorted; the span's order may differ.
                    s.family == family
                        && s.attributes.len() == n
                        && kept.iter().flatten().all(|kv| s.attributes.contains(kv))
                })
            })
        });
        let id = match found {
            Some(id) => id as usize,
            None => {
                let attributes = kept.iter().flatten().map(|kv| (*kv).clone()).collect();
                self.new_series(family, hash, attributes, now)
            }
        };
        let Some(series) = self.series.get_mut(id) else {
            return;
        };
        series
            .duration
            .record(&semconv::HTTP_DURATION_BOUNDARIES_S, sample.seconds);
        if let Some(n) = sample.request_body {
            series.request_body.record(&BODY_SIZE_BOUNDARIES, n as f64);
        }
        if let Some(n) = sample.response_body {
            series.response_body.record(&BODY_SIZE_BOUNDARIES, n as f64);
        }
    }

    /// Adds a series (or finds the family's overflow series once the family is full) and
    /// returns its index.
    fn new_series(
        &mut self,
        family: Family,
        hash: u64,
        mut attributes: Vec<KeyValue>,
        now: SystemTime,
    ) -> usize {
        let (hash, attributes) = if self.per_family[family as usize] >= MAX_SERIES_PER_FAMILY {
            let overflow = vec![KeyValue::new(OVERFLOW_KEY, true)];
            let mut h = self.hasher.build_hasher();
            h.write_u8(family as u8);
            h.write(OVERFLOW_KEY.as_bytes());
            let hash = h.finish();
            let existing = self.index.get(&hash).and_then(|ids| {
                ids.iter().copied().find(|&i| {
                    self.series
                        .get(i as usize)
                        .is_some_and(|s| s.family == family && s.attributes == overflow)
                })
            });
            if let Some(id) = existing {
                return id as usize;
            }
            (hash, overflow)
        } else {
            attributes.sort_by(|a, b| a.key.as_str().cmp(b.key.as_str()));
            (hash, attributes)
        };
        let id = self.series.len();
        self.series.push(Series {
            family,
            attributes,
            start: now,
            duration: Histogram::new(&semconv::HTTP_DURATION_BOUNDARIES_S),
            request_body: Histogram::new(&BODY_SIZE_BOUNDARIES),
            response_body: Histogram::new(&BODY_SIZE_BOUNDARIES),
            sent: None,
        });
        self.per_family[family as usize] += 1;
        self.index.entry(hash).or_default().push(id as u32);
        id
    }

    /// Every series, in creation order.
    pub fn series(&self) -> &[Series] {
        &self.series
    }

    /// Every series, for [`Series::take_delta`].
    pub fn series_mut(&mut self) -> &mut [Series] {
        &mut self.series
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.series.is_empty()
    }
}

/// Fixtures of the metrics tests here and in `metrics_export` and `prometheus`.
#[cfg(test)]
pub(crate) mod test_support {
    use std::time::SystemTime;

    use super::{RedTable, Sample};
    use crate::exchange::{ConnInfo, Exchange, ExchangeKind, HttpExchange, HttpVersion, Role};

    /// A server `GET /` answered 200 by `127.0.0.1:80` (tgid 7), lasting `end_ns`.
    pub(crate) fn server_get(
        end_ns: u64,
        request_body_bytes: Option<u64>,
        response_body_bytes: Option<u64>,
    ) -> Exchange {
        Exchange {
            conn: ConnInfo {
                role: Role::Server,
                local: "127.0.0.1:80".parse().unwrap(),
                peer: "127.0.0.1:5000".parse().unwrap(),
                tgid: 7,
                tls: false,
            },
            start_ns: 0,
            end_ns,
            kind: ExchangeKind::Http(HttpExchange {
                method: "GET".into(),
                path: "/".into(),
                version: HttpVersion::Http11,
                host: None,
                user_agent: None,
                traceparent: None,
                status: 200,
                request_body_bytes,
                response_body_bytes,
            }),
        }
    }

    /// Records `ex` in `table` with its span's attributes, as the exporter does.
    pub(crate) fn record(table: &mut RedTable, ex: &Exchange, now: SystemTime) {
        let ExchangeKind::Http(http) = &ex.kind else {
            unreachable!("HTTP fixtures only")
        };
        let attrs = crate::telemetry::span::http_attributes(ex, http, None);
        table.record(Sample::of(ex), &attrs, now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exchange::{ConnInfo, HttpExchange, HttpVersion};

    fn exchange(role: Role, status: u16, path: &str, ns: u64) -> Exchange {
        let http = HttpExchange {
            method: "GET".into(),
            path: path.into(),
            version: HttpVersion::Http11,
            host: Some("api.test:8080".into()),
            user_agent: Some("curl/7.88.1".into()),
            traceparent: None,
            status,
            request_body_bytes: Some(0),
            response_body_bytes: Some(5),
        };
        Exchange {
            conn: ConnInfo {
                role,
                local: "127.0.0.1:8080".parse().unwrap(),
                peer: "127.0.0.1:50000".parse().unwrap(),
                tgid: 1,
                tls: false,
            },
            start_ns: 0,
            end_ns: ns,
            kind: ExchangeKind::Http(http),
        }
    }

    fn record(t: &mut RedTable, ex: &Exchange) {
        let ExchangeKind::Http(http) = &ex.kind else {
            unreachable!()
        };
        let attrs = super::super::span::http_attributes(ex, http, None);
        t.record(Sample::of(ex), &attrs, SystemTime::UNIX_EPOCH);
    }

    fn keys(s: &Series) -> Vec<&str> {
        s.attributes.iter().map(|kv| kv.key.as_str()).collect()
    }

    #[test]
    fn server_attributes_are_low_cardinality_and_sorted() {
        let mut t = RedTable::default();
        record(&mut t, &exchange(Role::Server, 503, "/users/7", 1_000_000));
        assert_eq!(
            keys(&t.series()[0]),
            [
                "error.type",
                "http.request.method",
                "http.response.status_code",
                "network.protocol.version",
                "url.scheme"
            ]
        );
    }

    #[test]
    fn client_attributes_name_the_server() {
        let mut t = RedTable::default();
        record(&mut t, &exchange(Role::Client, 200, "/", 1_000_000));
        assert_eq!(
            keys(&t.series()[0]),
            [
                "http.request.method",
                "http.response.status_code",
                "network.protocol.version",
                "server.address",
                "server.port",
                "url.scheme"
            ]
        );
    }

    #[test]
    fn one_series_per_attribute_set_with_exact_buckets() {
        let mut t = RedTable::default();
        // Paths differ but are not metric attributes: one series for the 200s.
        record(&mut t, &exchange(Role::Server, 200, "/a", 5_000_000)); // 0.005 s: first bucket
        record(&mut t, &exchange(Role::Server, 200, "/b", 5_000_001)); // just above: second
        record(&mut t, &exchange(Role::Server, 200, "/c", 20_000_000_000)); // above 10 s: last
        record(&mut t, &exchange(Role::Server, 404, "/a", 1_000_000));
        assert_eq!(t.series().len(), 2);
        let ok = &t.series()[0];
        assert_eq!(ok.duration.count, 3);
        assert_eq!(ok.duration.counts[0], 1);
        assert_eq!(ok.duration.counts[1], 1);
        assert_eq!(ok.duration.counts[14], 1);
        assert_eq!(ok.duration.counts.iter().sum::<u64>(), 3);
        assert!((ok.duration.sum - 20.010_000_001).abs() < 1e-9);
        assert_eq!(ok.duration.min, 0.005);
        assert_eq!(ok.duration.max, 20.0);
        // Body sizes: 0 lands in the `(-inf, 0]` bucket, 5 in `(0, 5]`.
        assert_eq!(ok.request_body.counts[0], 3);
        assert_eq!(ok.response_body.counts[1], 3);
        assert_eq!(ok.response_body.sum, 15.0);
        assert!(ok
            .histogram(Instrument::Duration(Family::HttpClient))
            .is_none());
    }

    #[test]
    fn deltas_are_what_was_recorded_since_the_last_one() {
        let mut t = RedTable::default();
        record(&mut t, &exchange(Role::Server, 200, "/", 1_000_000));
        record(&mut t, &exchange(Role::Server, 200, "/", 2_000_000));
        let t1 = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(10);
        let first = t.series_mut()[0].take_delta(t1);
        assert_eq!(first.start, SystemTime::UNIX_EPOCH);
        assert_eq!(first.duration.count, 2);
        assert_eq!(first.duration.min, 0.001);
        record(&mut t, &exchange(Role::Server, 200, "/", 30_000_000));
        let second = t.series_mut()[0].take_delta(t1 + std::time::Duration::from_secs(10));
        assert_eq!(second.start, t1);
        assert_eq!(second.duration.count, 1);
        assert_eq!(second.duration.counts.iter().sum::<u64>(), 1);
        assert!((second.duration.sum - 0.03).abs() < 1e-12);
        assert!(
            second.duration.min.is_infinite(),
            "unknown over an interval"
        );
        // The cumulative state is untouched (Prometheus reads it).
        assert_eq!(t.series()[0].duration.count, 3);
    }

    #[test]
    fn a_full_family_goes_to_the_overflow_series() {
        let mut t = RedTable::default();
        for status in 0..(MAX_SERIES_PER_FAMILY as u16 + 10) {
            record(&mut t, &exchange(Role::Server, 100 + status, "/", 1));
        }
        assert_eq!(t.series().len(), MAX_SERIES_PER_FAMILY + 1);
        let overflow = t.series().last().unwrap();
        assert_eq!(keys(overflow), [OVERFLOW_KEY]);
        assert_eq!(overflow.duration.count, 10);
        // Other families are not affected.
        record(&mut t, &exchange(Role::Client, 200, "/", 1));
        assert_eq!(t.series().last().unwrap().family, Family::HttpClient);
    }
}
