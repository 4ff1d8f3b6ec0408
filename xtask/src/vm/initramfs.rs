//! The guest's initramfs: busybox, `/init`, the kernel modules it loads and the command to run.
//!
//! Input: a [`Kernel`] and the command's shell script. Output: an uncompressed newc cpio archive
//! (about 3 MB: mostly busybox) for qemu's `-initrd`.
//!
//! Layout:
//! ```text
//! /init                     vm/init.sh (busybox sh, PID 1)
//! /bin/busybox              the host's busybox-static; /init installs its applets
//! /dev/console              char 5:1, so PID 1 has a console even before devtmpfs
//! /lib/modules/<path>.ko    modules::REQUIRED and their dependencies
//! /etc/sonde-vm/modules     those paths in load order, one per line
//! /etc/sonde-vm/cmd.sh      the command, run with /bin/sh from the host root
//! /etc/sonde-vm/nonce       the boot's nonce, which every console marker carries
//! ```

use std::{
    fs,
    path::Path,
    process::{Command, Stdio},
};

use anyhow::{bail, Context as _, Result};

use super::{console::Nonce, cpio::Archive, kernel::Kernel, modules, BUSYBOX};

/// The guest's PID 1.
const INIT: &str = include_str!("init.sh");

/// Builds the initramfs that runs `command_script` (a POSIX shell script) in the guest.
///
/// # Errors
/// When busybox, `modules.dep` or a module file cannot be read, or a required module is missing.
pub(crate) fn build(kernel: &Kernel, command_script: &str, nonce: &Nonce) -> Result<Vec<u8>> {
    let mut archive = Archive::default();
    archive.file("init", 0o755, INIT.as_bytes());
    archive.file("bin/busybox", 0o755, &read(BUSYBOX)?);
    archive.char_device("dev/console", 0o600, 5, 1);
    for dir in ["proc", "sys"] {
        archive.dir(dir);
    }
    let modules = add_modules(&mut archive, kernel)?;
    archive.file("etc/sonde-vm/modules", 0o644, modules.as_bytes());
    archive.file("etc/sonde-vm/cmd.sh", 0o755, command_script.as_bytes());
    archive.file("etc/sonde-vm/nonce", 0o600, nonce.as_str().as_bytes());
    Ok(archive.finish())
}

/// Adds the `.ko` files of [`modules::REQUIRED`] and returns the load list for `/init`.
fn add_modules(archive: &mut Archive, kernel: &Kernel) -> Result<String> {
    let dir = kernel.modules_dir();
    let dep = String::from_utf8_lossy(&read(dir.join("modules.dep"))?).into_owned();
    // Absent only when nothing is built in, which Debian kernels never are; treat it as empty.
    let builtin = fs::read_to_string(dir.join("modules.builtin")).unwrap_or_default();
    let order = modules::load_order(&dep, &builtin, &modules::REQUIRED)
        .with_context(|| format!("in {}", dir.display()))?;
    let mut list = String::new();
    for rel in &order {
        let (rel, contents) = module_file(&dir, rel)?;
        archive.file(&format!("lib/modules/{rel}"), 0o644, &contents);
        list.push_str(rel);
        list.push('\n');
    }
    Ok(list)
}

/// A module's path in the initramfs and its contents, decompressed: busybox `insmod` hands the
/// bytes to `init_module`, which takes an ELF only (trixie ships every module as `.ko.xz`).
fn module_file<'a>(dir: &Path, rel: &'a str) -> Result<(&'a str, Vec<u8>)> {
    let Some(plain) = rel.strip_suffix(".xz") else {
        return Ok((rel, read(dir.join(rel))?));
    };
    let out = Command::new("xz")
        .arg("-dc")
        .arg(dir.join(rel))
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("failed to start `xz -dc` (package xz-utils) for {rel}"))?;
    if !out.status.success() {
        bail!("`xz -dc {rel}` failed ({})", out.status);
    }
    Ok((plain, out.stdout))
}

fn read(path: impl AsRef<Path>) -> Result<Vec<u8>> {
    let path = path.as_ref();
    fs::read(path).with_context(|| format!("failed to read {}", path.display()))
}
