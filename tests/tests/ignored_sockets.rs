//! Sockets the agent ignores cost no record: with `--port` naming one server, keep-alive traffic to
//! a second server is dropped in the kernel once userspace has judged its connection (the
//! `SOCK_CAPTURE` verdict), counted as `skipped_socket`, while the watched server's exchanges are
//! traced exactly.

use agent_tests::{
    peers::{curl, python_http_server},
    require_root, World,
};

/// Requests to the ignored server, on one keep-alive connection, paced so that most of them come
/// after the verdict (userspace reads the ring buffer every few ms to 50 ms).
const IGNORED_REQUESTS: usize = 150;
/// Socket records per request on that connection, at least: curl's write and read, the server's
/// read and write (Python's server writes the head and the body separately: 6 in fact).
const MIN_RECORDS_PER_REQUEST: u64 = 4;

#[test]
fn an_ignored_connection_stops_reaching_userspace() {
    require_root!();
    let mut w = World::python("ignored-sockets");
    let ignored = python_http_server(&w.dir);
    let urls: Vec<String> = (0..IGNORED_REQUESTS)
        .map(|i| ignored.url(&format!("/status/{}", 200 + i % 2)))
        .collect();
    let run = curl(&urls, &["--rate", "60/s"]);
    assert_eq!(
        (run.connections(), run.transfers.len()),
        (1, IGNORED_REQUESTS),
        "harness: curl did not send every request on one connection: {run:?}"
    );

    let paths = ["/status/200", "/status/404"];
    let watched = curl(&paths.map(|p| w.server.url(p)), &[]);
    let spans = w.finish(4);
    w.assert_counts(&spans, 2, 2);
    w.assert_curl_to_python(&spans, &watched, &paths);

    let skipped = w.agent.kernel_stat("skipped_socket").unwrap_or_else(|| {
        panic!(
            "no `skipped_socket` in the agent's stats line:\n{}",
            w.agent.logs()
        )
    });
    let data = w.agent.kernel_stat("data_events").unwrap_or(0);
    println!(
        "{IGNORED_REQUESTS} requests to the ignored server in {:?}: skipped_socket={skipped}, \
         data_events={data} (all sockets)",
        run.wall
    );
    // Each request is at least a write and a read on each side of the ignored connection.
    let at_least = IGNORED_REQUESTS as u64 * MIN_RECORDS_PER_REQUEST;
    assert!(
        skipped >= at_least / 2,
        "only {skipped} socket records were skipped in the kernel; the ignored connection alone \
         had at least {at_least}"
    );
    // Had they reached userspace, the records sent would number in the hundreds: the watched
    // server's two requests make a dozen, the ignored connection's first ones (before the
    // verdict) a few more.
    assert!(
        data < at_least / 4,
        "{data} data records reached userspace: the ignored connection's bytes still do"
    );
}
