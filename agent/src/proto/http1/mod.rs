//! HTTP/1.x exchange tracker (RFC 9112): pairs requests with their final responses on one
//! connection, sans-IO.
//!
//! Input: the [`Chunk`]s of one TCP connection, each with its [`Direction`], in syscall order per
//! direction, plus gap and close notices. Output: a [`Completed`] per request/response exchange,
//! and [`ParseStats`] counting everything dropped or skipped, by reason.
//!
//! # Wire format (RFC 9112 §2.1)
//! ```text
//!  request  (server: Ingress, client: Egress)      response (server: Egress, client: Ingress)
//! +---------------------------------------+      +---------------------------------------+
//! | GET /users/42?x=1 HTTP/1.1 CRLF       |      | HTTP/1.1 200 OK CRLF                  |
//! | Host: api CRLF                        |      | Transfer-Encoding: chunked CRLF       |
//! | CRLF                                  |      | CRLF                                  |
//! +---------------------------------------+      | 5 CRLF hello CRLF 0 CRLF CRLF         |
//!                                                +---------------------------------------+
//! ```
//!
//! # What it follows
//! - Persistent connections and pipelining (RFC 9112 §9.3): requests queue up FIFO; each final
//!   response pairs with the oldest pending request. `1xx` interim responses are skipped
//!   (RFC 9110 §15.2); `101 Switching Protocols` (and `2xx` to `CONNECT`) completes the exchange
//!   and stops tracking: the rest of the connection is not HTTP/1.x.
//! - Body length (RFC 9112 §6.3): no body for `HEAD` responses, `1xx`, `204`, `304` and requests
//!   without `Content-Length`/`Transfer-Encoding`; `Content-Length`; chunked (§7.1, extensions and
//!   trailers); otherwise a response runs until the connection closes ([`Tracker::on_close`]).
//! - Heads and bodies split across any number of chunks, and many messages in one chunk.
//!
//! # Holes, gaps and resync
//! A chunk's uncaptured tail (a *hole*, [`Chunk::len`] beyond [`Chunk::data`]) is skipped by
//! length inside a body or chunk data. A hole where a head or a chunk-size line should be read
//! loses the framing of that direction, as does [`Tracker::on_gap`]. A direction without framing
//! (also the initial state: the agent may join a connection mid-stream) only restarts at the
//! start of a chunk (a syscall boundary) that begins with a request line (request direction) or
//! an `HTTP/1.x NNN` status line (response direction). At the very first chunk of a direction a
//! short consistent prefix (`G`, `HTTP/1.`) is accepted too, so a head split byte by byte from
//! the connection's first byte is still followed.
//!
//! Pairing is kept safe across losses: a request-direction loss may have hidden requests, so a
//! *barrier* is queued; a response that meets a barrier is dropped and the queue cleared (every
//! drop counted). A barrier alone in the queue is cleared when a new request arrives while no
//! response is in progress (a non-pipelining client only sends it once every earlier response
//! arrived). A response-direction gap drops every pending request. With pipelining and losses a
//! mispair stays possible; that is the limit of what the bytes tell.
//!
//! A chunked response whose framing was lost in a hole is not dropped at once. It is completed,
//! with an approximate body size (every raw byte from the loss on counts, chunk framing
//! included) and counted
//! as `chunked_end_guessed`, when: a later chunk of it is fully captured and ends with the last
//! chunk (`0 CRLF CRLF`); or a chunk starts with a status line (the next response); or the next
//! request starts while no other request is pending (a non-pipelining client waits for the whole
//! response); or the connection closes (it ends at its last chunk then). A response lost by a gap
//! (unknown bytes) is dropped instead.
//!
//! # Units
//! Times are `CLOCK_MONOTONIC` ns from the chunks. An exchange starts at the chunk holding the
//! first request byte (server: its read's `end_ns`; client: its write's `start_ns`) and ends at the
//! `end_ns` of the chunk holding the last response byte. Body sizes are in bytes, chunk framing
//! excluded.
//!
//! # Redaction
//! Only the method, the path (query and fragment cut, RFC 9112 §3.2), `Host`, `User-Agent` and
//! `traceparent` leave the parser; no other header value is stored.

mod body;
mod detect;
mod head;
mod message;
mod queue;
mod stats;
#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::mem;

use agent_common::Direction;

pub use detect::looks_like_http1;
pub use stats::ParseStats;

use self::body::Body;
use self::detect::Fit as LineFit;
use self::message::{Half, Mode};
use self::queue::{InFlight, Pending};
use super::{Chunk, Fit, Flow, Handoff, Parser, Side, Start};
use crate::exchange::{ExchangeKind, HttpExchange, Role};

