//! `cargo xtask test --vm`: the end-to-end tests inside qemu guests booting real distribution
//! kernels (the [`MATRIX`]: Debian 5.10, 6.1 and 6.12), once per capture mode each kernel allows.
//!
//! Input: [`VmArgs`] and the positional test arguments (test binaries to run, then libtest
//! arguments). Output: a pass/fail line per kernel and capture mode, naming the exact kernel each
//! result came from; an error when any boot failed.
//!
//! The binaries are built on the host (`cargo test --no-run`) and run in the guest, which sees the
//! host's root (see `crate::vm`): the peers (nginx, curl, python3 and its packages) are the host's.

use std::{
    collections::BTreeSet,
    fs,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicUsize, Ordering},
        Mutex,
    },
    thread,
    time::Duration,
};

use anyhow::{bail, Context as _, Result};
use clap::Args;

use super::{peers, section};
use crate::{
    build, exec,
    toolchain::Toolchain,
    vm::{self, Flavor, Guest, GuestCommand, Machine, Outcome, Release, TcgThread, Verdict},
};

/// How much of the suite a kernel runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Suite {
    /// [`FULL_TESTS`].
    Full,
    /// [`SMOKE_TESTS`].
    Smoke,
}

/// One kernel of the matrix: the capture modes it allows (each gets a boot), the mode `auto` must
/// pick there, whether a syscall in progress at attach time is recovered, and how much of the
/// suite runs.
#[derive(Debug)]
struct Target {
    release: Release,
    modes: &'static [&'static str],
    auto: &'static str,
    recovers_in_progress: bool,
    suite: Suite,
}

/// The kernel matrix. Every Debian kernel has BTF, kprobes and BPF trampolines (fentry); the
/// `socket` and `tracepoint` modes need `sock:sock_{send,recv}_length` (Linux 6.3+), so only 6.12
/// has them.
/// On 5.10 the kernel also lacks `bpf_task_pt_regs` (5.15+): a read already blocked when the agent
/// attaches is not recovered there (`preexisting_connection` proves that exactly that read is
/// lost, and counted).
const MATRIX: [Target; 3] = [
    Target {
        release: Release::Bullseye,
        modes: &["fentry", "kprobe"],
        auto: "fentry",
        recovers_in_progress: false,
        suite: Suite::Smoke,
    },
    Target {
        release: Release::Bookworm,
        modes: &["fentry", "kprobe"],
        auto: "fentry",
        recovers_in_progress: true,
        suite: Suite::Full,
    },
    Target {
        release: Release::Trixie,
        modes: &["socket", "fentry", "kprobe", "tracepoint"],
        auto: "socket",
        recovers_in_progress: true,
        suite: Suite::Smoke,
    },
];

/// Test binaries (files in `tests/tests/`) of the full suite: the plain-HTTP tests that cover a
/// server, a client and a connection opened before the agent, HTTPS through the TLS uprobes, gRPC
/// (grpcio's `sendmsg`/`recvmsg` with up to hundreds of iovecs, HTTP/2 capture raised per socket),
/// and the capture-mode probing (`--check`, `auto`, forced modes). Not `oracle`: under emulation one
/// nginx event-loop turn can take several ms, which nginx's cached clock (its `$request_time`)
/// does not see, so its 2 ms duration tolerance is for real hardware.
const FULL_TESTS: [&str; 9] = [
    "http1_nginx",
    "http1_python",
    "preexisting_connection",
    "tls",
    "grpc",
    "capture_modes",
    "file_io",
    "ignored_sockets",
    "node_http",
];

/// The smoke subset: a server and a client (nginx, curl), a connection opened before the agent,
/// the capture-mode probing, which checks the modes this kernel allows, and what file and pipe I/O
/// costs in each mode.
const SMOKE_TESTS: [&str; 4] = [
    "http1_nginx",
    "preexisting_connection",
    "capture_modes",
    "file_io",
];

/// Where the e2e test binaries live (one binary per file).
const TESTS_DIR: &str = "tests/tests";

