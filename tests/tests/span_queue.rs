//! A span queue of 4 per process (`OTEL_BSP_MAX_QUEUE_SIZE=4`) and a burst of 30 keep-alive
//! requests: most spans cannot be queued. Every one is accounted for on `/metrics`: spans
//! recorded = exported + dropped, the sink got exactly the exported ones, and the SDK itself
//! dropped none behind Sonde's back.

use std::time::Duration;

use agent_tests::{peers::curl, poll, require_root, scrape_series, world::Stage, Peer, Via, Watch};

const REQUESTS: usize = 30;

fn spans(listen: &str, outcome: &str) -> u64 {
    scrape_series(
        listen,
        "sonde_spans_total",
        &format!("outcome=\"{outcome}\""),
    )
    .unwrap_or(0)
}

#[test]
fn a_full_span_queue_drops_spans_and_counts_every_one() {
    require_root!();
    let listen = format!("127.0.0.1:{}", agent_tests::free_port());
    let mut w = Stage::start("span-queue-full", Peer::Nginx, Via::SinkGrpc).start_agent_with_env(
        Watch::Server,
        &["--prometheus-listen", &listen],
        &[
            ("OTEL_BSP_MAX_QUEUE_SIZE", "4"),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ],
    );
    let urls = vec![w.server.url("/index.html"); REQUESTS];
    let run = curl(&urls, &[]);
    assert!(
        run.transfers.iter().all(|t| t.status == 200),
        "harness: {run:?}"
    );
    let want = 2 * REQUESTS as u64; // one SERVER (nginx) and one CLIENT (curl) span per request
                                    // Self-telemetry is published every 5 s; wait until every recorded span has an outcome.
    let settled = poll(Duration::from_secs(30), || {
        let recorded = spans(&listen, "recorded");
        let done = spans(&listen, "exported") + spans(&listen, "dropped");
        (recorded == want && done == want).then_some(())
    });
    let (recorded, exported, dropped, failed) = (
        spans(&listen, "recorded"),
        spans(&listen, "exported"),
        spans(&listen, "dropped"),
        spans(&listen, "export_failed"),
    );
    let port = w.port();
    println!(
        "recorded={recorded} exported={exported} dropped={dropped} export_failed={failed}; \
         the sink has {} spans",
        w.sink.spans_where(|s| s.is_for_port(port)).len()
    );
    assert!(
        settled.is_some(),
        "spans unaccounted for: recorded={recorded} (want {want}), exported={exported} + \
         dropped={dropped} should equal it (export_failed={failed})"
    );
    assert!(
        dropped > 0,
        "a queue of 4 took a burst of {want} spans without dropping any"
    );
    let got = w.sink.wait_for_spans(
        |s| s.is_for_port(port),
        exported as usize,
        Duration::from_secs(10),
    );
    // Nothing more arrives later.
    std::thread::sleep(Duration::from_secs(1));
    let got = got
        .len()
        .max(w.sink.spans_where(|s| s.is_for_port(port)).len());
    assert_eq!(
        got as u64, exported,
        "the sink got another number of spans than the agent counted as exported"
    );
    // The SDK's batch processor itself never dropped one (its drops would be uncounted).
    w.agent.stop_cleanly();
    let stderr = w.agent.stderr();
    assert!(
        !stderr.contains("SpanDroppingStarted"),
        "the SDK's batch processor dropped spans Sonde did not count:\n{stderr}"
    );
}
