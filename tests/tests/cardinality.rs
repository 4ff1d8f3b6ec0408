//! Route cardinality stays bounded: 10,000 requests, each to a path with a distinct (non-numeric)
//! segment, give at most a handful of span names, `http.route` values and metric series.

use std::{collections::BTreeSet, process::Command};

use agent_tests::{
    free_port,
    peers::curl,
    require_root,
    world::{Peer, Via, Watch},
    World,
};

const REQUESTS: usize = 10_000;
/// The agent's default: a position collapses to `{*}` after this many distinct values.
const MAX_DISTINCT_PER_SEGMENT: usize = 10;

/// A distinct lowercase word per `i` (`aaa`, `aab`, …): no digits, so never taken for an id.
fn word(mut i: usize) -> String {
    let mut w = Vec::new();
    for _ in 0..4 {
        w.push(b'a' + (i % 26) as u8);
        i /= 26;
    }
    String::from_utf8(w).unwrap()
}

#[test]
fn ten_thousand_distinct_paths_give_bounded_routes_and_series() {
    require_root!();
    let listen = format!("127.0.0.1:{}", free_port());
    let mut w = World::start_with_args(
        "cardinality",
        Peer::Nginx,
        Via::SinkGrpc,
        Watch::Server,
        &["--prometheus-listen", &listen],
    );
    let paths: Vec<String> = (0..REQUESTS)
        .map(|i| format!("/users/{}/profile", word(i)))
        .collect();
    assert_eq!(
        paths.iter().collect::<BTreeSet<_>>().len(),
        REQUESTS,
        "harness: paths not distinct"
    );
    // curl reuses one keep-alive connection for all the URLs (Python's http.client would take
    // ~40 ms a request here: it writes head and body separately and meets delayed ACKs).
    let urls: Vec<String> = paths.iter().map(|p| w.server.url(p)).collect();
    let run = curl(&urls, &[]);
    assert_eq!(
        run.transfers.len(),
        REQUESTS,
        "harness: every request answered"
    );

    let exposition = {
        let out = Command::new("curl")
            .args(["-s", &format!("http://{listen}/metrics")])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let spans = w.finish(2 * REQUESTS);
    let servers: Vec<_> = spans.iter().filter(|s| s.is_server()).collect();
    assert_eq!(
        servers.len(),
        REQUESTS,
        "every exchange still gets its span"
    );
    let names: BTreeSet<&str> = servers.iter().map(|s| s.name.as_str()).collect();
    let routes: BTreeSet<&str> = servers
        .iter()
        .filter_map(|s| s.attr_str("http.route"))
        .collect();
    assert!(
        names.len() <= MAX_DISTINCT_PER_SEGMENT + 1,
        "{} span names: {names:?}",
        names.len()
    );
    assert!(
        routes.len() <= MAX_DISTINCT_PER_SEGMENT + 1,
        "{} routes: {routes:?}",
        routes.len()
    );
    assert!(
        routes.contains("/users/{*}/profile"),
        "no collapsed route in {routes:?}"
    );
    // Each route is a template of its own span's path.
    for s in &servers {
        let route = s.attr_str("http.route").unwrap_or_default();
        let path = s.attr_str("url.path").unwrap_or_default();
        assert!(
            agent_tests::expect::route_matches(route, path),
            "{route} vs {path}"
        );
    }
    let series: BTreeSet<&str> = exposition
        .lines()
        .filter(|l| l.starts_with("http_server_request_duration_seconds_count{"))
        .collect();
    assert!(!series.is_empty(), "no server series in\n{exposition}");
    assert!(
        series.len() <= MAX_DISTINCT_PER_SEGMENT + 1,
        "{} series:\n{}",
        series.len(),
        series.iter().copied().collect::<Vec<_>>().join("\n")
    );
}
