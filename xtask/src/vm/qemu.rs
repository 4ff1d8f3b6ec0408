//! Boots the guest once: virtiofsd serves the host's root, qemu (TCG) boots the kernel and the
//! initramfs, the console streams to the terminal and to `serial.log`, a hard timeout kills qemu.
//!
//! Input: a [`Boot`]. Output: an [`Outcome`] with the command's exit status, or an error naming the
//! serial log when the guest printed no result (timeout, kernel panic, setup failure).

use std::{
    fs::{self, File},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::mpsc::{self, RecvTimeoutError},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};

use super::{
    console::{self, Line, Marker},
    Machine,
};
use crate::exec;

/// The qemu binary (package `qemu-system-x86`).
const QEMU: &str = "qemu-system-x86_64";
/// The C virtiofsd shipped by `qemu-system-common` 7.2; it exits when qemu disconnects.
pub(crate) const VIRTIOFSD: &str = "/usr/lib/qemu/virtiofsd";
/// The virtiofs tag `/init` mounts (`mount -t virtiofs hostfs /host`).
const VIRTIOFS_TAG: &str = "hostfs";
/// How long virtiofsd may take to create its socket.
const VIRTIOFSD_START: Duration = Duration::from_secs(10);
/// How long qemu may take to exit after the result marker (`poweroff -f` takes well under 1 s).
const POWEROFF_GRACE: Duration = Duration::from_secs(10);

/// One boot: what to boot, on which machine, and where to keep the logs.
#[derive(Debug)]
pub(crate) struct Boot<'a> {
    /// `vmlinuz` for `-kernel`.
    pub(crate) kernel: &'a Path,
    /// The cpio archive for `-initrd`.
    pub(crate) initramfs: &'a Path,
    pub(crate) machine: &'a Machine,
    /// Gets `serial.log` (raw console), `qemu.log` (qemu's stderr), `virtiofsd.log` and the socket.
    pub(crate) run_dir: &'a Path,
}

/// What a boot that ran the command produced.
#[derive(Debug)]
pub(crate) struct Outcome {
    /// The command's exit status (`SONDE_VM_RESULT rc=N`).
    pub(crate) rc: i32,
    /// The guest's `uname -r`.
    pub(crate) kernel_release: String,
    /// From starting qemu to `/init` starting the command.
    pub(crate) boot: Duration,
    /// The guest's `/proc/uptime` when `/init` started the command, in seconds, as printed.
    pub(crate) guest_uptime_s: String,
    /// From starting qemu to its exit.
    pub(crate) total: Duration,
    /// The console text (firmware noise and escape sequences removed), markers included.
    pub(crate) console: String,
}

/// A child process killed (and reaped) when dropped, so no early return leaves qemu running.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

/// What the console said before it closed or the deadline passed.
#[derive(Debug, Default)]
struct Markers {
    /// `SONDE_VM_UP`: kernel release, guest uptime (s), when it was read.
    up: Option<(String, String, Instant)>,
    rc: Option<i32>,
    setup_failed: Option<String>,
    timed_out: bool,
}

/// Boots the guest, streams its console and waits for the command's result.
///
/// # Errors
/// When virtiofsd or qemu cannot start, the guest's `/init` fails, or qemu exits or hits
/// `machine.timeout` without printing `SONDE_VM_RESULT`; the message names the serial log.
pub(crate) fn boot(boot: &Boot<'_>) -> Result<Outcome> {
    let serial_log = boot.run_dir.join("serial.log");
    let _virtiofsd = start_virtiofsd(boot.run_dir)?;
    let started = Instant::now();
    let mut qemu = start_qemu(boot)?;
    let stdout = qemu.0.stdout.take().context("qemu has no stdout pipe")?;
    let log = File::create(&serial_log)
        .with_context(|| format!("failed to create {}", serial_log.display()))?;
    let (tx, rx) = mpsc::channel();
    let reader = thread::spawn(move || console::stream(stdout, log, &tx));
    let markers = wait_for_result(&rx, started + boot.machine.timeout);
    if markers.timed_out || markers.rc.is_some() {
        let _ = qemu.0.kill();
    }
    let status = qemu.0.wait().context("failed to wait for qemu")?;
    let total = started.elapsed();
    let console = match reader.join() {
        Ok(result) => result.context("failed to read the guest console")?,
        Err(_) => bail!("the console reader thread panicked"),
    };
    let failure = Failure {
        status,
        serial_log: &serial_log,
        qemu_log: &boot.run_dir.join("qemu.log"),
        timeout: boot.machine.timeout,
    };
    outcome(markers, started, total, console, &failure)
}

/// Receives markers until the result (plus [`POWEROFF_GRACE`] for qemu to exit), the console's
/// end, or `deadline`.
fn wait_for_result(rx: &mpsc::Receiver<Marker>, deadline: Instant) -> Markers {
    let mut markers = Markers::default();
    let mut deadline = deadline;
    loop {
        let timeout = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(timeout) {
            Ok(Marker { line, at }) => match line {
                Line::Up {
                    kernel_release,
                    uptime_s,
                } => markers.up = Some((kernel_release, uptime_s, at)),
                Line::Result(rc) => {
                    markers.rc = Some(rc);
                    deadline = deadline.min(at + POWEROFF_GRACE);
                }
                Line::SetupFailed(step) => markers.setup_failed = Some(step),
                Line::Noise | Line::Text(_) => {}
            },
            Err(RecvTimeoutError::Timeout) => {
                markers.timed_out = markers.rc.is_none();
                return markers;
            }
            Err(RecvTimeoutError::Disconnected) => return markers,
        }
    }
}

