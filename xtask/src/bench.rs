//! `cargo xtask bench`: the agent's overhead under loopback HTTP/1.1 load against nginx, measured
//! without and with the agent, alternating, over several repeats.
//!
//! Input: the scenarios, duration and repeats from the command line. Output:
//! `target/bench/bench-<date>.json` (every run, the min/median/max summary and the targets), the
//! same summary as markdown on stdout, and with `--write-markdown` in `BENCHMARKS.md`.
//!
//! Modules, in the order a run uses them: `child` (processes stopped on drop), `nginx` (the
//! server), `rotel` (the OTLP receiver), `agent` (`sonde` and what it costs), `load` (wrk, hey, oha), `report`.

mod agent;
mod child;
mod load;
mod nginx;
mod report;
mod rotel;

use std::{fs, path::PathBuf, process::Command};

use anyhow::{bail, Context as _, Result};
use clap::Args;

use self::{
    agent::Agent,
    load::{Generators, Load, RateTool},
    nginx::Nginx,
    report::{Config, Machine, Run},
    rotel::Rotel,
};
use crate::{apt, build, exec};

/// apt packages the benchmark drives (bpftool only names the agent's programs in the JSON).
const APT_PACKAGES: [&str; 4] = ["nginx", "wrk", "hey", "bpftool"];

/// One load shape, run without and with the agent.
struct Scenario {
    name: &'static str,
    load: Load,
    about: &'static str,
}

const SCENARIOS: [Scenario; 4] = [
    Scenario {
        name: "saturation",
        load: Load::Saturation { conns: 50 },
        about: "As many requests as 50 keep-alive connections carry: the throughput ratio target.",
    },
    Scenario {
        name: "1k",
        load: Load::Rate {
            rps: 1_000,
            conns: 10,
        },
        about: "A light fixed rate: added latency, and CPU per request when the agent is mostly idle.",
    },
    Scenario {
        name: "10k",
        load: Load::Rate {
            rps: 10_000,
            conns: 100,
        },
        about: "A busy fixed rate: added latency, CPU per request, events lost.",
    },
    Scenario {
        name: "10k-1kconns",
        load: Load::Rate {
            rps: 10_000,
            conns: 1_000,
        },
        about: "10,000 req/s spread over 1,000 connections: the RSS target (connection state grows with connections).",
    },
];

/// Measure the agent's overhead: loopback HTTP/1.1 load against nginx, without and with `sonde`.
///
/// Scenarios: `saturation` (wrk, 50 connections), `1k` (1,000 req/s over 10 connections), `10k`
/// (10,000 req/s over 100), `10k-1kconns` (10,000 req/s over 1,000). For each repeat and scenario,
/// one run without the agent, then one with it. Reports throughput, p50/p99 latency, agent CPU
/// per request, kernel probe time per request, agent RSS peak, events lost and spans per request,
/// as min/median/max over the repeats against the targets.
///
/// Writes `target/bench/bench-<date>.json` and prints the markdown report; `--write-markdown`
/// also writes `BENCHMARKS.md`. Logs of every process are kept in `target/bench/<date>/`.
/// Needs root (the agent loads eBPF programs). Installs nginx, wrk, hey and bpftool with apt and
/// rotel with pip when missing. Numbers mean something only on an otherwise idle machine.
///
/// Examples: `cargo xtask bench`, `cargo xtask bench --duration 2 --repeats 1 --scenario 1k`.
#[derive(Debug, Args)]
pub(crate) struct Options {
    /// Seconds of load in each run.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    duration: u64,
    /// Runs of each scenario without and with the agent.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=100))]
    repeats: u32,
    /// Scenarios to run, comma-separated (default: all, in this order).
    #[arg(
        long,
        value_delimiter = ',',
        value_parser = ["saturation", "1k", "10k", "10k-1kconns"]
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

pub(crate) fn bench(opts: &Options) -> Result<()> {
    if !apt::is_root() {
        bail!("`cargo xtask bench` needs root: the agent loads eBPF programs (try `sudo -E cargo xtask bench`)");
    }
    let scenarios: Vec<&'static Scenario> = SCENARIOS
        .iter()
        .filter(|s| opts.scenario.is_empty() || opts.scenario.iter().any(|n| n == s.name))
        .collect();

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
    let generators = Generators::detect(opts.rate_tool)?;

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
    let total = scenarios.len() * opts.repeats as usize * 2;
    println!(
        "xtask: {total} runs of {} s ({} scenario(s) × {} repeat(s) × without/with agent); logs in {}",
        opts.duration,
        scenarios.len(),
        opts.repeats,
        run_dir.display()
    );

    let nginx = Nginx::start(&run_dir)?;
    let rotel = Rotel::start(&run_dir)?;
    let url = nginx.url();
    println!("xtask: warm-up");
    generators.run(Load::Saturation { conns: 50 }, &url, 1, &run_dir)?;

    let mut runs = Vec::with_capacity(total);
    for repeat in 1..=opts.repeats {
        for &scenario in &scenarios {
            for with_agent in [false, true] {
                let n = runs.len() + 1;
                println!(
                    "\n==== xtask bench [{n}/{total}] repeat {repeat} {} {} agent ====",
                    scenario.name,
                    if with_agent { "with" } else { "without" }
                );
                let run = if with_agent {
                    let log = run_dir.join(format!("sonde-{repeat}-{}.log", scenario.name));
                    let mut agent = Agent::start(&sonde, nginx.port, &rotel.grpc_endpoint(), &log)?;
                    let (load, stats) = agent
                        .measure(|| generators.run(scenario.load, &url, opts.duration, &run_dir))?;
                    agent.stop()?;
                    Run {
                        repeat,
                        scenario,
                        load,
                        agent: Some(stats),
                    }
                } else {
                    let load = generators.run(scenario.load, &url, opts.duration, &run_dir)?;
                    Run {
                        repeat,
                        scenario,
                        load,
                        agent: None,
                    }
                };
                print_run(&run);
                runs.push(run);
            }
        }
    }
    drop(rotel);
    drop(nginx);

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
        "xtask: {:.0} req/s ({} requests, {} errors), p50 {:.0} µs, p99 {:.0} µs",
        l.rps(),
        l.requests,
        l.errors,
        l.p50_us,
        l.p99_us
    );
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
    }
    println!("{line}");
}
