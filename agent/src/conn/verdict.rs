//! Per-socket verdicts for the kernel (map `SOCK_CAPTURE`): what userspace decided about a
//! connection, queued here by the connection table and applied by the capture task after each
//! ring-buffer drain.
//!
//! A verdict is a capture size (a protocol that needs more than the global one, HTTP/2) or
//! [`SKIP_SOCKET`] (an ignored or opaque connection: the kernel then sends no record for the
//! socket's syscalls). The kernel drops a socket's verdict when the socket opens or closes; the
//! table also asks for its removal when the connection ends here, because a verdict applied after
//! the kernel already saw the close would otherwise stick to the next connection on that address.
//! A verdict whose connection ended before it was applied is simply never applied.

use std::collections::HashSet;

pub(super) use agent_common::limits::SKIP_SOCKET;

/// The queue of verdicts to apply, and the sockets that have one.
#[derive(Debug, Default)]
pub(super) struct Verdicts {
    /// `(sk, Some(verdict))` to set, `(sk, None)` to remove; oldest first.
    requests: Vec<(u64, Option<u32>)>,
    /// Sockets with a verdict set or queued.
    marked: HashSet<u64>,
}

impl Verdicts {
    /// Queues `verdict` (a capture size or [`SKIP_SOCKET`]) for socket `sk`.
    pub(super) fn set(&mut self, sk: u64, verdict: u32) {
        self.marked.insert(sk);
        self.requests.push((sk, Some(verdict)));
    }

    /// The connection on `sk` ended: its verdict goes, unless it was never applied.
    pub(super) fn forget(&mut self, sk: u64) {
        if !self.marked.remove(&sk) {
            return;
        }
        let queued = self.requests.len();
        self.requests.retain(|(s, _)| *s != sk);
        if self.requests.len() == queued {
            self.requests.push((sk, None));
        }
    }

    /// The requests queued since the last call, oldest first.
    pub(super) fn take(&mut self) -> std::vec::Drain<'_, (u64, Option<u32>)> {
        self.requests.drain(..)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_applied_verdict_is_removed_and_an_unapplied_one_dropped() {
        let mut v = Verdicts::default();
        v.set(1, SKIP_SOCKET);
        assert_eq!(v.take().collect::<Vec<_>>(), [(1, Some(SKIP_SOCKET))]);
        v.set(2, 16384);
        // Socket 1's verdict was applied: removing it is asked for. Socket 2's never was.
        v.forget(1);
        v.forget(2);
        v.forget(3);
        assert_eq!(v.take().collect::<Vec<_>>(), [(1, None)]);
    }
}