/// Largest head (start line + header section) buffered per direction; also bounds trailers.
///
/// # Units
/// Bytes. Beyond it the head is dropped (`head_too_large`) and the direction resyncs.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;

/// Largest chunk-size accepted (RFC 9112 §7.1 leaves it open; bigger is `bad_chunk_size`).
///
/// # Units
/// Bytes (4 GiB).
pub const MAX_CHUNK_BYTES: u64 = 1 << 32;

/// Most requests waiting for a response; beyond, the queue is dropped (`pending_overflow`).
pub const MAX_PENDING: usize = 32;

/// Chunks per direction that must fail to look like HTTP/1.x (with nothing ever parsed) before
/// [`Tracker::is_not_http`] turns true.
pub const NOT_HTTP_CHUNKS: u8 = 3;

/// A head buffer whose capacity grew past this is freed once the head is parsed.
const KEEP_HEAD_CAPACITY: usize = 4096;

/// One completed HTTP/1.x exchange.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Completed {
    /// First request byte, monotonic ns (see the module's `# Units`).
    pub start_ns: u64,
    /// Last response byte, monotonic ns; never before `start_ns`.
    pub end_ns: u64,
    /// Redacted request and response summary.
    pub http: HttpExchange,
}

/// Tracks the HTTP/1.x exchanges of one connection; see the module docs.
#[derive(Debug)]
pub struct Tracker {
    role: Role,
    request: Half,
    response: Half,
    /// Requests waiting for their final response, oldest first.
    pending: VecDeque<Pending>,
    /// The request whose response body is being read (`None`: an unpaired response).
    in_flight: Option<InFlight>,
    /// Id of the request whose body the request direction is reading.
    request_body_id: u64,
    next_id: u64,
    stats: ParseStats,
    /// A head was parsed at least once: the connection is HTTP/1.x.
    seen_http: bool,
    /// Chunks that didn't look like HTTP/1.x while `!seen_http`: `[request, response]`.
    junk_chunks: [u8; 2],
    state: State,
    /// The request a `101` answered after `Upgrade: h2c`, for the HTTP/2 parser that follows.
    upgraded: Option<Completed>,
    /// Where, in the chunk that switched the protocol, the next protocol's bytes start.
    rest_at: usize,
}

/// Whether the connection is still followed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Http,
    NotHttp,
    /// `101` or a `CONNECT` tunnel: the bytes that follow are another protocol.
    Switched,
}

impl Tracker {
    /// A tracker for a connection on which the observed process plays `role`.
    #[must_use]
    pub fn new(role: Role) -> Self {
        Self {
            role,
            request: Half::new(),
            response: Half::new(),
            pending: VecDeque::new(),
            in_flight: None,
            request_body_id: 0,
            next_id: 0,
            stats: ParseStats::default(),
            seen_http: false,
            junk_chunks: [0; 2],
            state: State::Http,
            upgraded: None,
            rest_at: 0,
        }
    }

    /// The request a `101 Switching Protocols` answered after `Upgrade: h2c` (RFC 7540 §3.2):
    /// its HTTP/2 answer comes on stream 1, so it is handed to the HTTP/2 parser instead of being
    /// reported (its `status` is the `101`).
    pub fn take_upgraded(&mut self) -> Option<Completed> {
        self.upgraded.take()
    }

    /// Feeds one syscall's chunk in direction `dir`; completed exchanges are appended to `out`.
    ///
    /// Chunks of one direction must come in syscall order; a kernel sequence gap must be
    /// reported with [`Self::on_gap`] before the next chunk of that direction. Does nothing once
    /// [`Self::is_not_http`] is true.
    pub fn on_chunk(&mut self, dir: Direction, chunk: Chunk<'_>, out: &mut Vec<Completed>) {
        if self.state != State::Http {
            return;
        }
        let side = Side::of(self.role, dir);
        let data = chunk.data;
        let hole = chunk.hole();
        if side == Side::Request && self.at_message_start(side) && detect::is_h2_preface(data) {
            self.give_up();
            return;
        }
        if side == Side::Response
            && matches!(self.response.mode, Mode::Lost)
            && self.continue_lost_response(chunk, hole, out)
        {
            self.response.last_end_ns = chunk.end_ns;
            return;
        }
        if let Mode::Unsynced { strict } = self.half(side).mode {
            if !self.try_resync(side, data, strict) {
                self.stats.unsynced_chunks += 1;
                if !data.is_empty() {
                    self.note_junk(side);
                }
                self.half_mut(side).last_end_ns = chunk.end_ns;
                return;
            }
        }
        let mut pos = 0;
        while let Some(rest) = data.get(pos..).filter(|rest| !rest.is_empty()) {
            let consumed = match self.half(side).mode {
                Mode::Head => self.step_head(side, rest, chunk, out),
                Mode::Body(_) => self.step_body(side, rest, chunk.end_ns, out),
                Mode::Unsynced { .. } | Mode::Lost => break,
            };
            if self.state == State::Switched {
                self.rest_at = pos.saturating_add(consumed);
            }
            if self.state != State::Http || consumed == 0 {
                return;
            }
            pos = pos.saturating_add(consumed);
        }
        if hole > 0 {
            self.skip_hole(side, hole, chunk.end_ns, out);
        }
        self.half_mut(side).last_end_ns = chunk.end_ns;
    }

