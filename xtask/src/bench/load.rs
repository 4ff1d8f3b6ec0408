//! Load generators: runs wrk, hey, oha or h2load against a [`Target`] for a fixed duration and
//! parses what each reports into one [`LoadResult`] (requests completed, errors, p50/p99 latency).
//!
//! - Saturation: `wrk` (closed loop, as fast as its connections go). A Lua `done()` hook prints the
//!   exact totals and percentiles (µs) on one line instead of wrk's rounded text.
//! - HTTP/2 (h2c and gRPC unary): `h2load`, closed loop over multiplexed streams (see `h2load`).
//! - Fixed rate: `oha -q` when installed (constant rate with `--latency-correction`, the wrk2 model,
//!   ns latencies), else `hey -q` (a ticker per worker; it prints latencies with 100 µs resolution).
//!   hey shares at most 500 idle connections between its workers, so a scenario with more
//!   connections uses wrk with a per-connection pacing delay instead (`delay()` in ms: each
//!   connection sends one request every `conns / rps` s plus the latency, so the rate achieved is
//!   a little below the one asked for).

mod h2load;

use std::{
    collections::BTreeMap,
    fmt, fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context as _, Result};
use clap::ValueEnum;

use crate::exec;

/// hey's `maxIdleConn`: its workers share one connection pool that keeps at most this many idle.
const HEY_MAX_IDLE_CONNS: u32 = 500;
/// wrk threads (the machine has 2 cores; more would only add context switches).
const WRK_THREADS: u32 = 2;

/// What a scenario asks of the load generator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Load {
    /// As many requests as `conns` keep-alive connections carry, one at a time each (closed loop).
    Saturation { conns: u32 },
    /// `rps` requests per second in total, over `conns` keep-alive connections.
    Rate { rps: u32, conns: u32 },
    /// As many requests as `conns` HTTP/2 connections carry with `streams` requests in flight on
    /// each (closed loop, prior knowledge: no Upgrade).
    Streams { conns: u32, streams: u32 },
}

impl Load {
    pub(super) fn conns(self) -> u32 {
        match self {
            Load::Saturation { conns } | Load::Rate { conns, .. } | Load::Streams { conns, .. } => {
                conns
            }
        }
    }

    /// The rate asked for, `None` at saturation.
    pub(super) fn target_rps(self) -> Option<u32> {
        match self {
            Load::Saturation { .. } | Load::Streams { .. } => None,
            Load::Rate { rps, .. } => Some(rps),
        }
    }
}

impl fmt::Display for Load {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Load::Saturation { conns } => write!(f, "saturation, {conns} connections"),
            Load::Rate { rps, conns } => write!(f, "{rps} req/s over {conns} connections"),
            Load::Streams { conns, streams } => write!(
                f,
                "saturation, {conns} HTTP/2 connections × {streams} streams"
            ),
        }
    }
}

/// Where a run sends its requests, and what they are.
#[derive(Debug, Clone)]
pub(super) struct Target {
    pub(super) url: String,
    /// gRPC unary calls: the file holding one length-prefixed message, POSTed as each request's
    /// body with gRPC's headers (h2load only). `None`: GET `url`.
    pub(super) grpc_message: Option<PathBuf>,
}

/// `--rate-tool`: the load generator for fixed-rate scenarios.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum RateTool {
    /// oha when it is on PATH, else hey (wrk above 500 connections).
    Auto,
    /// oha (`cargo install oha --locked`): constant rate, latency corrected for coordinated omission.
    Oha,
    /// hey: a ticker per connection; latencies at 100 µs resolution (wrk above 500 connections).
    Hey,
    /// wrk with a per-connection pacing delay (ms resolution, so the rate is approximate).
    Wrk,
}

/// The program that generated a run's load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Tool {
    Wrk,
    Hey,
    Oha,
    H2load,
}

impl Tool {
    pub(super) fn name(self) -> &'static str {
        match self {
            Tool::Wrk => "wrk",
            Tool::Hey => "hey",
            Tool::Oha => "oha",
            Tool::H2load => "h2load",
        }
    }

    /// The finest latency step the tool reports, in µs (h2load reports no percentiles here).
    pub(super) fn latency_resolution_us(self) -> f64 {
        match self {
            Tool::Wrk | Tool::Oha | Tool::H2load => 1.0,
            Tool::Hey => 100.0,
        }
    }
}

/// What one load run did, as the load generator measured it.
#[derive(Debug, Clone)]
pub(super) struct LoadResult {
    pub(super) tool: Tool,
    pub(super) command: String,
    /// Responses received (any status).
    pub(super) requests: u64,
    /// Socket errors, timeouts and non-2xx/3xx responses.
    pub(super) errors: u64,
    /// Length of the run as the tool measured it.
    pub(super) seconds: f64,
    /// Latency percentiles in µs; NaN when the tool does not measure them (h2load: see `h2load`).
    pub(super) p50_us: f64,
    pub(super) p99_us: f64,
}

