//! The benchmark's output: raw runs → per-scenario min/median/max → targets, as JSON
//! (`target/bench/bench-<date>.json`) and as the markdown of `BENCHMARKS.md`.
//!
//! Input: every [`Run`] (one load window, without or with the agent) and the [`Machine`].
//! Output: a `serde_json::Value` and a markdown string.

mod machine;
mod summary;

use std::{fmt::Write as _, path::Path};

use serde_json::{json, Value};

pub(super) use self::machine::Machine;
use self::summary::{Summary, METRICS};
use super::{
    agent::AgentRun,
    load::{LoadResult, Tool},
    servers::Server,
    Scenario,
};

/// One load window.
pub(super) struct Run {
    /// 1-based.
    pub(super) repeat: u32,
    pub(super) scenario: &'static Scenario,
    pub(super) load: LoadResult,
    /// `None` for the runs without the agent.
    pub(super) agent: Option<AgentRun>,
    /// The agent ran with `--floor`: its programs attached but returning at once.
    pub(super) floor: bool,
}

impl Run {
    /// `without`, `with` or `floor` (as in "repeat 2 with agent").
    pub(super) fn side(&self) -> &'static str {
        match (&self.agent, self.floor) {
            (None, _) => "without",
            (Some(_), false) => "with",
            (Some(_), true) => "floor",
        }
    }
}

/// Settings of the benchmark, echoed into both outputs.
pub(super) struct Config {
    pub(super) duration_secs: u64,
    pub(super) repeats: u32,
}

/// The JSON document: machine, config, every run, and the summary.
pub(super) fn to_json(machine: &Machine, config: &Config, runs: &[Run]) -> Value {
    let summary = Summary::of(runs);
    let scenarios: serde_json::Map<String, Value> = summary
        .scenarios
        .iter()
        .map(|s| {
            let metrics: serde_json::Map<String, Value> = s
                .spreads
                .iter()
                .map(|(m, s)| {
                    (
                        m.key.to_owned(),
                        json!({ "unit": m.unit, "min": s.min, "median": s.median, "max": s.max }),
                    )
                })
                .collect();
            (s.scenario.name.to_owned(), Value::Object(metrics))
        })
        .collect();
    let targets: Vec<Value> = summary
        .verdicts()
        .into_iter()
        .map(|v| {
            json!({
                "target": v.target.label,
                "metric": v.target.metric,
                "scenario": v.scenario,
                "goal": v.target.goal,
                "min": v.spread.map(|s| s.min),
                "median": v.spread.map(|s| s.median),
                "max": v.spread.map(|s| s.max),
                "met": v.met,
            })
        })
        .collect();
    json!({
        "schema": 1,
        "machine": machine.to_json(),
        "config": {
            "duration_secs": config.duration_secs,
            "repeats": config.repeats,
            "order": "per repeat, per scenario: without agent, with agent, with the floor agent (`sonde --floor`)",
        },
        "runs": runs.iter().map(run_json).collect::<Vec<_>>(),
        "summary": scenarios,
        "targets": targets,
    })
}

fn run_json(run: &Run) -> Value {
    let l = &run.load;
    let agent = run.agent.as_ref().map(|a| {
        json!({
            "capture_mode": a.capture_mode,
            "cpu_ns": a.cpu_ns,
            "cpu_during_load_ns": a.cpu_during_load_ns,
            "user_ns": a.user_ns,
            "system_ns": a.system_ns,
            "rss_peak_kib": a.rss_peak_kib,
            "events_lost": a.events_lost,
            "events_lost_by_reason": a.events_lost_by_reason,
            "spans": a.spans,
            "server_requests_seen": a.server_requests,
            "client_requests_seen": a.client_requests,
            "server_calls_seen": a.server_calls,
            "client_calls_seen": a.client_calls,
            "calls_not_ok": a.calls_not_ok,
            "probe_run_time_ns": a.probe_run_time_ns,
            "probe_run_cnt": a.probe_run_cnt,
            "probes": a.probes.iter().map(|(name, (t, c))| (name.clone(), json!({"run_time_ns": t, "run_cnt": c}))).collect::<serde_json::Map<_, _>>(),
            "settle_secs": a.settle_seconds,
            "settled": a.settled,
        })
    });
    json!({
        "repeat": run.repeat,
        "scenario": run.scenario.name,
        "with_agent": run.agent.is_some(),
        "floor": run.floor,
        "load": {
            "tool": l.tool.name(),
            "command": l.command,
            "requests": l.requests,
            "errors": l.errors,
            "seconds": l.seconds,
            "rps": l.rps(),
            "p50_us": l.p50_us,
            "p99_us": l.p99_us,
        },
        "agent": agent,
    })
}

/// A number with `digits` decimals and its unit.
fn fmt(value: f64, digits: usize, unit: &str) -> String {
    if unit.is_empty() {
        format!("{value:.digits$}")
    } else {
        format!("{value:.digits$} {unit}")
    }
}