    /// Records were lost in `dir` (a kernel sequence gap of unknown content): that direction
    /// resyncs. A request-direction gap queues a barrier; a response-direction gap drops the
    /// in-flight and pending requests (`dropped_by_gap`), since their responses may be lost.
    pub fn on_gap(&mut self, dir: Direction) {
        if self.state != State::Http {
            return;
        }
        self.stats.gap += 1;
        match Side::of(self.role, dir) {
            Side::Request => self.lose_request_framing(),
            Side::Response => {
                let dropped = self.clear_pending() + u64::from(self.in_flight.take().is_some());
                self.stats.dropped_by_gap += dropped;
                self.response.unsync();
            }
        }
    }

    /// The connection closed (or an EOF was read). A response delimited by close is completed
    /// (ending at its last chunk, per the timing rule, so `_ts_ns` is not needed); everything else
    /// in progress is dropped and counted (`unanswered_at_close`, `truncated_at_close`).
    pub fn on_close(&mut self, _ts_ns: u64, out: &mut Vec<Completed>) {
        if self.state != State::Http {
            return;
        }
        match (&self.response.mode, self.in_flight.take()) {
            (Mode::Body(Body::UntilClose), Some(done)) => {
                let end_ns = self.response.last_end_ns;
                self.emit(out, done.req, done.status, Some(done.body_bytes), end_ns);
            }
            // A chunked response whose framing fell in a hole ends with its connection at the
            // latest: reported, ending at its last chunk, as `chunked_end_guessed`.
            (Mode::Lost, Some(done)) => {
                self.stats.chunked_end_guessed += 1;
                let end_ns = self.response.last_end_ns;
                self.emit(out, done.req, done.status, None, end_ns);
            }
            (_, Some(_)) => self.stats.truncated_at_close += 1,
            (_, None) => {}
        }
        if !self.request.head.is_empty() {
            self.stats.truncated_at_close += 1;
        }
        self.stats.unanswered_at_close += self.clear_pending();
        self.request.unsync();
        self.response.unsync();
    }

    /// Counters accumulated since the last call, which resets them.
    pub fn take_stats(&mut self) -> ParseStats {
        mem::take(&mut self.stats)
    }

    /// True once the connection switched protocol (`101`, or `2xx` to `CONNECT`): the bytes
    /// that follow are another protocol's.
    #[must_use]
    pub fn is_switched(&self) -> bool {
        self.state == State::Switched
    }

    /// Once [`Self::is_switched`]: the offset, in the captured bytes of the chunk whose response
    /// head switched the protocol, where the next protocol's bytes start.
    #[must_use]
    pub fn switched_at(&self) -> usize {
        self.rest_at
    }

    /// True once this connection is known not to carry HTTP/1.x: nothing ever parsed and
    /// [`NOT_HTTP_CHUNKS`] chunks each way that don't look like it, or an HTTP/2 preface, or
    /// after a protocol switch (`101`, `CONNECT`). Further input is ignored.
    #[must_use]
    pub fn is_not_http(&self) -> bool {
        self.state != State::Http
    }

    fn half(&self, side: Side) -> &Half {
        match side {
            Side::Request => &self.request,
            Side::Response => &self.response,
        }
    }

    fn half_mut(&mut self, side: Side) -> &mut Half {
        match side {
            Side::Request => &mut self.request,
            Side::Response => &mut self.response,
        }
    }

    /// A chunk of `side` didn't look like HTTP/1.x; give up after enough of them both ways.
    fn note_junk(&mut self, side: Side) {
        if self.seen_http {
            return;
        }
        let [request, response] = &mut self.junk_chunks;
        let count = match side {
            Side::Request => request,
            Side::Response => response,
        };
        *count = count.saturating_add(1);
        if self.junk_chunks.iter().all(|n| *n >= NOT_HTTP_CHUNKS) {
            self.give_up();
        }
    }

