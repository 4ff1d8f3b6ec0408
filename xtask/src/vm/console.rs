//! The guest's serial console, line by line: cleans each line, drops firmware noise and recognises
//! the markers `/init` prints (see vm/init.sh).
//!
//! Input: raw lines from qemu's stdout. Output: a [`Line`] per input line; [`stream`] prints the
//! text lines, tees the raw bytes to the serial log and sends the markers to the waiting thread.

use std::{
    fs::File,
    io::{self, BufRead as _, BufReader, Read, Write as _},
    sync::mpsc::Sender,
    time::Instant,
};

/// One console line, classified.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Line {
    /// Firmware output (SeaBIOS, iPXE) or a blank line: logged, not shown.
    Noise,
    /// Output of the kernel, `/init` or the command.
    Text(String),
    /// `SONDE_VM_UP`: the guest is set up and starts the command.
    Up {
        /// `uname -r`.
        kernel_release: String,
        /// `/proc/uptime` at that point, in seconds, as printed.
        uptime_s: String,
    },
    /// `SONDE_VM_RESULT rc=N`: the command exited with status N.
    Result(i32),
    /// `SONDE_VM_SETUP_FAILED <step>`: `/init` failed at `step`; no command ran.
    SetupFailed(String),
}

/// A marker, with the host time it was read.
#[derive(Debug)]
pub(crate) struct Marker {
    pub(crate) line: Line,
    pub(crate) at: Instant,
}

/// Firmware lines to hide (SeaBIOS prints these before the kernel starts).
const NOISE_PREFIXES: [&str; 4] = ["SeaBIOS", "iPXE", "Booting from ROM", "Machine UUID"];
/// The kernel's last words after `poweroff -f`, hidden too.
const POWER_DOWN: &str = "reboot: Power down";

/// Classifies one console line, already [`clean`]ed; blank lines are noise until `guest_up`
/// (the firmware prints some), text after.
fn classify(text: &str, guest_up: bool) -> Line {
    if text.is_empty() {
        return if guest_up {
            Line::Text(String::new())
        } else {
            Line::Noise
        };
    }
    if NOISE_PREFIXES.iter().any(|p| text.starts_with(p)) || text.ends_with(POWER_DOWN) {
        return Line::Noise;
    }
    parse_marker(text).unwrap_or_else(|| Line::Text(text.to_owned()))
}

fn parse_marker(text: &str) -> Option<Line> {
    if let Some(rest) = text.strip_prefix("SONDE_VM_RESULT rc=") {
        return rest.trim().parse().ok().map(Line::Result);
    }
    if let Some(step) = text.strip_prefix("SONDE_VM_SETUP_FAILED ") {
        return Some(Line::SetupFailed(step.to_owned()));
    }
    let rest = text.strip_prefix("SONDE_VM_UP ")?;
    let mut kernel_release = None;
    let mut uptime_s = None;
    for field in rest.split_whitespace() {
        match field.split_once('=') {
            Some(("krel", v)) => kernel_release = Some(v.to_owned()),
            Some(("uptime", v)) => uptime_s = Some(v.to_owned()),
            _ => {}
        }
    }
    Some(Line::Up {
        kernel_release: kernel_release?,
        uptime_s: uptime_s?,
    })
}

/// One raw console line (without its `\n`) as text: lossy UTF-8 without ANSI escape sequences
/// (`ESC [ … final`, `ESC x`), carriage returns or trailing blanks. A terminal reset (`ESC c`)
/// also drops what precedes it: SeaBIOS ends its last line with one, and the guest's first line
/// follows on the same line.
fn clean(raw: &[u8]) -> String {
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

/// Reads the console until qemu closes it: writes every raw byte to `log`, prints text lines,
/// sends markers to `markers`, and returns the text lines (markers included), joined by `\n`.
///
/// # Errors
/// When reading the console or writing the log fails.
pub(crate) fn stream(
    console: impl Read,
    mut log: File,
    markers: &Sender<Marker>,
) -> io::Result<String> {
    let mut reader = BufReader::new(console);
    let mut raw = Vec::new();
    let mut text = String::new();
    let mut guest_up = false;
    loop {
        raw.clear();
        if reader.read_until(b'\n', &mut raw)? == 0 {
            return Ok(text);
        }
        log.write_all(&raw)?;
        let cleaned = clean(raw.strip_suffix(b"\n").unwrap_or(&raw));
        let line = classify(&cleaned, guest_up);
        if line == Line::Noise {
            continue;
        }
        guest_up |= matches!(line, Line::Up { .. });
        text.push_str(&cleaned);
        text.push('\n');
        if let Line::Text(shown) = line {
            println!("{shown}");
        } else {
            // Fails only once the receiver stopped waiting (timeout); the log still gets the rest.
            let _ = markers.send(Marker {
                line,
                at: Instant::now(),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seabios_banner_is_noise() {
        let raw = b"\x1bc\x1b[?7l\x1b[2J\x1b[0mSeaBIOS (version 1.16.2-debian-1.16.2-1)\r";
        assert_eq!(classify(&clean(raw), false), Line::Noise);
        assert_eq!(
            classify(&clean(b"Booting from ROM..\x1bc\x1b[?7l\x1b[2J"), false),
            Line::Noise
        );
        assert_eq!(classify(&clean(b"\r"), false), Line::Noise);
        assert_eq!(
            classify(&clean(b"[    2.948993] reboot: Power down\r"), true),
            Line::Noise
        );
    }

    #[test]
    fn first_guest_line_follows_the_firmware_reset() {
        assert_eq!(
            classify(
                &clean(b"Booting from ROM..\x1bc\x1b[?7l\x1b[2Jhello\r"),
                true
            ),
            Line::Text("hello".into())
        );
    }

    #[test]
    fn blank_lines_are_shown_once_the_guest_is_up() {
        assert_eq!(classify("", true), Line::Text(String::new()));
    }

    #[test]
    fn text_is_cleaned() {
        assert_eq!(
            classify(&clean(b"6.1.0-56-cloud-amd64\r"), true),
            Line::Text("6.1.0-56-cloud-amd64".into())
        );
    }

    #[test]
    fn result_marker() {
        assert_eq!(
            classify(&clean(b"SONDE_VM_RESULT rc=7\r"), true),
            Line::Result(7)
        );
        assert_eq!(
            classify(&clean(b"SONDE_VM_RESULT rc=x"), true),
            Line::Text("SONDE_VM_RESULT rc=x".into()),
            "a malformed marker is shown as text"
        );
    }

    #[test]
    fn up_marker() {
        assert_eq!(
            classify(
                &clean(b"SONDE_VM_UP krel=6.1.0-56-cloud-amd64 uptime=1.93\r"),
                false
            ),
            Line::Up {
                kernel_release: "6.1.0-56-cloud-amd64".into(),
                uptime_s: "1.93".into()
            }
        );
    }

    #[test]
    fn setup_failed_marker() {
        assert_eq!(
            classify(
                &clean(b"SONDE_VM_SETUP_FAILED mount -t virtiofs -o ro hostfs /host"),
                false
            ),
            Line::SetupFailed("mount -t virtiofs -o ro hostfs /host".into())
        );
    }

    #[test]
    fn markers_only_at_line_start() {
        assert_eq!(
            classify(&clean(b"echo SONDE_VM_RESULT rc=0"), true),
            Line::Text("echo SONDE_VM_RESULT rc=0".into())
        );
    }
}