impl LoadResult {
    pub(super) fn rps(&self) -> f64 {
        if self.seconds > 0.0 {
            self.requests as f64 / self.seconds
        } else {
            0.0
        }
    }
}

/// The load generators available on this machine and the choice made for fixed rates.
pub(super) struct Generators {
    rate_tool: RateTool,
    oha: bool,
}

impl Generators {
    /// Checks that the tools `rate_tool` needs run (wrk always; hey or oha for fixed rates;
    /// h2load for HTTP/2).
    pub(super) fn detect(rate_tool: RateTool) -> Result<Self> {
        let oha = runs(Command::new("oha").arg("--version"));
        if rate_tool == RateTool::Oha && !oha {
            bail!("`--rate-tool oha`: `oha` is not on PATH (install it with `cargo install oha --locked`)");
        }
        // `wrk -v` and `hey` without a URL both exit non-zero; finding the program is enough.
        for (tool, package) in [("wrk", "wrk"), ("hey", "hey"), ("h2load", "nghttp2-client")] {
            if !on_path(tool) {
                bail!("`{tool}` is not on PATH (apt package `{package}`)");
            }
        }
        Ok(Self { rate_tool, oha })
    }

    /// The tool that runs `load`.
    pub(super) fn tool_for(&self, load: Load) -> Tool {
        let conns = match load {
            Load::Saturation { .. } => return Tool::Wrk,
            Load::Streams { .. } => return Tool::H2load,
            Load::Rate { conns, .. } => conns,
        };
        match self.rate_tool {
            RateTool::Oha => Tool::Oha,
            RateTool::Auto if self.oha => Tool::Oha,
            RateTool::Auto | RateTool::Hey if conns <= HEY_MAX_IDLE_CONNS => Tool::Hey,
            RateTool::Auto | RateTool::Hey | RateTool::Wrk => Tool::Wrk,
        }
    }

    /// Runs `load` against `target` for `seconds`; `dir` holds wrk's Lua scripts.
    pub(super) fn run(
        &self,
        load: Load,
        target: &Target,
        seconds: u64,
        dir: &Path,
    ) -> Result<LoadResult> {
        let tool = self.tool_for(load);
        if target.grpc_message.is_some() && tool != Tool::H2load {
            bail!(
                "gRPC calls need an HTTP/2 load (h2load), not {}",
                tool.name()
            );
        }
        let url = target.url.as_str();
        let mut cmd = match tool {
            Tool::Wrk => wrk_command(load, url, seconds, dir)?,
            Tool::Hey => hey_command(load, url, seconds),
            Tool::Oha => oha_command(load, url, seconds),
            Tool::H2load => h2load::command(load, target, seconds),
        };
        let command = exec::display(&cmd);
        println!("$ {command}");
        let out = exec::output(&mut cmd)?;
        let parsed = match tool {
            Tool::Wrk => parse_wrk(&out),
            Tool::Hey => parse_hey(&out),
            Tool::Oha => parse_oha(&out),
            Tool::H2load => h2load::parse(&out),
        };
        let (requests, errors, seconds, p50_us, p99_us) = parsed.with_context(|| {
            format!(
                "cannot parse the output of `{command}`:\n{}",
                out.chars().take(2000).collect::<String>()
            )
        })?;
        Ok(LoadResult {
            tool,
            command,
            requests,
            errors,
            seconds,
            p50_us,
            p99_us,
        })
    }
}

/// (requests, errors, seconds, p50 µs, p99 µs).
pub(super) type Parsed = (u64, u64, f64, f64, f64);

/// wrk's `done()` hook: one line of exact totals (latencies in µs).
const WRK_DONE: &str = r#"
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "SONDE_BENCH requests=%d duration_us=%d p50_us=%d p99_us=%d connect=%d read=%d write=%d status=%d timeout=%d\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.connect, e.read, e.write, e.status, e.timeout))
end
"#;

