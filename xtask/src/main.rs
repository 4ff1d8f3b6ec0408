//! `cargo xtask`: builds, runs and tests Sonde with the pinned toolchains it installs itself.
//!
//! Every subcommand first runs [`toolchain::bootstrap`], so a clean clone needs nothing but rustup
//! and the machine's default stable (the alias in `.cargo/config.toml` runs xtask on it).

mod build;
mod exec;
mod run;
mod test;
mod toolchain;

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
    Build(build::Options),
    Run(run::Options),
    Test(test::Options),
}

fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Command::Build(opts) => build::build(&opts),
        Command::Run(opts) => run::run(&opts),
        Command::Test(opts) => test::test(&opts),
    };
    // Printed here rather than returned: `RUST_BACKTRACE=1` would make anyhow append a backtrace of
    // xtask itself, which only buries the failing command.
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
