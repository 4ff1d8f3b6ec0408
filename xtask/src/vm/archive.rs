//! Debian's archive for one release, seen through a private apt state, so the host (bookworm)
//! can resolve and download another release's kernel packages without touching its own sources.
//!
//! Input: a [`Release`]. Output: `apt-cache depends` text and downloaded `.deb` files.
//!
//! The state lives in `~/.cache/sonde/vm/apt/<codename>/`: `sources.list` (the release, its
//! `-updates` and `-security` suites, signed by the host's `debian-archive-keyring`), `lists/` and
//! `cache/`. The lists are refreshed when they are missing or older than [`LISTS_MAX_AGE`], and
//! again when a download fails, so a kernel the archive has replaced since the last run is found
//! instead of failing the run.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, SystemTime},
};

use anyhow::{bail, Context as _, Result};
use clap::ValueEnum;

use crate::exec;

/// How old the package lists may be before they are refreshed.
const LISTS_MAX_AGE: Duration = Duration::from_secs(24 * 3600);
/// The keyring of the host's `debian-archive-keyring`, which holds the bullseye, bookworm and
/// trixie keys.
const KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";
/// Written after each successful `apt-get update`; its age is the lists' age.
const STAMP: &str = "updated";

/// A Debian release whose kernel the guest can boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, ValueEnum)]
pub(crate) enum Release {
    /// Debian 11, Linux 5.10 (LTS).
    #[value(alias = "5.10")]
    Bullseye,
    /// Debian 12, Linux 6.1.
    #[value(alias = "6.1")]
    Bookworm,
    /// Debian 13, Linux 6.12.
    #[value(alias = "6.12")]
    Trixie,
}

impl Release {
    /// The codename (`bookworm`), as in the archive's suite names.
    pub(crate) fn codename(self) -> &'static str {
        match self {
            Self::Bullseye => "bullseye",
            Self::Bookworm => "bookworm",
            Self::Trixie => "trixie",
        }
    }

    /// The kernel series the release ships (`6.1`).
    pub(crate) fn series(self) -> &'static str {
        match self {
            Self::Bullseye => "5.10",
            Self::Bookworm => "6.1",
            Self::Trixie => "6.12",
        }
    }

    /// The `sources.list` of the private apt state: the release, `-updates` and `-security`.
    fn sources_list(self) -> String {
        let c = self.codename();
        format!(
            "# Written by `cargo xtask vm`: Debian {c}, for its kernel packages only.\n\
             deb [signed-by={KEYRING}] http://deb.debian.org/debian {c} main\n\
             deb [signed-by={KEYRING}] http://deb.debian.org/debian {c}-updates main\n\
             deb [signed-by={KEYRING}] http://deb.debian.org/debian-security {c}-security main\n"
        )
    }
}

/// A release's private apt state.
#[derive(Debug)]
pub(crate) struct Archive {
    release: Release,
    dir: PathBuf,
}

impl Archive {
    /// Creates (or reuses) the private apt state of `release` under `cache_dir`.
    ///
    /// # Errors
    /// When its directories or `sources.list` cannot be written.
    pub(crate) fn open(release: Release, cache_dir: &Path) -> Result<Self> {
        let dir = cache_dir.join("apt").join(release.codename());
        for sub in ["lists/partial", "cache/archives/partial", "parts"] {
            let path = dir.join(sub);
            fs::create_dir_all(&path)
                .with_context(|| format!("failed to create {}", path.display()))?;
        }
        let sources = dir.join("sources.list");
        fs::write(&sources, release.sources_list())
            .with_context(|| format!("failed to write {}", sources.display()))?;
        Ok(Self { release, dir })
    }

    /// `-o` options that point apt at this state instead of the host's.
    fn options(&self) -> Vec<String> {
        let d = self.dir.display();
        [
            format!("Dir::Etc::SourceList={d}/sources.list"),
            format!("Dir::Etc::SourceParts={d}/parts"),
            format!("Dir::State::Lists={d}/lists"),
            format!("Dir::Cache={d}/cache"),
            "Acquire::Languages=none".to_owned(),
            // As root, apt's sandbox user `_apt` cannot write here; don't warn about it.
            "APT::Sandbox::User=root".to_owned(),
        ]
        .into_iter()
        .flat_map(|o| ["-o".to_owned(), o])
        .collect()
    }

    fn apt(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        cmd.args(self.options())
            .env("DEBIAN_FRONTEND", "noninteractive");
        cmd
    }

    /// Whether the lists were refreshed less than [`LISTS_MAX_AGE`] ago.
    pub(crate) fn is_fresh(&self) -> bool {
        fs::metadata(self.dir.join(STAMP))
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| SystemTime::now().duration_since(t).ok())
            .is_some_and(|age| age < LISTS_MAX_AGE)
    }

    /// `apt-get update` on this state.
    ///
    /// # Errors
    /// When apt fails (the archive is unreachable, a signature does not verify).
    pub(crate) fn update(&self) -> Result<()> {
        println!(
            "xtask: vm: refreshing Debian {}'s package lists",
            self.release.codename()
        );
        exec::run(self.apt("apt-get").arg("update").arg("-q"))?;
        let stamp = self.dir.join(STAMP);
        fs::write(&stamp, b"").with_context(|| format!("failed to write {}", stamp.display()))
    }

    /// `apt-cache depends PACKAGE` on this state's lists.
    ///
    /// # Errors
    /// When apt-cache fails (an unknown package, or no lists yet).
    pub(crate) fn depends(&self, package: &str) -> Result<String> {
        exec::output(self.apt("apt-cache").args(["depends", package]))
    }

    /// `apt-get download PACKAGE` into `dir`, and the `.deb` it wrote.
    ///
    /// # Errors
    /// When the download fails or leaves no `.deb`.
    pub(crate) fn download(&self, package: &str, dir: &Path) -> Result<PathBuf> {
        exec::run(
            self.apt("apt-get")
                .args(["download", package])
                .current_dir(dir),
        )?;
        let prefix = format!("{package}_");
        for entry in
            fs::read_dir(dir).with_context(|| format!("failed to list {}", dir.display()))?
        {
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_list_names_the_three_suites_with_the_keyring() {
        let list = Release::Bullseye.sources_list();
        for suite in [
            " bullseye main",
            " bullseye-updates main",
            "debian-security bullseye-security main",
        ] {
            assert!(list.contains(suite), "{list}");
        }
        assert_eq!(list.matches(KEYRING).count(), 3, "{list}");
    }

    #[test]
    fn releases_parse_by_codename_or_series() {
        assert_eq!(Release::from_str("trixie", true), Ok(Release::Trixie));
        assert_eq!(Release::from_str("5.10", true), Ok(Release::Bullseye));
        assert!(Release::from_str("6.6", true).is_err());
    }
}
