//! Capture-mode probing: `sonde --check` reports what this kernel allows, startup picks the mode
//! the report names, and forcing a mode the kernel refuses fails with one readable line (never a
//! verifier dump). On this project's host the answer is `socket` (Linux 6.18: no kprobes, no
//! fentry); `cargo xtask test --vm` runs the same test on Debian's 5.10, 6.1 and 6.12 kernels,
//! where it is `fentry` (5.10, 6.1) or `socket` (6.12), and sets `SONDE_EXPECT_CAPTURE_MODES` to
//! the modes each kernel must allow.

use std::{
    process::{Command, Stdio},
    time::Duration,
};

use agent_tests::{agent::sonde_bin, poll, require_root, TempDir};

const MODES: [&str; 4] = ["socket", "fentry", "kprobe", "tracepoint"];

/// `(mode, ok)` for each capture-mode line of the report, and the verdict's mode.
fn parse_check(report: &str) -> (Vec<(String, bool)>, Option<String>) {
    let modes = report
        .lines()
        .filter_map(|l| {
            let rest = l.trim_start().strip_prefix("capture mode ")?;
            let mode = rest.split_whitespace().next()?.to_owned();
            let ok = rest.split_whitespace().any(|w| w == "ok");
            Some((mode, ok))
        })
        .collect();
    let verdict = report
        .lines()
        .find_map(|l| l.strip_prefix("verdict: Sonde can run here; capture mode `"))
        .map(|m| m.trim_end_matches('`').to_owned());
    (modes, verdict)
}

#[test]
fn check_reports_the_mode_startup_uses_and_refused_modes_fail_cleanly() {
    require_root!();
    let out = Command::new(sonde_bin())
        .arg("--check")
        .env_remove("SONDE_CAPTURE")
        .stdin(Stdio::null())
        .output()
        .expect("spawn sonde --check");
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    println!("{report}");
    assert!(
        out.status.success(),
        "--check failed ({}):\n{report}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    for item in [
        "kernel",
        "capabilities",
        "lockdown",
        "BTF",
        "tracefs",
        "uprobes",
    ] {
        assert!(
            report.lines().any(|l| l.trim_start().starts_with(item)),
            "no `{item}` line in the report:\n{report}"
        );
    }
    let (modes, verdict) = parse_check(&report);
    assert_eq!(
        modes.iter().map(|(m, _)| m.as_str()).collect::<Vec<_>>(),
        MODES,
        "the report must cover every capture mode:\n{report}"
    );
    if let Ok(want) = std::env::var("SONDE_EXPECT_CAPTURE_MODES") {
        let allowed: Vec<&str> = modes
            .iter()
            .filter(|(_, ok)| *ok)
            .map(|(m, _)| m.as_str())
            .collect();
        assert_eq!(
            allowed.join(","),
            want,
            "this kernel should allow exactly the capture modes {want}:\n{report}"
        );
    }
    let best = modes.iter().find(|(_, ok)| *ok).map(|(m, _)| m.clone());
    assert_eq!(
        verdict, best,
        "the verdict is not the best mode that attached:\n{report}"
    );
    let best = best.expect("some mode works, or no e2e test could pass here");
    if let Ok(want) = std::env::var("SONDE_EXPECT_AUTO_CAPTURE") {
        assert_eq!(
            best, want,
            "on this kernel `auto` should pick {want}:\n{report}"
        );
    }

    // Startup in `auto` picks the same mode and says so.
    let dir = TempDir::new("capture-auto");
    let mut agent = Command::new(sonde_bin())
        .env_remove("SONDE_CAPTURE")
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("sonde.stderr")).expect("log file"))
        .spawn()
        .expect("spawn sonde");
    let log = poll(Duration::from_secs(60), || {
        let log = std::fs::read_to_string(dir.path().join("sonde.stderr")).ok()?;
        log.contains("capture ready").then_some(log)
    });
    // SAFETY: plain kill(2) on our own child.
    unsafe { libc::kill(agent.id() as i32, libc::SIGTERM) };
    let _ = agent.wait();
    let log = log.expect("the agent never became ready");
    assert!(
        log.contains(&format!("capture mode: {best} ")),
        "--check said {best}, startup said otherwise:\n{log}"
    );

    // Every mode the kernel refused fails cleanly when forced.
    for (mode, _) in modes.iter().filter(|(_, ok)| !ok) {
        let out = Command::new(sonde_bin())
            .args(["--capture", mode])
            .stdin(Stdio::null())
            .output()
            .expect("spawn sonde");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "--capture {mode}: {stderr}");
        assert!(
            stderr.contains(&format!("{mode} refused (")) && stderr.contains("sonde --check"),
            "--capture {mode}: the error does not say why:\n{stderr}"
        );
        assert!(
            !stderr.contains("Verifier output") && stderr.lines().count() <= 3,
            "--capture {mode}: a verifier dump is not an error message:\n{stderr}"
        );
    }
}
