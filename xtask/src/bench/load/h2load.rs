//! h2load (nghttp2's HTTP/2 benchmark): the command line for an HTTP/2 load and the parser of its
//! text summary.
//!
//! One thread (`-t1`, as nginx has one worker), `conns` connections with `streams` requests in
//! flight on each, for a fixed duration (`-D`), over h2c with prior knowledge (an `http://` URL).
//! gRPC unary calls are POSTs of one length-prefixed message (`-d FILE`) with `content-type:
//! application/grpc` and `te: trailers`. h2load counts a call by its `:status`: a gRPC error
//! (`grpc-status` in the trailers, `:status` 200) still counts as a success here, which is why the
//! gRPC server is checked once with nghttp before the runs (`bench/grpc.rs`).
//!
//! Latency: h2load prints only min/max/mean/sd; its per-request `--log-file` costs one `write(2)`
//! per request, which the agent's syscall tracepoints would count as probe runs. So no latency
//! percentiles are taken (p50/p99 are NaN, and the report leaves those rows out).

use std::process::Command;

use anyhow::{bail, Context as _, Result};

use super::{Load, Parsed, Target};

/// Headers of a gRPC call beyond those h2load sends (`:method POST`, `:path`, `user-agent`).
const GRPC_HEADERS: [&str; 2] = ["content-type: application/grpc", "te: trailers"];

pub(super) fn command(load: Load, target: &Target, seconds: u64) -> Command {
    let (conns, streams) = match load {
        Load::Streams { conns, streams } => (conns, streams),
        Load::Saturation { conns } | Load::Rate { conns, .. } => (conns, 1),
    };
    let mut cmd = Command::new("h2load");
    cmd.arg("-t1")
        .arg(format!("-c{conns}"))
        .arg(format!("-m{streams}"))
        .args(["-D", &format!("{seconds}s")]);
    if let Some(message) = &target.grpc_message {
        cmd.arg("-d").arg(message);
        for header in GRPC_HEADERS {
            cmd.args(["-H", header]);
        }
    }
    cmd.arg(&target.url);
    cmd
}

/// h2load's summary: `finished in 10.00s, …` and `requests: N total, N started, N done, N
/// succeeded, N failed, N errored, N timeout`. Requests are the `done` ones (streams closed in
/// the measured window, whatever their status); errors the `failed` ones (h2load counts the
/// errored, timed-out and non-2xx/3xx ones among them). Streams still open at the deadline are
/// `started` but not `done`, and not counted.
pub(super) fn parse(out: &str) -> Result<Parsed> {
    let mut seconds = None;
    let mut counts = None;
    for line in out.lines() {
        if let Some(rest) = line.strip_prefix("finished in ") {
            let duration = rest.split(',').next().unwrap_or_default();
            seconds = Some(duration_secs(duration)?);
        } else if let Some(rest) = line.strip_prefix("requests: ") {
            // `N word` pairs separated by commas.
            let field = |word: &str| -> Result<u64> {
                rest.split(',')
                    .find_map(|kv| kv.trim().strip_suffix(word)?.trim().parse().ok())
                    .with_context(|| format!("no `N {word}` in `requests:`"))
            };
            counts = Some((field("done")?, field("failed")?));
        }
    }
    let (requests, errors) = counts.context("no `requests:` line")?;
    Ok((
        requests,
        errors,
        seconds.context("no `finished in` line")?,
        f64::NAN,
        f64::NAN,
    ))
}

/// A duration as h2load prints it (`10.00s`, `850.21ms`, `95us`), in seconds.
fn duration_secs(v: &str) -> Result<f64> {
    let v = v.trim();
    let (number, scale) = if let Some(n) = v.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = v.strip_suffix("us") {
        (n, 1e-6)
    } else if let Some(n) = v.strip_suffix('s') {
        (n, 1.0)
    } else {
        bail!("not a duration: {v:?}");
    };
    let n: f64 = number
        .parse()
        .with_context(|| format!("not a duration: {v:?}"))?;
    Ok(n * scale)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What h2load 1.52.0 printed for `h2load -c 10 -m 10 -D 3` against nginx over h2c (trimmed).
    #[test]
    fn parses_the_h2load_summary() {
        let out = "starting benchmark...\nApplication protocol: h2c\n\
                   Stopped all clients for thread #0\n\n\
                   finished in 3.00s, 45999.67 req/s, 50.45MB/s\n\
                   requests: 137999 total, 138099 started, 137999 done, 137990 succeeded, 9 failed, 2 errored, 0 timeout\n\
                   status codes: 138001 2xx, 0 3xx, 0 4xx, 0 5xx\n\
                   time for request:       61us     13.29ms      2.06ms      1.26ms    76.84%\n";
        let (requests, errors, seconds, p50, p99) = parse(out).unwrap();
        assert_eq!((requests, errors), (137_999, 9));
        assert!((seconds - 3.0).abs() < 1e-9);
        assert!(p50.is_nan() && p99.is_nan());
    }

    #[test]
    fn durations() {
        assert!((duration_secs("10.00s").unwrap() - 10.0).abs() < 1e-9);
        assert!((duration_secs("850.5ms").unwrap() - 0.8505).abs() < 1e-9);
        assert!((duration_secs("95us").unwrap() - 95e-6).abs() < 1e-12);
        assert!(duration_secs("3 days").is_err());
    }

    #[test]
    fn grpc_calls_post_the_message_with_grpc_headers() {
        let target = Target {
            url: "http://127.0.0.1:1/sonde.bench.Echo/Unary".to_owned(),
            grpc_message: Some("/tmp/m.bin".into()),
        };
        let load = Load::Streams {
            conns: 10,
            streams: 10,
        };
        let line = crate::exec::display(&command(load, &target, 10));
        assert_eq!(
            line,
            "h2load -t1 -c10 -m10 -D 10s -d /tmp/m.bin -H 'content-type: application/grpc' \
             -H 'te: trailers' http://127.0.0.1:1/sonde.bench.Echo/Unary"
        );
    }
}
