//! `tgid` → process metadata from `/proc`, cached. Owned by the capture task (one owner per table).
//!
//! # Source
//! `/proc/<tgid>/exe` (readlink) and `/proc/<tgid>/comm`.

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
    /// Reads `/proc/<tgid>`; missing files give fallbacks, never an error.
    pub fn read(tgid: u32) -> Self {
        let exe_path = fs::read_link(format!("/proc/{tgid}/exe")).ok().map(|p| {
            p.to_string_lossy()
                .trim_end_matches(" (deleted)")
                .to_owned()
        });
        let exe_name = exe_path
            .as_deref()
            .and_then(|p| p.rsplit('/').next())
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .or_else(|| {
                fs::read_to_string(format!("/proc/{tgid}/comm"))
                    .ok()
                    .map(|s| s.trim().to_owned())
            })
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
    pub fn get(&mut self, tgid: u32, now: Instant) -> Arc<ProcessInfo> {
        let entry = self
            .entries
            .entry(tgid)
            .or_insert_with(|| (Arc::new(ProcessInfo::read(tgid)), now));
        entry.1 = now;
        Arc::clone(&entry.0)
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
        let me = ProcessInfo::read(std::process::id());
        assert!(!me.exe_name.is_empty());
        assert_ne!(me.exe_name, "unknown");
        assert!(me
            .exe_path
            .as_deref()
            .is_some_and(|p| p.ends_with(&me.exe_name)));
    }

    #[test]
    fn missing_process_falls_back() {
        let gone = ProcessInfo::read(u32::MAX - 1);
        assert_eq!(gone.exe_name, "unknown");
        assert_eq!(gone.exe_path, None);
    }
}
