//! `tgid` → process metadata from `/proc`, cached. Owned by the capture task (one owner per table).
//!
//! # Source
//! `/proc/<tgid>/exe` (readlink), else the `comm` captured with the event.

use std::{collections::HashMap, fs, sync::Arc, time::Instant};

/// What spans report about the process that served or made a request.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ProcessInfo {
    /// Process id (thread group id).
    pub tgid: u32,
    /// Executable file name (`nginx`, `python3.11`), else `comm`, else `unknown`.
    pub exe_name: String,
    /// Executable path, when readable.
    pub exe_path: Option<String>,
}

impl ProcessInfo {
    /// Reads `/proc/<tgid>`; when the process is already gone, `comm` (the kernel's thread name
    /// captured with the event, NUL-padded) names it. Never an error.
    pub fn read(tgid: u32, comm: &[u8; 16]) -> Self {
        let exe_path = fs::read_link(format!("/proc/{tgid}/exe")).ok().map(|p| {
            p.to_string_lossy()
                .trim_end_matches(" (deleted)")
                .to_owned()
        });
        let comm_end = comm.iter().position(|&b| b == 0).unwrap_or(comm.len());
        let exe_name = exe_path
            .as_deref()
            .and_then(|p| p.rsplit('/').next())
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .or_else(|| Some(String::from_utf8_lossy(&comm[..comm_end]).into_owned()))
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "unknown".to_owned());
        Self {
            tgid,
            exe_name,
            exe_path,
        }
    }
}

/// Cache of [`ProcessInfo`] by tgid.
#[derive(Debug, Default)]
pub struct ProcessCache {
    entries: HashMap<u32, (Arc<ProcessInfo>, Instant)>,
}

impl ProcessCache {
    /// Returns the cached info for `tgid`, reading `/proc` on first use.
    pub fn get(&mut self, tgid: u32, comm: &[u8; 16], now: Instant) -> Arc<ProcessInfo> {
        let entry = self
            .entries
            .entry(tgid)
            .or_insert_with(|| (Arc::new(ProcessInfo::read(tgid, comm)), now));
        entry.1 = now;
        Arc::clone(&entry.0)
    }

    /// Reads `tgid` from `/proc` now (after an exec: the executable changed), replacing its entry;
    /// a process already gone keeps its old entry, if any.
    pub fn refresh(&mut self, tgid: u32, now: Instant) {
        let info = ProcessInfo::read(tgid, &[0; 16]);
        if info.exe_path.is_some() {
            self.entries.insert(tgid, (Arc::new(info), now));
        }
    }

    /// Drops entries not used since `before` (processes that exited or went quiet; a reused tgid
    /// is then read afresh).
    pub fn retain_used_since(&mut self, before: Instant) {
        self.entries.retain(|_, (_, used)| *used >= before);
    }

    /// Number of cached processes.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the cache is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_process() {
        let me = ProcessInfo::read(std::process::id(), &[0; 16]);
        assert!(!me.exe_name.is_empty());
        assert_ne!(me.exe_name, "unknown");
        assert!(me
            .exe_path
            .as_deref()
            .is_some_and(|p| p.ends_with(&me.exe_name)));
    }

    #[test]
    fn refresh_reads_a_running_process_and_keeps_a_gone_ones_entry() {
        let mut cache = ProcessCache::default();
        let now = Instant::now();
        let me = std::process::id();
        cache.refresh(me, now);
        assert_eq!(cache.len(), 1);
        assert_ne!(cache.get(me, &[0; 16], now).exe_name, "unknown");
        cache.refresh(u32::MAX - 1, now);
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn missing_process_falls_back() {
        let gone = ProcessInfo::read(u32::MAX - 1, &[0; 16]);
        assert_eq!(gone.exe_name, "unknown");
        assert_eq!(gone.exe_path, None);
        let curl = ProcessInfo::read(u32::MAX - 1, b"curl\0\0\0\0\0\0\0\0\0\0\0\0");
        assert_eq!(curl.exe_name, "curl");
    }
}
