//! `cargo xtask vm`: runs one command as root in a qemu guest whose kernel has what the host's
//! lacks (kprobes, fentry), on the host's own userspace.
//!
//! Input: a [`Machine`] and a [`GuestCommand`]. Output: the command's exit status ([`run`]).
//!
//! The guest boots the current kernel of a Debian release ([`kernel`]: bullseye 5.10, bookworm
//! 6.1 or trixie 6.12, fetched through [`archive`]) under TCG with a busybox initramfs
//! ([`initramfs`]). Its `/init` mounts the host's root read-only over virtiofs, under an overlay
//! whose writable layer is guest RAM, and chroots into it: every host binary and library (nginx,
//! curl, python3, `target/`) is there at the same path, and no write reaches the host.
//!
//! ```text
//!  host /  ── virtiofsd ── vhost-user-fs ──▶ guest /host (ro) ─┐
//!                                                tmpfs /rw ───┴─ overlay /newroot ── chroot: COMMAND
//!  qemu stdout (ttyS0) ──▶ console.rs ──▶ terminal + <target>/vm/<name>/serial.log
//! ```

pub(crate) mod archive;
mod console;
mod cpio;
mod initramfs;
pub(crate) mod kernel;
mod modules;
mod qemu;

use std::{
    env,
    ffi::OsStr,
    fs::{self, File},
    os::fd::AsRawFd as _,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{bail, Context as _, Result};
use clap::Args;

use crate::{apt, build, exec};
pub(crate) use archive::Release;
use console::Nonce;
pub(crate) use kernel::Flavor;
pub(crate) use qemu::{Outcome, Verdict};

/// The host's busybox (package `busybox-static`: the guest has no libc before the chroot).
const BUSYBOX: &str = "/bin/busybox";
/// Host packages the VM needs (`qemu-system-x86` brings virtiofsd in `qemu-system-common`).
///
/// Installing them on this machine removes the preinstalled backported `qemu-utils` (shared/vm.md).
const PACKAGES: [&str; 2] = ["qemu-system-x86", "busybox-static"];
/// `PATH` in the guest when the host has none.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Run a command as root in a qemu VM (a Debian kernel, TCG) on the host's own root filesystem.
///
/// The guest sees the host's files read-only under a RAM-backed writable layer, so the command
/// finds every host binary and library at the same path and its writes are discarded. It runs in
/// the current directory with `PATH` (the host's), `HOME=/root` and each `--env`, stdin
/// `/dev/null`. xtask exits with the command's status.
///
/// Example: `cargo xtask vm -- uname -r`, `cargo xtask vm --env RUST_LOG=debug -- target/release/sonde --help`.
#[derive(Debug, Args)]
pub(crate) struct Options {
    #[command(flatten)]
    machine: MachineArgs,
    /// Environment variable for the command (repeatable).
    #[arg(long = "env", value_name = "KEY=VALUE", value_parser = parse_env)]
    env: Vec<(String, String)>,
    /// The command and its arguments (after `--`).
    #[arg(last = true, required = true, value_name = "COMMAND")]
    command: Vec<String>,
}

/// `cargo xtask vm`'s machine options (`cargo xtask test --vm` has its own, prefixed `--vm-`).
#[derive(Debug, Clone, Args)]
struct MachineArgs {
    /// Debian release whose current kernel the guest boots: bullseye (5.10), bookworm (6.1) or
    /// trixie (6.12); the kernel series is accepted too.
    #[arg(long, value_enum, default_value_t = Release::Bookworm)]
    kernel: Release,
    /// Debian kernel flavour to boot.
    #[arg(long, value_enum, default_value_t = Flavor::Cloud)]
    flavor: Flavor,
    /// Guest RAM, in qemu's syntax (`512M`, `2G`); the writable layer over the host root lives in it.
    #[arg(long, default_value = "2G", value_parser = parse_mem)]
    mem: String,
    /// Guest CPUs.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=64))]
    smp: u32,
    /// How qemu runs the guest's CPUs: `single` (one host thread for all: the default, because
    /// multi-threaded TCG can leave a CPU executing a stale copy of kernel code that another CPU
    /// patched, a livelock; see the README's kernel section) or `multi` (a thread per CPU).
    #[arg(long, value_enum, default_value_t = TcgThread::Single)]
    tcg_thread: TcgThread,
    /// Seconds from starting qemu until it is killed when the command has not finished.
    #[arg(long, value_name = "SECS", default_value_t = 600)]
    timeout: u64,
}

/// qemu's TCG threading (`-accel tcg,thread=…`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum TcgThread {
    /// Every guest CPU on one host thread, in turn.
    Single,
    /// One host thread per guest CPU (MTTCG).
    Multi,
}