    fn give_up(&mut self) {
        self.stats.not_http += 1;
        self.stop(State::NotHttp);
    }

    /// Stops tracking for good and frees the buffers.
    fn stop(&mut self, state: State) {
        self.state = state;
        self.pending = VecDeque::new();
        self.in_flight = None;
        self.request = Half::new();
        self.response = Half::new();
    }

    /// Heap bytes held, for the boundedness tests.
    #[cfg(test)]
    fn buffered_bytes(&self) -> usize {
        let pending = self.pending.iter().map(|p| match p {
            Pending::Request(req) => {
                let h = &req.head;
                let optional = [&h.host, &h.user_agent, &h.traceparent];
                h.method.len()
                    + h.path.len()
                    + optional
                        .iter()
                        .filter_map(|s| s.as_deref())
                        .map(str::len)
                        .sum::<usize>()
            }
            Pending::Skip | Pending::Barrier => 0,
        });
        self.request.head.capacity() + self.response.head.capacity() + pending.sum::<usize>()
    }
}

/// [`super::Spec::detect`] for HTTP/1.x: [`Fit::Yes`] for a chunk starting with a request line
/// (request side) or a status line (response side) up to the version or status code;
/// [`Fit::Maybe`] for a short consistent prefix (`G`, `HTTP/1.`) at the first chunk of a direction
/// seen from the connection's start.
#[must_use]
pub fn detect(side: Side, data: &[u8], first: bool) -> Fit {
    match detect::start_line_fit(side, data) {
        LineFit::Line => Fit::Yes,
        LineFit::Prefix
            if first && !data.is_empty() && data.len() < detect::MAX_PREFIX_FIT_BYTES =>
        {
            Fit::Maybe
        }
        LineFit::Prefix | LineFit::No => Fit::No,
    }
}

/// [`super::Spec::new`] for HTTP/1.x. The tracker resyncs on message starts by itself, so where it
/// starts does not matter.
#[must_use]
pub fn new_parser(role: Role, _start: Start) -> Box<dyn Parser> {
    Box::new(Http1Parser {
        tracker: Tracker::new(role),
        completed: Vec::new(),
    })
}

/// [`Tracker`] behind the protocol-agnostic [`Parser`] interface.
#[derive(Debug)]
struct Http1Parser {
    tracker: Tracker,
    /// Reused buffer of the tracker's own completions.
    completed: Vec<Completed>,
}

impl Http1Parser {
    fn convert(&mut self, out: &mut Vec<super::Completed>) {
        out.extend(self.completed.drain(..).map(|c| super::Completed {
            start_ns: c.start_ns,
            end_ns: c.end_ns,
            kind: ExchangeKind::Http(c.http),
        }));
    }
}

impl Parser for Http1Parser {
    fn on_chunk(&mut self, dir: Direction, chunk: Chunk<'_>, out: &mut Vec<super::Completed>) {
        self.tracker.on_chunk(dir, chunk, &mut self.completed);
        self.convert(out);
    }

    fn on_gap(&mut self, dir: Direction) {
        self.tracker.on_gap(dir);
    }

    fn on_close(&mut self, ts_ns: u64, out: &mut Vec<super::Completed>) {
        self.tracker.on_close(ts_ns, &mut self.completed);
        self.convert(out);
    }

    fn take_handoff(&mut self) -> Option<Handoff> {
        self.tracker.take_upgraded().map(|c| Handoff::H2cUpgrade {
            start_ns: c.start_ns,
            request: c.http,
        })
    }

    fn flow(&self) -> Flow {
        if self.tracker.is_switched() {
            Flow::Switched {
                rest_at: self.tracker.switched_at(),
            }
        } else if self.tracker.is_not_http() {
            Flow::NotMine
        } else {
            Flow::Parsing
        }
    }

    fn take_counters(&mut self, add: &mut dyn FnMut(&'static str, u64)) {
        // Called after every record: most find nothing to report.
        if self.tracker.stats == ParseStats::default() {
            return;
        }
        for (reason, n) in self.tracker.take_stats().iter() {
            if n > 0 {
                add(reason, n);
            }
        }
    }
}

/// `data.len()` as `u64` (lossless on every target Sonde runs on; saturates otherwise).
fn len_u64(data: &[u8]) -> u64 {
    u64::try_from(data.len()).unwrap_or(u64::MAX)
}
