//! Boots the guest once: virtiofsd serves the host's root, qemu (TCG) boots the kernel and the
//! initramfs, the console streams to the terminal and to `serial.log`, and a watcher decides how
//! the run ended.
//!
//! Input: a [`Boot`]. Output: an [`Outcome`] whose [`Verdict`] is the command's exit status, or
//! why there is none: setup failure, no boot, a hung guest (no heartbeat), a stuck command (no
//! output), the overall timeout, or a crash.
//!
//! A hang is caught in minutes: `/init` prints a heartbeat every 10 s, so a guest whose userspace
//! gets no CPU (both vCPUs in a soft lockup, say) is declared hung after 90 s of silence. Before
//! qemu is killed, and as soon as the kernel reports a soft lockup, RCU stall or hung task, the
//! host dumps the guest's stacks with magic sysrq sent over the serial line (`l`: every CPU's
//! backtrace, `w`: blocked tasks, `t`: every task), so the cause is in the CI log.

use std::{
    fs::{self, File},
    io::Write as _,
    path::{Path, PathBuf},
    process::{Child, ChildStdin, Command, Stdio},
    sync::mpsc::{self, RecvTimeoutError},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};

use super::{
    console::{self, Event, Line, Nonce},
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
/// From starting qemu, how long the guest may take to print `SONDE_VM_UP` (about 3 s when idle).
const BOOT_LIMIT: Duration = Duration::from_secs(180);
/// Once the guest is up, how long without a heartbeat (one every 10 s, vm/init.sh)
/// before the guest counts as hung: its userspace gets no CPU at all.
const HEARTBEAT_STALL: Duration = Duration::from_secs(90);
/// Once the guest is up, how long without a line of output before the command counts as stuck
/// (the heartbeat still comes, so the kernel is alive, but nothing makes progress).
const SILENCE_LIMIT: Duration = Duration::from_secs(600);
/// After a stack dump was requested, how long the console is still read before qemu is killed.
const DUMP_GRACE: Duration = Duration::from_secs(20);
/// Sysrq keys that dump the guest's state: console log level 9 (so the handlers' `KERN_INFO`
/// lines are shown), the backtrace of every active CPU (`l`) and the blocked tasks (`w`).
const SYSRQ_ALARM: &str = "9lw";
/// The same plus every task's stack (`t`), for a guest judged hung or stuck.
const SYSRQ_HUNG: &str = "9lwt";

/// One boot: what to boot, on which machine, and where to keep the logs.
#[derive(Debug)]
pub(crate) struct Boot<'a> {
    /// `vmlinuz` for `-kernel`.
    pub(crate) kernel: &'a Path,
    /// The cpio archive for `-initrd`.
    pub(crate) initramfs: &'a Path,
    /// The nonce written into the initramfs, which every marker of this boot carries.
    pub(crate) nonce: &'a Nonce,
    pub(crate) machine: &'a Machine,
    /// Gets `serial.log` (raw console), `qemu.log` (qemu's stderr), `virtiofsd.log` and the socket.
    pub(crate) run_dir: &'a Path,
    /// Print the console's lines as they come.
    pub(crate) echo: bool,
}

/// How the guest's run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// The command exited with this status (`SONDE_VM_RESULT rc=N`).
    Exited(i32),
    /// `/init` failed at this step; no command ran.
    SetupFailed(String),
    /// No `SONDE_VM_UP` within [`BOOT_LIMIT`].
    NoBoot,
    /// The heartbeat stopped for [`HEARTBEAT_STALL`]: the guest's userspace got no CPU.
    Hung,
    /// The heartbeat went on but nothing was printed for [`SILENCE_LIMIT`].
    Stuck,
    /// The machine's overall timeout passed.
    TimedOut,
    /// qemu exited without a result (kernel panic, qemu error).
    Crashed(String),
}

impl Verdict {
    /// The command's status when it ran to the end.
    pub(crate) fn rc(&self) -> Option<i32> {
        match self {
            Self::Exited(rc) => Some(*rc),
            _ => None,
        }
    }
}

/// What a boot produced.
#[derive(Debug)]
pub(crate) struct Outcome {
    pub(crate) verdict: Verdict,
    /// The guest's `uname -r`, once it was up.
    pub(crate) kernel_release: Option<String>,
    /// The guest's `uname -v`, once it was up.
    pub(crate) kernel_version: Option<String>,
    /// From starting qemu to `/init` starting the command.
    pub(crate) boot: Option<Duration>,
    /// The guest's `/proc/uptime` when `/init` started the command, in seconds, as printed.
    pub(crate) guest_uptime_s: Option<String>,
    /// From starting qemu to its exit.
    pub(crate) total: Duration,
    /// Kernel reports of a stuck or broken machine (soft lockup, RCU stall, hung task, oops), in
    /// order; each made the host dump the guest's stacks into the console.
    pub(crate) alarms: Vec<String>,
    /// The console text (firmware noise, heartbeats and escape sequences removed), markers included.
    pub(crate) console: String,
    /// The raw console.
    pub(crate) serial_log: PathBuf,
}

