//! The Prometheus endpoint, checked by the real tools: `promtool check metrics` lints the
//! exposition, and a real Prometheus (Debian's) scrapes it and answers a query with exactly the
//! request counts, by status. Also `/healthz` and `/readyz`.

use std::{
    collections::BTreeMap,
    fs,
    io::Write as _,
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use agent_tests::{
    free_port,
    peers::curl,
    process::Proc,
    require_root,
    world::{Peer, Via, Watch},
    World,
};
use serde_json::Value;

/// GET `url` with curl: `(status code, body)`.
fn get(url: &str) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-s", "-o", "-", "-w", "\n%{http_code}", url])
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_owned())
}

#[test]
fn prometheus_scrapes_exact_red_counts_and_promtool_accepts_the_exposition() {
    require_root!();
    if Command::new("prometheus")
        .arg("--version")
        .output()
        .is_err()
    {
        println!("skipping: prometheus is not installed (cargo xtask test installs it)");
        return;
    }
    let metrics_port = free_port();
    let listen = format!("127.0.0.1:{metrics_port}");
    let mut w = World::start_with_args(
        "prometheus-scrape",
        Peer::Nginx,
        Via::SinkGrpc,
        Watch::Server,
        &["--prometheus-listen", &listen],
    );
    let mut urls = vec![w.server.url("/index.html"); 4];
    urls.extend(vec![w.server.url("/status/404"); 2]);
    urls.push(w.server.url("/status/500"));
    let run = curl(&urls, &[]);
    let statuses: Vec<i64> = run.transfers.iter().map(|t| t.status).collect();
    assert_eq!(
        statuses,
        [200, 200, 200, 200, 404, 404, 500],
        "harness: nginx answers"
    );

    for path in ["/healthz", "/readyz"] {
        assert_eq!(
            get(&format!("http://{listen}{path}")),
            (200, "ok\n".to_owned()),
            "{path}"
        );
    }
    // The spans are exported by now, so the exchanges have been recorded in the meters too.
    let port = w.port();
    w.sink
        .wait_for_spans(|s| s.is_for_port(port), 14, Duration::from_secs(20));
    let (code, exposition) = get(&format!("http://{listen}/metrics"));
    assert_eq!(code, 200);
    assert!(
        exposition.contains("# TYPE http_server_request_duration_seconds histogram"),
        "{exposition}"
    );

    // promtool lints the exposition read from stdin.
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool");
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(exposition.as_bytes())
        .unwrap();
    let lint = promtool.wait_with_output().unwrap();
    assert!(
        lint.status.success(),
        "promtool check metrics failed:\n{}{}\n---\n{exposition}",
        String::from_utf8_lossy(&lint.stdout),
        String::from_utf8_lossy(&lint.stderr)
    );

    // A real Prometheus scrapes the endpoint every second.
    let prom_port = free_port();
    let config = w.dir.path().join("prometheus.yml");
    fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: sonde\n    honor_labels: true\n    static_configs:\n      - targets: ['{listen}']\n"
        ),
    )
    .unwrap();
    let _prometheus = Proc::spawn(
        "prometheus",
        w.dir.path(),
        Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                w.dir.path().join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{prom_port}")),
    );
    let query = "sum%20by%20(http_response_status_code)%20(http_server_request_duration_seconds_count%7Bjob%3D%22nginx%22%7D)";
    let want: BTreeMap<String, String> = [("200", "4"), ("404", "2"), ("500", "1")]
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .into();
    let deadline = Instant::now() + Duration::from_secs(40);
    let mut last = String::new();
    loop {
        let (code, body) = get(&format!(
            "http://127.0.0.1:{prom_port}/api/v1/query?query={query}"
        ));
        if code == 200 {
            let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
            let got: BTreeMap<String, String> = v["data"]["result"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|r| {
                    (
                        r["metric"]["http_response_status_code"]
                            .as_str()
                            .unwrap_or("")
                            .to_owned(),
                        r["value"][1].as_str().unwrap_or("").to_owned(),
                    )
                })
                .collect();
            if got == want {
                break;
            }
            last = body;
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus never returned {want:?}; last answer: {last}"
        );
        thread::sleep(Duration::from_millis(500));
    }
    w.agent.stop_cleanly();
}
