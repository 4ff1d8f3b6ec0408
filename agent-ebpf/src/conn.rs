//! TCP connection lifecycle from `sock:inet_sock_set_state` (since 4.16).
//!
//! Emits a [`ConnEvent`] when a socket becomes `ESTABLISHED` (from `SYN_SENT`: the process
//! connected, a client; from `SYN_RECV`: it was accepted, a server) and when it reaches `CLOSE`.
//! Other transitions are not sent. Field offsets come from tracefs via `TP_LAYOUT`.

use agent_common::{
    event::{
        AF_INET, AF_INET6, CONN_FLAG_OWN, IPPROTO_TCP, TCP_CLOSE, TCP_ESTABLISHED, TCP_SYN_RECV,
        TCP_SYN_SENT,
    },
    stats::{Stat, PROGRAM_INET_SOCK_SET_STATE},
    ConnEvent, EventKind,
};
use aya_ebpf::{helpers::bpf_ktime_get_ns, macros::tracepoint, programs::TracePointContext};

use crate::{
    helpers::{count, current_ids},
    maps::{
        floor, self_tgid, tp_layout, wakeup_flags, EVENTS, SELF_SOCKS, SOCK_CAPTURE, SOCK_STATE,
    },
};

/// `sock:inet_sock_set_state`.
#[tracepoint]
pub fn inet_sock_set_state(ctx: TracePointContext) -> u32 {
    if floor() {
        return 0;
    }
    let l = tp_layout();
    // SAFETY: offsets come from this kernel's tracefs format file.
    let (protocol, family, oldstate, newstate) = unsafe {
        (
            ctx.read_at::<u16>(l.state_protocol as usize).unwrap_or(0),
            ctx.read_at::<u16>(l.state_family as usize).unwrap_or(0),
            ctx.read_at::<i32>(l.state_oldstate as usize).unwrap_or(0) as u32,
            ctx.read_at::<i32>(l.state_newstate as usize).unwrap_or(0) as u32,
        )
    };
    if protocol != IPPROTO_TCP || (family != AF_INET && family != AF_INET6) {
        return 0;
    }
    let opened =
        newstate == TCP_ESTABLISHED && (oldstate == TCP_SYN_SENT || oldstate == TCP_SYN_RECV);
    let closed = newstate == TCP_CLOSE;
    let connecting = newstate == TCP_SYN_SENT;
    if !opened && !closed && !connecting {
        return 0;
    }
    // SAFETY: as above.
    let sk = unsafe { ctx.read_at::<u64>(l.state_skaddr as usize) }.unwrap_or(0);
    let (_, tgid, _) = current_ids();
    if connecting {
        // `connect(2)` sets SYN_SENT in the caller's context; ESTABLISHED comes later in softirq,
        // where the current task is unrelated. Remember the agent's own sockets in between.
        if tgid == self_tgid() {
            let _ = SELF_SOCKS.insert(&sk, &1, 0);
        }
        return 0;
    }
    // SAFETY: plain map lookup of a `u8` value.
    let own = unsafe { SELF_SOCKS.get(&sk) }.is_some();
    // A new connection on this `sk` starts its streams at 0; so does a closed one (a syscall that
    // ends after the close, e.g. a write answered by a reset, must not carry stale offsets into
    // the next connection that reuses the address). Likewise its verdict: a new connection on a
    // reused address is judged afresh.
    if opened || closed {
        let _ = SOCK_STATE.remove(&sk);
        let _ = SOCK_CAPTURE.remove(&sk);
    }
    if closed {
        let _ = SELF_SOCKS.remove(&sk);
        crate::tls::forget_socket(sk);
    }
    let Some(mut slot) = EVENTS.reserve::<ConnEvent>(0) else {
        count(PROGRAM_INET_SOCK_SET_STATE, Stat::RingbufFull, 1);
        return 0;
    };
    let mut ev = ConnEvent {
        kind: EventKind::Conn as u32,
        family,
        flags: if own { CONN_FLAG_OWN } else { 0 },
        // SAFETY: helper without preconditions.
        ts_ns: unsafe { bpf_ktime_get_ns() },
        sk,
        oldstate,
        newstate,
        // SAFETY: as above.
        sport: unsafe { ctx.read_at::<u16>(l.state_sport as usize) }.unwrap_or(0),
        dport: unsafe { ctx.read_at::<u16>(l.state_dport as usize) }.unwrap_or(0),
        tgid,
        saddr: [0; 16],
        daddr: [0; 16],
    };
    // SAFETY: as above.
    unsafe {
        if family == AF_INET {
            ev.saddr[..4].copy_from_slice(
                &ctx.read_at::<[u8; 4]>(l.state_saddr as usize)
                    .unwrap_or([0; 4]),
            );
            ev.daddr[..4].copy_from_slice(
                &ctx.read_at::<[u8; 4]>(l.state_daddr as usize)
                    .unwrap_or([0; 4]),
            );
        } else {
            ev.saddr = ctx
                .read_at::<[u8; 16]>(l.state_saddr_v6 as usize)
                .unwrap_or([0; 16]);
            ev.daddr = ctx
                .read_at::<[u8; 16]>(l.state_daddr_v6 as usize)
                .unwrap_or([0; 16]);
        }
    }
    slot.write(ev);
    slot.submit(wakeup_flags(size_of::<ConnEvent>() as u64));
    count(PROGRAM_INET_SOCK_SET_STATE, Stat::ConnEvents, 1);
    0
}
