//! RED metrics over OTLP: after N requests of known status, the histograms the independent
//! receiver got count exactly N, split by status, with the semantic conventions' names, units
//! and bucket boundaries, on both the server (nginx) and the client (curl) side.

use std::collections::BTreeMap;

use agent_tests::{
    peers::curl,
    require_root,
    world::{Peer, Stage, Via, Watch},
    World,
};
use serde_json::Value;

/// `OTEL` semantic-convention boundaries of `http.*.request.duration`, in seconds.
const BOUNDARIES: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];

/// One histogram data point as the sink recorded it (protobuf JSON: 64-bit ints are strings).
#[derive(Debug, Clone)]
struct Point {
    service: String,
    pid: i64,
    metric: String,
    unit: String,
    status: i64,
    count: u64,
    sum: f64,
    bucket_counts: Vec<u64>,
    bounds: Vec<f64>,
    temporality: String,
}

fn int(v: &Value) -> i64 {
    match v {
        Value::String(s) => s.parse().unwrap_or(-1),
        Value::Number(n) => n.as_i64().unwrap_or(-1),
        _ => -1,
    }
}

fn attr<'a>(attrs: &'a Value, key: &str) -> Option<&'a Value> {
    attrs
        .as_array()?
        .iter()
        .find(|a| a["key"] == key)
        .map(|a| &a["value"])
}

/// Every histogram data point in the sink's output, in arrival order.
fn points(raw: &str) -> Vec<Point> {
    let mut out = Vec::new();
    for line in raw.lines() {
        let Ok(v) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        if v["signal"] != "metrics" {
            continue;
        }
        for rm in v["body"]["resourceMetrics"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let res = &rm["resource"]["attributes"];
            let service = attr(res, "service.name")
                .map(|v| v["stringValue"].as_str().unwrap_or("").to_owned());
            let pid = attr(res, "process.pid").map_or(-1, |v| int(&v["intValue"]));
            for sm in rm["scopeMetrics"].as_array().into_iter().flatten() {
                for m in sm["metrics"].as_array().into_iter().flatten() {
                    let h = &m["histogram"];
                    for dp in h["dataPoints"].as_array().into_iter().flatten() {
                        out.push(Point {
                            service: service.clone().unwrap_or_default(),
                            pid,
                            metric: m["name"].as_str().unwrap_or("").to_owned(),
                            unit: m["unit"].as_str().unwrap_or("").to_owned(),
                            status: attr(&dp["attributes"], "http.response.status_code")
                                .map_or(-1, |v| int(&v["intValue"])),
                            count: u64::try_from(int(&dp["count"])).unwrap_or(0),
                            sum: dp["sum"].as_f64().unwrap_or(-1.0),
                            bucket_counts: dp["bucketCounts"]
                                .as_array()
                                .into_iter()
                                .flatten()
                                .map(|c| u64::try_from(int(c)).unwrap_or(0))
                                .collect(),
                            bounds: dp["explicitBounds"]
                                .as_array()
                                .into_iter()
                                .flatten()
                                .filter_map(Value::as_f64)
                                .collect(),
                            temporality: h["aggregationTemporality"]
                                .as_str()
                                .unwrap_or("")
                                .to_owned(),
                        });
                    }
                }
            }
        }
    }
    out
}

/// Cumulative points: the last one per (process, metric, status) holds the totals; summed over
/// processes (every curl invocation is a process of its own).
fn totals(points: &[Point], service: &str, metric: &str) -> BTreeMap<i64, u64> {
    let mut last: BTreeMap<(i64, i64), &Point> = BTreeMap::new();
    for p in points
        .iter()
        .filter(|p| p.service == service && p.metric == metric)
    {
        last.insert((p.pid, p.status), p);
    }
    let mut by_status = BTreeMap::new();
    for p in last.values() {
        *by_status.entry(p.status).or_default() += p.count;
    }
    by_status
}

#[test]
fn histogram_counts_match_the_requests_exactly() {
    require_root!();
    red_counts_are_exact(World::nginx("metrics-red"));
}

/// The same over OTLP/HTTP (protobuf `POST /v1/metrics`).
#[test]
fn histogram_counts_match_the_requests_exactly_over_otlp_http() {
    require_root!();
    red_counts_are_exact(World::start(
        "metrics-red-http",
        Peer::Nginx,
        Via::SinkHttpProtobuf,
        Watch::Server,
    ));
}