/// `cargo xtask test --vm`: the e2e tests in VMs, once per kernel of the matrix and capture mode.
#[derive(Debug, Args)]
pub(crate) struct VmArgs {
    /// Run only the end-to-end tests, inside qemu VMs booting Debian's current 5.10, 6.1 and 6.12
    /// kernels, once per capture mode each allows (fentry and kprobe everywhere; socket and
    /// tracepoint on 6.12). TEST_ARGS that name a file of tests/tests select those binaries (default: the full
    /// suite on 6.1, a smoke subset elsewhere); the others go to libtest.
    #[arg(long, conflicts_with = "unit_only")]
    pub(crate) vm: bool,
    /// Kernels for `--vm` (repeatable): bullseye (5.10), bookworm (6.1), trixie (6.12). Default:
    /// all three.
    #[arg(long = "vm-kernel", value_enum, value_name = "RELEASE")]
    vm_kernels: Vec<Release>,
    /// Capture modes for `--vm` (repeatable: socket, fentry, kprobe, tracepoint). Default: every
    /// mode each kernel allows.
    #[arg(long = "vm-capture", value_name = "MODE", value_parser = ["socket", "fentry", "kprobe", "tracepoint"])]
    vm_captures: Vec<String>,
    /// Kernel flavour for `--vm`.
    #[arg(long, value_enum, default_value_t = Flavor::Cloud)]
    vm_flavor: Flavor,
    /// Guest RAM for `--vm` (qemu syntax).
    #[arg(long, default_value = "2G", value_parser = vm::parse_mem)]
    vm_mem: String,
    /// Guest CPUs for `--vm`.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=64))]
    vm_smp: u32,
    /// qemu's TCG threading for `--vm` (see `cargo xtask vm --help`).
    #[arg(long, value_enum, default_value_t = TcgThread::Single)]
    vm_tcg_thread: TcgThread,
    /// Seconds each `--vm` boot (all selected binaries in one capture mode) may take.
    #[arg(long, value_name = "SECS", default_value_t = 1800)]
    vm_timeout: u64,
    /// Guests booted at once. Default: the host's CPUs with `--vm-tcg-thread single` (each guest
    /// then runs on one host thread), 1 with `multi`.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=16))]
    vm_jobs: Option<u32>,
    /// Boot each selected kernel and mode this many times (to reproduce a rare failure).
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    vm_repeat: u32,
}

impl VmArgs {
    fn machine(&self, release: Release) -> Machine {
        Machine {
            release,
            flavor: self.vm_flavor,
            mem: self.vm_mem.clone(),
            smp: self.vm_smp,
            tcg_thread: self.vm_tcg_thread,
            timeout: Duration::from_secs(self.vm_timeout),
        }
    }

    /// How many guests to boot at once.
    fn jobs(&self) -> usize {
        match (self.vm_jobs, self.vm_tcg_thread) {
            (Some(n), _) => n as usize,
            (None, TcgThread::Single) => thread::available_parallelism().map_or(1, Into::into),
            (None, TcgThread::Multi) => 1,
        }
    }

    /// The kernels of the matrix to boot.
    fn targets(&self) -> impl Iterator<Item = &'static Target> + '_ {
        MATRIX
            .iter()
            .filter(|t| self.vm_kernels.is_empty() || self.vm_kernels.contains(&t.release))
    }

