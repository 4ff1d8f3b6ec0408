//! The agent's own counters, read from its Prometheus endpoint (`GET /metrics`, text format).

use std::{
    collections::BTreeMap,
    io::{Read as _, Write as _},
    net::{Ipv4Addr, TcpStream},
    time::Duration,
};

use anyhow::{bail, Context as _, Result};

/// The counters read from the agent's `/metrics`, summed over their other labels.
#[derive(Debug, Default)]
pub(super) struct Metrics {
    /// `sonde_kernel_dropped_total` by `reason`.
    pub(super) dropped: BTreeMap<String, u64>,
    /// `sonde_spans_total` by `outcome`.
    pub(super) spans: BTreeMap<String, u64>,
    /// `http_{server,client}_request_duration_seconds_count`: HTTP exchanges (HTTP/1.x and h2c).
    pub(super) server_requests: u64,
    pub(super) client_requests: u64,
    /// `rpc_{server,client}_call_duration_seconds_count`: gRPC calls.
    pub(super) server_calls: u64,
    pub(super) client_calls: u64,
    /// gRPC calls (either side) whose `rpc_response_status_code` is not `OK`.
    pub(super) calls_not_ok: u64,
}

impl Metrics {
    pub(super) fn parse(text: &str) -> Self {
        let mut m = Metrics::default();
        for (name, labels, value) in samples(text) {
            // Counters are integers; the text format may still write `1e+06`.
            let value = value as u64;
            match name {
                "sonde_kernel_dropped_total" => {
                    let reason = label(labels, "reason").unwrap_or("unknown");
                    *m.dropped.entry(reason.to_owned()).or_default() += value;
                }
                "sonde_spans_total" => {
                    let outcome = label(labels, "outcome").unwrap_or("unknown");
                    *m.spans.entry(outcome.to_owned()).or_default() += value;
                }
                "http_server_request_duration_seconds_count" => m.server_requests += value,
                "http_client_request_duration_seconds_count" => m.client_requests += value,
                "rpc_server_call_duration_seconds_count" => {
                    m.server_calls += value;
                    m.calls_not_ok += not_ok(labels, value);
                }
                "rpc_client_call_duration_seconds_count" => {
                    m.client_calls += value;
                    m.calls_not_ok += not_ok(labels, value);
                }
                _ => {}
            }
        }
        m
    }

    pub(super) fn recorded(&self) -> u64 {
        self.spans.get("recorded").copied().unwrap_or(0)
    }
}

/// `count` when the calls of a label block did not end with gRPC status `OK`, else 0.
fn not_ok(labels: &str, count: u64) -> u64 {
    if label(labels, "rpc_response_status_code") == Some("OK") {
        0
    } else {
        count
    }
}

/// (name, label block without braces, value) of each sample line of the Prometheus text format.
fn samples(text: &str) -> impl Iterator<Item = (&str, &str, f64)> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (name, labels, rest) = match l.find('{') {
                Some(open) => {
                    let close = l.rfind('}')?;
                    (&l[..open], &l[open + 1..close], &l[close + 1..])
                }
                None => {
                    let (name, rest) = l.split_once(' ')?;
                    (name, "", rest)
                }
            };
            let value = rest.split_whitespace().next()?.parse().ok()?;
            Some((name, labels, value))
        })
}

/// The value of `key` in a label block (`a="x",b="y"`), unescaping nothing (values here are plain).
fn label<'a>(labels: &'a str, key: &str) -> Option<&'a str> {
    let mut rest = labels;
    while !rest.is_empty() {
        let (k, after) = rest.split_once("=\"")?;
        let mut end = 0;
        let bytes = after.as_bytes();
        while end < bytes.len() && bytes[end] != b'"' {
            end += if bytes[end] == b'\\' { 2 } else { 1 };
        }
        let value = after.get(..end)?;
        if k.trim_start_matches(',').trim() == key {
            return Some(value);
        }
        rest = after.get(end + 1..)?;
    }
    None
}

/// `GET path` over HTTP/1.0 (no chunking, the server closes) on 127.0.0.1; returns the body.
pub(super) fn http_get(port: u16, path: &str) -> Result<String> {
    let mut stream = TcpStream::connect((Ipv4Addr::LOCALHOST, port))
        .with_context(|| format!("connect to 127.0.0.1:{port}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .context("HTTP response without a header end")?;
    if !head.starts_with("HTTP/1.0 200") && !head.starts_with("HTTP/1.1 200") {
        bail!(
            "GET 127.0.0.1:{port}{path}: {}",
            head.lines().next().unwrap_or("")
        );
    }
    Ok(body.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_sum_over_labels() {
        let text = "# HELP sonde_spans_total x\n\
            sonde_spans_total{job=\"sonde\",instance=\"vm:1\",outcome=\"recorded\"} 87546\n\
            sonde_spans_total{job=\"sonde\",instance=\"vm:1\",outcome=\"exported\"} 87040\n\
            sonde_kernel_dropped_total{job=\"sonde\",reason=\"ringbuf_full\",program=\"read\"} 3\n\
            sonde_kernel_dropped_total{job=\"sonde\",reason=\"ringbuf_full\",program=\"write\"} 4\n\
            http_server_request_duration_seconds_count{job=\"nginx\",http_route=\"/a,b=\\\"c\\\"\"} 10\n\
            http_server_request_duration_seconds_count{job=\"nginx\",http_route=\"/x\"} 5\n\
            http_client_request_duration_seconds_count{job=\"wrk\"} 15\n\
            rpc_server_call_duration_seconds_count{job=\"python3\",rpc_method=\"sonde.bench.Echo/Unary\",rpc_response_status_code=\"OK\"} 40\n\
            rpc_server_call_duration_seconds_count{job=\"python3\",rpc_method=\"sonde.bench.Echo/Unary\",rpc_response_status_code=\"UNIMPLEMENTED\"} 2\n\
            rpc_client_call_duration_seconds_count{job=\"h2load\",rpc_response_status_code=\"OK\"} 41\n";
        let m = Metrics::parse(text);
        assert_eq!(m.recorded(), 87546);
        assert_eq!(m.spans.get("exported"), Some(&87040));
        assert_eq!(m.dropped.get("ringbuf_full"), Some(&7));
        assert_eq!((m.server_requests, m.client_requests), (15, 15));
        assert_eq!(
            (m.server_calls, m.client_calls, m.calls_not_ok),
            (42, 41, 2)
        );
    }

    #[test]
    fn label_values() {
        let labels = r#"job="sonde",route="/a,b=\"c\"",outcome="recorded""#;
        assert_eq!(label(labels, "outcome"), Some("recorded"));
        assert_eq!(label(labels, "job"), Some("sonde"));
        assert_eq!(label(labels, "missing"), None);
    }
}