fn wrk_command(load: Load, url: &str, seconds: u64, dir: &Path) -> Result<Command> {
    let conns = load.conns();
    let (script, name) = match load {
        Load::Saturation { .. } | Load::Streams { .. } => {
            (WRK_DONE.to_owned(), "wrk-done.lua".to_owned())
        }
        Load::Rate { rps, conns } => {
            let pace_ms = (u64::from(conns) * 1000 / u64::from(rps.max(1))).max(1);
            (
                format!("delay = function() return {pace_ms} end\n{WRK_DONE}"),
                format!("wrk-pace-{pace_ms}ms.lua"),
            )
        }
    };
    let path = dir.join(name);
    fs::write(&path, script).with_context(|| format!("write {}", path.display()))?;
    let mut cmd = Command::new("wrk");
    cmd.arg(format!("-t{}", WRK_THREADS.min(conns)))
        .arg(format!("-c{conns}"))
        .arg(format!("-d{seconds}s"))
        .args(["--timeout", "5s", "-s"])
        .arg(path)
        .arg(url);
    Ok(cmd)
}

fn hey_command(load: Load, url: &str, seconds: u64) -> Command {
    let conns = load.conns();
    let mut cmd = Command::new("hey");
    cmd.args(["-z", &format!("{seconds}s"), "-c", &conns.to_string()]);
    if let Some(rps) = load.target_rps() {
        // hey's -q is per worker (one worker per connection).
        let per_conn = f64::from(rps) / f64::from(conns);
        cmd.args(["-q", &format!("{per_conn}")]);
    }
    cmd.arg(url);
    cmd
}

fn oha_command(load: Load, url: &str, seconds: u64) -> Command {
    let mut cmd = Command::new("oha");
    cmd.args(["--no-tui", "--output-format", "json"]).args([
        "-z",
        &format!("{seconds}s"),
        "-c",
        &load.conns().to_string(),
    ]);
    if let Some(rps) = load.target_rps() {
        cmd.args(["-q", &rps.to_string(), "--latency-correction"]);
    }
    cmd.arg(url);
    cmd
}

fn parse_wrk(out: &str) -> Result<Parsed> {
    let line = out
        .lines()
        .find_map(|l| l.strip_prefix("SONDE_BENCH "))
        .context("no `SONDE_BENCH` line (from the Lua done() hook)")?;
    let fields: BTreeMap<&str, u64> = line
        .split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| {
            Ok((
                k,
                v.parse::<u64>().with_context(|| format!("field {k}={v}"))?,
            ))
        })
        .collect::<Result<_>>()?;
    let get = |k: &str| {
        fields
            .get(k)
            .copied()
            .with_context(|| format!("no `{k}` field"))
    };
    let errors = get("connect")? + get("read")? + get("write")? + get("status")? + get("timeout")?;
    Ok((
        get("requests")?,
        errors,
        get("duration_us")? as f64 / 1e6,
        get("p50_us")? as f64,
        get("p99_us")? as f64,
    ))
}

/// hey's text summary: `Total:`, the `NN% in S secs` lines, `[code] N responses` and the error
/// distribution (`[N] message`).
fn parse_hey(out: &str) -> Result<Parsed> {
    #[derive(PartialEq)]
    enum Section {
        Other,
        Status,
        Errors,
    }
    let mut seconds = None;
    let (mut p50, mut p99) = (None, None);
    let (mut requests, mut errors) = (0_u64, 0_u64);
    let mut section = Section::Other;
    for line in out.lines() {
        let t = line.trim();
        if let Some(v) = t.strip_prefix("Total:") {
            seconds = Some(secs(v)?);
        } else if let Some(v) = t.strip_prefix("50% in ") {
            p50 = Some(secs(v)? * 1e6);
        } else if let Some(v) = t.strip_prefix("99% in ") {
            p99 = Some(secs(v)? * 1e6);
        } else if t.starts_with("Status code distribution:") {
            section = Section::Status;
        } else if t.starts_with("Error distribution:") {
            section = Section::Errors;
        } else if let Some(rest) = t.strip_prefix('[').filter(|_| section != Section::Other) {
            let (key, value) = rest.split_once(']').context("`[` without `]`")?;
            if section == Section::Status {
                let count: u64 = value
                    .split_whitespace()
                    .next()
                    .context("status line without a count")?
                    .parse()?;
                requests += count;
                if !key.starts_with('2') && !key.starts_with('3') {
                    errors += count;
                }
            } else {
                errors += key.trim().parse::<u64>()?;
            }
        } else if t.is_empty() {
            section = Section::Other;
        }
    }
    Ok((
        requests,
        errors,
        seconds.context("no `Total:` line")?,
        p50.context("no `50% in` line")?,
        p99.context("no `99% in` line")?,
    ))
}

fn secs(v: &str) -> Result<f64> {
    let n = v.trim().trim_end_matches("secs").trim();
    n.parse().with_context(|| format!("not seconds: {v:?}"))
}

