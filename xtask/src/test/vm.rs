//! `cargo xtask test --vm`: the end-to-end tests inside a qemu guest whose kernel has kprobes and
//! fentry, booted once per capture mode.
//!
//! Input: [`VmArgs`] and the positional test arguments (test binaries to run, then libtest
//! arguments). Output: a pass/fail line per capture mode; an error when any mode failed.
//!
//! The binaries are built on the host (`cargo test --no-run`) and run in the guest, which sees the
//! host's root (see `crate::vm`): the peers (nginx, curl, python3 and its packages) are the host's.

use std::{
    collections::BTreeSet,
    fs,
    path::{Path, PathBuf},
};

use anyhow::{bail, Context as _, Result};
use clap::Args;

use super::{peers, section};
use crate::{
    build, exec,
    toolchain::Toolchain,
    vm::{self, Flavor, GuestCommand, Machine},
};

/// Capture modes, one guest boot each: the agent is told to attach its socket probes this way
/// (`SONDE_CAPTURE`) and the harness checks that it did (`SONDE_EXPECT_CAPTURE`).
pub(crate) const CAPTURE_MODES: [&str; 2] = ["fentry", "kprobe"];

/// Test binaries (files in `tests/tests/`) run when the arguments name none: the plain-HTTP tests
/// that cover a server, a client and a connection opened before the agent, HTTPS through the TLS
/// uprobes, and the capture-mode probing (`--check`, `auto`, forced modes). Not `oracle`: under
/// emulation one nginx event-loop turn can take several ms, which nginx's cached clock (its
/// `$request_time`) does not see, so its 2 ms duration tolerance is for real hardware.
pub(crate) const DEFAULT_TESTS: [&str; 5] = [
    "http1_nginx",
    "http1_python",
    "preexisting_connection",
    "tls",
    "capture_modes",
];

/// The mode `--capture auto` must pick on the guest kernel (Debian 6.1: BTF and trampolines).
const AUTO_CAPTURE: &str = "fentry";

/// Where the e2e test binaries live (one binary per file).
const TESTS_DIR: &str = "tests/tests";

/// `cargo xtask test --vm`: the e2e tests in a VM, once per capture mode (fentry, kprobe).
#[derive(Debug, Args)]
pub(crate) struct VmArgs {
    /// Run only the end-to-end tests, inside a qemu VM (Debian 6.1 kernel: kprobes, fentry), once
    /// per capture mode (fentry, kprobe). TEST_ARGS that name a file of tests/tests select those
    /// binaries (default: http1_nginx http1_python preexisting_connection tls capture_modes); the
    /// others go to libtest.
    #[arg(long, conflicts_with = "unit_only")]
    pub(crate) vm: bool,
    /// Kernel flavour for `--vm`.
    #[arg(long, value_enum, default_value_t = Flavor::Cloud)]
    vm_flavor: Flavor,
    /// Guest RAM for `--vm` (qemu syntax).
    #[arg(long, default_value = "2G", value_parser = vm::parse_mem)]
    vm_mem: String,
    /// Guest CPUs for `--vm`.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=64))]
    vm_smp: u32,
    /// Seconds each `--vm` boot (all selected binaries in one capture mode) may take.
    #[arg(long, value_name = "SECS", default_value_t = 1800)]
    vm_timeout: u64,
}

impl VmArgs {
    fn machine(&self) -> Machine {
        Machine {
            flavor: self.vm_flavor,
            mem: self.vm_mem.clone(),
            smp: self.vm_smp,
            timeout: std::time::Duration::from_secs(self.vm_timeout),
        }
    }
}

/// A built test binary.
#[derive(Debug, Clone, PartialEq, Eq)]
struct TestBinary {
    /// The file stem in `tests/tests/`, e.g. `http1_nginx`.
    name: String,
    executable: PathBuf,
}

/// What one capture mode's boot gave.
struct ModeResult {
    mode: &'static str,
    /// Exit status per test binary, from the guest's `SONDE_E2E <name> rc=<N>` lines.
    binaries: Vec<(String, Option<i32>)>,
    outcome: Result<i32>,
}

