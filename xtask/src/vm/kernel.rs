//! The guest kernel: Debian bookworm's `linux-image-<abi>-<flavor>` package, downloaded once with
//! apt and extracted into the cache.
//!
//! Input: a [`Flavor`]. Output: a [`Kernel`] (release name, `vmlinuz`, module tree with a
//! `modules.dep`) under `~/.cache/sonde/vm/<release>/root/`.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{bail, Context as _, Result};
use clap::ValueEnum;

use crate::{apt, exec};

/// Which Debian kernel image to boot. Both are 6.1 with kprobes, fentry and BTF.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Flavor {
    /// `linux-image-cloud-amd64`: 27 MB package, LZ4 image, boots fastest.
    Cloud,
    /// `linux-image-amd64` (generic): 70 MB package, XZ image (about 3 s more to boot under TCG).
    Amd64,
}

impl Flavor {
    /// The suffix of the package and release names: `cloud-amd64` or `amd64`.
    fn suffix(self) -> &'static str {
        match self {
            Self::Cloud => "cloud-amd64",
            Self::Amd64 => "amd64",
        }
    }
}

/// An extracted kernel package.
#[derive(Debug)]
pub(crate) struct Kernel {
    /// `uname -r` of the guest, e.g. `6.1.0-56-cloud-amd64`.
    pub(crate) release: String,
    /// The package's files (`boot/`, `lib/modules/<release>/`).
    root: PathBuf,
}

impl Kernel {
    /// The compressed kernel image qemu boots (`-kernel`).
    pub(crate) fn vmlinuz(&self) -> PathBuf {
        self.root.join(format!("boot/vmlinuz-{}", self.release))
    }

    /// `lib/modules/<release>`, with the `modules.dep` written by `busybox depmod`.
    pub(crate) fn modules_dir(&self) -> PathBuf {
        self.root.join(format!("lib/modules/{}", self.release))
    }
}

/// Returns the current kernel of `flavor`, downloading and extracting it when it is not cached.
///
/// The ABI (`6.1.0-56`) is what the `linux-image-<flavor>` metapackage depends on, so it follows
/// Debian's security updates; each release is cached in its own directory.
///
/// # Errors
/// When apt cannot resolve or download the package, or `dpkg-deb` or `busybox depmod` fails.
pub(crate) fn ensure(flavor: Flavor) -> Result<Kernel> {
    let release = resolve_release(flavor)?;
    let dir = crate::toolchain::cache_dir()?.join("vm").join(&release);
    let kernel = Kernel {
        root: dir.join("root"),
        release,
    };
    if kernel.vmlinuz().is_file() && kernel.modules_dir().join("modules.dep").is_file() {
        return Ok(kernel);
    }
    let started = Instant::now();
    download_and_extract(&kernel.release, &dir)?;
    println!(
        "xtask: vm: cached kernel {} in {} ({:.1} s)",
        kernel.release,
        dir.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(kernel)
}

/// The release the `linux-image-<flavor>` metapackage depends on; runs `apt-get update` first when
/// apt does not know it yet (a fresh machine has no package lists).
fn resolve_release(flavor: Flavor) -> Result<String> {
    if let Some(release) = release_from_apt_cache(flavor)? {
        return Ok(release);
    }
    apt::update()?;
    release_from_apt_cache(flavor)?.with_context(|| {
        format!(
            "apt knows no `linux-image-{}` dependency even after `apt-get update`",
            flavor.suffix()
        )
    })
}

fn release_from_apt_cache(flavor: Flavor) -> Result<Option<String>> {
    let meta = format!("linux-image-{}", flavor.suffix());
    let Ok(out) = exec::output(Command::new("apt-cache").args(["depends", &meta])) else {
        return Ok(None);
    };
    Ok(parse_depends(&out, flavor))
}

/// Picks `6.1.0-56-cloud-amd64` out of `apt-cache depends linux-image-cloud-amd64`, whose output
/// has a line `  Depends: linux-image-6.1.0-56-cloud-amd64`.
fn parse_depends(apt_cache_out: &str, flavor: Flavor) -> Option<String> {
    let suffix = format!("-{}", flavor.suffix());
    apt_cache_out
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Depends: linux-image-"))
        .find(|release| {
            release.strip_suffix(&suffix).is_some_and(|abi| {
                abi.starts_with(|c: char| c.is_ascii_digit())
                    && abi
                        .chars()
                        .all(|c| c.is_ascii_digit() || c == '.' || c == '-')
            })
        })
        .map(str::to_owned)
}

/// `apt-get download` into `<dir>/download`, `dpkg-deb -x` into `<dir>/root.partial`, `busybox
/// depmod` (the package ships no `modules.dep`), then renames it to `<dir>/root`.
fn download_and_extract(release: &str, dir: &Path) -> Result<()> {
    let download = dir.join("download");
    let partial = dir.join("root.partial");
    let root = dir.join("root");
    for stale in [&download, &partial, &root] {
        remove_dir_if_exists(stale)?;
    }
    fs::create_dir_all(&download)
        .with_context(|| format!("failed to create {}", download.display()))?;
    let package = format!("linux-image-{release}");
    exec::run(
        Command::new("apt-get")
            // As root, apt's sandbox user `_apt` cannot write here; don't warn about it.
            .args(["download", "-o", "APT::Sandbox::User=root", &package])
            .current_dir(&download),
    )?;
    let deb = find_deb(&download, &package)?;
    exec::run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&partial))?;
    exec::run(
        Command::new(super::BUSYBOX)
            .args(["depmod", "-b"])
            .arg(&partial)
            .arg(release),
    )?;
    fs::rename(&partial, &root).with_context(|| format!("failed to create {}", root.display()))?;
    remove_dir_if_exists(&download)
}

fn find_deb(dir: &Path, package: &str) -> Result<PathBuf> {
    let prefix = format!("{package}_");
    for entry in fs::read_dir(dir).with_context(|| format!("failed to list {}", dir.display()))? {
        let path = entry?.path();
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        if name.starts_with(&prefix) && name.ends_with(".deb") {
            return Ok(path);
        }
    }
    bail!(
        "`apt-get download {package}` left no .deb in {}",
        dir.display()
    )
}

fn remove_dir_if_exists(dir: &Path) -> Result<()> {
    if dir.exists() {
        fs::remove_dir_all(dir).with_context(|| format!("failed to remove {}", dir.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_depends_picks_the_versioned_image() {
        let out = "linux-image-cloud-amd64\n  Depends: linux-image-6.1.0-56-cloud-amd64\n";
        assert_eq!(
            parse_depends(out, Flavor::Cloud).as_deref(),
            Some("6.1.0-56-cloud-amd64")
        );
    }

    #[test]
    fn parse_depends_does_not_mistake_cloud_for_generic() {
        let out = "linux-image-amd64\n  Depends: linux-image-6.1.0-56-cloud-amd64\n  Depends: linux-image-6.1.0-56-amd64\n";
        assert_eq!(
            parse_depends(out, Flavor::Amd64).as_deref(),
            Some("6.1.0-56-amd64")
        );
    }

    #[test]
    fn parse_depends_without_dependency_is_none() {
        assert_eq!(parse_depends("", Flavor::Cloud), None);
    }
}
