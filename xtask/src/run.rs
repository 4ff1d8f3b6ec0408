//! `cargo xtask run`: builds `sonde` and replaces xtask with it, as root.
//!
//! xtask `exec`s the agent (or `sudo -E` when not root) instead of waiting on it, so Ctrl-C and
//! SIGTERM reach the agent directly and its exit status is the command's exit status.

use std::{os::unix::process::CommandExt as _, process::Command};

use anyhow::{Context as _, Result};
use clap::Args;

use crate::{build, exec};

/// Build `sonde` and run it as root (via `sudo -E` when not root).
///
/// Example: `cargo xtask run -- --port 8080 --otlp-endpoint http://127.0.0.1:4317`.
/// Ctrl-C goes straight to the agent, which flushes its spans and exits; its exit code is forwarded.
#[derive(Debug, Args)]
pub(crate) struct Options {
    /// Build and run the release profile (the default).
    #[arg(long, conflicts_with = "debug")]
    release: bool,
    /// Build and run the debug profile instead.
    #[arg(long)]
    debug: bool,
    /// Arguments for `sonde` (put them after `--`).
    #[arg(last = true, value_name = "SONDE_ARGS")]
    args: Vec<String>,
}

pub(crate) fn run(opts: &Options) -> Result<()> {
    let toolchain = crate::toolchain::bootstrap()?;
    let bin = build::build_sonde(&toolchain, !opts.debug)?;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let is_root = unsafe { libc::geteuid() } == 0;
    let mut cmd = if is_root {
        Command::new(&bin)
    } else {
        let mut sudo = Command::new("sudo");
        sudo.arg("-E").arg(&bin);
        sudo
    };
    cmd.args(&opts.args);
    println!("$ {}", exec::display(&cmd));
    // Only returns on failure.
    let err = cmd.exec();
    Err(err).with_context(|| format!("failed to exec `{}`", exec::display(&cmd)))
}