impl TcgThread {
    /// The value of qemu's `thread=` option.
    pub(crate) fn as_qemu(self) -> &'static str {
        match self {
            Self::Single => "single",
            Self::Multi => "multi",
        }
    }
}

/// The guest machine, validated.
#[derive(Debug, Clone)]
pub(crate) struct Machine {
    pub(crate) release: Release,
    pub(crate) flavor: Flavor,
    /// RAM in qemu's syntax (`2G`).
    pub(crate) mem: String,
    pub(crate) smp: u32,
    pub(crate) tcg_thread: TcgThread,
    /// Hard limit from qemu's start to its exit.
    pub(crate) timeout: Duration,
}

impl From<&MachineArgs> for Machine {
    fn from(args: &MachineArgs) -> Self {
        Self {
            release: args.kernel,
            flavor: args.flavor,
            mem: args.mem.clone(),
            smp: args.smp,
            tcg_thread: args.tcg_thread,
            timeout: Duration::from_secs(args.timeout),
        }
    }
}

/// A command to run in the guest, as root, chrooted into the host's root.
#[derive(Debug, Clone)]
pub(crate) struct GuestCommand {
    /// Program and arguments; the program is looked up in the guest's `PATH`.
    pub(crate) argv: Vec<String>,
    /// Variables added to `PATH` (the host's) and `HOME=/root`; later ones win.
    pub(crate) env: Vec<(String, String)>,
    /// Working directory (a host path: the guest sees the host's tree).
    pub(crate) cwd: PathBuf,
}

impl GuestCommand {
    /// The POSIX shell script `/init` runs with the host's `/bin/sh`: `cd`, then `exec env -i`.
    ///
    /// Exits 126 when the directory does not exist and 127 (from `env`) when the program does not.
    fn script(&self) -> String {
        let quote = |s: &str| exec::quote(OsStr::new(s));
        let path = env::var("PATH").unwrap_or_else(|_| DEFAULT_PATH.to_owned());
        let mut vars = vec![format!("PATH={path}"), "HOME=/root".to_owned()];
        vars.extend(self.env.iter().map(|(k, v)| format!("{k}={v}")));
        let mut line = String::from("exec /usr/bin/env -i");
        for word in vars.iter().chain(&self.argv) {
            line.push(' ');
            line.push_str(&quote(word));
        }
        format!(
            "# Written by `cargo xtask vm`: runs as root in the guest, chrooted into the host's root.\n\
             cd {} || exit 126\n{line} </dev/null\n",
            quote(&self.cwd.to_string_lossy())
        )
    }
}

/// `cargo xtask vm`: runs the command, prints the kernel and timings, exits with its status.
pub(crate) fn vm(opts: &Options) -> Result<()> {
    let command = GuestCommand {
        argv: opts.command.clone(),
        env: opts.env.clone(),
        cwd: env::current_dir().context("failed to read the current directory")?,
    };
    let outcome = run(&Machine::from(&opts.machine), &command, "vm")?;
    report(&outcome);
    match outcome.verdict.rc() {
        Some(0) => Ok(()),
        Some(rc) => std::process::exit(rc),
        None => bail!("{}", outcome.describe()),
    }
}

/// Prints the guest's kernel, boot time and how the run ended.
pub(crate) fn report(outcome: &Outcome) {
    println!(
        "xtask: vm: kernel {}, booted in {} (guest uptime {} s), {} after {:.1} s in all",
        outcome.kernel().as_deref().unwrap_or("unknown"),
        outcome
            .boot
            .map_or_else(|| "-".to_owned(), |b| format!("{:.1} s", b.as_secs_f64())),
        outcome.guest_uptime_s.as_deref().unwrap_or("-"),
        outcome.describe(),
        outcome.total.as_secs_f64()
    );
}

/// Boots a guest that runs `command` and returns its outcome, echoing its console; `name` names
/// the run directory (`<target>/vm/<name>/`: initramfs, serial log, qemu and virtiofsd logs).
///
/// Installs the host packages and downloads the kernel when missing.
///
/// # Errors
/// When a package or the kernel cannot be installed, or qemu cannot be started. A guest that fails,
/// hangs or crashes is not an error: see [`Outcome::verdict`].
pub(crate) fn run(machine: &Machine, command: &GuestCommand, name: &str) -> Result<Outcome> {
    prepare(machine)?.boot(command, name, true)
}

/// A machine whose host packages are installed and whose kernel is downloaded: ready to boot,
/// as often as needed and from several threads at once.
#[derive(Debug)]
pub(crate) struct Guest {
    machine: Machine,
    kernel: kernel::Kernel,
}