/// The markdown report (the content of `BENCHMARKS.md`).
pub(super) fn markdown(
    machine: &Machine,
    config: &Config,
    runs: &[Run],
    json_path: &Path,
) -> String {
    let summary = Summary::of(runs);
    let mut md = String::new();
    let capture: Vec<String> = {
        let mut modes: Vec<String> = runs
            .iter()
            .filter(|r| !r.floor)
            .filter_map(|r| Some(r.agent.as_ref()?.capture_mode.clone()))
            .collect();
        modes.dedup();
        modes
    };
    let _ = writeln!(md, "# Benchmarks\n");
    let _ = writeln!(
        md,
        "Agent overhead under loopback load ({}), measured by `cargo xtask bench` \
         (`xtask/src/bench.rs`); README.md § Benchmarks explains how to read it. Raw runs: \
         `{}`.\n",
        loads_described(runs),
        json_path
            .strip_prefix(crate::build::repo_root())
            .unwrap_or(json_path)
            .display()
    );
    let _ = writeln!(md, "| | |\n|---|---|");
    let _ = writeln!(md, "| date (UTC) | {} |", machine.date);
    let _ = writeln!(
        md,
        "| sonde | {}, commit {} |",
        machine.sonde_version, machine.commit
    );
    let _ = writeln!(md, "| CPU | {} × {} cores, shared by the load generator, the server and the agent (nothing pinned) |", machine.cpu, machine.cores);
    let _ = writeln!(md, "| memory | {} |", machine.memory);
    let _ = writeln!(md, "| kernel | {} |", machine.kernel);
    let _ = writeln!(md, "| load average at start | {} |", machine.loadavg);
    let _ = writeln!(
        md,
        "| capture mode | {} |",
        if capture.is_empty() {
            "—".to_owned()
        } else {
            capture.join(", ")
        }
    );
    let versions: Vec<String> = machine
        .versions
        .iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect();
    let _ = writeln!(md, "| tools | {} |", versions.join(", "));
    let grpc_server = if ran(runs, Server::Grpc) {
        format!(
            " gRPC server: Python grpcio (`grpc.aio`, one thread), unary echo of a {} B message over h2c.",
            super::grpc::MESSAGE_BYTES
        )
    } else {
        String::new()
    };
    let _ = writeln!(
        md,
        "| method | {} repeat(s) × {} s per scenario; in each repeat and scenario one run without the agent, one with it, and one with it in `--floor` mode (its programs attached, returning at once). nginx: 1 worker, keep-alive, a {} B static file, `access_log off`{}.{grpc_server} Agent: `--port <server>`, OTLP/gRPC to rotel with its blackhole exporter |",
        config.repeats,
        config.duration_secs,
        super::nginx::BODY_BYTES,
        match (ran(runs, Server::H2c), ran(runs, Server::Https)) {
            (true, true) => "; HTTP/1.1, HTTPS (OpenSSL, self-signed RSA 2048 certificate) and h2c (prior knowledge) on three ports",
            (false, true) => "; HTTP/1.1 and HTTPS (OpenSSL, self-signed RSA 2048 certificate) on two ports",
            (true, false) => "; HTTP/1.1 and h2c (prior knowledge) on two ports",
            (false, false) => "",
        }
    );
    if !machine.other_agents.is_empty() {
        let _ = writeln!(
            md,
            "| warning | other `sonde` processes were running: {:?} |",
            machine.other_agents
        );
    }

    let _ = writeln!(md, "\n## Targets\n");
    let _ = writeln!(
        md,
        "`met?` compares the median over the repeats with the goal.\n"
    );
    let _ = writeln!(md, "| target | scenario | goal | min | median | max | met? |\n|---|---|---|---:|---:|---:|---|");
    for v in summary.verdicts() {
        let metric = METRICS.iter().find(|m| m.key == v.target.metric);
        let (digits, unit) = metric.map_or((2, ""), |m| (m.digits, m.unit));
        let cells = v.spread.map_or_else(
            || ["—".to_owned(), "—".to_owned(), "—".to_owned()],
            |s| {
                [
                    fmt(s.min, digits, unit),
                    fmt(s.median, digits, unit),
                    fmt(s.max, digits, unit),
                ]
            },
        );
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} |",
            v.target.label, v.scenario, v.target.goal, cells[0], cells[1], cells[2], v.met
        );
    }

    let _ = writeln!(md, "\n## Scenarios\n");
    for s in &summary.scenarios {
        let (scenario, scenario_runs) = (s.scenario, &s.runs);
        let tools: Vec<&str> = {
            let mut t: Vec<&str> = scenario_runs.iter().map(|r| r.load.tool.name()).collect();
            t.sort_unstable();
            t.dedup();
            t
        };
        let _ = writeln!(md, "### {}: {}\n", scenario.name, scenario.load);
        let _ = writeln!(md, "{}\n", scenario.about);
        if let Some(run) = scenario_runs.first() {
            // Paths under the repository (wrk's Lua scripts) are shown relative to it.
            let root = format!("{}/", crate::build::repo_root().display());
            let command = run.load.command.replace(&root, "");
            let _ = writeln!(md, "Load ({}): `{command}`\n", tools.join(", "));
        }
        let _ = writeln!(md, "| metric | min | median | max |\n|---|---:|---:|---:|");
        for (metric, spread) in &s.spreads {
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} |",
                metric.label,
                fmt(spread.min, metric.digits, metric.unit),
                fmt(spread.median, metric.digits, metric.unit),
                fmt(spread.max, metric.digits, metric.unit)
            );
        }
        let notes = scenario_notes(scenario, scenario_runs);
        if !notes.is_empty() {
            let _ = writeln!(md);
        }
        for note in notes {
            let _ = writeln!(md, "- {note}");
        }
        let _ = writeln!(md);
    }

    let _ = writeln!(md, "## Notes\n");
    let _ = writeln!(md, "- Throughput and latency are the load generator's. wrk and oha report latency in µs, hey in steps of 100 µs: too coarse for the 10 µs goal, so the added p50 is `unresolved` unless it exceeds the goal by more than a step. h2load (h2c, gRPC) prints no percentiles, and its per-request log would add a `write` per request, so those scenarios have no latency rows.");
    let _ = writeln!(md, "- Agent CPU: the agent's process CPU clock (all threads, user + system) from just before the load until its span count stopped growing (it had processed the load), divided by the requests sent. The export of the last partial batch, sent later on the SDK's 5 s timer, is not included. The user/system split comes from `/proc/<tgid>/stat` (10 ms ticks).");
    let _ = writeln!(md, "- Kernel probe time: the `run_time_ns` and `run_cnt` of every BPF program the agent holds (its `/proc/<tgid>/fdinfo`), over the load window, with `BPF_ENABLE_STATS` on during the runs with the agent (as `kernel.bpf_stats_enabled=1`; the statistics themselves add about two clock reads per program run). The floor runs start the agent with `--floor`: the same programs attached at the same hooks, each returning at once, so their probe time is the physical cost of the attach points; `kernel probe time / floor` divides the two.");
    let _ = writeln!(md, "- Spans per request: each request or gRPC call should give 2 spans (SERVER in nginx or the gRPC server, CLIENT in the load generator): in clear text from the socket hooks, over HTTPS from the OpenSSL uprobes in nginx and wrk. Requests cut off at the end of a run are seen by the agent but not counted by the load generator (h2load: up to connections × streams of them).");
    let _ = writeln!(md, "- {} cores: the load generator, the server and the agent compete for them, so at saturation any CPU the agent takes is throughput lost.", machine.cores);
    md
}

