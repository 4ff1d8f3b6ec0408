//! Flattens the sink's JSON lines (`MessageToDict` of `ExportTraceServiceRequest`) into [`Span`]s.
//!
//! # Wire format
//! One line per export: `{"signal": "traces", "transport": "grpc", "body": {"resourceSpans": [
//! {"resource": {"attributes": [{"key", "value": {"stringValue" | "intValue" (a string) | …}}]},
//! "scopeSpans": [{"spans": [{"name", "kind": "SPAN_KIND_SERVER", "startTimeUnixNano": "…",
//! "endTimeUnixNano": "…", "attributes": […], "status": {"code": "STATUS_CODE_ERROR"}}]}]}]}}`.
//! proto3 JSON leaves out default values: no `kind` means unspecified, no `status.code` means unset.

use std::{collections::BTreeMap, fmt};

use serde_json::Value;

/// An attribute value as OTLP/JSON carries it.
#[derive(Debug, Clone, PartialEq)]
pub enum AttrValue {
    Str(String),
    Int(i64),
    Bool(bool),
    Double(f64),
    /// Arrays, maps and bytes, kept as JSON.
    Other(Value),
}

impl fmt::Display for AttrValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Str(s) => write!(f, "{s:?}"),
            Self::Int(i) => write!(f, "{i}"),
            Self::Bool(b) => write!(f, "{b}"),
            Self::Double(d) => write!(f, "{d}"),
            Self::Other(v) => write!(f, "{v}"),
        }
    }
}

/// One span with its resource, flattened.
#[derive(Debug, Clone)]
pub struct Span {
    pub resource: BTreeMap<String, AttrValue>,
    pub name: String,
    /// As the JSON spells it: `SPAN_KIND_SERVER`, `SPAN_KIND_CLIENT`, … (`SPAN_KIND_UNSPECIFIED` if absent).
    pub kind: String,
    pub attributes: BTreeMap<String, AttrValue>,
    /// `STATUS_CODE_UNSET` (absent in the JSON), `STATUS_CODE_OK` or `STATUS_CODE_ERROR`.
    pub status_code: String,
    pub start_time_unix_nano: u64,
    pub end_time_unix_nano: u64,
    /// Lowercase hex (the sink's JSON has base64, as protobuf's `MessageToDict` writes bytes);
    /// empty when absent.
    pub trace_id: String,
    pub span_id: String,
    /// Empty for a root span.
    pub parent_span_id: String,
}

pub const SERVER: &str = "SPAN_KIND_SERVER";
pub const CLIENT: &str = "SPAN_KIND_CLIENT";
pub const STATUS_UNSET: &str = "STATUS_CODE_UNSET";
pub const STATUS_ERROR: &str = "STATUS_CODE_ERROR";

impl Span {
    pub fn attr(&self, key: &str) -> Option<&AttrValue> {
        self.attributes.get(key)
    }

    pub fn attr_str(&self, key: &str) -> Option<&str> {
        match self.attributes.get(key) {
            Some(AttrValue::Str(s)) => Some(s),
            _ => None,
        }
    }

    pub fn attr_int(&self, key: &str) -> Option<i64> {
        match self.attributes.get(key) {
            Some(AttrValue::Int(i)) => Some(*i),
            _ => None,
        }
    }

    pub fn resource_str(&self, key: &str) -> Option<&str> {
        match self.resource.get(key) {
            Some(AttrValue::Str(s)) => Some(s),
            _ => None,
        }
    }

    pub fn resource_int(&self, key: &str) -> Option<i64> {
        match self.resource.get(key) {
            Some(AttrValue::Int(i)) => Some(*i),
            _ => None,
        }
    }

    pub fn is_server(&self) -> bool {
        self.kind == SERVER
    }

    pub fn is_client(&self) -> bool {
        self.kind == CLIENT
    }

    /// `server.port` as a `u16`, if present and in range.
    pub fn server_port(&self) -> Option<u16> {
        self.attr_int("server.port")
            .and_then(|p| u16::try_from(p).ok())
    }

    /// Whether this span belongs to a connection to `port` (`server.port` on both sides).
    pub fn is_for_port(&self, port: u16) -> bool {
        self.server_port() == Some(port)
    }

