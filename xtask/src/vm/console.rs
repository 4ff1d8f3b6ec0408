//! The guest's serial console, line by line: cleans each line, drops firmware noise, recognises
//! the markers `/init` prints (see vm/init.sh) and the kernel's reports of a stuck machine.
//!
//! Input: raw lines from qemu's stdout. Output: a [`Line`] per input line; [`stream`] prints the
//! text lines, tees the raw bytes to the serial log and sends every event to the waiting thread.
//!
//! Markers carry the boot's [`Nonce`] and are recognised anywhere in a line, whatever precedes
//! them: SeaBIOS's dots, a bare `\r`, escape sequences or a kernel message printed in the middle
//! of the line. Output of the guest's command that merely contains a marker's name (a test that
//! echoes `SONDE_VM_RESULT rc=0`) is not one, because it cannot know the nonce.

use std::{
    fmt,
    fs::File,
    io::{self, BufRead as _, BufReader, Read, Write as _},
    sync::mpsc::Sender,
    time::Instant,
};

/// A per-boot token in every marker (16 hex digits), written into the initramfs by the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Nonce(String);

impl Nonce {
    /// A fresh nonce from the kernel's random source, or from the clock and pid when that fails.
    pub(crate) fn random() -> Self {
        let mut bytes = [0u8; 8];
        let from_urandom = File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes));
        let value = if from_urandom.is_ok() {
            u64::from_ne_bytes(bytes)
        } else {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            (now.as_nanos() as u64) ^ (u64::from(std::process::id()) << 32)
        };
        Self(format!("{value:016x}"))
    }

    /// The nonce's text (`/etc/sonde-vm/nonce` in the initramfs).
    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Nonce {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One console line, classified.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Line {
    /// Firmware output (SeaBIOS, iPXE) or a blank line before the guest is up: logged, not shown.
    Noise,
    /// Output of the kernel, `/init` or the command.
    Text(String),
    /// A kernel report that the machine is stuck or broken (soft lockup, RCU stall, hung task,
    /// oops, panic): shown like text, and it makes the host dump the guest's stacks.
    Alarm(String),
    /// `SONDE_VM_UP`: the guest is set up and starts the command.
    Up {
        /// `uname -r`.
        kernel_release: String,
        /// `uname -v` (Debian's has the package version: `#1 SMP PREEMPT_DYNAMIC Debian
        /// 6.1.192-3 (2026-10-20)`), empty when not printed.
        kernel_version: String,
        /// `/proc/uptime` at that point, in seconds, as printed.
        uptime_s: String,
    },
    /// `SONDE_VM_ALIVE`: the guest's heartbeat (every 10 s while the command runs, vm/init.sh).
    Alive,
    /// `SONDE_VM_RESULT rc=N`: the command exited with status N.
    Result(i32),
    /// `SONDE_VM_SETUP_FAILED <step>`: `/init` failed at `step`; no command ran.
    SetupFailed(String),
}

/// A console event, with the host time it was read.
#[derive(Debug)]
pub(crate) struct Event {
    pub(crate) line: Line,
    pub(crate) at: Instant,
}

/// Firmware lines to hide (SeaBIOS prints these before the kernel starts).
const NOISE_PREFIXES: [&str; 4] = ["SeaBIOS", "iPXE", "Booting from ROM", "Machine UUID"];
/// The kernel's last words after `poweroff -f`, hidden too.
const POWER_DOWN: &str = "reboot: Power down";
/// What the kernel prints when a CPU or task is stuck or the kernel is broken
/// (`kernel/watchdog.c`, `kernel/rcu/tree_stall.h`, `kernel/hung_task.c`, `kernel/panic.c`).
const ALARMS: [&str; 8] = [
    "BUG: soft lockup",
    "detected stalls on CPUs/tasks",
    "self-detected stall on CPU",
    "blocked for more than",
    "Watchdog detected hard LOCKUP",
    "BUG: ",
    "Oops: ",
    "Kernel panic",
];

/// Classifies the console lines of one boot.
#[derive(Debug)]
pub(crate) struct Classifier {
    nonce: Nonce,
    guest_up: bool,
}

impl Classifier {
    pub(crate) fn new(nonce: Nonce) -> Self {
        Self {
            nonce,
            guest_up: false,
        }
    }

    /// Classifies one console line, already [`clean`]ed; blank lines are noise until the guest is
    /// up (the firmware prints some), text after.
    pub(crate) fn classify(&mut self, text: &str) -> Line {
        if text.is_empty() {
            return if self.guest_up {
                Line::Text(String::new())
            } else {
                Line::Noise
            };
        }
        if let Some(marker) = self.parse_marker(text) {
            self.guest_up |= matches!(marker, Line::Up { .. });
            return marker;
        }
        if NOISE_PREFIXES.iter().any(|p| text.starts_with(p)) || text.ends_with(POWER_DOWN) {
            return Line::Noise;
        }
        if ALARMS.iter().any(|a| text.contains(a)) {
            return Line::Alarm(text.to_owned());
        }
        Line::Text(text.to_owned())
    }

    /// The marker in `text`, wherever it starts: `SONDE_VM_<KIND> nonce=<this boot's> <fields>`.
    fn parse_marker(&self, text: &str) -> Option<Line> {
        let (kind, fields) = text.match_indices("SONDE_VM_").find_map(|(at, _)| {
            let rest = &text[at + "SONDE_VM_".len()..];
            let (kind, rest) = rest.split_once(' ')?;
            let rest = rest
                .strip_prefix("nonce=")?
                .strip_prefix(self.nonce.as_str())?;
            (rest.is_empty() || rest.starts_with(' ')).then(|| (kind, rest.trim()))
        })?;
        let field = |name: &str| {
            fields
                .split_whitespace()
                .find_map(|f| f.strip_prefix(name)?.strip_prefix('='))
                .map(ToOwned::to_owned)
        };
        match kind {
            "UP" => Some(Line::Up {
                kernel_release: field("krel")?,
                // Last, and the rest of the line: `uname -v` has spaces.
                kernel_version: fields
                    .split_once("version=")
                    .map_or_else(String::new, |(_, v)| v.trim().to_owned()),
                uptime_s: field("uptime")?,
            }),
            "ALIVE" => Some(Line::Alive),
            "RESULT" => field("rc")?.parse().ok().map(Line::Result),
            "SETUP_FAILED" => Some(Line::SetupFailed(fields.to_owned())),
            _ => None,
        }
    }
}

/// One raw console line (without its `\n`) as text: lossy UTF-8 without ANSI escape sequences
/// (`ESC [ … final`, `ESC x`), carriage returns or trailing blanks. A terminal reset (`ESC c`)
/// also drops what precedes it: SeaBIOS ends its last line with one, and the guest's first line
/// follows on the same line.
pub(crate) fn clean(raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(raw);
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\x1b' => {
                if chars.next_if_eq(&'c').is_some() {
                    // A terminal reset: what came before on this line was SeaBIOS's.
                    out.clear();
                } else if chars.next_if_eq(&'[').is_some() {
                    // Parameters and intermediates, then one final byte in '@'..='~'.
                    for c in chars.by_ref() {
                        if ('@'..='~').contains(&c) {
                            break;
                        }
                    }
                } else {
                    chars.next();
                }
            }
            '\r' => {}
            c => out.push(c),
        }
    }
    out.truncate(out.trim_end().len());
    out
}