/// Installs the peers, builds `sonde` and the test binaries, then boots the guest once per mode.
///
/// # Errors
/// When the build fails, or any mode's guest fails or reports a failing test binary.
pub(crate) fn test(toolchain: &Toolchain, opts: &VmArgs, test_args: &[String]) -> Result<()> {
    let (names, libtest_args) = select(&test_names()?, test_args);
    section("end-to-end test peers");
    peers::install()?;
    section("build sonde and the end-to-end test binaries");
    let sonde = build::build_sonde(toolchain, true)?;
    let binaries = build_tests(toolchain, &names)?;
    let machine = opts.machine();
    let results: Vec<ModeResult> = CAPTURE_MODES
        .into_iter()
        .map(|mode| run_mode(&machine, mode, &sonde, &binaries, &libtest_args))
        .collect();
    summarize(&results)
}

/// Boots the guest once and runs every binary in capture `mode`.
fn run_mode(
    machine: &Machine,
    mode: &'static str,
    sonde: &Path,
    binaries: &[TestBinary],
    libtest_args: &[String],
) -> ModeResult {
    section(&format!("end-to-end tests in a VM, capture {mode}"));
    let command = guest_command(mode, sonde, binaries, libtest_args);
    let outcome = vm::run(machine, &command, &format!("e2e-{mode}"));
    let console = outcome.as_ref().map_or("", |o| {
        vm::report(o);
        o.console.as_str()
    });
    ModeResult {
        mode,
        binaries: binaries
            .iter()
            .map(|b| (b.name.clone(), binary_rc(console, &b.name)))
            .collect(),
        outcome: outcome.map(|o| o.rc),
    }
}

/// The file stems of `tests/tests/*.rs`: the names of the e2e test binaries.
fn test_names() -> Result<BTreeSet<String>> {
    let dir = build::repo_root().join(TESTS_DIR);
    let mut names = BTreeSet::new();
    for entry in fs::read_dir(&dir).with_context(|| format!("failed to list {}", dir.display()))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "rs") {
            if let Some(stem) = path.file_stem() {
                names.insert(stem.to_string_lossy().into_owned());
            }
        }
    }
    Ok(names)
}

/// Splits the positional arguments into test binaries (those naming one) and libtest arguments;
/// no named binary means [`DEFAULT_TESTS`].
fn select(known: &BTreeSet<String>, args: &[String]) -> (Vec<String>, Vec<String>) {
    let (named, rest): (Vec<String>, Vec<String>) =
        args.iter().cloned().partition(|a| known.contains(a));
    let named = if named.is_empty() {
        DEFAULT_TESTS.iter().map(ToString::to_string).collect()
    } else {
        named
    };
    (named, rest)
}

/// `cargo test -p agent-tests --no-run --message-format=json --test NAME…`: builds the binaries
/// without running them and returns their paths.
fn build_tests(toolchain: &Toolchain, names: &[String]) -> Result<Vec<TestBinary>> {
    let mut cmd = toolchain.cargo();
    cmd.current_dir(build::repo_root()).args([
        "test",
        "-p",
        "agent-tests",
        "--no-run",
        "--message-format=json-render-diagnostics",
    ]);
    for name in names {
        cmd.args(["--test", name]);
    }
    println!("$ {}", exec::display(&cmd));
    let binaries = parse_test_executables(&exec::output(&mut cmd)?)?;
    for name in names {
        if !binaries.iter().any(|b| &b.name == name) {
            bail!("cargo built no test binary `{name}`");
        }
    }
    for binary in &binaries {
        println!(
            "xtask: built {} ({})",
            binary.name,
            binary.executable.display()
        );
    }
    Ok(binaries)
}

/// The test executables in cargo's JSON messages (`compiler-artifact` of a `test` target with an
/// `executable`), in the order cargo reported them.
fn parse_test_executables(json_lines: &str) -> Result<Vec<TestBinary>> {
    let mut binaries = Vec::new();
    for line in json_lines.lines().filter(|l| l.starts_with('{')) {
        let message: serde_json::Value = serde_json::from_str(line)
            .with_context(|| format!("cargo printed invalid JSON: {line}"))?;
        let is_test = message["target"]["kind"]
            .as_array()
            .is_some_and(|kinds| kinds.iter().any(|k| k == "test"));
        if message["reason"] != "compiler-artifact" || !is_test {
            continue;
        }
        if let (Some(name), Some(executable)) = (
            message["target"]["name"].as_str(),
            message["executable"].as_str(),
        ) {
            binaries.push(TestBinary {
                name: name.to_owned(),
                executable: PathBuf::from(executable),
            });
        }
    }
    Ok(binaries)
}

