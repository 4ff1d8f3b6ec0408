//! The guest kernel: a Debian release's `linux-image-<abi>-<flavor>` package, downloaded once
//! from Debian's archive and extracted into the cache.
//!
//! Input: a [`Release`] and a [`Flavor`]. Output: a [`Kernel`] (release name, `vmlinuz`, module
//! tree with a `modules.dep`) under `~/.cache/sonde/vm/<uname -r>/root/`.

use std::{
    fs,
    os::unix::fs::symlink,
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{Context as _, Result};
use clap::ValueEnum;

use super::archive::{Archive, Release};
use crate::exec;

/// Which Debian kernel image to boot. Both have kprobes, fentry and BTF in every release.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Flavor {
    /// `linux-image-cloud-amd64`: 21–35 MB package, boots fastest.
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
    /// `uname -r` of the guest, e.g. `6.1.0-57-cloud-amd64` or `6.12.118+deb13-cloud-amd64`.
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

/// Returns the current kernel of `release` and `flavor`, downloading and extracting it when it
/// is not cached.
///
/// The ABI (`6.1.0-57`) is what the `linux-image-<flavor>` metapackage depends on, so it follows
/// Debian's security updates (the lists are at most a day old, see [`Archive`]); each kernel is
/// cached in its own directory.
///
/// # Errors
/// When apt cannot resolve or download the package, or `dpkg-deb` or `busybox depmod` fails.
pub(crate) fn ensure(release: Release, flavor: Flavor) -> Result<Kernel> {
    let cache = crate::toolchain::cache_dir()?.join("vm");
    let archive = Archive::open(release, &cache)?;
    let fresh = archive.is_fresh();
    if !fresh {
        archive.update()?;
    }
    match fetch(&archive, flavor, &cache) {
        Err(e) if fresh => {
            // The lists may name a package the archive no longer has: refresh them and retry.
            println!("xtask: vm: {e:#}; refreshing the package lists and trying again");
            archive.update()?;
            fetch(&archive, flavor, &cache)
        }
        result => result,
    }
}

/// Resolves the kernel on the current lists and downloads it unless it is cached.
fn fetch(archive: &Archive, flavor: Flavor, cache: &Path) -> Result<Kernel> {
    let uname = resolve(archive, flavor)?;
    let dir = cache.join(&uname);
    let kernel = Kernel {
        root: dir.join("root"),
        release: uname,
    };
    if kernel.vmlinuz().is_file() && kernel.modules_dir().join("modules.dep").is_file() {
        return Ok(kernel);
    }
    let started = Instant::now();
    download_and_extract(archive, &kernel.release, &dir)?;
    println!(
        "xtask: vm: cached kernel {} in {} ({:.1} s)",
        kernel.release,
        dir.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(kernel)
}

/// The kernel release the `linux-image-<flavor>` metapackage depends on.
fn resolve(archive: &Archive, flavor: Flavor) -> Result<String> {
    let meta = format!("linux-image-{}", flavor.suffix());
    let out = archive.depends(&meta)?;
    parse_depends(&out, flavor)
        .with_context(|| format!("`apt-cache depends {meta}` names no kernel image: {out}"))
}

/// Picks the release out of `apt-cache depends linux-image-cloud-amd64`, whose output has a line
/// `  Depends: linux-image-6.1.0-57-cloud-amd64` (bookworm) or
/// `  Depends: linux-image-6.12.118+deb13-cloud-amd64` (trixie).
fn parse_depends(apt_cache_out: &str, flavor: Flavor) -> Option<String> {
    let suffix = format!("-{}", flavor.suffix());
    apt_cache_out
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Depends: linux-image-"))
        .find(|release| release.strip_suffix(&suffix).is_some_and(is_abi))
        .map(str::to_owned)
}

/// `6.1.0-57` or `6.12.118+deb13`: a version of digits, dots and dashes, then an optional `+`
/// and a tag of letters and digits; `6.1.0-57-cloud` (another flavour) is not one.
fn is_abi(abi: &str) -> bool {
    let (version, tag) = abi.split_once('+').unwrap_or((abi, ""));
    version.starts_with(|c: char| c.is_ascii_digit())
        && version
            .chars()
            .all(|c| c.is_ascii_digit() || c == '.' || c == '-')
        && tag.chars().all(|c| c.is_ascii_alphanumeric())
}

/// `apt-get download` into `<dir>/download`, `dpkg-deb -x` into `<dir>/root.partial`, `busybox
/// depmod` (the package ships no `modules.dep`), then renames it to `<dir>/root`.
///
/// Packages of merged-`/usr` releases (trixie) put the modules under `usr/lib/modules`; a `lib`
/// symlink gives every release the same layout.
fn download_and_extract(archive: &Archive, release: &str, dir: &Path) -> Result<()> {
    let download = dir.join("download");
    let partial = dir.join("root.partial");
    let root = dir.join("root");
    for stale in [&download, &partial, &root] {
        remove_dir_if_exists(stale)?;
    }
    fs::create_dir_all(&download)
        .with_context(|| format!("failed to create {}", download.display()))?;
    let deb = archive.download(&format!("linux-image-{release}"), &download)?;
    exec::run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&partial))?;
    if !partial.join("lib").exists() && partial.join("usr/lib").is_dir() {
        symlink("usr/lib", partial.join("lib"))
            .with_context(|| format!("failed to link {}/lib", partial.display()))?;
    }
    exec::run(
        Command::new(super::BUSYBOX)
            .args(["depmod", "-b"])
            .arg(&partial)
            .arg(release),
    )?;
    fs::rename(&partial, &root).with_context(|| format!("failed to create {}", root.display()))?;
    remove_dir_if_exists(&download)
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
    fn parse_depends_reads_trixies_abi_with_a_tag() {
        let out = "linux-image-cloud-amd64\n  Depends: linux-image-6.12.118+deb13-cloud-amd64\n";
        assert_eq!(
            parse_depends(out, Flavor::Cloud).as_deref(),
            Some("6.12.118+deb13-cloud-amd64")
        );
        let out = "linux-image-amd64\n  Depends: linux-image-6.12.118+deb13-cloud-amd64\n";
        assert_eq!(parse_depends(out, Flavor::Amd64), None);
    }

    #[test]
    fn parse_depends_without_dependency_is_none() {
        assert_eq!(parse_depends("", Flavor::Cloud), None);
    }
}
