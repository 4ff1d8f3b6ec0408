//! The pending-request queue: FIFO pairing of final responses with requests (RFC 9112 §9.3),
//! with the barriers that keep pairing safe across losses (see the parent module's docs).
//!
//! Input: parsed requests and loss notices from [`super::message`]. Output: the request a final
//! response answers, and [`Completed`] exchanges.

use super::head::{Framing, RequestHead};
use super::message::Mode;
use super::{Completed, HttpExchange, Tracker, MAX_PENDING};
use crate::exchange::HttpVersion;

/// An entry of the pending queue.
#[derive(Debug)]
pub(super) enum Pending {
    Request(PendingRequest),
    /// A request we couldn't parse (counted already): its response is consumed silently.
    Skip,
    /// Bytes were lost in the request direction here: an unknown number of requests.
    Barrier,
}

/// A parsed request waiting for its final response.
#[derive(Debug)]
pub(super) struct PendingRequest {
    /// Tracker-local sequence number, to credit request body bytes after the head was queued.
    pub(super) id: u64,
    /// Exchange start (see the parent module's `# Units`).
    pub(super) start_ns: u64,
    pub(super) head: RequestHead,
    /// Request payload bytes read so far.
    pub(super) body_bytes: u64,
    /// False once records of this body were lost: `body_bytes` is then only a lower bound.
    pub(super) body_exact: bool,
}

/// A request whose final response head was parsed and whose response body is being read.
#[derive(Debug)]
pub(super) struct InFlight {
    pub(super) req: PendingRequest,
    pub(super) status: u16,
    /// Response payload bytes read so far.
    pub(super) body_bytes: u64,
}

impl Tracker {
    /// The oldest pending request, which a final response answers (see module docs).
    pub(super) fn pair(&mut self) -> Option<PendingRequest> {
        match self.pending.pop_front() {
            Some(Pending::Request(req)) => Some(req),
            Some(Pending::Skip) => None,
            Some(Pending::Barrier) => {
                self.stats.unpaired_response += 1;
                self.stats.dropped_by_gap += self.clear_pending();
                None
            }
            None => {
                self.stats.unpaired_response += 1;
                None
            }
        }
    }

    /// Queues `entry`, first clearing a queue of barriers only if no response is in progress,
    /// and dropping the whole queue (`pending_overflow`) when it is full.
    pub(super) fn enqueue(&mut self, entry: Pending) {
        let only_barriers = self.pending.iter().all(|p| matches!(p, Pending::Barrier));
        let response_idle = self.in_flight.is_none()
            && match self.response.mode {
                Mode::Head => self.response.head.is_empty(),
                Mode::Unsynced { .. } => true,
                Mode::Body(_) | Mode::Lost => false,
            };
        if only_barriers && response_idle && !matches!(entry, Pending::Barrier) {
            self.pending.clear();
        }
        if self.pending.len() >= MAX_PENDING {
            self.stats.pending_overflow += self.clear_pending();
            self.pending.push_back(Pending::Barrier);
        }
        self.pending.push_back(entry);
    }

    /// Empties the pending queue; returns how many real requests it held.
    pub(super) fn clear_pending(&mut self) -> u64 {
        let requests = self
            .pending
            .drain(..)
            .filter(|p| matches!(p, Pending::Request(_)));
        len_u64_iter(requests)
    }
}

impl Tracker {
    /// Completes an exchange. `response_body`: `None` when the response's size is unknown.
    /// The request's size is what was read; or, when records of it were lost or its body was still
    /// being read (a loss not yet revealed by the next record's sequence number), its declared
    /// `Content-Length`; or unknown.
    pub(super) fn emit(
        &self,
        out: &mut Vec<Completed>,
        req: PendingRequest,
        status: u16,
        response_body: Option<u64>,
        end_ns: u64,
    ) {
        let body_unfinished =
            req.id == self.request_body_id && matches!(self.request.mode, Mode::Body(_));
        emit(out, req, status, response_body, end_ns, body_unfinished);
    }
}

fn emit(
    out: &mut Vec<Completed>,
    req: PendingRequest,
    status: u16,
    response_body: Option<u64>,
    end_ns: u64,
    body_unfinished: bool,
) {
    let request_body = match (req.body_exact && !body_unfinished, req.head.framing) {
        (true, _) => Some(req.body_bytes),
        (false, Framing::Length(declared)) => Some(declared),
        (false, _) => None,
    };
    let head = req.head;
    out.push(Completed {
        start_ns: req.start_ns,
        end_ns: end_ns.max(req.start_ns),
        http: HttpExchange {
            method: head.method,
            path: head.path,
            version: if head.version_minor == 0 {
                HttpVersion::Http10
            } else {
                HttpVersion::Http11
            },
            host: head.host,
            user_agent: head.user_agent,
            traceparent: head.traceparent,
            status,
            request_body_bytes: request_body,
            response_body_bytes: response_body,
        },
    });
}

fn len_u64_iter<I: Iterator>(iter: I) -> u64 {
    iter.fold(0, |n, _| n.saturating_add(1))
}