    /// The capture modes to boot `target` in.
    fn modes(&self, target: &Target) -> Vec<String> {
        if self.vm_captures.is_empty() {
            target.modes.iter().map(ToString::to_string).collect()
        } else {
            self.vm_captures.clone()
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

/// What one boot (a kernel, a capture mode) gave.
struct BootResult {
    release: Release,
    mode: String,
    /// The harness's own check rather than the e2e tests.
    self_test: bool,
    /// Exit status per test binary, from the guest's `SONDE_E2E <name> rc=<N>` lines.
    binaries: Vec<(String, Option<i32>)>,
    outcome: Result<Outcome>,
}

impl BootResult {
    /// The tests exited 0, or the watchdog self-test saw what a hang must give: the verdict
    /// `Hung`, qemu's register dump and the kernel's task dump.
    fn passed(&self) -> bool {
        self.outcome.as_ref().is_ok_and(|o| {
            if self.self_test {
                o.verdict == Verdict::Hung
                    && o.console.contains("RIP=")
                    && o.console.contains("sysrq: Show State")
            } else {
                o.verdict.rc() == Some(0)
            }
        })
    }
}

/// The watchdog self-test's guest command: stops `/init`'s heartbeat (the children of PID 1
/// running `/init`), then idles, so the host must declare the guest hung and dump it.
const STOP_HEARTBEAT: &str = r#"for p in /proc/[0-9]*; do
    pid=${p#/proc/}
    [ "$pid" = 1 ] || [ "$pid" = $$ ] && continue
    [ "$(awk '/^PPid:/ { print $2 }' "$p/status" 2>/dev/null)" = 1 ] || continue
    if tr '\0' ' ' <"$p/cmdline" | grep -q '/init'; then
        kill -STOP "$pid" && echo "watchdog self-test: stopped the heartbeat (pid $pid)"
    fi
done
exec sleep 100000
"#;

/// Installs the peers, builds `sonde` and the test binaries, then boots each kernel of the matrix
/// once per capture mode.
///
/// # Errors
/// When the build fails, or any boot fails or reports a failing test binary.
pub(crate) fn test(toolchain: &Toolchain, opts: &VmArgs, test_args: &[String]) -> Result<()> {
    let known = test_names()?;
    let (named, libtest_args): (Vec<String>, Vec<String>) =
        test_args.iter().cloned().partition(|a| known.contains(a));
    section("end-to-end test peers");
    peers::install()?;
    section("build sonde and the end-to-end test binaries");
    let sonde = build::build_sonde(toolchain, true)?;
    let mut wanted: Vec<String> = Vec::new();
    for target in opts.targets() {
        for name in suite_tests(target.suite, &named) {
            if !wanted.contains(&name) {
                wanted.push(name);
            }
        }
    }
    let binaries = build_tests(toolchain, &wanted)?;
    // Kernels one at a time (each release has one apt state), then the boots, `jobs` at once.
    let mut guests = Vec::new();
    for target in opts.targets() {
        guests.push((target, vm::prepare(&opts.machine(target.release))?));
    }
    let mut boots = Vec::new();
    for (target, guest) in &guests {
        let names = suite_tests(target.suite, &named);
        let selected: Vec<TestBinary> = binaries
            .iter()
            .filter(|b| names.contains(&b.name))
            .cloned()
            .collect();
        for mode in opts.modes(target) {
            for run in 1..=opts.vm_repeat {
                boots.push(Boot {
                    guest,
                    target,
                    mode: mode.clone(),
                    run: (opts.vm_repeat > 1).then_some(run),
                    sonde: &sonde,
                    binaries: selected.clone(),
                    libtest_args: &libtest_args,
                });
            }
        }
    }
    // The longest boots first, so the short ones fill in around them.
    boots.sort_by_key(|b| b.target.suite != Suite::Full);
    // The watchdog proves itself once per default run, on the first kernel.
    if let (true, Some((target, guest))) = (named.is_empty(), guests.first()) {
        boots.push(Boot {
            guest,
            target,
            mode: "watchdog".to_owned(),
            run: None,
            sonde: &sonde,
            binaries: Vec::new(),
            libtest_args: &libtest_args,
        });
    }
    let jobs = opts.jobs().min(boots.len()).max(1);
    section(&format!(
        "end-to-end tests in {} VM boot(s), {jobs} at a time",
        boots.len()
    ));
    summarize(&run_all(&boots, jobs))
}

/// Runs every boot on `jobs` threads and returns the results in `boots`' order. With one job the
/// consoles are echoed live; with more they would interleave, so each boot's report (its whole
/// console when it failed) is printed when it ends.
fn run_all(boots: &[Boot<'_>], jobs: usize) -> Vec<BootResult> {
    let echo = jobs == 1;
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<BootResult>>> = Mutex::new(boots.iter().map(|_| None).collect());
    thread::scope(|scope| {
        for _ in 0..jobs {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(boot) = boots.get(i) else {
                    break;
                };
                let result = boot.run(echo);
                if let Ok(mut results) = results.lock() {
                    results[i] = Some(result);
                }
            });
        }
    });
    results
        .into_inner()
        .unwrap_or_default()
        .into_iter()
        .flatten()
        .collect()
}

/// The binaries a suite runs: those named on the command line, else the suite's own.
fn suite_tests(suite: Suite, named: &[String]) -> Vec<String> {
    if !named.is_empty() {
        return named.to_vec();
    }
    let tests: &[&str] = match suite {
        Suite::Full => &FULL_TESTS,
        Suite::Smoke => &SMOKE_TESTS,
    };
    tests.iter().map(ToString::to_string).collect()
}

/// One guest boot: a kernel of the matrix, a capture mode, the binaries to run.
struct Boot<'a> {
    guest: &'a Guest,
    target: &'a Target,
    mode: String,
    /// Which of `--vm-repeat` runs this is (when more than one).
    run: Option<u32>,
    sonde: &'a Path,
    binaries: Vec<TestBinary>,
    libtest_args: &'a [String],
}

impl Boot<'_> {
    /// Whether this boot is the watchdog self-test (no binaries; its heartbeat is stopped).
    fn is_self_test(&self) -> bool {
        self.mode == "watchdog"
    }

    /// `Debian bookworm (6.1), capture fentry`.
    fn title(&self) -> String {
        let release = self.target.release;
        let mut title = format!(
            "Debian {} ({}), capture {}",
            release.codename(),
            release.series(),
            self.mode
        );
        if self.is_self_test() {
            title = format!(
                "Debian {} ({}), watchdog self-test (heartbeat stopped: must be declared hung)",
                release.codename(),
                release.series()
            );
        } else if let Some(run) = self.run {
            title.push_str(&format!(", run {run}"));
        }
        title
    }

    fn run(&self, echo: bool) -> BootResult {
        let release = self.target.release;
        let title = self.title();
        if echo {
            section(&format!("end-to-end tests in a VM: {title}"));
        } else {
            println!("xtask: vm: started {title}");
        }
        let mut name = format!("e2e-{}-{}", release.codename(), self.mode);
        if let Some(run) = self.run {
            name.push_str(&format!("-{run}"));
        }
        let command = if self.is_self_test() {
            GuestCommand {
                argv: vec!["sh".into(), "-c".into(), STOP_HEARTBEAT.into()],
                env: Vec::new(),
                cwd: build::repo_root().to_path_buf(),
            }
        } else {
            self.guest_command()
        };
        let outcome = self.guest.boot(&command, &name, echo);
        let binaries = {
            let console = outcome.as_ref().map_or("", |o| o.console.as_str());
            self.binaries
                .iter()
                .map(|b| (b.name.clone(), binary_rc(console, &b.name)))
                .collect()
        };
        let result = BootResult {
            release,
            mode: self.mode.clone(),
            self_test: self.is_self_test(),
            binaries,
            outcome,
        };
        let console = result.outcome.as_ref().map_or("", |o| o.console.as_str());
        if !echo {
            section(&format!("end-to-end tests in a VM: {title}"));
            if !result.passed() {
                println!("{console}");
            } else {
                console
                    .lines()
                    .filter(|l| l.starts_with("====") || l.starts_with("test result:"))
                    .for_each(|l| println!("{l}"));
            }
        }
        if let Ok(o) = &result.outcome {
            vm::report(o);
        }
        result
    }

    /// A shell script that runs every binary one test at a time, prints `SONDE_E2E <name> rc=<N>`
    /// after each and exits 1 when any failed.
    fn guest_command(&self) -> GuestCommand {
        let quote = |s: &str| exec::quote(s.as_ref());
        let mode = self.mode.as_str();
        let mut script = String::from("rc=0\n");
        for binary in &self.binaries {
            let mut line = quote(&binary.executable.to_string_lossy());
            line.push_str(" --test-threads=1");
            for arg in self.libtest_args {
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
                (
                    "SONDE_BIN".into(),
                    self.sonde.to_string_lossy().into_owned(),
                ),
                ("SONDE_CAPTURE".into(), mode.into()),
                ("SONDE_EXPECT_CAPTURE".into(), mode.into()),
                ("SONDE_EXPECT_AUTO_CAPTURE".into(), self.target.auto.into()),
                (
                    "SONDE_EXPECT_CAPTURE_MODES".into(),
                    self.target.modes.join(","),
                ),
                (
                    "SONDE_EXPECT_IN_PROGRESS_RECOVERY".into(),
                    u8::from(self.target.recovers_in_progress).to_string(),
                ),
            ],
            // Where `cargo test` runs a test binary: its package's directory.
            cwd: build::repo_root().join("tests"),
        }
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

/// The exit status the guest printed for binary `name`, if it got that far.
fn binary_rc(console: &str, name: &str) -> Option<i32> {
    let prefix = format!("SONDE_E2E {name} rc=");
    console
        .lines()
        .rev()
        .find_map(|l| l.find(&prefix).map(|at| &l[at + prefix.len()..]))
        .and_then(|rc| rc.split_whitespace().next()?.parse().ok())
}

/// Prints a line per boot (kernel as the guest reported it, capture mode, verdict) and per test
/// binary, then fails when any boot did.
fn summarize(results: &[BootResult]) -> Result<()> {
    section("summary (VM)");
    let mut failed = 0;
    for result in results {
        let ok = result.passed();
        failed += usize::from(!ok);
        let kernel = result
            .outcome
            .as_ref()
            .ok()
            .and_then(Outcome::kernel)
            .unwrap_or_else(|| format!("Debian {}", result.release.codename()));
        let what = if result.self_test {
            "watchdog self-test".to_owned()
        } else {
            format!("capture {}", result.mode)
        };
        println!(
            "  {kernel:<48} {what:<18} {}",
            if ok { "ok" } else { "FAILED" }
        );
        match &result.outcome {
            Ok(o) if !ok || !o.alarms.is_empty() || result.self_test => {
                println!("    {}", o.describe());
            }
            Err(e) => println!("    {e:#}"),
            Ok(_) => {}
        }
        for (name, rc) in &result.binaries {
            let status = match rc {
                Some(0) => "ok".to_owned(),
                Some(rc) => format!("FAILED (exit {rc})"),
                None => "not run or did not finish".to_owned(),
            };
            println!("    {name:<24} {status}");
        }
    }
    if failed > 0 {
        bail!("{failed} of {} VM boot(s) failed", results.len());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_binaries_replace_the_suite() {
        assert_eq!(suite_tests(Suite::Smoke, &[]), SMOKE_TESTS);
        assert_eq!(suite_tests(Suite::Full, &[]), FULL_TESTS);
        let named = ["tls".to_owned()];
        assert_eq!(suite_tests(Suite::Smoke, &named), ["tls"]);
    }

    #[test]
    fn matrix_modes_are_known_and_auto_is_one_of_them() {
        for target in &MATRIX {
            assert!(target.modes.contains(&target.auto), "{target:?}");
            for mode in target.modes {
                assert!(
                    ["socket", "fentry", "kprobe", "tracepoint"].contains(mode),
                    "{target:?}"
                );
            }
        }
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
        let console =
            "==== a ====\nSONDE_E2E a rc=101\nSONDE_E2E ab rc=0\n[ 1.2] x SONDE_E2E c rc=3\n";
        assert_eq!(binary_rc(console, "a"), Some(101));
        assert_eq!(binary_rc(console, "ab"), Some(0));
        assert_eq!(
            binary_rc(console, "c"),
            Some(3),
            "after a kernel message on the same line"
        );
        assert_eq!(binary_rc(console, "b"), None);
    }
}
