//! Small helpers shared by the programs: counters and current-task ids.

use agent_common::stats::{slot, Stat};
use aya_ebpf::helpers::bpf_get_current_pid_tgid;

use crate::maps::STATS;

/// Adds `n` to `program`'s per-CPU counter `stat` (`program`: a `DataSource` discriminant or an
/// `agent_common::stats::PROGRAM_*` id).
#[inline(always)]
pub(crate) fn count(program: u32, stat: Stat, n: u64) {
    if let Some(slot) = STATS.get_ptr_mut(slot(program, stat)) {
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