    /// `end - start` in ns (negative if the span ends before it starts).
    pub fn duration_ns(&self) -> i128 {
        i128::from(self.end_time_unix_nano) - i128::from(self.start_time_unix_nano)
    }

    /// Every attribute value (span and resource) and the name, as text, for "never exported" checks.
    pub fn all_values(&self) -> impl Iterator<Item = String> + '_ {
        std::iter::once(self.name.clone())
            .chain(self.attributes.values().map(ToString::to_string))
            .chain(self.resource.values().map(ToString::to_string))
    }
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = self.kind.strip_prefix("SPAN_KIND_").unwrap_or(&self.kind);
        let status = self
            .status_code
            .strip_prefix("STATUS_CODE_")
            .unwrap_or(&self.status_code);
        write!(
            f,
            "{kind} {:?} status={status} dur={}ns attrs={{",
            self.name,
            self.duration_ns()
        )?;
        for (i, (k, v)) in self.attributes.iter().enumerate() {
            write!(f, "{}{k}={v}", if i == 0 { "" } else { ", " })?;
        }
        write!(
            f,
            "}} trace={} span={} parent={:?} resource={{",
            self.trace_id, self.span_id, self.parent_span_id
        )?;
        for (i, (k, v)) in self.resource.iter().enumerate() {
            write!(f, "{}{k}={v}", if i == 0 { "" } else { ", " })?;
        }
        write!(f, "}}")
    }
}

