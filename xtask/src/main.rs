//! `cargo xtask`: builds, runs and tests Sonde with the pinned toolchains it installs itself.
//!
//! Every subcommand but `vm` first runs [`toolchain::bootstrap`], so a clean clone needs nothing
//! but rustup and the machine's default stable (the alias in `.cargo/config.toml` runs xtask on it).

mod apt;
mod bench;
mod build;
mod exec;
mod run;
mod test;
mod toolchain;
mod vm;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Sonde's build, run and test driver.
///
/// Installs (once) the userspace toolchain, the eBPF nightly with rust-src and bpf-linker, then runs
/// every cargo command on the pinned userspace toolchain with bpf-linker on PATH.
#[derive(Debug, Parser)]
#[command(name = "xtask", bin_name = "cargo xtask", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    Bench(bench::Options),
    Build(build::Options),
    Run(run::Options),
    Test(test::Options),
    Vm(vm::Options),
}

fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Command::Bench(opts) => bench::bench(&opts),
        Command::Build(opts) => build::build(&opts),
        Command::Run(opts) => run::run(&opts),
        Command::Test(opts) => test::test(&opts),
        Command::Vm(opts) => vm::vm(&opts),
    };
    // Printed here rather than returned: `RUST_BACKTRACE=1` would make anyhow append a backtrace of
    // xtask itself, which only buries the failing command.
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    use super::Cli;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }
}
