//! `cargo xtask build`: the `sonde` binary, with its eBPF object built by `agent/build.rs`.

use std::{
    env,
    path::{Path, PathBuf},
};

use anyhow::Result;
use clap::Args;

use crate::{exec, toolchain::Toolchain};

/// Build the `sonde` daemon (and, through agent/build.rs, its eBPF object).
///
/// Installs the pinned toolchains first, then runs `cargo +1.99.1 build -p sonde` with bpf-linker on
/// PATH. The binary lands in `target/{debug,release}/sonde`.
#[derive(Debug, Args)]
pub(crate) struct Options {
    /// Build the release profile (`target/release/sonde`).
    #[arg(long)]
    pub(crate) release: bool,
}

pub(crate) fn build(opts: &Options) -> Result<()> {
    let toolchain = crate::toolchain::bootstrap()?;
    let bin = build_sonde(&toolchain, opts.release)?;
    println!("xtask: built {}", bin.display());
    Ok(())
}

/// Builds `sonde` and returns the absolute path of the binary.
pub(crate) fn build_sonde(toolchain: &Toolchain, release: bool) -> Result<PathBuf> {
    let mut cmd = toolchain.cargo();
    cmd.current_dir(repo_root()).args(["build", "-p", "sonde"]);
    if release {
        cmd.arg("--release");
    }
    exec::run(&mut cmd)?;
    Ok(target_dir()
        .join(if release { "release" } else { "debug" })
        .join("sonde"))
}

/// The workspace root (xtask's parent directory).
pub(crate) fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap_or(Path::new("."))
}

/// `$CARGO_TARGET_DIR` (made absolute) or `<repo>/target`.
pub(crate) fn target_dir() -> PathBuf {
    match env::var_os("CARGO_TARGET_DIR").filter(|d| !d.is_empty()) {
        Some(dir) => repo_root().join(dir),
        None => repo_root().join("target"),
    }
}
