//! The numbers the report shows: each metric of a scenario computed per repeat from the pair of
//! runs without and with the agent, its min/median/max over the repeats, and the targets
//! checked against the median.

use super::Run;
use crate::bench::{agent::AgentRun, Scenario};

/// min / median / max of one metric over the repeats.
#[derive(Debug, Clone, Copy)]
pub(super) struct Spread {
    pub(super) min: f64,
    pub(super) median: f64,
    pub(super) max: f64,
}

impl Spread {
    fn of(mut values: Vec<f64>) -> Option<Self> {
        values.retain(|v| v.is_finite());
        if values.is_empty() {
            return None;
        }
        values.sort_by(f64::total_cmp);
        let n = values.len();
        let median = if n % 2 == 1 {
            values[n / 2]
        } else {
            (values[n / 2 - 1] + values[n / 2]) / 2.0
        };
        Some(Self {
            min: values[0],
            median,
            max: values[n - 1],
        })
    }
}

/// The runs without and with the agent of one scenario in one repeat, and the floor run's.
pub(super) struct Pair<'a> {
    without: &'a Run,
    with: &'a Run,
    agent: &'a AgentRun,
    /// The run with `sonde --floor`, when there was one.
    floor: Option<(&'a Run, &'a AgentRun)>,
}

impl Pair<'_> {
    fn per_request(&self, value: u64) -> f64 {
        value as f64 / self.with.load.requests.max(1) as f64
    }

    /// Kernel probe time per request of the floor run, µs (NaN without one).
    fn floor_probe_us(&self) -> f64 {
        self.floor.map_or(f64::NAN, |(run, agent)| {
            agent.probe_run_time_ns as f64 / run.load.requests.max(1) as f64 / 1e3
        })
    }
}

/// One row of a scenario table: key in the JSON, label, unit, digits, value from a pair.
pub(super) struct Metric {
    pub(super) key: &'static str,
    pub(super) label: &'static str,
    pub(super) unit: &'static str,
    pub(super) digits: usize,
    value: fn(&Pair<'_>) -> f64,
}

pub(super) const METRICS: &[Metric] = &[
    Metric {
        key: "rps_without",
        label: "throughput without agent",
        unit: "req/s",
        digits: 0,
        value: |p| p.without.load.rps(),
    },
    Metric {
        key: "rps_with",
        label: "throughput with agent",
        unit: "req/s",
        digits: 0,
        value: |p| p.with.load.rps(),
    },
    Metric {
        key: "throughput_ratio",
        label: "throughput with / without",
        unit: "",
        digits: 3,
        value: |p| p.with.load.rps() / p.without.load.rps(),
    },
    Metric {
        key: "p50_without_us",
        label: "p50 latency without agent",
        unit: "µs",
        digits: 0,
        value: |p| p.without.load.p50_us,
    },
    Metric {
        key: "p50_with_us",
        label: "p50 latency with agent",
        unit: "µs",
        digits: 0,
        value: |p| p.with.load.p50_us,
    },
    Metric {
        key: "p50_added_us",
        label: "p50 latency added",
        unit: "µs",
        digits: 0,
        value: |p| p.with.load.p50_us - p.without.load.p50_us,
    },
    Metric {
        key: "p99_without_us",
        label: "p99 latency without agent",
        unit: "µs",
        digits: 0,
        value: |p| p.without.load.p99_us,
    },
    Metric {
        key: "p99_with_us",
        label: "p99 latency with agent",
        unit: "µs",
        digits: 0,
        value: |p| p.with.load.p99_us,
    },
    Metric {
        key: "p99_added_us",
        label: "p99 latency added",
        unit: "µs",
        digits: 0,
        value: |p| p.with.load.p99_us - p.without.load.p99_us,
    },
    Metric {
        key: "agent_cpu_us_per_request",
        label: "agent CPU per request (user + system)",
        unit: "µs",
        digits: 2,
        value: |p| p.per_request(p.agent.cpu_ns) / 1e3,
    },
    Metric {
        key: "agent_cpu_during_load_us_per_request",
        label: "… of which during the load (the rest: catching up after it)",
        unit: "µs",
        digits: 2,
        value: |p| p.per_request(p.agent.cpu_during_load_ns) / 1e3,
    },
    Metric {
        key: "agent_user_us_per_request",
        label: "… of which user (`/proc` stat, 10 ms ticks)",
        unit: "µs",
        digits: 2,
        value: |p| p.per_request(p.agent.user_ns) / 1e3,
    },
    Metric {
        key: "agent_system_us_per_request",
        label: "… of which system (`/proc` stat, 10 ms ticks)",
        unit: "µs",
        digits: 2,
        value: |p| p.per_request(p.agent.system_ns) / 1e3,
    },
    Metric {
        key: "kernel_probe_us_per_request",
        label: "kernel probe time per request",
        unit: "µs",
        digits: 3,
        value: |p| p.per_request(p.agent.probe_run_time_ns) / 1e3,
    },
    Metric {
        key: "probe_runs_per_request",
        label: "probe runs per request",
        unit: "",
        digits: 1,
        value: |p| p.per_request(p.agent.probe_run_cnt),
    },
    Metric {
        key: "floor_probe_us_per_request",
        label: "kernel probe time per request, floor (programs return at once)",
        unit: "µs",
        digits: 3,
        value: |p| p.floor_probe_us(),
    },
    Metric {
        key: "kernel_probe_vs_floor",
        label: "kernel probe time / floor",
        unit: "×",
        digits: 2,
        value: |p| p.per_request(p.agent.probe_run_time_ns) / 1e3 / p.floor_probe_us(),
    },
    Metric {
        key: "floor_throughput_ratio",
        label: "throughput with the floor agent / without",
        unit: "",
        digits: 3,
        value: |p| {
            p.floor.map_or(f64::NAN, |(run, _)| {
                run.load.rps() / p.without.load.rps().max(1e-9)
            })
        },
    },
    Metric {
        key: "kernel_probe_ns_per_run",
        label: "kernel time per probe run",
        unit: "ns",
        digits: 0,
        value: |p| p.agent.probe_run_time_ns as f64 / p.agent.probe_run_cnt.max(1) as f64,
    },
    Metric {
        key: "rss_peak_mb",
        label: "agent RSS peak (VmHWM)",
        unit: "MB",
        digits: 1,
        value: |p| p.agent.rss_peak_kib as f64 * 1024.0 / 1e6,
    },
    Metric {
        key: "events_lost",
        label: "events lost (kernel drops)",
        unit: "",
        digits: 0,
        value: |p| p.agent.events_lost as f64,
    },
    Metric {
        key: "spans_per_request",
        label: "spans recorded per request sent",
        unit: "",
        digits: 3,
        value: |p| p.per_request(p.agent.spans_recorded()),
    },
    Metric {
        key: "server_spans_per_request",
        label: "… SERVER (nginx or the gRPC server) per request",
        unit: "",
        digits: 3,
        value: |p| p.per_request(p.agent.server_requests + p.agent.server_calls),
    },
    Metric {
        key: "client_spans_per_request",
        label: "… CLIENT (load generator) per request",
        unit: "",
        digits: 3,
        value: |p| p.per_request(p.agent.client_requests + p.agent.client_calls),
    },
    Metric {
        key: "requests_with",
        label: "requests sent with agent",
        unit: "",
        digits: 0,
        value: |p| p.with.load.requests as f64,
    },
];

/// A goal from the issue, checked on the median of one metric in some scenarios.
pub(super) struct Target {
    pub(super) label: &'static str,
    pub(super) metric: &'static str,
    scenarios: &'static [&'static str],
    pub(super) goal: &'static str,
    met: fn(f64) -> bool,
    /// The metric is a latency difference: "unresolved" when the tool's step exceeds the goal.
    latency_goal_us: Option<f64>,
}

