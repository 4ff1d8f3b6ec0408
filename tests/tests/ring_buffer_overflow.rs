//! A tiny ring buffer (`--ring-buffer-bytes 65536`) flooded by keep-alive traffic with 64 KiB
//! bodies: the kernel side drops records instead of ever blocking the application. Every request
//! still succeeds, the agent counts the drops (`ringbuf_full` in its shutdown stats line), exits 0,
//! and whatever it does export is right: no span pairs a request with another request's response
//! after records were lost.

use std::collections::BTreeMap;

use agent_tests::{
    expect::{HttpSpan, Service},
    peers::python_load,
    require_root,
    span::describe,
    Peer, Span, Via, Watch, World,
};

const RING_BUFFER_BYTES: &str = "65536";
const THREADS: u32 = 64;
/// A multiple of 3: the load client cycles through three requests.
const REQUESTS: u64 = 21_000;
const BODY_BYTES: u64 = 64 * 1024;

/// What `peers/load_client.py` sends, keyed by path: (method, status, request body, response body).
fn plan() -> BTreeMap<&'static str, (&'static str, i64, i64, i64)> {
    let body = i64::try_from(BODY_BYTES).expect("small body");
    BTreeMap::from([
        ("/echo", ("POST", 200, body, body)),
        ("/status/202", ("GET", 202, 0, 11)),
        ("/status/404", ("GET", 404, 0, 11)),
    ])
}

