//! `sonde --check`: what this kernel and this process allow, found by trying, without starting
//! the pipeline.
//!
//! Each line is `  <item>  <ok|no|->  <detail>`. Static facts (BTF file, lockdown, capabilities,
//! tracefs entries) are read from `/sys` and `/proc`; the capture modes and uprobes are proven by
//! loading and attaching Sonde's own programs (then detaching them), the same way startup does.
//! The verdict names the capture mode startup would pick.

use std::{fmt::Write as _, fs, path::Path};

use super::{
    capture::{self, CaptureMode, Kernel},
    load::{self, LoadParams},
    tracefs,
};

/// One finding.
struct Line {
    item: &'static str,
    ok: Option<bool>,
    detail: String,
}

/// The report as text, and whether Sonde can run here (a capture mode attached).
pub fn report(params: &LoadParams) -> (String, bool) {
    // Parsed once (a few MB): for the BTF line and for the fentry attach.
    let btf = load::kernel_btf();
    let mut lines = vec![kernel_release(), capabilities(), lockdown(), btf_file(&btf)];
    let tracefs = tracefs::ensure_mounted();
    lines.push(Line {
        item: "tracefs",
        ok: Some(tracefs.is_ok()),
        detail: match &tracefs {
            Ok(p) => p.display().to_string(),
            Err(e) => e.to_string(),
        },
    });
    if let Ok(root) = &tracefs {
        lines.push(tracefs_entry(
            root,
            "kprobe_events",
            "kprobe events (CONFIG_KPROBE_EVENTS)",
        ));
        lines.push(tracefs_entry(
            root,
            "uprobe_events",
            "uprobe events (CONFIG_UPROBE_EVENTS)",
        ));
    }
    let mut usable = None;
    match load::open(params) {
        Err(e) => lines.push(Line {
            item: "eBPF object + maps (ring buffer)",
            ok: Some(false),
            detail: e.to_string(),
        }),
        Ok(mut opened) => {
            lines.push(Line {
                item: "eBPF object + maps (ring buffer)",
                ok: Some(true),
                detail: "loaded; BPF_MAP_TYPE_RINGBUF created".to_owned(),
            });
            let kernel = Kernel {
                btf: &btf,
                tracepoints: &opened.tracepoints,
                registers: &opened.recover_in_progress,
            };
            for mode in CaptureMode::ALL {
                let (ok, detail) = match capture::attach(&mut opened.ebpf, &[mode], &kernel) {
                    Ok(chosen) => {
                        capture::unload_mode(&mut opened.ebpf, mode);
                        usable.get_or_insert(mode);
                        let mut d = format!("attached {}", chosen.attached.join(", "));
                        for (target, reason) in &chosen.skipped {
                            let _ = write!(d, "; optional {target} refused ({reason})");
                        }
                        (true, d)
                    }
                    Err(refusals) => (false, load::describe_refusals(&refusals)),
                };
                lines.push(Line {
                    item: mode_item(mode),
                    ok: Some(ok),
                    detail,
                });
            }
            let hooks = load::attach_hooks(&mut opened.ebpf, true);
            lines.push(Line {
                item: "syscall + lifecycle tracepoints",
                ok: Some(hooks.is_ok()),
                detail: match &hooks {
                    Ok(n) => format!("{n} of {} attached", super::HOOKS.len()),
                    Err(e) => e.to_string(),
                },
            });
            if hooks.is_err() {
                usable = None;
            }
            lines.push(Line {
                item: "in-progress syscall recovery",
                ok: Some(opened.recover_in_progress.is_ok()),
                detail: match &opened.recover_in_progress {
                    Ok(()) => "bpf_task_pt_regs: a read blocked at attach time is captured".into(),
                    Err(why) => format!("{why}: a read blocked at attach time is missed"),
                },
            });
            let tls = load::load_tls_programs(&mut opened.ebpf);
            lines.push(Line {
                item: "uprobes (TLS libraries)",
                ok: Some(tls),
                detail: if tls {
                    "SSL_read/SSL_write programs loaded".to_owned()
                } else {
                    "refused: HTTPS stays invisible (see the warning above)".to_owned()
                },
            });
        }
    }
    let mut out = String::from("sonde --check\n");
    for l in &lines {
        let mark = match l.ok {
            Some(true) => "ok",
            Some(false) => "no",
            None => "-",
        };
        let _ = writeln!(out, "  {:<38} {:<3} {}", l.item, mark, l.detail);
    }
    match usable {
        Some(mode) => {
            let _ = writeln!(out, "verdict: Sonde can run here; capture mode `{mode}`");
        }
        None => {
            let _ = writeln!(
                out,
                "verdict: Sonde cannot run here: no capture mode attached (see above)"
            );
        }
    }
    (out, usable.is_some())
}

