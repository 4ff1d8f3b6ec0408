//! Kernel-side cost of the agent's eBPF programs: turns the kernel's run-time statistics on
//! (`BPF_ENABLE_STATS`) and reads `run_time_ns`/`run_cnt` per program from the fdinfo of the
//! program fds a process holds.

use std::{
    collections::BTreeMap,
    fs,
    os::fd::{FromRawFd as _, OwnedFd},
    process::Command,
};

use anyhow::{bail, Context as _, Result};

use crate::exec;

/// `bpf(2)` command `BPF_ENABLE_STATS` (Linux 5.8, as the BPF ring buffer the agent needs).
const BPF_ENABLE_STATS: libc::c_int = 32;
/// `BPF_STATS_RUN_TIME`: count `run_time_ns` and `run_cnt` for every program.
const BPF_STATS_RUN_TIME: u32 = 0;

/// (`prog_id`, `run_time_ns`, `run_cnt`) from a BPF program fd's fdinfo.
fn parse_prog_fdinfo(text: &str) -> Option<(u32, u64, u64)> {
    let get = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
            .and_then(|v| v.trim().parse::<u64>().ok())
    };
    Some((
        u32::try_from(get("prog_id")?).ok()?,
        get("run_time_ns").unwrap_or(0),
        get("run_cnt").unwrap_or(0),
    ))
}

/// `prog_id` → (`run_time_ns`, `run_cnt`) of every BPF program fd `tgid` holds (each program once,
/// however many fds refer to it).
pub(super) fn programs(tgid: u32) -> Result<BTreeMap<u32, (u64, u64)>> {
    let mut out = BTreeMap::new();
    let fd_dir = format!("/proc/{tgid}/fd");
    for entry in fs::read_dir(&fd_dir).with_context(|| format!("read {fd_dir}"))? {
        let entry = entry?;
        if fs::read_link(entry.path()).is_ok_and(|l| l.as_os_str() == "anon_inode:bpf-prog") {
            let info = format!(
                "/proc/{tgid}/fdinfo/{}",
                entry.file_name().to_string_lossy()
            );
            // The fd may have been closed since read_dir: skip it.
            if let Ok(text) = fs::read_to_string(&info) {
                if let Some((id, time, cnt)) = parse_prog_fdinfo(&text) {
                    out.insert(id, (time, cnt));
                }
            }
        }
    }
    Ok(out)
}

/// Program names by id (`bpftool prog show -j`); empty when bpftool is missing or fails.
pub(super) fn program_names() -> BTreeMap<u32, String> {
    let Ok(out) = exec::output(Command::new("bpftool").args(["prog", "show", "-j"])) else {
        return BTreeMap::new();
    };
    let Ok(serde_json::Value::Array(progs)) = serde_json::from_str(&out) else {
        return BTreeMap::new();
    };
    progs
        .iter()
        .filter_map(|p| {
            let id = u32::try_from(p.get("id")?.as_u64()?).ok()?;
            Some((id, p.get("name")?.as_str()?.to_owned()))
        })
        .collect()
}

/// Holds a `BPF_ENABLE_STATS` fd: the kernel counts `run_time_ns`/`run_cnt` while any such fd is
/// open, and stops when the last one closes (on drop, or when xtask exits in any way).
pub(super) struct BpfStats {
    _fd: OwnedFd,
}

impl BpfStats {
    pub(super) fn enable() -> Result<Self> {
        let attr: u32 = BPF_STATS_RUN_TIME;
        // SAFETY: `attr` is a valid `union bpf_attr` prefix for BPF_ENABLE_STATS (`type` only) of
        // the size passed; the kernel zero-fills the rest.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_ENABLE_STATS,
                std::ptr::from_ref(&attr),
                size_of::<u32>(),
            )
        };
        if fd < 0 {
            bail!(
                "bpf(BPF_ENABLE_STATS) failed: {} (needs root and Linux 5.8+)",
                std::io::Error::last_os_error()
            );
        }
        let fd = i32::try_from(fd)?;
        // SAFETY: the kernel just returned this fd to us and nothing else owns it.
        Ok(Self {
            _fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prog_fdinfo() {
        let text = "pos:\t0\nflags:\t02000002\nprog_type:\t5\nprog_id:\t24590\nrun_time_ns:\t192630\nrun_cnt:\t287\n";
        assert_eq!(parse_prog_fdinfo(text), Some((24590, 192_630, 287)));
    }
}