/// The goals of issue 12 ("the application barely pays") for HTTP/1.1, and of issue 11 for the
/// HTTP/2 scenarios.
pub(super) const TARGETS: &[Target] = &[
    Target {
        label: "agent CPU per HTTP/1.1 request",
        metric: "agent_cpu_us_per_request",
        scenarios: &["1k", "10k", "10k-1kconns"],
        goal: "≤ 4 µs",
        met: |v| v <= 4.0,
        latency_goal_us: None,
    },
    Target {
        label: "agent CPU per HTTP/1.1 request",
        metric: "agent_cpu_us_per_request",
        scenarios: &["saturation"],
        goal: "≤ 3 µs",
        met: |v| v <= 3.0,
        latency_goal_us: None,
    },
    Target {
        label: "agent CPU per h2c request",
        metric: "agent_cpu_us_per_request",
        scenarios: &["h2c"],
        goal: "≤ 5 µs",
        met: |v| v <= 5.0,
        latency_goal_us: None,
    },
    Target {
        label: "agent CPU per gRPC call",
        metric: "agent_cpu_us_per_request",
        scenarios: &["grpc-unary"],
        goal: "≤ 5 µs",
        met: |v| v <= 5.0,
        latency_goal_us: None,
    },
    Target {
        label: "probe runs per request",
        metric: "probe_runs_per_request",
        scenarios: &["saturation", "10k"],
        goal: "≤ 5",
        met: |v| v <= 5.0,
        latency_goal_us: None,
    },
    Target {
        label: "kernel probe time per request",
        metric: "kernel_probe_us_per_request",
        scenarios: &["1k", "10k", "10k-1kconns", "saturation"],
        goal: "≤ 1.5 µs",
        met: |v| v <= 1.5,
        latency_goal_us: None,
    },
    Target {
        label: "kernel probe time / floor",
        metric: "kernel_probe_vs_floor",
        scenarios: &["10k", "saturation"],
        goal: "≤ 2×",
        met: |v| v <= 2.0,
        latency_goal_us: None,
    },
    Target {
        label: "throughput with / without agent",
        metric: "throughput_ratio",
        scenarios: &["saturation"],
        goal: "≥ 0.85",
        met: |v| v >= 0.85,
        latency_goal_us: None,
    },
    Target {
        label: "added p50 latency",
        metric: "p50_added_us",
        scenarios: &["1k", "10k"],
        goal: "≤ 10 µs",
        met: |v| v <= 10.0,
        latency_goal_us: Some(10.0),
    },
    Target {
        label: "agent RSS peak",
        metric: "rss_peak_mb",
        scenarios: &["10k-1kconns"],
        goal: "≤ 40 MB",
        met: |v| v <= 40.0,
        latency_goal_us: None,
    },
    Target {
        label: "events lost",
        metric: "events_lost",
        scenarios: &["10k", "10k-1kconns"],
        goal: "0",
        met: |v| v == 0.0,
        latency_goal_us: None,
    },
];