const fn mode_item(mode: CaptureMode) -> &'static str {
    match mode {
        CaptureMode::Socket => "capture mode socket (6.3+, registers)",
        CaptureMode::Fentry => "capture mode fentry (trampolines)",
        CaptureMode::Kprobe => "capture mode kprobe",
        CaptureMode::Tracepoint => "capture mode tracepoint (6.3+)",
    }
}

fn kernel_release() -> Line {
    let release = fs::read_to_string("/proc/sys/kernel/osrelease");
    Line {
        item: "kernel",
        ok: None,
        detail: release.map_or_else(|e| e.to_string(), |r| r.trim().to_owned()),
    }
}

/// Capability bits (`include/uapi/linux/capability.h`) the agent uses.
const CAPS: [(u32, &str); 6] = [
    (21, "CAP_SYS_ADMIN"),
    (38, "CAP_PERFMON"),
    (39, "CAP_BPF"),
    (19, "CAP_SYS_PTRACE"),
    (24, "CAP_SYS_RESOURCE"),
    (12, "CAP_NET_ADMIN"),
];

fn capabilities() -> Line {
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    let eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok());
    let Some(eff) = eff else {
        return Line {
            item: "capabilities",
            ok: Some(false),
            detail: "cannot read CapEff from /proc/self/status".to_owned(),
        };
    };
    let (has, lacks): (Vec<_>, Vec<_>) = CAPS.iter().partition(|(bit, _)| eff >> bit & 1 == 1);
    let names = |v: &[(u32, &str)]| v.iter().map(|(_, n)| *n).collect::<Vec<_>>().join(" ");
    let needed_ok = has.iter().any(|(bit, _)| *bit == 21)
        || (has.iter().any(|(bit, _)| *bit == 39) && has.iter().any(|(bit, _)| *bit == 38));
    Line {
        item: "capabilities",
        ok: Some(needed_ok),
        detail: format!("has [{}] lacks [{}]", names(&has), names(&lacks)),
    }
}

fn lockdown() -> Line {
    // `none [integrity] confidentiality`: the bracketed one is active.
    match fs::read_to_string("/sys/kernel/security/lockdown") {
        Ok(text) => {
            let active = text
                .split_whitespace()
                .find(|w| w.starts_with('['))
                .map(|w| w.trim_matches(|c| c == '[' || c == ']').to_owned())
                .unwrap_or_default();
            Line {
                item: "lockdown",
                // `confidentiality` forbids reading kernel memory: no eBPF tracing at all.
                ok: Some(active != "confidentiality"),
                detail: match active.as_str() {
                    "integrity" => "integrity (bpf_probe_write_user refused; reads allowed)".into(),
                    other => other.to_owned(),
                },
            }
        }
        Err(_) => Line {
            item: "lockdown",
            ok: None,
            detail: "unknown (no /sys/kernel/security/lockdown)".to_owned(),
        },
    }
}

fn btf_file(btf: &Result<aya::Btf, String>) -> Line {
    let path = Path::new("/sys/kernel/btf/vmlinux");
    match btf {
        Ok(_) => Line {
            item: "BTF",
            ok: Some(true),
            detail: format!(
                "{} ({} bytes)",
                path.display(),
                fs::metadata(path).map(|m| m.len()).unwrap_or(0)
            ),
        },
        Err(e) => Line {
            item: "BTF",
            ok: Some(false),
            detail: format!("{e}: fentry unavailable"),
        },
    }
}

fn tracefs_entry(root: &Path, file: &str, item: &'static str) -> Line {
    let exists = root.join(file).exists();
    Line {
        item,
        ok: Some(exists),
        detail: if exists {
            root.join(file).display().to_string()
        } else {
            format!("no {file} in tracefs")
        },
    }
}