/// oha's `--output-format json`: `summary.total` (s), `latencyPercentiles.p50`/`p99` (s),
/// `statusCodeDistribution` and `errorDistribution` (requests cut off by the deadline are not errors).
fn parse_oha(out: &str) -> Result<Parsed> {
    let v: serde_json::Value = serde_json::from_str(out)?;
    let num = |ptr: &str| {
        v.pointer(ptr)
            .and_then(serde_json::Value::as_f64)
            .with_context(|| format!("no number at {ptr}"))
    };
    let count = |ptr: &str, skip: &dyn Fn(&str) -> bool| -> u64 {
        v.pointer(ptr)
            .and_then(serde_json::Value::as_object)
            .map(|m| {
                m.iter()
                    .filter(|(k, _)| !skip(k))
                    .filter_map(|(_, n)| n.as_u64())
                    .sum()
            })
            .unwrap_or(0)
    };
    let requests = count("/statusCodeDistribution", &|_| false);
    let non_2xx = count("/statusCodeDistribution", &|k| {
        k.starts_with('2') || k.starts_with('3')
    });
    let errors = count("/errorDistribution", &|k| k.contains("deadline"));
    Ok((
        requests,
        non_2xx + errors,
        num("/summary/total")?,
        num("/latencyPercentiles/p50")? * 1e6,
        num("/latencyPercentiles/p99")? * 1e6,
    ))
}

/// Whether `cmd` starts and exits with status 0.
fn runs(cmd: &mut Command) -> bool {
    exec::output(cmd).is_ok()
}

/// Whether `program` is an executable file in a `PATH` directory.
fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_wrk_done_line() {
        let out = "Running 2s test @ http://127.0.0.1:1/\n  2 threads and 50 connections\n\
                   SONDE_BENCH requests=43773 duration_us=2020000 p50_us=157 p99_us=3390 connect=0 read=1 write=0 status=2 timeout=0\n";
        let (requests, errors, seconds, p50, p99) = parse_wrk(out).unwrap();
        assert_eq!((requests, errors), (43773, 3));
        assert!((seconds - 2.02).abs() < 1e-9);
        assert_eq!((p50, p99), (157.0, 3390.0));
    }

    /// The summary hey 0.1.4 printed for `hey -z 1s -c 10 -q 100` against nginx (trimmed).
    #[test]
    fn parses_the_hey_summary() {
        let out = "\nSummary:\n  Total:\t1.0026 secs\n  Slowest:\t0.0029 secs\n  Requests/sec:\t987.3935\n\n\
                   Latency distribution:\n  10% in 0.0001 secs\n  50% in 0.0002 secs\n  99% in 0.0026 secs\n\n\
                   Status code distribution:\n  [200]\t990 responses\n  [404]\t2 responses\n\n\
                   Error distribution:\n  [3]\tGet \"http://127.0.0.1:1/\": EOF\n\n";
        let (requests, errors, seconds, p50, p99) = parse_hey(out).unwrap();
        assert_eq!((requests, errors), (992, 5));
        assert!((seconds - 1.0026).abs() < 1e-9);
        assert!((p50 - 200.0).abs() < 1e-6 && (p99 - 2600.0).abs() < 1e-6);
    }

    #[test]
    fn parses_oha_json() {
        let out = r#"{"summary":{"successRate":1.0,"total":2.0005,"requestsPerSec":999.7},
            "latencyPercentiles":{"p50":0.000123,"p99":0.00089},
            "statusCodeDistribution":{"200":1999,"500":1},
            "errorDistribution":{"aborted due to deadline":4,"connection reset":2}}"#;
        let (requests, errors, seconds, p50, p99) = parse_oha(out).unwrap();
        assert_eq!((requests, errors), (2000, 3));
        assert!((seconds - 2.0005).abs() < 1e-9);
        assert!((p50 - 123.0).abs() < 1e-6 && (p99 - 890.0).abs() < 1e-6);
    }

    #[test]
    fn fixed_rates_above_hey_pool_use_wrk() {
        let g = Generators {
            rate_tool: RateTool::Auto,
            oha: false,
        };
        assert_eq!(g.tool_for(Load::Saturation { conns: 50 }), Tool::Wrk);
        assert_eq!(
            g.tool_for(Load::Rate {
                rps: 1000,
                conns: 10
            }),
            Tool::Hey
        );
        assert_eq!(
            g.tool_for(Load::Rate {
                rps: 10_000,
                conns: 1000
            }),
            Tool::Wrk
        );
        let g = Generators {
            rate_tool: RateTool::Auto,
            oha: true,
        };
        assert_eq!(
            g.tool_for(Load::Rate {
                rps: 10_000,
                conns: 1000
            }),
            Tool::Oha
        );
        assert_eq!(
            g.tool_for(Load::Streams {
                conns: 10,
                streams: 10
            }),
            Tool::H2load
        );
    }
}
