//! Small helpers shared by the programs: counters and current-task ids.

use agent_common::stats::Stat;
use aya_ebpf::helpers::bpf_get_current_pid_tgid;

use crate::maps::STATS;

/// Adds `n` to a per-CPU counter.
#[inline(always)]
pub(crate) fn count(stat: Stat, n: u64) {
    if let Some(slot) = STATS.get_ptr_mut(stat as u32) {
        // SAFETY: per-CPU slot, only this CPU writes it while the program runs.
        unsafe { *slot += n };
    }
}

/// `(pid_tgid, tgid, tid)` of the current task.
#[inline(always)]
pub(crate) fn current_ids() -> (u64, u32, u32) {
    let pid_tgid = bpf_get_current_pid_tgid();
    (pid_tgid, (pid_tgid >> 32) as u32, pid_tgid as u32)
}
