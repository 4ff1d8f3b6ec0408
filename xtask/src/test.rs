//! `cargo xtask test`: lint, unit tests, then the privileged end-to-end tests against real peers.
//!
//! Stages run in order and each prints a header. A failing lint or test stage does not stop the
//! later ones (CI then reports every failure at once); a failing bootstrap, peer install or build
//! does. The summary at the end lists every stage, and any failure makes the exit status non-zero.

mod peers;
mod vm;

use std::{path::Path, process::Command};

use anyhow::{bail, Result};
use clap::Args;

use crate::{build, exec, toolchain::Toolchain};

/// Lint, unit-test and end-to-end-test the workspace.
///
/// Stages: (1) install the pinned toolchains; (2) install the e2e test peers when missing (apt:
/// nginx curl bpftool; pip: opentelemetry-proto grpcio rotel); (3) `cargo fmt --check` and
/// `cargo clippy -D warnings`; (4) unit tests of every crate except agent-ebpf and agent-tests;
/// (5) build release `sonde` and run the privileged tests in tests/ (package agent-tests) one at a
/// time with `SONDE_BIN` set. The e2e tests need root; without it they print `skipping: needs root`.
///
/// (6) the e2e tests inside qemu VMs booting Debian's current 5.10, 6.1 and 6.12 kernels, once
/// per capture mode each allows (the full suite on 6.1, a smoke subset on the others); the host
/// runs the tracepoint mode. `--no-vm` skips it. With `--vm`, only stage 6 runs.
///
/// Examples: `cargo xtask test`, `cargo xtask test --e2e-only http1_nginx`,
/// `cargo xtask test --unit-only proto::http1`, `cargo xtask test --vm http1_nginx`.
#[derive(Debug, Args)]
pub(crate) struct Options {
    /// Skip stage 3 (rustfmt and clippy).
    #[arg(long)]
    skip_lint: bool,
    /// Run stages 1, 3 and 4 only: no peers, no release build, no e2e tests.
    #[arg(long, conflicts_with = "e2e_only")]
    unit_only: bool,
    /// Run stages 1, 2 and 5 (and 6) only: no lint, no unit tests.
    #[arg(long)]
    e2e_only: bool,
    /// Skip stage 6 (the end-to-end tests inside VMs, about 20 minutes).
    #[arg(long, conflicts_with = "vm")]
    no_vm: bool,
    #[command(flatten)]
    vm: vm::VmArgs,
    /// Test name filters and other libtest arguments, passed to every `cargo test` run
    /// (e.g. `keep_alive`, or `-- --nocapture`).
    #[arg(
        value_name = "TEST_ARGS",
        trailing_var_arg = true,
        allow_hyphen_values = true
    )]
    test_args: Vec<String>,
}

/// Outcome of the stages that run, in order, for the summary.
struct Report {
    stages: Vec<(&'static str, Result<()>)>,
}

impl Report {
    fn record(&mut self, name: &'static str, outcome: Result<()>) {
        if let Err(e) = &outcome {
            println!("xtask: {name} FAILED: {e:#}");
        }
        self.stages.push((name, outcome));
    }
}

pub(crate) fn test(opts: &Options) -> Result<()> {
    section("1/6 toolchains");
    let toolchain = crate::toolchain::bootstrap()?;
    if opts.vm.vm {
        return vm::test(&toolchain, &opts.vm, &opts.test_args);
    }
    let run_lint = !opts.skip_lint && !opts.e2e_only;
    let run_unit = !opts.e2e_only;
    let run_e2e = !opts.unit_only;

    let mut report = Report { stages: Vec::new() };
    if run_e2e {
        section("2/6 end-to-end test peers");
        peers::install()?;
    }
    if run_lint {
        section("3/6 lint: rustfmt");
        report.record(
            "rustfmt",
            exec::run(
                toolchain
                    .cargo()
                    .current_dir(build::repo_root())
                    .args(["fmt", "--all", "--check"]),
            ),
        );
        section("3/6 lint: clippy");
        report.record(
            "clippy",
            exec::run(toolchain.cargo().current_dir(build::repo_root()).args([
                "clippy",
                "--workspace",
                "--exclude",
                "agent-ebpf",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ])),
        );
    }
    if run_unit {
        section("4/6 unit tests");
        let mut cmd = toolchain.cargo();
        cmd.current_dir(build::repo_root())
            .args([
                "test",
                "--workspace",
                "--exclude",
                "agent-ebpf",
                "--exclude",
                "agent-tests",
                "--no-fail-fast",
                "--",
            ])
            .args(&opts.test_args);
        report.record("unit tests", exec::run(&mut cmd));
    }
    if run_e2e {
        section("5/6 end-to-end tests (privileged, this kernel)");
        let bin = build::build_sonde(&toolchain, true)?;
        report.record("end-to-end tests", e2e(&toolchain, &bin, &opts.test_args));
        if !opts.no_vm {
            section("6/6 end-to-end tests in VMs (Debian 5.10, 6.1, 6.12)");
            report.record(
                "VM e2e tests",
                vm::test(&toolchain, &opts.vm, &opts.test_args),
            );
        }
    }

    section("summary");
    for (name, outcome) in &report.stages {
        println!(
            "  {:<18} {}",
            name,
            if outcome.is_ok() { "ok" } else { "FAILED" }
        );
    }
    let failed = report.stages.iter().filter(|(_, o)| o.is_err()).count();
    if failed > 0 {
        bail!("{failed} stage(s) failed");
    }
    Ok(())
}

fn e2e(toolchain: &Toolchain, bin: &Path, test_args: &[String]) -> Result<()> {
    if !bin.is_file() {
        bail!("{} was not built", bin.display());
    }
    let mut cmd: Command = toolchain.cargo();
    cmd.current_dir(build::repo_root())
        .args([
            "test",
            "-p",
            "agent-tests",
            "--no-fail-fast",
            "--",
            "--test-threads=1",
        ])
        .args(test_args)
        .env("SONDE_BIN", bin);
    println!("xtask: SONDE_BIN={}", bin.display());
    exec::run(&mut cmd)
}

fn section(title: &str) {
    println!("\n==== xtask test: {title} ====");
}