fn red_counts_are_exact(mut w: World) {
    let mut urls = Vec::new();
    for _ in 0..5 {
        urls.push(w.server.url("/index.html"));
    }
    for _ in 0..3 {
        urls.push(w.server.url("/status/404"));
    }
    for _ in 0..2 {
        urls.push(w.server.url("/status/500"));
    }
    // Two curl processes (keep-alive within each), so the client side spans two resources.
    let (first, second) = urls.split_at(4);
    let runs = [curl(first, &[]), curl(second, &[])];
    let statuses: Vec<i64> = runs
        .iter()
        .flat_map(|r| r.transfers.iter().map(|t| t.status))
        .collect();
    assert_eq!(
        statuses.iter().filter(|&&s| s == 200).count(),
        5,
        "harness: {statuses:?}"
    );
    let client_wall: f64 = runs.iter().map(|r| r.wall.as_secs_f64()).sum();

    let spans = w.finish(20);
    w.assert_counts(&spans, 10, 10);
    // The agent flushed its meters on SIGTERM; the sink has the final cumulative points.
    let points = points(&w.sink.raw());
    let want: BTreeMap<i64, u64> = [(200, 5), (404, 3), (500, 2)].into();
    for (service, metric) in [
        ("nginx", "http.server.request.duration"),
        ("curl", "http.client.request.duration"),
        ("nginx", "http.server.response.body.size"),
        ("curl", "http.client.response.body.size"),
    ] {
        assert_eq!(
            totals(&points, service, metric),
            want,
            "{service} {metric}: {points:#?}"
        );
    }
    for p in points.iter().filter(|p| p.metric.ends_with(".duration")) {
        assert_eq!(p.unit, "s", "{p:?}");
        assert_eq!(p.bounds, BOUNDARIES, "{p:?}");
        assert_eq!(p.bucket_counts.iter().sum::<u64>(), p.count, "{p:?}");
        assert_eq!(p.temporality, "AGGREGATION_TEMPORALITY_CUMULATIVE", "{p:?}");
        assert!(p.sum > 0.0, "{p:?}");
    }
    // Every request took less than the whole of the client runs.
    let client_sum: f64 = {
        let mut last: BTreeMap<(i64, i64), f64> = BTreeMap::new();
        for p in points
            .iter()
            .filter(|p| p.metric == "http.client.request.duration")
        {
            last.insert((p.pid, p.status), p.sum);
        }
        last.values().sum()
    };
    assert!(
        client_sum <= client_wall,
        "durations {client_sum}s > client wall time {client_wall}s"
    );
    for p in points.iter().filter(|p| p.metric.ends_with(".body.size")) {
        assert_eq!(p.unit, "By", "{p:?}");
    }
}

#[test]
fn trace_sampling_drops_spans_but_metrics_stay_complete() {
    require_root!();
    // OTEL_TRACES_SAMPLER=traceidratio with ratio 0: the SDK samples every span away.
    let mut w = Stage::start("metrics-sampled", Peer::Nginx, Via::SinkGrpc).start_agent_with_env(
        Watch::Server,
        &[],
        &[
            ("OTEL_TRACES_SAMPLER", "traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", "0"),
        ],
    );
    let urls = vec![w.server.url("/index.html"); 6];
    let run = curl(&urls, &[]);
    assert!(
        run.transfers.iter().all(|t| t.status == 200),
        "harness: {run:?}"
    );
    // Wait for the meters' export (every second), then stop (the last export happens on SIGTERM).
    std::thread::sleep(std::time::Duration::from_secs(3));
    w.agent.stop_cleanly();
    let port = w.port();
    assert_eq!(
        w.sink.spans_where(|s| s.is_for_port(port)).len(),
        0,
        "sampled-away spans exported"
    );
    let points = points(&w.sink.raw());
    let want: BTreeMap<i64, u64> = [(200, 6)].into();
    assert_eq!(
        totals(&points, "nginx", "http.server.request.duration"),
        want,
        "{points:#?}"
    );
    assert_eq!(
        totals(&points, "curl", "http.client.request.duration"),
        want,
        "{points:#?}"
    );
}
