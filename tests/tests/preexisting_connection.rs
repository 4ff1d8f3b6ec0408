//! A keep-alive connection opened (and used once) before the agent starts is still traced once the
//! agent runs: it finds the socket through `/proc/<pid>/fd` and `/proc/<pid>/net/tcp`, gives each
//! end its role (the listening side is the server) and the right 4-tuple. The request made before
//! the agent started must not appear.
//!
//! The server's first `recv` after attach began before the probes existed. Where the kernel lets
//! the programs read a task's saved registers (`bpf_task_pt_regs`, Linux 5.15+) it is recovered
//! and every request is traced. Where it does not (Debian 5.10), that one request has no SERVER
//! span, and the loss is counted as `sonde.kernel.dropped{reason=in_progress_at_attach}`. Which
//! case applies is `SONDE_EXPECT_IN_PROGRESS_RECOVERY` (0 or 1, set per kernel by
//! `cargo xtask test --vm`), else what `sonde --check` reports.

use std::{
    process::{Command, Stdio},
    time::Duration,
};

use agent_tests::{
    agent::sonde_bin,
    expect::{HttpSpan, Service},
    free_port,
    peers::StdinClient,
    require_root, scrape_series,
    span::{describe, CLIENT, SERVER},
    wait_for_positive_series,
    world::{one, Stage},
    Peer, Via, Watch,
};

const PYTHON: Service = Service::Prefix("python3");

/// Whether this kernel recovers a syscall in progress at attach time (see the module doc).
fn recovers_in_progress() -> bool {
    if let Ok(want) = std::env::var("SONDE_EXPECT_IN_PROGRESS_RECOVERY") {
        return want != "0";
    }
    let out = Command::new(sonde_bin())
        .arg("--check")
        .stdin(Stdio::null())
        .output()
        .expect("spawn sonde --check");
    let report = String::from_utf8_lossy(&out.stdout);
    let line = report
        .lines()
        .find(|l| l.trim_start().starts_with("in-progress syscall recovery"))
        .unwrap_or_else(|| panic!("no in-progress recovery line in --check:\n{report}"));
    line.split_whitespace().any(|w| w == "ok")
}

#[test]
fn connection_opened_before_the_agent_is_traced() {
    require_root!();
    let stage = Stage::start("preexisting", Peer::Python, Via::SinkGrpc);
    // Connected, and one request answered, before the agent exists.
    let mut client = StdinClient::connect(&stage.dir, stage.port());
    let before = client.get("/status/203");
    assert_eq!(before.status, 203, "harness: unexpected status {before:?}");

    // While the agent attaches, the server's handler thread is parked in recv() on this connection
    // (waiting for the next request) and the client is idle: the first request below is the first
    // one the server receives through a syscall that began before the probes existed. It must be
    // traced like the others.
    let recovers = recovers_in_progress();
    let listen = format!("127.0.0.1:{}", free_port());
    let mut w = stage.start_agent(Watch::Server, &["--prometheus-listen", &listen]);
    let paths = ["/status/200", "/status/201", "/status/404"];
    let transfers: Vec<_> = paths.iter().map(|p| client.get(p)).collect();
    let statuses: Vec<i64> = transfers.iter().map(|t| t.status).collect();
    assert_eq!(
        statuses,
        [200, 201, 404],
        "harness: unexpected statuses from the server"
    );
    let client_pid = client.pid();
    let local_port = client.local_port;
    let in_progress = (
        "sonde_kernel_dropped_total",
        "reason=\"in_progress_at_attach\"",
    );
    let lost = if recovers {
        scrape_series(&listen, in_progress.0, in_progress.1)
    } else {
        // Kernel counters reach /metrics on the agent's 5 s maintenance tick.
        wait_for_positive_series(
            &listen,
            in_progress.0,
            in_progress.1,
            Duration::from_secs(20),
        )
    };
    // The connection stays open until the agent has stopped: only /proc told it about this socket.
    let spans = w.finish(if recovers { 6 } else { 5 });
    let run = client.quit();
    assert_eq!(
        run.connections(),
        1,
        "harness: the client reconnected: {run:?}"
    );

    let early: Vec<_> = spans
        .iter()
        .filter(|s| s.attr_str("url.path") == Some("/status/203"))
        .cloned()
        .collect();
    assert!(
        early.is_empty(),
        "the request made before the agent started was reported:\n{}",
        describe(&early)
    );
    if recovers {
        assert_eq!(lost.unwrap_or(0), 0, "recovered, yet counted as lost");
        w.assert_counts(&spans, 3, 3);
    } else {
        assert!(
            lost.is_some_and(|n| n >= 1),
            "the request read by a recv that began before attach was lost without being counted \
             (in_progress_at_attach = {lost:?})"
        );
        w.assert_counts(&spans, 2, 3);
        let first = spans
            .iter()
            .filter(|s| s.is_server() && s.attr_str("url.path") == Some(paths[0]))
            .count();
        assert_eq!(
            first,
            0,
            "{} has a SERVER span:\n{}",
            paths[0],
            describe(&spans)
        );
    }
    for (i, (path, t)) in paths.iter().zip(&transfers).enumerate() {
        if recovers || i > 0 {
            HttpSpan::server("GET", path, t.status, w.port())
                .service(PYTHON)
                .pid(w.server.pid())
                .client_port(local_port)
                .no_user_agent()
                .response_body_size(t.body_bytes)
                .assert(one(&spans, SERVER, path));
        }
        HttpSpan::client("GET", path, t.status, w.port())
            .service(PYTHON)
            .pid(client_pid)
            .no_user_agent()
            .response_body_size(t.body_bytes)
            .assert(one(&spans, CLIENT, path));
    }
}