#[test]
fn tiny_ring_buffer_drops_records_without_hurting_the_application() {
    require_root!();
    let listen = format!("127.0.0.1:{}", agent_tests::free_port());
    let mut w = World::start_with_args(
        "ringbuf-overflow",
        Peer::Python,
        Via::SinkGrpc,
        Watch::Server,
        &[
            "--ring-buffer-bytes",
            RING_BUFFER_BYTES,
            "--prometheus-listen",
            &listen,
        ],
    );
    let port = w.port();
    let run = python_load(port, THREADS, REQUESTS, BODY_BYTES);

    // (a) The application was never blocked or broken: every request got its expected answer.
    let per_path = REQUESTS / 3;
    let want_ok: BTreeMap<(String, String, i64), u64> = plan()
        .into_iter()
        .map(|(path, (method, status, _, _))| {
            ((method.to_owned(), path.to_owned(), status), per_path)
        })
        .collect();
    assert!(
        run.failed == 0 && run.ok == want_ok,
        "requests failed under the agent: {run:?}, want every one answered as {want_ok:?}"
    );

    // (b') The self-telemetry counts them too, on /metrics (published every 5 s).
    let dropped = agent_tests::wait_for_positive_series(
        &listen,
        "sonde_kernel_dropped_total",
        "reason=\"ringbuf_full\"",
        std::time::Duration::from_secs(15),
    );
    assert!(
        dropped.is_some(),
        "sonde_kernel_dropped_total{{reason=\"ringbuf_full\"}} never went above 0"
    );
    // …per capture point: the flood's records come from the read/write family of syscalls.
    let by_program = agent_tests::wait_for_positive_series(
        &listen,
        "sonde_kernel_dropped_total",
        "reason=\"ringbuf_full\"",
        std::time::Duration::from_secs(1),
    )
    .and_then(|_| {
        let exposition = agent_tests::scrape(&listen)?;
        Some(
            exposition
                .lines()
                .filter(|l| {
                    l.starts_with("sonde_kernel_dropped_total{") && l.contains("ringbuf_full")
                })
                .filter_map(|l| Some(l.split("program=\"").nth(1)?.split('"').next()?.to_owned()))
                .collect::<Vec<_>>(),
        )
    })
    .unwrap_or_default();
    assert!(
        by_program.iter().any(|p| matches!(
            p.as_str(),
            "read" | "write" | "recvfrom" | "sendto" | "readv" | "writev" | "recvmsg" | "sendmsg"
        )),
        "ring-buffer drops not attributed to a syscall program: {by_program:?}"
    );

    // (c) A clean exit after SIGTERM, even after losing records.
    let status = w.agent.stop();
    assert!(
        status.success(),
        "the agent exited with {status} after SIGTERM"
    );

    // (b) The drops are counted.
    let ringbuf_full = w.agent.kernel_stat("ringbuf_full").unwrap_or_else(|| {
        panic!("no `stats: kernel[… ringbuf_full=N …]` line on the agent's stderr")
    });
    let data_events = w.agent.kernel_stat("data_events").unwrap_or(0);
    println!(
        "{} requests in {:?} over {} connections: data_events={data_events} ringbuf_full={ringbuf_full}",
        run.ok_total(),
        run.wall,
        run.connections
    );
    assert!(
        ringbuf_full > 0,
        "a {RING_BUFFER_BYTES}-byte ring buffer never filled during the flood (data_events=\
         {data_events}): the test needs more traffic, or the agent does not count the drops"
    );

    // (d) At most one span per request and side, none of them wrong.
    let spans = w.sink.spans_where(|s| s.is_for_port(port));
    let servers: Vec<&Span> = spans.iter().filter(|s| s.is_server()).collect();
    let clients: Vec<&Span> = spans.iter().filter(|s| s.is_client()).collect();
    println!(
        "exported {} SERVER and {} CLIENT spans for {REQUESTS} requests",
        servers.len(),
        clients.len()
    );
    assert_eq!(
        servers.len() + clients.len(),
        spans.len(),
        "spans of another kind:\n{}",
        describe(&spans)
    );
    assert!(
        u64::try_from(servers.len()).is_ok_and(|n| n <= REQUESTS)
            && u64::try_from(clients.len()).is_ok_and(|n| n <= REQUESTS),
        "more spans than requests: {} SERVER, {} CLIENT for {REQUESTS} requests",
        servers.len(),
        clients.len()
    );
    assert!(
        !servers.is_empty() && !clients.is_empty(),
        "the agent exported no SERVER or no CLIENT span at all ({} / {}): it stopped capturing",
        servers.len(),
        clients.len()
    );
    // No bogus pairing: every span's method, path and status are one request's, as the client sent
    // and got them, with every other attribute of the contract right too. Body sizes come last.
    let plan = plan();
    let mut bad_pairing = Vec::new();
    let mut bad_sizes = Vec::new();
    for span in &spans {
        let Some(&(method, status, request_body, response_body)) =
            span.attr_str("url.path").and_then(|p| plan.get(p))
        else {
            bad_pairing.push(format!("  url.path never requested: {span}"));
            continue;
        };
        let path = span.attr_str("url.path").unwrap_or_default();
        let expect = if span.is_server() {
            HttpSpan::server(method, path, status, port).pid(w.server.pid())
        } else {
            HttpSpan::client(method, path, status, port).pid(run.pid)
        }
        .service(Service::Prefix("python3"))
        .no_user_agent()
        .max_duration(run.wall);
        let mismatches = expect.mismatches(span);
        if !mismatches.is_empty() {
            bad_pairing.push(format!("  {}: {span}", mismatches.join("; ")));
            continue;
        }
        let sizes = expect
            .request_body_size(request_body)
            .response_body_size(response_body)
            .mismatches(span);
        if !sizes.is_empty() {
            bad_sizes.push(format!("  {}: {span}", sizes.join("; ")));
        }
    }
    assert!(
        bad_pairing.is_empty(),
        "{} of {} exported spans are wrong (first 20):\n{}",
        bad_pairing.len(),
        spans.len(),
        first(&bad_pairing)
    );
    // The request declared `Content-Length: 65536` (or none, for GET): a span whose body size is
    // anything else reports bytes the agent lost, not what was sent.
    assert!(
        bad_sizes.is_empty(),
        "{} of {} exported spans have a wrong body size (first 20):\n{}",
        bad_sizes.len(),
        spans.len(),
        first(&bad_sizes)
    );
}

fn first(lines: &[String]) -> String {
    lines
        .iter()
        .take(20)
        .cloned()
        .collect::<Vec<_>>()
        .join("\n")
}
