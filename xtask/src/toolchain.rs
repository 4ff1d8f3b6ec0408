//! Installs, once, the toolchains the workspace needs and hands out `cargo` commands that use them.
//!
//! Input: nothing but `rustup` on PATH (`RUSTUP_AUTO_INSTALL=0` is assumed, so everything is installed
//! explicitly). Output: a [`Toolchain`] whose [`Toolchain::cargo`] runs `cargo +1.99.1` with the
//! pinned bpf-linker first on PATH, which `agent/build.rs` (aya-build) needs to link the eBPF object.
//!
//! Idempotent and fast when everything is present: a few `rustup` queries and one
//! `bpf-linker --version`, then a single line saying nothing was installed.

use std::{
    env,
    ffi::OsString,
    fs, io,
    os::unix::fs::symlink,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context as _, Result};

use crate::exec;

/// Toolchain for every userspace crate (aya 0.16 needs rustc >= 1.98).
pub(crate) const USERSPACE_TOOLCHAIN: &str = "1.99.1";
/// Toolchain for `agent-ebpf` (needs `rust-src` for `-Z build-std=core`); LLVM 23, like bpf-linker.
/// `agent/build.rs` names it too (`EBPF_TOOLCHAIN`): change both together.
pub(crate) const EBPF_TOOLCHAIN: &str = "nightly-2026-10-15";
/// bpf-linker from crates.io, built against [`EBPF_TOOLCHAIN`]'s own libLLVM.
pub(crate) const BPF_LINKER_VERSION: &str = "0.13.0";

/// A rustup toolchain and the components it must have.
struct Pinned {
    name: &'static str,
    components: &'static [&'static str],
}

const PINNED: [Pinned; 2] = [
    Pinned {
        name: USERSPACE_TOOLCHAIN,
        components: &["clippy", "rustfmt"],
    },
    Pinned {
        name: EBPF_TOOLCHAIN,
        components: &["rust-src"],
    },
];

/// Variables `cargo run` sets for xtask that must not leak into the cargo commands xtask runs
/// (they name the stable toolchain xtask itself was built with).
const INHERITED_CARGO_VARS: [&str; 5] = [
    "RUSTUP_TOOLCHAIN",
    "RUSTUP_TOOLCHAIN_SOURCE",
    "CARGO",
    "CARGO_MANIFEST_DIR",
    "CARGO_MANIFEST_PATH",
];

/// The installed toolchains; build commands from here.
#[derive(Debug)]
pub(crate) struct Toolchain {
    bpf_linker_dir: PathBuf,
}

impl Toolchain {
    /// `cargo +1.99.1` with the pinned bpf-linker first on PATH.
    pub(crate) fn cargo(&self) -> Command {
        let mut cmd = Command::new("cargo");
        cmd.arg(format!("+{USERSPACE_TOOLCHAIN}"))
            .env("PATH", self.path());
        for var in INHERITED_CARGO_VARS {
            cmd.env_remove(var);
        }
        cmd
    }

    /// `$PATH` with the bpf-linker directory prepended.
    fn path(&self) -> OsString {
        let mut dirs = vec![self.bpf_linker_dir.join("bin")];
        dirs.extend(env::split_paths(&env::var_os("PATH").unwrap_or_default()));
        env::join_paths(dirs).unwrap_or_default()
    }
}

/// Installs whatever is missing, then returns the [`Toolchain`].
///
/// # Errors
/// When `rustup` or `cargo install` fails, or bpf-linker still does not run after installing it.
pub(crate) fn bootstrap() -> Result<Toolchain> {
    let mut installed = Vec::new();
    let list = exec::output(Command::new("rustup").args(["toolchain", "list"]))?;
    for pinned in &PINNED {
        ensure_toolchain(&list, pinned, &mut installed)?;
    }
    let toolchain = Toolchain {
        bpf_linker_dir: bpf_linker_dir()?,
    };
    ensure_bpf_linker(&toolchain, &mut installed)?;
    if installed.is_empty() {
        println!(
            "xtask: toolchains {USERSPACE_TOOLCHAIN} and {EBPF_TOOLCHAIN} and bpf-linker \
             {BPF_LINKER_VERSION} already installed; nothing to do"
        );
    } else {
        println!("xtask: installed {}", installed.join(", "));
    }
    Ok(toolchain)
}