impl Outcome {
    /// The kernel the guest ran, as exactly as it said: `6.1.0-57-cloud-amd64 (Debian 6.1.192-3)`.
    pub(crate) fn kernel(&self) -> Option<String> {
        let release = self.kernel_release.as_deref()?;
        let package = self.kernel_version.as_deref().and_then(|v| {
            let at = v.find("Debian ")?;
            v[at..]
                .split_whitespace()
                .take(2)
                .collect::<Vec<_>>()
                .join(" ")
                .into()
        });
        Some(match package {
            Some(p) => format!("{release} ({p})"),
            None => release.to_owned(),
        })
    }

    /// One line on how the run ended, naming the serial log when it did not end by itself.
    pub(crate) fn describe(&self) -> String {
        let log = self.serial_log.display();
        let alarm = self
            .alarms
            .first()
            .map(|a| format!("; first kernel alarm: `{a}`"))
            .unwrap_or_default();
        match &self.verdict {
            Verdict::Exited(rc) => format!("the command exited with {rc}{alarm}"),
            Verdict::SetupFailed(step) => {
                format!("the guest's /init failed at `{step}` (serial log: {log})")
            }
            Verdict::NoBoot => format!(
                "the guest did not come up within {} s (serial log: {log})",
                BOOT_LIMIT.as_secs()
            ),
            Verdict::Hung => format!(
                "the guest hung: no heartbeat for {} s{alarm}; its CPUs (qemu monitor) and \
                 stacks (sysrq {SYSRQ_HUNG}) were dumped into the console ({log})",
                HEARTBEAT_STALL.as_secs()
            ),
            Verdict::Stuck => format!(
                "the command printed nothing for {} s although the guest was alive{alarm}; its \
                 CPUs (qemu monitor) and stacks (sysrq {SYSRQ_HUNG}) were dumped into the \
                 console ({log})",
                SILENCE_LIMIT.as_secs()
            ),
            Verdict::TimedOut => format!(
                "timed out without a result{alarm}; its CPUs (qemu monitor) and stacks (sysrq \
                 {SYSRQ_HUNG}) were dumped into the console ({log})"
            ),
            Verdict::Crashed(why) => format!("{why}{alarm} (serial log: {log})"),
        }
    }
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

/// Boots the guest, streams its console and watches it until the command's result, a hang, or
/// the machine's timeout.
///
/// # Errors
/// When virtiofsd or qemu cannot start or the console cannot be read. A guest that fails, hangs
/// or crashes is not an error: see [`Outcome::verdict`].
pub(crate) fn boot(boot: &Boot<'_>) -> Result<Outcome> {
    let serial_log = boot.run_dir.join("serial.log");
    let _virtiofsd = start_virtiofsd(boot.run_dir)?;
    let started = Instant::now();
    let mut qemu = start_qemu(boot)?;
    let stdout = qemu.0.stdout.take().context("qemu has no stdout pipe")?;
    let input = Input(qemu.0.stdin.take().context("qemu has no stdin pipe")?);
    let log = File::create(&serial_log)
        .with_context(|| format!("failed to create {}", serial_log.display()))?;
    let (tx, rx) = mpsc::channel();
    let classifier = console::Classifier::new(boot.nonce.clone());
    let echo = boot.echo;
    let reader = thread::spawn(move || console::stream(stdout, log, classifier, echo, &tx));
    let watch = Watch::new(boot, started, input).run(&rx);
    if watch.verdict.is_some() {
        let _ = qemu.0.kill();
    }
    let status = qemu.0.wait().context("failed to wait for qemu")?;
    let total = started.elapsed();
    let console = match reader.join() {
        Ok(result) => result.context("failed to read the guest console")?,
        Err(_) => bail!("the console reader thread panicked"),
    };
    let verdict = watch.verdict.unwrap_or_else(|| {
        let qemu_err = fs::read_to_string(boot.run_dir.join("qemu.log")).unwrap_or_default();
        Verdict::Crashed(if status.success() {
            "the guest stopped without a result: a kernel panic or crash".to_owned()
        } else {
            format!("qemu failed ({status}): {}", qemu_err.trim())
        })
    });
    let up = watch.up;
    Ok(Outcome {
        verdict,
        kernel_release: up.as_ref().map(|u| u.kernel_release.clone()),
        kernel_version: up.as_ref().map(|u| u.kernel_version.clone()),
        boot: up.as_ref().map(|u| u.at.duration_since(started)),
        guest_uptime_s: up.map(|u| u.uptime_s),
        total,
        alarms: watch.alarms,
        console,
        serial_log,
    })
}

/// qemu's stdin: the serial console's input, multiplexed with qemu's monitor (`-nographic`).
struct Input(ChildStdin);

impl Input {
    /// Writes `bytes` to qemu's stdin, then waits `pause` so the output can come first.
    fn write(&mut self, bytes: &str, pause: Duration) -> bool {
        let sent = self
            .0
            .write_all(bytes.as_bytes())
            .and_then(|()| self.0.flush());
        if let Err(e) = sent {
            println!("xtask: vm: could not write to qemu's console: {e}");
            return false;
        }
        thread::sleep(pause);
        true
    }