/// Reads the console until qemu closes it: writes every raw byte to `log`, prints text and
/// alarm lines when `echo`, sends every event but noise to `events`, and returns the text lines
/// (markers included), joined by `\n`.
///
/// # Errors
/// When reading the console or writing the log fails.
pub(crate) fn stream(
    console: impl Read,
    mut log: File,
    mut classifier: Classifier,
    echo: bool,
    events: &Sender<Event>,
) -> io::Result<String> {
    let mut reader = BufReader::new(console);
    let mut raw = Vec::new();
    let mut text = String::new();
    loop {
        raw.clear();
        if reader.read_until(b'\n', &mut raw)? == 0 {
            return Ok(text);
        }
        log.write_all(&raw)?;
        let cleaned = clean(raw.strip_suffix(b"\n").unwrap_or(&raw));
        let line = classifier.classify(&cleaned);
        match &line {
            Line::Noise | Line::Alive => {}
            Line::Text(shown) | Line::Alarm(shown) => {
                if echo {
                    println!("{shown}");
                }
                text.push_str(shown);
                text.push('\n');
            }
            Line::Up { .. } | Line::Result(_) | Line::SetupFailed(_) => {
                text.push_str(&cleaned);
                text.push('\n');
            }
        }
        if line != Line::Noise {
            // Fails only once the receiver stopped waiting; the log still gets the rest.
            let _ = events.send(Event {
                line,
                at: Instant::now(),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NONCE: &str = "0123456789abcdef";

    fn classifier(up: bool) -> Classifier {
        let mut c = Classifier::new(Nonce(NONCE.into()));
        c.guest_up = up;
        c
    }

    fn classify(raw: &[u8], up: bool) -> Line {
        classifier(up).classify(&clean(raw))
    }

    #[test]
    fn random_nonces_are_16_hex_digits_and_differ() {
        let (a, b) = (Nonce::random(), Nonce::random());
        assert_eq!(a.as_str().len(), 16);
        assert!(a.as_str().chars().all(|c| c.is_ascii_hexdigit()), "{a}");
        assert_ne!(a, b);
    }

    #[test]
    fn seabios_banner_is_noise() {
        let raw = b"\x1bc\x1b[?7l\x1b[2J\x1b[0mSeaBIOS (version 1.16.2-debian-1.16.2-1)\r";
        assert_eq!(classify(raw, false), Line::Noise);
        assert_eq!(
            classify(b"Booting from ROM..\x1bc\x1b[?7l\x1b[2J", false),
            Line::Noise
        );
        assert_eq!(classify(b"\r", false), Line::Noise);
        assert_eq!(
            classify(b"[    2.948993] reboot: Power down\r", true),
            Line::Noise
        );
    }

    /// The exact bytes of the kprobe boot on Debian's 6.1.0-57 that the harness once missed
    /// (issue 10): SeaBIOS's dots, its terminal reset and a bare `\r` before the marker.
    #[test]
    fn up_marker_after_firmware_dots_and_carriage_return() {
        let raw = format!(
            "Booting from ROM..\x1bc\x1b[?7l\x1b[2J\x1b[0m.\rSONDE_VM_UP nonce={NONCE} \
             krel=6.1.0-57-cloud-amd64 uptime=2.07 version=#1 SMP PREEMPT_DYNAMIC Debian \
             6.1.192-3 (2026-10-20)\r"
        );
        assert_eq!(
            classify(raw.as_bytes(), false),
            Line::Up {
                kernel_release: "6.1.0-57-cloud-amd64".into(),
                kernel_version: "#1 SMP PREEMPT_DYNAMIC Debian 6.1.192-3 (2026-10-20)".into(),
                uptime_s: "2.07".into()
            }
        );
    }

    #[test]
    fn markers_anywhere_in_a_line() {
        let raw = format!("[  301.2] some kernel message SONDE_VM_RESULT nonce={NONCE} rc=3\r");
        assert_eq!(classify(raw.as_bytes(), true), Line::Result(3));
        let raw = format!("..SONDE_VM_ALIVE nonce={NONCE} uptime=12.00");
        assert_eq!(classify(raw.as_bytes(), true), Line::Alive);
    }

    #[test]
    fn first_guest_line_follows_the_firmware_reset() {
        assert_eq!(
            classify(b"Booting from ROM..\x1bc\x1b[?7l\x1b[2Jhello\r", true),
            Line::Text("hello".into())
        );
    }

    #[test]
    fn blank_lines_are_shown_once_the_guest_is_up() {
        assert_eq!(classifier(true).classify(""), Line::Text(String::new()));
        let mut c = classifier(false);
        assert_eq!(c.classify(""), Line::Noise);
        let up = format!("SONDE_VM_UP nonce={NONCE} krel=x uptime=1");
        assert!(matches!(c.classify(&up), Line::Up { .. }));
        assert_eq!(c.classify(""), Line::Text(String::new()));
    }

    #[test]
    fn text_is_cleaned() {
        assert_eq!(
            classify(b"6.1.0-56-cloud-amd64\r", true),
            Line::Text("6.1.0-56-cloud-amd64".into())
        );
    }

    #[test]
    fn result_marker() {
        let raw = format!("SONDE_VM_RESULT nonce={NONCE} rc=7\r");
        assert_eq!(classify(raw.as_bytes(), true), Line::Result(7));
        let raw = format!("SONDE_VM_RESULT nonce={NONCE} rc=x");
        assert_eq!(
            classify(raw.as_bytes(), true),
            Line::Text(raw.clone()),
            "a malformed marker is shown as text"
        );
    }

    #[test]
    fn setup_failed_marker() {
        let raw =
            format!("SONDE_VM_SETUP_FAILED nonce={NONCE} mount -t virtiofs -o ro hostfs /host");
        assert_eq!(
            classify(raw.as_bytes(), false),
            Line::SetupFailed("mount -t virtiofs -o ro hostfs /host".into())
        );
    }

    #[test]
    fn markers_need_this_boots_nonce() {
        for raw in [
            "echo SONDE_VM_RESULT rc=0",
            "SONDE_VM_RESULT rc=0",
            "SONDE_VM_RESULT nonce=ffffffffffffffff rc=0",
            "SONDE_VM_RESULT nonce=0123456789abcdef0 rc=0",
        ] {
            assert_eq!(
                classify(raw.as_bytes(), true),
                Line::Text(raw.into()),
                "{raw}"
            );
        }
    }

    #[test]
    fn kernel_reports_of_a_stuck_machine_are_alarms() {
        for raw in [
            "[  371.020125] watchdog: BUG: soft lockup - CPU#0 stuck for 343s! [keep_alive_thre:202]",
            "[  380.1] rcu: INFO: rcu_sched detected stalls on CPUs/tasks:",
            "[  380.1] rcu: INFO: rcu_preempt self-detected stall on CPU",
            "[  600.0] INFO: task sonde:213 blocked for more than 120 seconds.",
            "[    9.9] Kernel panic - not syncing: softlockup: hung tasks",
        ] {
            assert_eq!(
                classify(raw.as_bytes(), true),
                Line::Alarm(raw.into()),
                "{raw}"
            );
        }
    }
}
