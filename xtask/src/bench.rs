//! `cargo xtask bench`: the agent's overhead under loopback load (HTTP/1.1 and h2c against nginx,
//! unary gRPC against a Python grpcio server), measured without and with the agent, alternating,
//! over several repeats.
//!
//! Input: the scenarios, duration and repeats from the command line. Output:
//! `target/bench/bench-<date>.json` (every run, the min/median/max summary and the targets), the
//! same summary as markdown on stdout, and with `--write-markdown` in `BENCHMARKS.md`.
//!
//! Modules, in the order a run uses them: `child` (processes stopped on drop), `servers` (what
//! each scenario loads: `nginx`, `grpc`), `rotel` (the OTLP receiver), `agent` (`sonde` and what
//! it costs), `load` (wrk, hey, oha, h2load), `report`.

mod agent;
mod child;
mod grpc;
mod load;
mod nginx;
mod report;
mod rotel;
mod servers;

use std::{fs, path::PathBuf, process::Command};

use anyhow::{bail, Context as _, Result};
use clap::Args;

use self::{
    agent::Agent,
    load::{Generators, Load, RateTool},
    report::{Config, Machine, Run},
    rotel::Rotel,
    servers::{Server, Servers},
};
use crate::{apt, build, exec};

/// apt packages the benchmark drives (nghttp2-client: h2load and nghttp; bpftool only names the
/// agent's programs in the JSON).
const APT_PACKAGES: [&str; 5] = ["nginx", "wrk", "hey", "nghttp2-client", "bpftool"];

/// One load shape against one server, run without and with the agent.
struct Scenario {
    name: &'static str,
    server: Server,
    load: Load,
    about: &'static str,
    /// Run when `--scenario` is not given.
    by_default: bool,
}

const SCENARIOS: [Scenario; 7] = [
    Scenario {
        name: "saturation",
        server: Server::Http1,
        load: Load::Saturation { conns: 50 },
        about: "As many requests as 50 keep-alive connections carry: the throughput ratio target.",
        by_default: true,
    },
    Scenario {
        name: "1k",
        server: Server::Http1,
        load: Load::Rate {
            rps: 1_000,
            conns: 10,
        },
        about: "A light fixed rate: added latency, and CPU per request when the agent is mostly idle.",
        by_default: true,
    },
    Scenario {
        name: "10k",
        server: Server::Http1,
        load: Load::Rate {
            rps: 10_000,
            conns: 100,
        },
        about: "A busy fixed rate: added latency, CPU per request, events lost.",
        by_default: true,
    },
    Scenario {
        name: "10k-1kconns",
        server: Server::Http1,
        load: Load::Rate {
            rps: 10_000,
            conns: 1_000,
        },
        about: "10,000 req/s spread over 1,000 connections: the RSS target (connection state grows with connections).",
        by_default: true,
    },
    Scenario {
        name: "tls",
        server: Server::Https,
        load: Load::Saturation { conns: 50 },
        about: "The same nginx and file over HTTPS (OpenSSL in nginx and in wrk), as many requests as 50 keep-alive connections carry: the cost of the TLS uprobes, both sides read in plaintext.",
        by_default: false,
    },
    Scenario {
        name: "h2c",
        server: Server::H2c,
        load: Load::Streams {
            conns: 10,
            streams: 10,
        },
        about: "The same nginx and file over h2c (HTTP/2, prior knowledge), as many requests as 10 connections carry with 10 streams in flight on each: CPU per HTTP/2 request.",
        by_default: false,
    },
    Scenario {
        name: "grpc-unary",
        server: Server::Grpc,
        load: Load::Streams {
            conns: 10,
            streams: 10,
        },
        about: "Unary gRPC calls (a 1024 B message, echoed) to a Python grpcio server over h2c, as many as 10 connections carry with 10 calls in flight on each: CPU per gRPC call.",
        by_default: false,
    },
];

