//! The default exporter when no OTLP endpoint is configured: one readable line per span on stdout,
//! so `sudo sonde` on a bare host shows its work at once.
//!
//! ```text
//! 2026-11-21T16:52:01.123456Z SERVER nginx[1234] GET /index.html 200 1.234ms <-127.0.0.1:50000 https trace=4bf9…
//! 2026-11-21T16:52:02.000001Z CLIENT python3.11[77] sonde.test.Echo/Unary OK 0.912ms ->127.0.0.1:50051 grpc trace=…
//! ```

use std::{
    fmt::Write as _,
    io::Write as _,
    time::{SystemTime, UNIX_EPOCH},
};

use opentelemetry::{trace::SpanKind, trace::Status, Value};
use opentelemetry_sdk::{
    error::OTelSdkResult,
    trace::{SpanData, SpanExporter},
    Resource,
};

use super::semconv;

/// Writes one line per span to stdout. Its resource gives the process name and pid.
#[derive(Debug, Default)]
pub struct ConsoleExporter {
    process: String,
}

impl SpanExporter for ConsoleExporter {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let mut text = String::new();
        for span in &batch {
            format_line(&mut text, &self.process, span);
        }
        let mut out = std::io::stdout().lock();
        // A closed stdout (e.g. `sonde | head`) must not stop the agent; the line is dropped.
        let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
        Ok(())
    }

    fn set_resource(&mut self, resource: &Resource) {
        let get = |k: &str| resource.get(&opentelemetry::Key::from(k.to_owned()));
        let name =
            get(semconv::SERVICE_NAME).map_or_else(|| "unknown".to_owned(), |v| v.to_string());
        let pid = get(semconv::PROCESS_PID).map_or_else(|| "?".to_owned(), |v| v.to_string());
        self.process = format!("{name}[{pid}]");
    }
}

fn attr<'a>(span: &'a SpanData, key: &str) -> Option<&'a Value> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| &kv.value)
}

/// Appends the line for one span (with `\n`) to `out`.
pub fn format_line(out: &mut String, process: &str, span: &SpanData) {
    let kind = match span.span_kind {
        SpanKind::Server => "SERVER",
        SpanKind::Client => "CLIENT",
        SpanKind::Producer => "PRODUCER",
        SpanKind::Consumer => "CONSUMER",
        SpanKind::Internal => "INTERNAL",
    };
    let dash = Value::from("-");
    // RPC spans: the name is the method; no path.
    let path = attr(span, semconv::URL_PATH).map_or_else(String::new, |p| format!(" {p}"));
    let status = attr(span, semconv::HTTP_RESPONSE_STATUS_CODE)
        .or_else(|| attr(span, semconv::RPC_RESPONSE_STATUS_CODE))
        .unwrap_or(&dash);
    let dur = span
        .end_time
        .duration_since(span.start_time)
        .unwrap_or_default();
    let peer = format!(
        "{}:{}",
        attr(span, semconv::NETWORK_PEER_ADDRESS).unwrap_or(&dash),
        attr(span, semconv::NETWORK_PEER_PORT).unwrap_or(&dash)
    );
    let arrow = if span.span_kind == SpanKind::Server {
        "<-"
    } else {
        "->"
    };
    let err = if matches!(span.status, Status::Error { .. }) {
        " ERROR"
    } else {
        ""
    };
    let scheme = attr(span, semconv::URL_SCHEME)
        .or_else(|| attr(span, semconv::RPC_SYSTEM_NAME))
        .unwrap_or(&dash);
    let _ = writeln!(
        out,
        "{} {kind} {process} {}{path} {status}{err} {:.3}ms {arrow}{peer} {scheme} trace={}",
        rfc3339(span.start_time),
        span.name,
        dur.as_secs_f64() * 1e3,
        span.span_context.trace_id()
    );
}

/// `2026-11-21T16:52:01.123456Z` (UTC, microseconds), without a date-time crate.
fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil-from-days (Howard Hinnant's algorithm), valid for the Unix era.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_micros()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn formats_utc_timestamps() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000000Z");
        let t = UNIX_EPOCH + Duration::from_micros(1_795_279_921_123_456);
        assert_eq!(rfc3339(t), "2026-11-21T16:52:01.123456Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(rfc3339(leap), "2000-02-29T00:00:00.000000Z");
    }
}