fn ensure_toolchain(list: &str, pinned: &Pinned, installed: &mut Vec<String>) -> Result<()> {
    let present = list
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .any(|t| {
            t == pinned.name
                || t.strip_prefix(pinned.name)
                    .is_some_and(|rest| rest.starts_with('-'))
        });
    if !present {
        exec::run(Command::new("rustup").args([
            "toolchain",
            "install",
            pinned.name,
            "--profile",
            "minimal",
            "--component",
            &pinned.components.join(","),
        ]))?;
        installed.push(format!(
            "toolchain {} ({})",
            pinned.name,
            pinned.components.join(", ")
        ));
        return Ok(());
    }
    let have = exec::output(Command::new("rustup").args([
        "component",
        "list",
        "--installed",
        "--toolchain",
        pinned.name,
    ]))?;
    let missing: Vec<&str> = pinned
        .components
        .iter()
        .copied()
        .filter(|c| {
            !have
                .lines()
                .any(|l| l == *c || l.starts_with(&format!("{c}-")))
        })
        .collect();
    if !missing.is_empty() {
        exec::run(
            Command::new("rustup")
                .args(["component", "add", "--toolchain", pinned.name])
                .args(&missing),
        )?;
        installed.push(format!("{} for {}", missing.join(", "), pinned.name));
    }
    Ok(())
}

/// `${XDG_CACHE_HOME:-$HOME/.cache}/sonde/bpf-linker-<version>-<nightly>`.
fn bpf_linker_dir() -> Result<PathBuf> {
    Ok(cache_dir()?.join(format!("bpf-linker-{BPF_LINKER_VERSION}-{EBPF_TOOLCHAIN}")))
}

/// `${XDG_CACHE_HOME:-$HOME/.cache}/sonde`: where xtask keeps what it downloads or builds once.
///
/// # Errors
/// When neither `XDG_CACHE_HOME` nor `HOME` is set.
pub(crate) fn cache_dir() -> Result<PathBuf> {
    let cache = match env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => {
            PathBuf::from(env::var_os("HOME").context("neither XDG_CACHE_HOME nor HOME is set")?)
                .join(".cache")
        }
    };
    Ok(cache.join("sonde"))
}

fn ensure_bpf_linker(toolchain: &Toolchain, installed: &mut Vec<String>) -> Result<()> {
    let dir = &toolchain.bpf_linker_dir;
    link_nightly_llvm(dir)?;
    if bpf_linker_runs(dir) {
        return Ok(());
    }
    println!("xtask: building bpf-linker {BPF_LINKER_VERSION} against {EBPF_TOOLCHAIN}'s LLVM (a few minutes)");
    exec::run(
        toolchain
            .cargo()
            .args([
                "install",
                "bpf-linker",
                "--version",
                BPF_LINKER_VERSION,
                "--locked",
                "--root",
            ])
            .arg(dir)
            .env("LLVM_PREFIX", dir),
    )?;
    if !bpf_linker_runs(dir) {
        bail!(
            "{} does not run after installing it",
            dir.join("bin/bpf-linker").display()
        );
    }
    installed.push(format!(
        "bpf-linker {BPF_LINKER_VERSION} in {}",
        dir.display()
    ));
    Ok(())
}

fn bpf_linker_runs(dir: &Path) -> bool {
    Command::new(dir.join("bin/bpf-linker"))
        .arg("--version")
        .output()
        .is_ok_and(|o| {
            o.status.success() && String::from_utf8_lossy(&o.stdout).contains(BPF_LINKER_VERSION)
        })
}

/// Links `<dir>/lib/libLLVM.so` (what bpf-linker's build links against) and `<dir>/lib/<soname>` (what
/// the linked binary loads through its rpath) to the nightly's own `lib/libLLVM.so.*`.
///
/// The soname link matters: without it bpf-linker only starts under `rustup run`, which puts the
/// toolchain's `lib` on `LD_LIBRARY_PATH`, and `--version` (our presence check) fails.
fn link_nightly_llvm(dir: &Path) -> Result<()> {
    let sysroot = exec::output(Command::new("rustup").args([
        "run",
        EBPF_TOOLCHAIN,
        "rustc",
        "--print",
        "sysroot",
    ]))?;
    let sysroot_lib = Path::new(sysroot.trim()).join("lib");
    let mut candidates: Vec<PathBuf> = fs::read_dir(&sysroot_lib)
        .with_context(|| format!("failed to list {}", sysroot_lib.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("libLLVM.so."))
        })
        .collect();
    candidates.sort();
    let Some(llvm) = candidates.first() else {
        bail!(
            "no libLLVM.so.* in {} (is {EBPF_TOOLCHAIN} installed?)",
            sysroot_lib.display()
        );
    };
    let lib = dir.join("lib");
    fs::create_dir_all(&lib).with_context(|| format!("failed to create {}", lib.display()))?;
    let soname = llvm.file_name().context("libLLVM path has no file name")?;
    for name in [Path::new("libLLVM.so"), Path::new(soname)] {
        ensure_symlink(llvm, &lib.join(name))?;
    }
    Ok(())
}

fn ensure_symlink(target: &Path, link: &Path) -> Result<()> {
    if fs::read_link(link).is_ok_and(|t| t == target) {
        return Ok(());
    }
    match fs::remove_file(link) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("failed to replace {}", link.display())),
    }
    symlink(target, link)
        .with_context(|| format!("failed to link {} -> {}", link.display(), target.display()))?;
    println!("xtask: linked {} -> {}", link.display(), target.display());
    Ok(())
}