/// Measure the agent's overhead: loopback HTTP/1.1, h2c and gRPC load, without and with `sonde`.
///
/// Scenarios (HTTP/1.1 against nginx, run by default): `saturation` (wrk, 50 connections), `1k`
/// (1,000 req/s over 10 connections), `10k` (10,000 req/s over 100), `10k-1kconns` (10,000 req/s
/// over 1,000). Run only when named (or with `all`): `tls` (wrk over HTTPS against nginx, both
/// with OpenSSL, 50 connections), `h2c` (h2load against nginx, 10 connections × 10 streams) and
/// `grpc-unary` (h2load sending unary calls to a Python grpcio server, 10 × 10). For each repeat and scenario, one run without the agent, then one with it.
/// Reports throughput, p50/p99 latency (not for h2load), agent CPU per request, kernel probe time
/// per request, agent RSS peak, events lost and spans per request, as min/median/max over the
/// repeats against the targets. A third run per repeat and scenario starts the agent with
/// `--floor` (its programs attached, returning at once): the kernel probe time of that run is
/// the floor the agent's own is compared with.
///
/// Writes `target/bench/bench-<date>.json` and prints the markdown report; `--write-markdown`
/// also writes `BENCHMARKS.md`. Logs of every process are kept in `target/bench/<date>/`.
/// Needs root (the agent loads eBPF programs). Installs nginx, wrk, hey, nghttp2-client and
/// bpftool with apt, rotel (and grpcio for `grpc-unary`) with pip, and builds oha (the
/// fixed-rate load generator, µs latencies) with cargo when missing. Numbers mean
/// something only on an otherwise idle machine.
///
/// Examples: `cargo xtask bench`, `cargo xtask bench --duration 2 --repeats 1 --scenario 1k`,
/// `cargo xtask bench --scenario h2c,grpc-unary`, `cargo xtask bench --scenario all`.
#[derive(Debug, Args)]
pub(crate) struct Options {
    /// Seconds of load in each run.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    duration: u64,
    /// Runs of each scenario without and with the agent.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=100))]
    repeats: u32,
    /// Scenarios to run, comma-separated, always in the order listed here (default: the HTTP/1.1
    /// ones, saturation to 10k-1kconns; `all`: every one).
    #[arg(
        long,
        value_delimiter = ',',
        value_parser = ["saturation", "1k", "10k", "10k-1kconns", "tls", "h2c", "grpc-unary", "all"]
    )]
    scenario: Vec<String>,
    /// Load generator for the fixed-rate scenarios.
    #[arg(long, value_enum, default_value_t = RateTool::Auto)]
    rate_tool: RateTool,
    /// Also write the report to BENCHMARKS.md at the repository root.
    #[arg(long)]
    write_markdown: bool,
    /// Benchmark this `sonde` binary instead of building the release one.
    #[arg(long, value_name = "PATH")]
    sonde_bin: Option<PathBuf>,
}

/// The oha release the bench installs when `oha` is not on PATH.
const OHA_VERSION: &str = "1.16.0";

