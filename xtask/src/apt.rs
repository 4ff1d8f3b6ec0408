//! Installs Debian packages with apt, only those that are missing.
//!
//! Input: package names. Output: the names that were installed (empty when all were present).

use std::process::Command;

use anyhow::{bail, Result};

use crate::exec;

/// Whether `dpkg` reports `package` as installed.
pub(crate) fn is_installed(package: &str) -> bool {
    exec::output(Command::new("dpkg-query").args(["-W", "-f=${Status}", package]))
        .is_ok_and(|s| s.trim() == "install ok installed")
}

/// Installs (`apt-get update`, then `apt-get install -y --no-install-recommends`) the packages of
/// `packages` that are not installed, and returns them.
///
/// # Errors
/// When a package is missing and xtask is not root, or an `apt-get` command fails.
pub(crate) fn install_missing<'a>(packages: &[&'a str]) -> Result<Vec<&'a str>> {
    let missing: Vec<&str> = packages
        .iter()
        .copied()
        .filter(|p| !is_installed(p))
        .collect();
    if missing.is_empty() {
        return Ok(missing);
    }
    if !is_root() {
        bail!(
            "apt packages {} are missing and installing them needs root",
            missing.join(" ")
        );
    }
    update()?;
    exec::run(
        Command::new("apt-get")
            .args(["install", "-y", "--no-install-recommends"])
            // Another apt (unattended upgrades, a second xtask) may hold the lock for a while.
            .args(["-o", "DPkg::Lock::Timeout=600"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )?;
    Ok(missing)
}

/// `apt-get update`: refreshes the package lists (apt-cache look-ups need it on a fresh machine).
pub(crate) fn update() -> Result<()> {
    exec::run(
        Command::new("apt-get")
            .arg("update")
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}

/// Whether xtask runs as root.
pub(crate) fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}
