//! `sched:sched_process_exec` (since 3.4): tells userspace a process replaced its image, so it can
//! look for TLS libraries to attach to in the new image without waiting for its periodic scan.

use agent_common::{
    stats::{Stat, PROGRAM_SCHED_PROCESS_EXEC},
    EventKind, ExecEvent,
};
use aya_ebpf::{
    bindings::BPF_RB_FORCE_WAKEUP, helpers::bpf_ktime_get_ns, macros::tracepoint,
    programs::TracePointContext,
};

use crate::{
    helpers::{count, current_ids},
    maps::{floor, EVENTS},
};

/// `sched:sched_process_exec`.
#[tracepoint]
pub fn sched_process_exec(_ctx: TracePointContext) -> u32 {
    if floor() {
        return 0;
    }
    let (_, tgid, _) = current_ids();
    let Some(mut slot) = EVENTS.reserve::<ExecEvent>(0) else {
        count(PROGRAM_SCHED_PROCESS_EXEC, Stat::RingbufFull, 1);
        return 0;
    };
    // SAFETY: helper without preconditions.
    slot.write(ExecEvent {
        kind: EventKind::Exec as u32,
        tgid,
        ts_ns: unsafe { bpf_ktime_get_ns() },
    });
    // Wake the reader now: a new process's TLS library should be attached before its first
    // request, and execs are rare enough not to cost a wakeup storm.
    slot.submit(u64::from(BPF_RB_FORCE_WAKEUP));
    count(PROGRAM_SCHED_PROCESS_EXEC, Stat::ExecEvents, 1);
    0
}
