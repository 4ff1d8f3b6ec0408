//! The console's periodic RED summary: per service, kind and route, the request rate, the error
//! percentage and the p50/p99 latency over the last interval, so a person on a bare host sees the
//! numbers without a backend.
//!
//! ```text
//! RED summary, last 10.0 s
//! SERVICE      KIND    ROUTE               REQ/S   ERR%      P50      P99
//! nginx        SERVER  /users/{id}         301.2    0.3   0.21ms   1.90ms
//! ```
//! Input: each exchange's service, kind, route, error flag and duration. Output: a text table;
//! the counts reset after each rendering. Latency quantiles come from an HDR histogram
//! (3 significant digits) in microseconds.

use std::{collections::BTreeMap, fmt::Write as _, time::Duration};

use hdrhistogram::Histogram;

/// Routes shown per interval at most (the busiest first); the rest are summed into one row.
const MAX_ROWS: usize = 30;

#[derive(Debug)]
struct Entry {
    count: u64,
    errors: u64,
    latency_us: Histogram<u64>,
}

/// Aggregates of the current interval.
#[derive(Debug, Default)]
pub struct Summary {
    entries: BTreeMap<(String, &'static str, String), Entry>,
}

impl Summary {
    /// Records one exchange.
    pub fn record(
        &mut self,
        service: &str,
        kind: &'static str,
        route: &str,
        error: bool,
        duration: Duration,
    ) {
        let key = (service.to_owned(), kind, route.to_owned());
        let entry = self.entries.entry(key).or_insert_with(|| Entry {
            count: 0,
            errors: 0,
            // 1 µs .. 1 h, 3 significant digits: a few KiB per row.
            latency_us: Histogram::new_with_bounds(1, 3_600_000_000, 3)
                .expect("constant, valid histogram bounds"),
        });
        entry.count += 1;
        entry.errors += u64::from(error);
        let us = u64::try_from(duration.as_micros())
            .unwrap_or(u64::MAX)
            .clamp(1, 3_600_000_000);
        let _ = entry.latency_us.record(us);
    }

    /// Whether nothing was recorded since the last rendering.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Renders the table for an interval of `elapsed` and starts a new interval.
    pub fn take_table(&mut self, elapsed: Duration) -> String {
        let secs = elapsed.as_secs_f64().max(1e-3);
        let mut rows: Vec<_> = std::mem::take(&mut self.entries).into_iter().collect();
        rows.sort_by(|a, b| b.1.count.cmp(&a.1.count).then_with(|| a.0.cmp(&b.0)));
        let mut out = String::new();
        let _ = writeln!(out, "RED summary, last {secs:.1} s");
        let _ = writeln!(
            out,
            "{:<16} {:<7} {:<32} {:>9} {:>6} {:>9} {:>9}",
            "SERVICE", "KIND", "ROUTE", "REQ/S", "ERR%", "P50", "P99"
        );
        let shown = rows.len().min(MAX_ROWS);
        for ((service, kind, route), e) in &rows[..shown] {
            let _ = writeln!(
                out,
                "{:<16} {:<7} {:<32} {:>9.1} {:>6.1} {:>9} {:>9}",
                truncate(service, 16),
                kind,
                truncate(route, 32),
                e.count as f64 / secs,
                100.0 * e.errors as f64 / e.count.max(1) as f64,
                ms(e.latency_us.value_at_quantile(0.5)),
                ms(e.latency_us.value_at_quantile(0.99)),
            );
        }
        if rows.len() > shown {
            let rest: u64 = rows[shown..].iter().map(|r| r.1.count).sum();
            let _ = writeln!(
                out,
                "... {} more rows, {:.1} req/s",
                rows.len() - shown,
                rest as f64 / secs
            );
        }
        out
    }
}

fn ms(us: u64) -> String {
    format!("{:.2}ms", us as f64 / 1000.0)
}

fn truncate(s: &str, n: usize) -> &str {
    match s.char_indices().nth(n) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_has_rate_errors_and_quantiles() {
        let mut s = Summary::default();
        for i in 0..100u64 {
            s.record(
                "nginx",
                "SERVER",
                "/users/{id}",
                i % 10 == 0,
                Duration::from_micros(100 + i * 10),
            );
        }
        s.record("curl", "CLIENT", "GET", false, Duration::from_millis(5));
        let t = s.take_table(Duration::from_secs(10));
        let nginx = t.lines().find(|l| l.starts_with("nginx")).unwrap();
        let cols: Vec<&str> = nginx.split_whitespace().collect();
        assert_eq!(cols[..4], ["nginx", "SERVER", "/users/{id}", "10.0"]);
        assert_eq!(cols[4], "10.0", "{nginx}");
        assert_eq!(cols[5], "0.59ms", "{nginx}"); // the 50th of 100..=1090 µs step 10
        assert_eq!(cols[6], "1.08ms", "{nginx}"); // the 99th
        assert!(
            t.lines().nth(2).unwrap().starts_with("nginx"),
            "busiest first:\n{t}"
        );
        assert!(s.is_empty(), "counts reset after rendering");
    }
}