/// Puts oha, the constant-rate load generator with µs latencies (and correction for coordinated
/// omission), on this process's PATH: the one already there, or [`OHA_VERSION`] built with the
/// pinned toolchain into `~/.cache/sonde/oha-<version>` (a few minutes, once).
fn ensure_oha(toolchain: &crate::toolchain::Toolchain) -> Result<()> {
    let runs = |cmd: &mut Command| cmd.output().is_ok_and(|o| o.status.success());
    if runs(Command::new("oha").arg("--version")) {
        return Ok(());
    }
    let root = crate::toolchain::cache_dir()?.join(format!("oha-{OHA_VERSION}"));
    let bin = root.join("bin");
    if !runs(Command::new(bin.join("oha")).arg("--version")) {
        println!("xtask: building oha {OHA_VERSION} (the fixed-rate load generator; a few minutes, once)");
        exec::run(
            toolchain
                .cargo()
                .args([
                    "install",
                    "oha",
                    "--version",
                    OHA_VERSION,
                    "--locked",
                    "--root",
                ])
                .arg(&root),
        )?;
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs = std::iter::once(bin).chain(std::env::split_paths(&path));
    let joined = std::env::join_paths(dirs).context("PATH with oha's directory")?;
    // Single-threaded here: nothing else reads the environment while it changes.
    std::env::set_var("PATH", joined);
    Ok(())
}

pub(crate) fn bench(opts: &Options) -> Result<()> {
    if !apt::is_root() {
        bail!("`cargo xtask bench` needs root: the agent loads eBPF programs (try `sudo -E cargo xtask bench`)");
    }
    let all = opts.scenario.iter().any(|n| n == "all");
    let scenarios: Vec<&'static Scenario> = SCENARIOS
        .iter()
        .filter(|s| {
            if opts.scenario.is_empty() {
                s.by_default
            } else {
                all || opts.scenario.iter().any(|n| n == s.name)
            }
        })
        .collect();
    let with_grpc = scenarios.iter().any(|s| s.server == Server::Grpc);

    let toolchain = crate::toolchain::bootstrap()?;
    let installed = apt::install_missing(&APT_PACKAGES)?;
    if !installed.is_empty() {
        println!("xtask: installed {}", installed.join(", "));
    }
    let sonde = match &opts.sonde_bin {
        Some(bin) => {
            fs::canonicalize(bin).with_context(|| format!("--sonde-bin {}", bin.display()))?
        }
        None => build::build_sonde(&toolchain, true)?,
    };
    if opts.rate_tool != RateTool::Hey && opts.rate_tool != RateTool::Wrk {
        ensure_oha(&toolchain)?;
    }
    let generators = Generators::detect(opts.rate_tool)?;
    if with_grpc {
        grpc::ensure_grpcio()?;
    }

    let date = exec::output(Command::new("date").args(["-u", "+%Y-%m-%dT%H:%M:%SZ"]))?
        .trim()
        .to_owned();
    let stamp = date.replace([':', '-'], "");
    let bench_dir = build::target_dir().join("bench");
    let run_dir = bench_dir.join(&stamp);
    fs::create_dir_all(&run_dir).with_context(|| format!("create {}", run_dir.display()))?;
    let machine = Machine::probe(date, &sonde);
    if !machine.other_agents.is_empty() {
        println!(
            "xtask: WARNING: other sonde processes are running ({:?}); they skew both sides",
            machine.other_agents
        );
    }
    let config = Config {
        duration_secs: opts.duration,
        repeats: opts.repeats,
    };
    let total = scenarios.len() * opts.repeats as usize * 3;
    println!(
        "xtask: {total} runs of {} s ({} scenario(s) × {} repeat(s) × without agent, with it, with the floor agent); logs in {}",
        opts.duration,
        scenarios.len(),
        opts.repeats,
        run_dir.display()
    );

    let servers = Servers::start(&run_dir, with_grpc)?;
    let rotel = Rotel::start(&run_dir)?;
    // One second per server the scenarios use: nginx over HTTP/1.1 with wrk, the HTTP/2 ones with
    // their scenario's h2load (which also starts the gRPC server's handlers).
    println!("xtask: warm-up");
    let mut warmed = Vec::new();
    for scenario in &scenarios {
        if warmed.contains(&scenario.server) {
            continue;
        }
        warmed.push(scenario.server);
        let load = match scenario.server {
            Server::Http1 | Server::Https => Load::Saturation { conns: 50 },
            Server::H2c | Server::Grpc => scenario.load,
        };
        let (_, target) = servers.endpoint(scenario.server)?;
        generators.run(load, &target, 1, &run_dir)?;
    }

    let mut runs = Vec::with_capacity(total);
    for repeat in 1..=opts.repeats {
        for &scenario in &scenarios {
            // Without the agent, with it, and with it in `--floor` mode (its programs attached
            // and returning at once: the cost of the attach points alone).
            for (with_agent, floor) in [(false, false), (true, false), (true, true)] {
                let n = runs.len() + 1;
                let (port, target) = servers.endpoint(scenario.server)?;
                let side = match (with_agent, floor) {
                    (false, _) => "without",
                    (true, false) => "with",
                    (true, true) => "floor",
                };
                println!(
                    "\n==== xtask bench [{n}/{total}] repeat {repeat} {} {side} agent ====",
                    scenario.name,
                );
                let run = if with_agent {
                    let log = run_dir.join(format!("sonde-{repeat}-{}-{side}.log", scenario.name));
                    let mut agent =
                        Agent::start(&sonde, port, &rotel.grpc_endpoint(), &log, floor)?;
                    let (load, stats) = agent.measure(|| {
                        generators.run(scenario.load, &target, opts.duration, &run_dir)
                    })?;
                    agent.stop()?;
                    Run {
                        repeat,
                        scenario,
                        load,
                        agent: Some(stats),
                        floor,
                    }
                } else {
                    let load = generators.run(scenario.load, &target, opts.duration, &run_dir)?;
                    Run {
                        repeat,
                        scenario,
                        load,
                        agent: None,
                        floor: false,
                    }
                };
                print_run(&run);
                runs.push(run);
            }
        }
    }
    drop(rotel);
    drop(servers);

    let json_path = bench_dir.join(format!("bench-{stamp}.json"));
    let json = report::to_json(&machine, &config, &runs);
    fs::write(&json_path, serde_json::to_string_pretty(&json)? + "\n")
        .with_context(|| format!("write {}", json_path.display()))?;
    let md = report::markdown(&machine, &config, &runs, &json_path);
    println!("\n{md}");
    println!("xtask: wrote {}", json_path.display());
    if opts.write_markdown {
        let path = build::repo_root().join("BENCHMARKS.md");
        fs::write(&path, &md).with_context(|| format!("write {}", path.display()))?;
        println!("xtask: wrote {}", path.display());
    }
    Ok(())
}

/// One line per run, as it finishes.
fn print_run(run: &Run) {
    let l = &run.load;
    let mut line = format!(
        "xtask: {:.0} req/s ({} requests, {} errors)",
        l.rps(),
        l.requests,
        l.errors
    );
    if l.p50_us.is_finite() {
        line.push_str(&format!(", p50 {:.0} µs, p99 {:.0} µs", l.p50_us, l.p99_us));
    }
    if let Some(a) = &run.agent {
        let per_request = |v: u64| v as f64 / l.requests.max(1) as f64;
        line.push_str(&format!(
            "; agent {:.2} µs CPU/req, kernel {:.3} µs/req ({:.1} runs/req), RSS peak {:.1} MB, {} events lost, {:.3} spans/req{}",
            per_request(a.cpu_ns) / 1e3,
            per_request(a.probe_run_time_ns) / 1e3,
            per_request(a.probe_run_cnt),
            a.rss_peak_kib as f64 * 1024.0 / 1e6,
            a.events_lost,
            per_request(a.spans_recorded()),
            if a.settled { "" } else { " (agent still busy)" }
        ));
        if a.calls_not_ok > 0 {
            line.push_str(&format!(", {} gRPC calls not OK", a.calls_not_ok));
        }
    }
    println!("{line}");
}