    /// Sends each key as a magic sysrq over the serial line: a BREAK (qemu's mux escape
    /// `Ctrl-A b`), then the key, which the kernel takes as a sysrq command within 5 s
    /// (`uart_handle_break`; the guest boots with `sysrq_always_enabled`). Needs a guest CPU that
    /// still takes interrupts.
    fn sysrq(&mut self, keys: &str) {
        for key in keys.chars() {
            // The pause lets each handler print before the next starts.
            if !self.write(&format!("\x01b{key}"), Duration::from_millis(500)) {
                return;
            }
        }
    }

    /// Runs qemu monitor commands (`Ctrl-A c` switches the console to the monitor and back):
    /// qemu's own view of the guest, which needs nothing from the guest's kernel.
    fn monitor(&mut self, commands: &[String]) {
        if !self.write("\x01c", Duration::from_millis(200)) {
            return;
        }
        for command in commands {
            if !self.write(&format!("{command}\n"), Duration::from_millis(300)) {
                return;
            }
        }
        self.write("\x01c", Duration::from_millis(200));
    }
}

/// Monitor commands that show, for each of `cpus` guest CPUs, its registers and the instructions
/// at its `rip` as they are in guest memory: a CPU stuck on an instruction that memory no longer
/// holds is then visible (README, kernel section).
fn monitor_dump(cpus: u32) -> Vec<String> {
    let mut commands = vec!["info registers -a".to_owned()];
    for cpu in 0..cpus {
        commands.push(format!("cpu {cpu}"));
        commands.push("x/4i $pc".to_owned());
        commands.push("x/16xb $pc".to_owned());
    }
    commands
}

/// What `SONDE_VM_UP` said, and when it was read.
struct Up {
    kernel_release: String,
    kernel_version: String,
    uptime_s: String,
    at: Instant,
}

/// The watcher's state: what the console said, and when.
struct Watch {
    /// The run's name (its directory), for the messages.
    name: String,
    started: Instant,
    deadline: Instant,
    input: Input,
    /// Guest CPUs, for the monitor dump.
    cpus: u32,
    up: Option<Up>,
    last_alive: Instant,
    last_output: Instant,
    alarms: Vec<String>,
    verdict: Option<Verdict>,
}

impl Watch {
    fn new(boot: &Boot<'_>, started: Instant, input: Input) -> Self {
        Self {
            name: boot
                .run_dir
                .file_name()
                .map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
            started,
            deadline: started + boot.machine.timeout,
            input,
            cpus: boot.machine.smp,
            up: None,
            last_alive: started,
            last_output: started,
            alarms: Vec::new(),
            verdict: None,
        }
    }

    /// Reads console events until the result (plus [`POWEROFF_GRACE`] for qemu to exit), the
    /// console's end, or a rule of [`Self::overdue`] fires.
    fn run(mut self, rx: &mpsc::Receiver<Event>) -> Self {
        loop {
            let (due, verdict) = self.next_due();
            match rx.recv_timeout(due.saturating_duration_since(Instant::now())) {
                Ok(event) => self.on_event(event),
                Err(RecvTimeoutError::Timeout) => {
                    if matches!(self.verdict, Some(Verdict::Exited(_))) {
                        return self;
                    }
                    self.give_up(verdict, rx);
                    return self;
                }
                Err(RecvTimeoutError::Disconnected) => return self,
            }
        }
    }

