//! Startup failures and a dead collector: the agent says what is wrong in one readable error,
//! exits non-zero, never panics and never hangs.

use std::{
    net::TcpListener,
    process::{Command, Output, Stdio},
    thread,
    time::{Duration, Instant},
};

use agent_tests::{agent::sonde_bin, require_root};

fn run(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null()).output().expect("spawn sonde")
}

fn assert_clean_failure(out: &Output, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "exit status {:?}, stderr:\n{stderr}",
        out.status
    );
    assert!(
        stderr.contains(needle),
        "stderr lacks {needle:?}:\n{stderr}"
    );
    assert!(
        !stderr.contains("panicked"),
        "the agent panicked:\n{stderr}"
    );
    assert!(
        !stderr.contains("Stack backtrace"),
        "a backtrace is not an error message:\n{stderr}"
    );
}

#[test]
fn without_privileges_the_error_says_to_run_as_root() {
    require_root!();
    // Drop to `nobody` with no capabilities, as a user who forgot sudo would run it.
    let out = run(Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
        ])
        .arg(sonde_bin()));
    assert_clean_failure(&out, "run sonde as root");
}

#[test]
fn bad_configuration_names_the_option() {
    let out = run(Command::new(sonde_bin()).args(["--ring-buffer-bytes", "1000"]));
    assert_clean_failure(&out, "--ring-buffer-bytes");
    let out = run(Command::new(sonde_bin()).args(["--otlp-endpoint", "collector:4317"]));
    assert_clean_failure(&out, "collector:4317");
}

#[test]
fn dead_collector_neither_hangs_nor_crashes_the_agent() {
    require_root!();
    // A port with nothing listening: every export fails.
    let dead = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let server = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = server.local_addr().unwrap().port();
    let listen = format!("127.0.0.1:{}", agent_tests::free_port());
    let mut agent = Command::new(sonde_bin())
        .args(["--port", &port.to_string(), "--otlp-timeout-ms", "500"])
        .args(["--prometheus-listen", &listen])
        .env(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            format!("http://127.0.0.1:{dead}"),
        )
        .env("OTEL_BSP_SCHEDULE_DELAY", "100")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sonde");
    // Wait until attached: the agent is ready once it logs `capture ready` (read via a thread).
    let stderr = agent.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    thread::spawn(move || {
        use std::io::{BufRead, BufReader};
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut log = String::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !log.contains("capture ready") {
        let line = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .unwrap_or_else(|_| panic!("agent never became ready:\n{log}"));
        log.push_str(&line);
        log.push('\n');
    }
    // Real HTTP exchanges on the filtered port, so there are spans to (fail to) export.
    let server_thread = thread::spawn(move || {
        use std::io::{Read, Write};
        for _ in 0..5 {
            let (mut s, _) = server.accept().unwrap();
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf).unwrap();
            s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
                .unwrap();
        }
    });
    for _ in 0..5 {
        let status = Command::new("curl")
            .args([
                "-sf",
                "-o",
                "/dev/null",
                &format!("http://127.0.0.1:{port}/x"),
            ])
            .status()
            .expect("curl");
        assert!(
            status.success(),
            "the application failed while the collector was dead"
        );
    }
    server_thread.join().unwrap();
    // The failed exports are counted (after the exporter's retries, a few seconds).
    let failed = agent_tests::wait_for_positive_series(
        &listen,
        "sonde_spans_total",
        "outcome=\"export_failed\"",
        Duration::from_secs(30),
    );
    assert!(
        failed.is_some(),
        "sonde_spans_total{{outcome=\"export_failed\"}} never went above 0"
    );
    let sent_at = Instant::now();
    // SAFETY: plain kill(2) on our own child.
    unsafe { libc::kill(agent.id() as i32, libc::SIGTERM) };
    let status = loop {
        if let Some(s) = agent.try_wait().unwrap() {
            break s;
        }
        assert!(
            sent_at.elapsed() < Duration::from_secs(20),
            "agent hung on shutdown with a dead collector"
        );
        thread::sleep(Duration::from_millis(50));
    };
    while let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) {
        log.push_str(&line);
        log.push('\n');
    }
    assert!(status.success(), "agent exited with {status:?}:\n{log}");
    assert!(!log.contains("panicked"), "{log}");
    assert!(
        log.contains("spans=10"),
        "all ten spans should have reached the exporter:\n{log}"
    );
}