/// Where to look when the guest gave no result.
struct Failure<'a> {
    status: ExitStatus,
    serial_log: &'a Path,
    qemu_log: &'a Path,
    timeout: Duration,
}

fn outcome(
    markers: Markers,
    started: Instant,
    total: Duration,
    console: String,
    failure: &Failure<'_>,
) -> Result<Outcome> {
    let log = failure.serial_log.display();
    if let Some(step) = markers.setup_failed {
        bail!("the guest's /init failed at `{step}` (serial log: {log})");
    }
    if markers.timed_out {
        bail!(
            "timed out after {} s without a result from the guest; qemu was killed (serial log: {log})",
            failure.timeout.as_secs()
        );
    }
    let (Some(rc), Some((kernel_release, guest_uptime_s, up_at))) = (markers.rc, markers.up) else {
        let qemu_err = fs::read_to_string(failure.qemu_log).unwrap_or_default();
        if !failure.status.success() {
            bail!(
                "qemu failed ({}): {} (serial log: {log})",
                failure.status,
                qemu_err.trim()
            );
        }
        bail!("the guest stopped without a result: a kernel panic or crash (serial log: {log})");
    };
    Ok(Outcome {
        rc,
        kernel_release,
        boot: up_at.duration_since(started),
        guest_uptime_s,
        total,
        console,
    })
}

/// Starts virtiofsd on `<run_dir>/virtiofsd.sock`, serving `/` (the guest mounts it read-only),
/// and waits for the socket.
fn start_virtiofsd(run_dir: &Path) -> Result<Reaped> {
    let socket = socket_path(run_dir);
    if socket.exists() {
        fs::remove_file(&socket)
            .with_context(|| format!("failed to remove {}", socket.display()))?;
    }
    let log_path = run_dir.join("virtiofsd.log");
    let log = File::create(&log_path)
        .with_context(|| format!("failed to create {}", log_path.display()))?;
    let mut cmd = Command::new(VIRTIOFSD);
    // cache=always: the host tree does not change under a run, and the guest may keep what it read.
    // Measured under TCG: `/usr/bin/python3 -c pass` 0.26 s warm (1.5–2.7 s with cache=auto).
    // sandbox=chroot: the default (namespaces) fails in this container with source=/:
    // `pivot_root(., .): Device or resource busy`.
    cmd.arg(format!("--socket-path={}", socket.display()))
        .args([
            "-o",
            "source=/",
            "-o",
            "cache=always",
            "-o",
            "sandbox=chroot",
        ])
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    let line = exec::display(&cmd);
    let mut child = Reaped(
        cmd.spawn()
            .with_context(|| format!("failed to start `{line}`"))?,
    );
    let deadline = Instant::now() + VIRTIOFSD_START;
    while !socket.exists() {
        if let Some(status) = child.0.try_wait()? {
            let log = fs::read_to_string(&log_path).unwrap_or_default();
            bail!("`{line}` exited ({status}): {}", log.trim());
        }
        if Instant::now() > deadline {
            bail!(
                "`{line}` created no socket in {} s",
                VIRTIOFSD_START.as_secs()
            );
        }
        thread::sleep(Duration::from_millis(20));
    }
    Ok(child)
}

fn socket_path(run_dir: &Path) -> PathBuf {
    run_dir.join("virtiofsd.sock")
}

/// Starts qemu with the console on its stdout (piped) and its own messages in `qemu.log`.
fn start_qemu(boot: &Boot<'_>) -> Result<Reaped> {
    let qemu_log = boot.run_dir.join("qemu.log");
    let stderr = File::create(&qemu_log)
        .with_context(|| format!("failed to create {}", qemu_log.display()))?;
    let mut cmd = qemu_command(boot);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr);
    println!("$ {}", exec::display(&cmd));
    let child = cmd
        .spawn()
        .with_context(|| format!("failed to start `{QEMU}` (package qemu-system-x86)"))?;
    Ok(Reaped(child))
}

/// The qemu command line. TCG only: the host's KVM is PVM, under which the kernel never boots
/// (shared/vm.md). The guest RAM is a shared memfd because vhost-user (virtiofsd) maps it.
fn qemu_command(boot: &Boot<'_>) -> Command {
    let mem = &boot.machine.mem;
    let mut cmd = Command::new(QEMU);
    cmd.args(["-accel", "tcg", "-cpu", "max", "-m", mem])
        .args(["-smp", &boot.machine.smp.to_string()])
        .args(["-nographic", "-no-reboot", "-nic", "none"])
        .arg("-kernel")
        .arg(boot.kernel)
        .arg("-initrd")
        .arg(boot.initramfs)
        .args(["-append", "console=ttyS0 panic=-1 quiet"])
        .arg("-chardev")
        .arg(format!(
            "socket,id=vfs,path={}",
            socket_path(boot.run_dir).display()
        ))
        .args([
            "-device",
            &format!("vhost-user-fs-pci,chardev=vfs,tag={VIRTIOFS_TAG}"),
        ])
        .args([
            "-object",
            &format!("memory-backend-memfd,id=mem,size={mem},share=on"),
        ])
        .args(["-numa", "node,memdev=mem"]);
    cmd
}