/// Installs the host packages and downloads the machine's kernel when missing.
///
/// # Errors
/// When xtask is not root, or a package or the kernel cannot be installed.
pub(crate) fn prepare(machine: &Machine) -> Result<Guest> {
    if !apt::is_root() {
        bail!("the VM needs root: virtiofsd serves the host's whole root filesystem to the guest");
    }
    let installed = apt::install_missing(&PACKAGES)?;
    if !installed.is_empty() {
        println!("xtask: vm: installed {}", installed.join(", "));
    }
    Ok(Guest {
        machine: machine.clone(),
        kernel: kernel::ensure(machine.release, machine.flavor)?,
    })
}

impl Guest {
    /// Boots the guest once to run `command`; `name` names the run directory
    /// (`<target>/vm/<name>/`), and `echo` prints the console as it comes (else it is only kept in
    /// the outcome and the serial log).
    ///
    /// # Errors
    /// When the run directory is in use or cannot be written, or qemu cannot be started.
    pub(crate) fn boot(&self, command: &GuestCommand, name: &str, echo: bool) -> Result<Outcome> {
        if command.argv.first().is_none_or(|p| p.contains('=')) {
            bail!("the guest command must be a program name without `=`, then its arguments");
        }
        let run_dir = build::target_dir().join("vm").join(name);
        fs::create_dir_all(&run_dir)
            .with_context(|| format!("failed to create {}", run_dir.display()))?;
        let _lock = lock(&run_dir)?;
        let nonce = Nonce::random();
        let initramfs = write_initramfs(&self.kernel, command, &nonce, &run_dir)?;
        qemu::boot(&qemu::Boot {
            kernel: &self.kernel.vmlinuz(),
            initramfs: &initramfs,
            nonce: &nonce,
            machine: &self.machine,
            run_dir: &run_dir,
            echo,
        })
    }
}

fn write_initramfs(
    kernel: &kernel::Kernel,
    command: &GuestCommand,
    nonce: &Nonce,
    run_dir: &Path,
) -> Result<PathBuf> {
    let path = run_dir.join("initramfs.cpio");
    let archive = initramfs::build(kernel, &command.script(), nonce)?;
    fs::write(&path, archive).with_context(|| format!("failed to write {}", path.display()))?;
    Ok(path)
}

/// Takes `<run_dir>/lock` (released when the file is dropped), so two boots never share a socket
/// or a log.
fn lock(run_dir: &Path) -> Result<File> {
    let path = run_dir.join("lock");
    let file =
        File::create(&path).with_context(|| format!("failed to create {}", path.display()))?;
    // SAFETY: flock only reads the descriptor, which `file` keeps open.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        bail!(
            "another xtask VM is running in {} ({})",
            run_dir.display(),
            std::io::Error::last_os_error()
        );
    }
    Ok(file)
}

/// `KEY=VALUE` → (`KEY`, `VALUE`); the key must be non-empty.
fn parse_env(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("expected KEY=VALUE, got `{s}`")),
    }
}

/// Checks a qemu memory size: digits with an optional `M` or `G` suffix (no suffix is MiB).
pub(crate) fn parse_mem(s: &str) -> Result<String, String> {
    let digits = s.trim_end_matches(['M', 'G', 'm', 'g']);
    let valid = !digits.is_empty()
        && digits.chars().all(|c| c.is_ascii_digit())
        && s.len() - digits.len() <= 1
        && digits.parse::<u64>().is_ok_and(|n| n > 0);
    if valid {
        Ok(s.to_ascii_uppercase())
    } else {
        Err(format!("expected a size such as 512M or 2G, got `{s}`"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn script_quotes_and_execs_with_a_clean_environment() {
        let command = GuestCommand {
            argv: vec!["sh".into(), "-c".into(), "exit 7".into()],
            env: vec![("SONDE_CAPTURE".into(), "kprobe".into())],
            cwd: PathBuf::from("/work/main"),
        };
        let script = command.script();
        assert!(script.contains("\ncd /work/main || exit 126\n"), "{script}");
        assert!(script.contains("exec /usr/bin/env -i "), "{script}");
        assert!(
            script.ends_with(" HOME=/root SONDE_CAPTURE=kprobe sh -c 'exit 7' </dev/null\n"),
            "{script}"
        );
    }

    #[test]
    fn env_needs_a_key() {
        assert_eq!(parse_env("A=b=c"), Ok(("A".into(), "b=c".into())));
        assert!(parse_env("=x").is_err());
        assert!(parse_env("novalue").is_err());
    }

    #[test]
    fn mem_sizes() {
        assert_eq!(parse_mem("2g").as_deref(), Ok("2G"));
        assert_eq!(parse_mem("512M").as_deref(), Ok("512M"));
        for bad in ["", "G", "2GG", "1.5G", "0", "-1G"] {
            assert!(parse_mem(bad).is_err(), "{bad}");
        }
    }
}