/// Whether a scenario against `server` ran.
fn ran(runs: &[Run], server: Server) -> bool {
    runs.iter().any(|r| r.scenario.server == server)
}

/// The loads that ran, for the report's first sentence.
fn loads_described(runs: &[Run]) -> String {
    let loads: Vec<&str> = [
        (Server::Http1, "HTTP/1.1 against nginx"),
        (Server::Https, "HTTPS (HTTP/1.1 over OpenSSL) against nginx"),
        (Server::H2c, "h2c against nginx"),
        (Server::Grpc, "unary gRPC against a Python grpcio server"),
    ]
    .into_iter()
    .filter(|&(server, _)| ran(runs, server))
    .map(|(_, text)| text)
    .collect();
    loads.join(", ")
}

/// Warnings about a scenario's runs (rate not reached, errors, agent still busy after the load).
fn scenario_notes(scenario: &Scenario, runs: &[&Run]) -> Vec<String> {
    let mut notes = Vec::new();
    for run in runs {
        let side = run.side();
        if let Some(target) = scenario.load.target_rps() {
            if run.load.rps() < 0.95 * f64::from(target) {
                notes.push(format!(
                    "repeat {} {side} agent: {:.0} req/s, below 95 % of the {target} req/s asked for",
                    run.repeat,
                    run.load.rps()
                ));
            }
        }
        if run.load.errors > 0 {
            notes.push(format!(
                "repeat {} {side} agent: {} errors",
                run.repeat, run.load.errors
            ));
        }
        if let (Some(a), false) = (&run.agent, run.floor) {
            if !a.settled {
                notes.push(format!(
                    "repeat {}: the agent's span count was still moving {:.0} s after the load",
                    run.repeat, a.settle_seconds
                ));
            }
            if a.calls_not_ok > 0 {
                notes.push(format!(
                    "repeat {}: the agent saw {} gRPC calls end with a status other than OK",
                    run.repeat, a.calls_not_ok
                ));
            }
        }
    }
    if scenario.load.target_rps().is_some() && runs.iter().any(|r| r.load.tool == Tool::Wrk) {
        notes.push(
            "wrk paces each connection in whole milliseconds (plus the latency), so the rate \
             achieved is a little below the one asked for"
                .to_owned(),
        );
    }
    notes
}