/// One scenario's runs and the spread of each metric over its repeats.
pub(super) struct ScenarioSummary<'a> {
    pub(super) scenario: &'static Scenario,
    pub(super) runs: Vec<&'a Run>,
    pub(super) spreads: Vec<(&'static Metric, Spread)>,
}

impl ScenarioSummary<'_> {
    fn spread(&self, metric: &str) -> Option<Spread> {
        self.spreads
            .iter()
            .find(|(m, _)| m.key == metric)
            .map(|(_, s)| *s)
    }

    /// The coarsest latency step of the tools that ran this scenario, in µs.
    fn resolution_us(&self) -> f64 {
        self.runs
            .iter()
            .map(|r| r.load.tool.latency_resolution_us())
            .fold(0.0, f64::max)
    }
}

/// One row of the targets table.
pub(super) struct Verdict {
    pub(super) target: &'static Target,
    pub(super) scenario: &'static str,
    /// `None` when the scenario did not run.
    pub(super) spread: Option<Spread>,
    /// `yes`, `no`, `not run` or `unresolved (…)`.
    pub(super) met: String,
}

/// Every scenario that ran, in the order it first ran.
pub(super) struct Summary<'a> {
    pub(super) scenarios: Vec<ScenarioSummary<'a>>,
}

impl<'a> Summary<'a> {
    pub(super) fn of(runs: &'a [Run]) -> Self {
        let mut scenarios: Vec<ScenarioSummary<'a>> = Vec::new();
        for run in runs {
            if !scenarios
                .iter()
                .any(|s| s.scenario.name == run.scenario.name)
            {
                scenarios.push(ScenarioSummary {
                    scenario: run.scenario,
                    runs: Vec::new(),
                    spreads: Vec::new(),
                });
            }
        }
        for summary in &mut scenarios {
            let name = summary.scenario.name;
            summary.runs = runs.iter().filter(|r| r.scenario.name == name).collect();
            let pairs: Vec<Pair<'_>> = summary
                .runs
                .iter()
                .filter(|with| !with.floor)
                .filter_map(|with| {
                    let agent = with.agent.as_ref()?;
                    let without = summary
                        .runs
                        .iter()
                        .find(|r| r.repeat == with.repeat && r.agent.is_none())?;
                    let floor = summary
                        .runs
                        .iter()
                        .find(|r| r.repeat == with.repeat && r.floor)
                        .and_then(|r| Some((*r, r.agent.as_ref()?)));
                    Some(Pair {
                        without,
                        with,
                        agent,
                        floor,
                    })
                })
                .collect();
            for metric in METRICS {
                if let Some(spread) = Spread::of(pairs.iter().map(metric.value).collect()) {
                    summary.spreads.push((metric, spread));
                }
            }
        }
        Self { scenarios }
    }

    /// One verdict per (target, scenario it applies to).
    pub(super) fn verdicts(&self) -> Vec<Verdict> {
        let mut rows = Vec::new();
        for target in TARGETS {
            for &name in target.scenarios {
                let scenario = self.scenarios.iter().find(|s| s.scenario.name == name);
                let spread = scenario.and_then(|s| s.spread(target.metric));
                let met = match (scenario, spread) {
                    (Some(scenario), Some(spread)) => {
                        let step = scenario.resolution_us();
                        match target.latency_goal_us {
                            // A difference of two readings in `step`s is known to ±`step`: only a
                            // median beyond the goal by more than that is a clear "no".
                            Some(goal) if step > goal && spread.median - step <= goal => {
                                format!("unresolved ({step} µs latency steps)")
                            }
                            _ if (target.met)(spread.median) => "yes".to_owned(),
                            _ => "no".to_owned(),
                        }
                    }
                    _ => "not run".to_owned(),
                };
                rows.push(Verdict {
                    target,
                    scenario: name,
                    spread,
                    met,
                });
            }
        }
        rows
    }
}

#[cfg(test)]
mod tests {
    use super::Spread;

    #[test]
    fn spread_of_even_and_odd_counts() {
        let s = Spread::of(vec![3.0, 1.0, 2.0]).unwrap();
        assert_eq!((s.min, s.median, s.max), (1.0, 2.0, 3.0));
        let s = Spread::of(vec![4.0, 1.0, 2.0, f64::NAN, 3.0]).unwrap();
        assert_eq!((s.min, s.median, s.max), (1.0, 2.5, 4.0));
        assert!(Spread::of(vec![f64::INFINITY]).is_none());
    }
}