/// One span per line, for assertion messages.
pub fn describe(spans: &[Span]) -> String {
    if spans.is_empty() {
        return "  (no spans)".to_owned();
    }
    spans
        .iter()
        .map(|s| format!("  {s}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Parses the sink's whole output; lines of other signals are skipped, a partial last line too
/// (the sink may be writing it).
pub fn parse_sink_output(text: &str) -> Vec<Span> {
    let mut spans = Vec::new();
    for line in text.lines() {
        let Ok(record) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        if record["signal"] != "traces" {
            continue;
        }
        for resource_spans in array(&record["body"]["resourceSpans"]) {
            let resource = attributes(&resource_spans["resource"]["attributes"]);
            for scope_spans in array(&resource_spans["scopeSpans"]) {
                for span in array(&scope_spans["spans"]) {
                    spans.push(Span {
                        resource: resource.clone(),
                        name: span["name"].as_str().unwrap_or_default().to_owned(),
                        kind: span["kind"]
                            .as_str()
                            .unwrap_or("SPAN_KIND_UNSPECIFIED")
                            .to_owned(),
                        attributes: attributes(&span["attributes"]),
                        status_code: span["status"]["code"]
                            .as_str()
                            .unwrap_or(STATUS_UNSET)
                            .to_owned(),
                        start_time_unix_nano: uint(&span["startTimeUnixNano"]),
                        end_time_unix_nano: uint(&span["endTimeUnixNano"]),
                        trace_id: id_hex(&span["traceId"]),
                        span_id: id_hex(&span["spanId"]),
                        parent_span_id: id_hex(&span["parentSpanId"]),
                    });
                }
            }
        }
    }
    spans
}

fn array(v: &Value) -> &[Value] {
    v.as_array().map_or(&[], Vec::as_slice)
}

/// proto3 JSON writes 64-bit integers as strings.
fn uint(v: &Value) -> u64 {
    match v {
        Value::String(s) => s.parse().unwrap_or(0),
        Value::Number(n) => n.as_u64().unwrap_or(0),
        _ => 0,
    }
}

/// A trace or span id as `MessageToDict` writes it (standard base64) → lowercase hex; an id that is
/// not valid base64 is kept as `invalid-base64:<text>` so assertions show it.
fn id_hex(v: &Value) -> String {
    let Some(text) = v.as_str() else {
        return String::new();
    };
    match base64_decode(text) {
        Some(bytes) => bytes.iter().map(|b| format!("{b:02x}")).collect(),
        None => format!("invalid-base64:{text}"),
    }
}

/// Standard (RFC 4648 §4) base64 with optional `=` padding.
pub fn base64_decode(text: &str) -> Option<Vec<u8>> {
    fn sextet(c: u8) -> Option<u32> {
        match c {
            b'A'..=b'Z' => Some(u32::from(c - b'A')),
            b'a'..=b'z' => Some(u32::from(c - b'a') + 26),
            b'0'..=b'9' => Some(u32::from(c - b'0') + 52),
            b'+' => Some(62),
            b'/' => Some(63),
            _ => None,
        }
    }
    let body = text.trim_end_matches('=');
    if text.len() - body.len() > 2 || body.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(body.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in body.bytes() {
        acc = (acc << 6) | sextet(c)?;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push(u8::try_from((acc >> bits) & 0xff).ok()?);
        }
    }
    Some(out)
}

fn attributes(list: &Value) -> BTreeMap<String, AttrValue> {
    array(list)
        .iter()
        .filter_map(|kv| Some((kv["key"].as_str()?.to_owned(), any_value(&kv["value"]))))
        .collect()
}

fn any_value(v: &Value) -> AttrValue {
    if let Some(s) = v["stringValue"].as_str() {
        AttrValue::Str(s.to_owned())
    } else if let Some(i) = v.get("intValue") {
        match i {
            Value::String(s) => s
                .parse()
                .map_or_else(|_| AttrValue::Other(i.clone()), AttrValue::Int),
            Value::Number(n) => n
                .as_i64()
                .map_or_else(|| AttrValue::Other(i.clone()), AttrValue::Int),
            _ => AttrValue::Other(i.clone()),
        }
    } else if let Some(b) = v["boolValue"].as_bool() {
        AttrValue::Bool(b)
    } else if let Some(d) = v["doubleValue"].as_f64() {
        AttrValue::Double(d)
    } else {
        AttrValue::Other(v.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flattens_resource_scope_and_span() {
        let line = r#"{"signal":"traces","transport":"grpc","body":{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"curl"}},{"key":"process.pid","value":{"intValue":"42"}}]},"scopeSpans":[{"spans":[{"name":"GET","kind":"SPAN_KIND_CLIENT","startTimeUnixNano":"10","endTimeUnixNano":"25","attributes":[{"key":"http.response.status_code","value":{"intValue":"404"}}],"status":{"code":"STATUS_CODE_ERROR"}},{"name":"GET","kind":"SPAN_KIND_CLIENT","startTimeUnixNano":"1","endTimeUnixNano":"2","status":{}}]}]}]}}
{"signal":"metrics","transport":"grpc","body":{}}
{"signal":"traces","#;
        let spans = parse_sink_output(line);
        assert_eq!(spans.len(), 2);
        assert_eq!(spans[0].resource_str("service.name"), Some("curl"));
        assert_eq!(spans[0].resource_int("process.pid"), Some(42));
        assert!(spans[0].is_client());
        assert_eq!(spans[0].attr_int("http.response.status_code"), Some(404));
        assert_eq!(spans[0].status_code, STATUS_ERROR);
        assert_eq!(spans[0].duration_ns(), 15);
        assert_eq!(spans[1].status_code, STATUS_UNSET);
        assert_eq!(spans[0].trace_id, "");
    }

    #[test]
    fn ids_are_decoded_from_base64_to_hex() {
        // MessageToDict of trace id 4bf92f3577b34da6a3ce929d0e0e4736, span id 00f067aa0ba902b7.
        let line = r#"{"signal":"traces","body":{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"S/kvNXezTaajzpKdDg5HNg==","spanId":"APBnqgupArc=","parentSpanId":"APBnqgupArc=","name":"GET"}]}]}]}}"#;
        let spans = parse_sink_output(line);
        assert_eq!(spans[0].trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(spans[0].span_id, "00f067aa0ba902b7");
        assert_eq!(spans[0].parent_span_id, "00f067aa0ba902b7");
        assert_eq!(base64_decode("YQ"), Some(b"a".to_vec()));
        assert_eq!(base64_decode("YWI="), Some(b"ab".to_vec()));
        assert_eq!(base64_decode("Y"), None);
        assert_eq!(base64_decode("Y!=="), None);
    }
}
