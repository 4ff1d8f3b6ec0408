//! Without an OTLP endpoint the agent prints one line per span on stdout (kind, name, path,
//! status) and exports nothing.

use agent_tests::{peers::curl, poll, require_root, world::SPAN_TIMEOUT, Peer, Via, Watch, World};

/// (kind, method, path, status) of each span the traffic below must print.
const EXPECTED: [(&str, &str, &str, &str); 4] = [
    ("SERVER", "POST", "/echo", "200"),
    ("CLIENT", "POST", "/echo", "200"),
    ("SERVER", "GET", "/status/404", "404"),
    ("CLIENT", "GET", "/status/404", "404"),
];

fn is_span_line(line: &str) -> bool {
    line.contains("SERVER") || line.contains("CLIENT")
}

/// Whether `line` shows this span: the kind, the method and the path as words, and the status
/// as a word outside the path (which may contain the same digits).
fn shows(line: &str, (kind, method, path, status): (&str, &str, &str, &str)) -> bool {
    let words = |s: &str| -> Vec<String> {
        s.split(|c: char| !c.is_ascii_alphanumeric())
            .filter(|w| !w.is_empty())
            .map(str::to_owned)
            .collect()
    };
    let Some(at) = line.find(path) else {
        return false;
    };
    let after_path = &line[at + path.len()..];
    if after_path.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '/') {
        return false;
    }
    let without_path = format!("{} {}", &line[..at], after_path);
    let words = words(&without_path);
    [kind, method, status]
        .iter()
        .all(|w| words.iter().any(|x| x == w))
}

#[test]
fn one_line_per_span_on_stdout() {
    require_root!();
    let mut w = World::start("console", Peer::Python, Via::Console, Watch::Server);
    curl(
        &[w.server.url("/echo")],
        &["--data-binary", "hello console"],
    );
    curl(&[w.server.url("/status/404")], &[]);

    poll(SPAN_TIMEOUT, || {
        (w.agent.stdout().lines().filter(|l| is_span_line(l)).count() >= EXPECTED.len())
            .then_some(())
    });
    w.agent.stop_cleanly();
    let stdout = w.agent.stdout();
    let lines: Vec<&str> = stdout.lines().filter(|l| is_span_line(l)).collect();
    assert_eq!(
        lines.len(),
        EXPECTED.len(),
        "want one stdout line per span, got:\n{stdout}"
    );
    for expected in EXPECTED {
        let matching = lines.iter().filter(|l| shows(l, expected)).count();
        assert_eq!(
            matching, 1,
            "want exactly one stdout line showing {expected:?}, got {matching}:\n{stdout}"
        );
    }
    assert!(
        w.sink.spans().is_empty(),
        "nothing may be exported without an endpoint:\n{}",
        w.sink.describe()
    );
}

#[test]
fn line_matcher_needs_every_field() {
    let line = "SERVER GET /status/404 404 python3.11 1.2ms";
    assert!(shows(line, ("SERVER", "GET", "/status/404", "404")));
    assert!(!shows(
        "SERVER GET /status/404 200",
        ("SERVER", "GET", "/status/404", "404")
    ));
    assert!(!shows(line, ("CLIENT", "GET", "/status/404", "404")));
    assert!(!shows(
        "SERVER GET /status/4040 404",
        ("SERVER", "GET", "/status/404", "404")
    ));
}