/// A shell script that runs every binary one test at a time, prints `SONDE_E2E <name> rc=<N>`
/// after each and exits 1 when any failed.
fn guest_command(
    mode: &str,
    sonde: &Path,
    binaries: &[TestBinary],
    libtest_args: &[String],
) -> GuestCommand {
    let quote = |s: &str| exec::quote(s.as_ref());
    let mut script = String::from("rc=0\n");
    for binary in binaries {
        let mut line = quote(&binary.executable.to_string_lossy());
        line.push_str(" --test-threads=1");
        for arg in libtest_args {
            line.push(' ');
            line.push_str(&quote(arg));
        }
        script.push_str(&format!(
            "echo '==== {name} (capture {mode}) ===='\n{line}\nr=$?\n\
             echo \"SONDE_E2E {name} rc=$r\"\n[ \"$r\" -eq 0 ] || rc=1\n",
            name = binary.name
        ));
    }
    script.push_str("exit $rc\n");
    GuestCommand {
        argv: vec!["sh".into(), "-c".into(), script],
        env: vec![
            ("SONDE_BIN".into(), sonde.to_string_lossy().into_owned()),
            ("SONDE_CAPTURE".into(), mode.into()),
            ("SONDE_EXPECT_CAPTURE".into(), mode.into()),
            ("SONDE_EXPECT_AUTO_CAPTURE".into(), AUTO_CAPTURE.into()),
        ],
        // Where `cargo test` runs a test binary: its package's directory.
        cwd: build::repo_root().join("tests"),
    }
}

/// The exit status the guest printed for binary `name`, if it got that far.
fn binary_rc(console: &str, name: &str) -> Option<i32> {
    let prefix = format!("SONDE_E2E {name} rc=");
    console
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|rc| rc.trim().parse().ok())
}

fn summarize(results: &[ModeResult]) -> Result<()> {
    section("summary (VM)");
    let mut failed = 0;
    for result in results {
        let ok = matches!(result.outcome, Ok(0));
        failed += usize::from(!ok);
        println!(
            "  capture {:<8} {}",
            result.mode,
            if ok { "ok" } else { "FAILED" }
        );
        if let Err(e) = &result.outcome {
            println!("    {e:#}");
        }
        for (name, rc) in &result.binaries {
            let status = match rc {
                Some(0) => "ok".to_owned(),
                Some(rc) => format!("FAILED (exit {rc})"),
                None => "not run".to_owned(),
            };
            println!("    {name:<24} {status}");
        }
    }
    if failed > 0 {
        bail!("{failed} of {} capture mode(s) failed", results.len());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn select_splits_binaries_from_libtest_args() {
        let known: BTreeSet<String> = ["http1_nginx", "tls"].map(String::from).into();
        let args = ["tls", "keep_alive", "--nocapture"].map(String::from);
        let (names, rest) = select(&known, &args);
        assert_eq!(names, ["tls"]);
        assert_eq!(rest, ["keep_alive", "--nocapture"]);
    }

    #[test]
    fn select_defaults_when_no_binary_is_named() {
        let (names, rest) = select(&BTreeSet::new(), &["keep_alive".to_owned()]);
        assert_eq!(names, DEFAULT_TESTS);
        assert_eq!(rest, ["keep_alive"]);
    }

    #[test]
    fn parse_picks_test_executables_only() {
        let json = r#"{"reason":"compiler-artifact","target":{"kind":["lib"],"name":"agent_tests"},"executable":null}
{"reason":"compiler-artifact","target":{"kind":["test"],"name":"http1_nginx"},"executable":"/t/debug/deps/http1_nginx-1a"}
{"reason":"build-finished","success":true}"#;
        assert_eq!(
            parse_test_executables(json).unwrap(),
            [TestBinary {
                name: "http1_nginx".into(),
                executable: "/t/debug/deps/http1_nginx-1a".into()
            }]
        );
    }

    #[test]
    fn binary_rc_reads_the_guest_marker() {
        let console = "==== a ====\nSONDE_E2E a rc=101\nSONDE_E2E ab rc=0\n";
        assert_eq!(binary_rc(console, "a"), Some(101));
        assert_eq!(binary_rc(console, "ab"), Some(0));
        assert_eq!(binary_rc(console, "b"), None);
    }
}