    /// The earliest deadline that applies now, and the verdict it gives when it passes.
    fn next_due(&self) -> (Instant, Verdict) {
        if let Some(Verdict::Exited(_)) = self.verdict {
            return (self.deadline, Verdict::TimedOut);
        }
        let mut due = vec![(self.deadline, Verdict::TimedOut)];
        if self.up.is_none() {
            due.push((self.started + BOOT_LIMIT, Verdict::NoBoot));
        } else {
            due.push((self.last_alive + HEARTBEAT_STALL, Verdict::Hung));
            due.push((self.last_output + SILENCE_LIMIT, Verdict::Stuck));
        }
        due.into_iter()
            .min_by_key(|(at, _)| *at)
            .unwrap_or((self.deadline, Verdict::TimedOut))
    }

    fn on_event(&mut self, Event { line, at }: Event) {
        match line {
            Line::Up {
                kernel_release,
                kernel_version,
                uptime_s,
            } => {
                self.up = Some(Up {
                    kernel_release,
                    kernel_version,
                    uptime_s,
                    at,
                });
                self.last_alive = at;
                self.last_output = at;
            }
            Line::Alive => self.last_alive = at,
            Line::Text(_) => self.last_output = at,
            Line::Alarm(text) => {
                self.last_output = at;
                if self.alarms.is_empty() {
                    println!(
                        "xtask: vm {}: kernel alarm `{text}`; dumping the guest's stacks (sysrq \
                         {SYSRQ_ALARM})",
                        self.name
                    );
                    self.input.sysrq(SYSRQ_ALARM);
                }
                self.alarms.push(text);
            }
            Line::Result(rc) => {
                self.verdict = Some(Verdict::Exited(rc));
                self.deadline = self.deadline.min(at + POWEROFF_GRACE);
            }
            Line::SetupFailed(step) => self.verdict = Some(Verdict::SetupFailed(step)),
            Line::Noise => {}
        }
    }

    /// Records `verdict`, dumps the guest's stacks when it was up, and keeps reading the console
    /// for [`DUMP_GRACE`] so the dump reaches the log.
    fn give_up(&mut self, verdict: Verdict, rx: &mpsc::Receiver<Event>) {
        if self.verdict.is_none() {
            self.verdict = Some(verdict);
        }
        if self.up.is_none() {
            return;
        }
        println!(
            "xtask: vm {}: {} after {:.0} s; dumping the guest's CPUs (qemu monitor) and \
             stacks (sysrq {SYSRQ_HUNG})",
            self.name,
            match self.verdict {
                Some(Verdict::Hung) => "no heartbeat",
                Some(Verdict::Stuck) => "no output",
                _ => "timed out",
            },
            self.started.elapsed().as_secs_f64()
        );
        self.input.monitor(&monitor_dump(self.cpus));
        self.input.sysrq(SYSRQ_HUNG);
        let until = Instant::now() + DUMP_GRACE;
        while let Ok(Event { line, .. }) =
            rx.recv_timeout(until.saturating_duration_since(Instant::now()))
        {
            if let Line::Alarm(text) = line {
                self.alarms.push(text);
            }
        }
    }
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
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(stderr);
    println!("$ {}", exec::display(&cmd));
    let child = cmd
        .spawn()
        .with_context(|| format!("failed to start `{QEMU}` (package qemu-system-x86)"))?;
    Ok(Reaped(child))
}

/// The guest kernel's command line: the console on the serial port, qemu exits on a panic, and
/// what a hang needs to be diagnosed: magic sysrq from the serial line whatever the distribution's
/// default mask, and every CPU's backtrace on a soft lockup (`/init` raises the console log level
/// so those backtraces, printed at the default level, reach the console).
const KERNEL_CMDLINE: &str =
    "console=ttyS0 panic=-1 quiet sysrq_always_enabled softlockup_all_cpu_backtrace=1";

/// The qemu command line. TCG only: the host's KVM is PVM, under which the kernel never boots
/// (shared/vm.md). The guest RAM is a shared memfd because vhost-user (virtiofsd) maps it.
fn qemu_command(boot: &Boot<'_>) -> Command {
    let mem = &boot.machine.mem;
    let accel = format!("tcg,thread={}", boot.machine.tcg_thread.as_qemu());
    let mut cmd = Command::new(QEMU);
    cmd.args(["-accel", &accel, "-cpu", "max", "-m", mem])
        .args(["-smp", &boot.machine.smp.to_string()])
        .args(["-nographic", "-no-reboot", "-nic", "none"])
        .arg("-kernel")
        .arg(boot.kernel)
        .arg("-initrd")
        .arg(boot.initramfs)
        .args(["-append", KERNEL_CMDLINE])
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
