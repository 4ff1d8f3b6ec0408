//! Per-direction message framing: heads, bodies, holes and resync, for [`super::Tracker`].
//!
//! Input: the captured bytes and holes of one direction. Output: parsed request heads pushed to
//! the pending queue ([`super::queue`]), response heads paired with it, and completed exchanges
//! when a response ends. The resync and lost-framing rules are in the parent module's docs.

use super::body::{Body, BodyError};
use super::detect::{self, Fit};
use super::head::{self, Framing, HeadError, Parsed, RequestHead, ResponseHead};
use super::queue::{InFlight, Pending, PendingRequest};
use super::{Chunk, Completed, Side, State, Tracker, KEEP_HEAD_CAPACITY, MAX_HEAD_BYTES};

/// Parser state of one direction.
#[derive(Debug)]
pub(super) struct Half {
    pub(super) mode: Mode,
    /// Bytes of a head not complete yet (at most [`MAX_HEAD_BYTES`]).
    pub(super) head: Vec<u8>,
    /// When the first byte of `head` went by ([`Chunk::first_byte_ns`]).
    pub(super) head_start_ns: u64,
    /// `end_ns` of the latest chunk seen in this direction.
    pub(super) last_end_ns: u64,
}

#[derive(Debug)]
pub(super) enum Mode {
    /// Framing unknown: wait for a chunk that starts a message. `strict`: after a loss, a whole
    /// start line is required; at the connection's first chunk a short prefix is accepted.
    Unsynced { strict: bool },
    /// In sync: the next byte belongs to a head (`Half::head` holds its start, if any).
    Head,
    /// Reading a body.
    Body(Body),
    /// Response direction only: the in-flight response's chunked framing was lost in a hole.
    Lost,
}

/// Outcome of offering bytes to a head buffer.
enum HeadStep<T> {
    Partial,
    /// The head, and how many of the offered bytes it used.
    Complete(T, usize),
    Error(HeadError),
    TooLarge,
}

impl Tracker {
    pub(super) fn at_message_start(&self, side: Side) -> bool {
        let half = self.half(side);
        match half.mode {
            Mode::Unsynced { .. } => true,
            Mode::Head => half.head.is_empty(),
            Mode::Body(_) | Mode::Lost => false,
        }
    }

    /// Does `data` (a chunk start) start a message in `side`? If so, the direction is in sync.
    pub(super) fn try_resync(&mut self, side: Side, data: &[u8], strict: bool) -> bool {
        let fit = detect::start_line_fit(side, data);
        let short_prefix = fit == Fit::Prefix && data.len() < detect::MAX_PREFIX_FIT_BYTES;
        let synced = fit == Fit::Line || (!strict && short_prefix);
        if synced {
            let half = self.half_mut(side);
            half.mode = Mode::Head;
            half.head.clear();
        }
        synced
    }

    /// Reads head bytes from `rest`; returns how many were used.
    pub(super) fn step_head(
        &mut self,
        side: Side,
        rest: &[u8],
        chunk: Chunk<'_>,
        out: &mut Vec<Completed>,
    ) -> usize {
        if self.half(side).head.is_empty() {
            self.half_mut(side).head_start_ns = chunk.first_byte_ns(self.role, side);
            if side == Side::Request {
                self.on_request_begins(out);
            }
        }
        match side {
            Side::Request => match feed_head(&mut self.request.head, rest, head::parse_request) {
                HeadStep::Partial => rest.len(),
                HeadStep::Complete(head, used) => {
                    self.on_request_head(head);
                    used
                }
                HeadStep::Error(error) => {
                    self.count_head_error(side, error);
                    self.request.unsync();
                    self.enqueue(Pending::Skip);
                    rest.len()
                }
                HeadStep::TooLarge => {
                    self.stats.head_too_large += 1;
                    self.request.unsync();
                    self.enqueue(Pending::Skip);
                    rest.len()
                }
            },
            Side::Response => {
                match feed_head(&mut self.response.head, rest, head::parse_response) {
                    HeadStep::Partial => rest.len(),
                    HeadStep::Complete(head, used) => {
                        self.on_response_head(head, chunk.end_ns, out);
                        used
                    }
                    HeadStep::Error(error) => {
                        self.count_head_error(side, error);
                        self.pending.pop_front();
                        self.response.unsync();
                        rest.len()
                    }
                    HeadStep::TooLarge => {
                        self.stats.head_too_large += 1;
                        self.pending.pop_front();
                        self.response.unsync();
                        rest.len()
                    }
                }
            }
        }
    }

    fn on_request_head(&mut self, head: RequestHead) {
        self.seen_http = true;
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        self.request.mode = match head.framing {
            Framing::None | Framing::Length(0) | Framing::UntilClose => Mode::Head,
            Framing::Length(remaining) => Mode::Body(Body::Length { remaining }),
            Framing::Chunked => Mode::Body(Body::chunked()),
        };
        self.request_body_id = id;
        let start_ns = self.request.head_start_ns;
        self.enqueue(Pending::Request(PendingRequest {
            id,
            start_ns,
            head,
            body_bytes: 0,
            body_exact: true,
        }));
    }

    fn on_response_head(&mut self, head: ResponseHead, end_ns: u64, out: &mut Vec<Completed>) {
        self.seen_http = true;
        self.response.mode = Mode::Head;
        if head.is_interim() {
            return;
        }
        let req = self.pair();
        let method = req.as_ref().map(|req| req.head.method.as_str());
        let tunnel = method == Some("CONNECT") && (200..300).contains(&head.status);
        if head.status == 101 || tunnel {
            match req {
                // The answer to an `Upgrade: h2c` request comes as HTTP/2 on stream 1: handed
                // over (`Tracker::take_upgraded`), not reported as a `101` exchange.
                Some(req) if head.status == 101 && req.head.upgrade_h2c => {
                    let mut upgraded = Vec::with_capacity(1);
                    self.emit(&mut upgraded, req, head.status, Some(0), end_ns);
                    self.upgraded = upgraded.pop();
                }
                Some(req) => self.emit(out, req, head.status, Some(0), end_ns),
                None => {}
            }
            self.stats.protocol_switch += 1;
            self.stop(State::Switched);
            return;
        }
        let body = match head.framing(method) {
            Err(error) => {
                self.count_head_error(Side::Response, error);
                self.response.unsync();
                return;
            }
            Ok(Framing::None | Framing::Length(0)) => {
                if let Some(req) = req {
                    self.emit(out, req, head.status, Some(0), end_ns);
                }
                return;
            }
            Ok(Framing::Length(remaining)) => Body::Length { remaining },
            Ok(Framing::Chunked) => Body::chunked(),
            Ok(Framing::UntilClose) => Body::UntilClose,
        };
        self.response.mode = Mode::Body(body);
        self.in_flight = req.map(|req| InFlight {
            req,
            status: head.status,
            body_bytes: 0,
        });
    }

    /// Reads body bytes from `rest`; returns how many were used.
    pub(super) fn step_body(
        &mut self,
        side: Side,
        rest: &[u8],
        end_ns: u64,
        out: &mut Vec<Completed>,
    ) -> usize {
        let Mode::Body(body) = &mut self.half_mut(side).mode else {
            return 0;
        };
        match body.feed(rest) {
            Ok(progress) => {
                self.add_payload(side, progress.payload);
                if progress.done {
                    self.end_message(side, end_ns, out);
                }
                usize::try_from(progress.consumed).unwrap_or(rest.len())
            }
            Err(error) => {
                match error {
                    BodyError::BadChunkSize => self.stats.bad_chunk_size += 1,
                    BodyError::BadChunkDelimiter | BodyError::FramingInHole => {
                        self.stats.bad_chunk_delimiter += 1;
                    }
                }
                self.lose_framing(side, false);
                rest.len()
            }
        }
    }

    /// Skips a hole of `len` bytes after a chunk's captured data.
    pub(super) fn skip_hole(
        &mut self,
        side: Side,
        len: u64,
        end_ns: u64,
        out: &mut Vec<Completed>,
    ) {
        let mut left = len;
        while left > 0 {
            let half = self.half_mut(side);
            match &mut half.mode {
                Mode::Unsynced { .. } | Mode::Lost => return,
                Mode::Head => {
                    // A head (or its rest) is in the hole. On the response side it answered
                    // the oldest request, which is dropped with it.
                    self.stats.hole_in_head += 1;
                    if side == Side::Response {
                        self.pending.pop_front();
                    }
                    self.lose_framing(side, false);
                    return;
                }
                Mode::Body(body) => {
                    let Ok(progress) = body.skip(left) else {
                        // Counted raw: the message's size becomes an approximation.
                        self.add_payload(side, left);
                        self.stats.hole_in_chunk_framing += 1;
                        self.lose_framing(side, true);
                        return;
                    };
                    self.add_payload(side, progress.payload);
                    left = left.saturating_sub(progress.consumed);
                    if !progress.done {
                        return;
                    }
                    self.end_message(side, end_ns, out);
                }
            }
        }
    }

    /// The request whose body the request side is reading (queued, or already answered).
    fn body_request_mut(&mut self) -> Option<&mut PendingRequest> {
        let id = self.request_body_id;
        let in_flight = self.in_flight.as_mut().map(|f| &mut f.req);
        let queued = self.pending.iter_mut().filter_map(|p| match p {
            Pending::Request(req) => Some(req),
            Pending::Skip | Pending::Barrier => None,
        });
        queued.chain(in_flight).find(|req| req.id == id)
    }

    fn add_payload(&mut self, side: Side, n: u64) {
        match side {
            Side::Request => {
                if let Some(req) = self.body_request_mut() {
                    req.body_bytes = req.body_bytes.saturating_add(n);
                }
            }
            Side::Response => {
                if let Some(f) = &mut self.in_flight {
                    f.body_bytes = f.body_bytes.saturating_add(n);
                }
            }
        }
    }

    fn end_message(&mut self, side: Side, end_ns: u64, out: &mut Vec<Completed>) {
        self.half_mut(side).mode = Mode::Head;
        if side == Side::Response {
            if let Some(done) = self.in_flight.take() {
                self.emit(out, done.req, done.status, Some(done.body_bytes), end_ns);
            }
        }
    }

    /// Framing of `side` is lost. `keep_in_flight`: a response in progress may still be
    /// completed by the heuristics of [`Mode::Lost`].
    pub(super) fn lose_framing(&mut self, side: Side, keep_in_flight: bool) {
        match side {
            Side::Request => self.lose_request_framing(),
            Side::Response if keep_in_flight && self.in_flight.is_some() => {
                self.response.mode = Mode::Lost;
            }
            Side::Response => {
                self.in_flight = None;
                self.response.unsync();
            }
        }
    }

    pub(super) fn lose_request_framing(&mut self) {
        if matches!(self.request.mode, Mode::Body(_)) {
            // The body being read lost bytes: its size is no longer known by counting.
            if let Some(req) = self.body_request_mut() {
                req.body_exact = false;
            }
        }
        self.request.unsync();
        if !matches!(self.pending.back(), Some(Pending::Barrier)) {
            self.enqueue(Pending::Barrier);
        }
    }

    /// A response chunk while [`Mode::Lost`]; returns `false` if the chunk must be parsed.
    pub(super) fn continue_lost_response(
        &mut self,
        chunk: Chunk<'_>,
        hole: u64,
        out: &mut Vec<Completed>,
    ) -> bool {
        if detect::status_line_fit(chunk.data) == Fit::Line {
            self.finish_lost_response(self.response.last_end_ns, out);
            self.response.mode = Mode::Head;
            return false;
        }
        if let Some(f) = &mut self.in_flight {
            f.body_bytes = f.body_bytes.saturating_add(chunk.len);
        }
        let data = chunk.data;
        if hole == 0 && (data == b"0\r\n\r\n" || data.ends_with(b"\r\n0\r\n\r\n")) {
            self.finish_lost_response(chunk.end_ns, out);
        }
        true
    }

    /// A new request head starts: a lost response can't still be running unless pipelined.
    fn on_request_begins(&mut self, out: &mut Vec<Completed>) {
        let pipelined = self
            .pending
            .iter()
            .any(|p| matches!(p, Pending::Request(_)));
        if matches!(self.response.mode, Mode::Lost) && !pipelined {
            self.finish_lost_response(self.response.last_end_ns, out);
        }
    }

    fn finish_lost_response(&mut self, end_ns: u64, out: &mut Vec<Completed>) {
        if let Some(done) = self.in_flight.take() {
            self.stats.chunked_end_guessed += 1;
            self.emit(out, done.req, done.status, None, end_ns);
        }
        self.response.unsync();
    }

    pub(super) fn count_head_error(&mut self, side: Side, error: HeadError) {
        let counter = match (error, side) {
            (HeadError::Syntax, Side::Request) => &mut self.stats.bad_request_head,
            (HeadError::Syntax, Side::Response) => &mut self.stats.bad_response_head,
            (HeadError::BadContentLength, _) => &mut self.stats.bad_content_length,
            (HeadError::ConflictingLength, _) => &mut self.stats.conflicting_length,
            (HeadError::BadTransferEncoding, _) => &mut self.stats.bad_transfer_encoding,
        };
        *counter += 1;
        if !self.seen_http {
            self.note_junk(side);
        }
    }
}

impl Half {
    pub(super) fn new() -> Self {
        Self {
            mode: Mode::Unsynced { strict: false },
            head: Vec::new(),
            head_start_ns: 0,
            last_end_ns: 0,
        }
    }

    /// Framing lost: wait for a whole start line at a chunk start.
    pub(super) fn unsync(&mut self) {
        self.mode = Mode::Unsynced { strict: true };
        clear_head(&mut self.head);
    }
}

/// Offers `rest` to a head whose first bytes may already be in `buf`, bounded by
/// [`MAX_HEAD_BYTES`]. `buf` is left empty unless the result is [`HeadStep::Partial`].
fn feed_head<T>(
    buf: &mut Vec<u8>,
    rest: &[u8],
    parse: fn(&[u8]) -> Result<Parsed<T>, HeadError>,
) -> HeadStep<T> {
    let buffered = buf.len();
    let parsed = if buffered == 0 {
        parse(rest)
    } else {
        let room = MAX_HEAD_BYTES.saturating_sub(buffered).min(rest.len());
        buf.extend_from_slice(rest.get(..room).unwrap_or_default());
        parse(buf)
    };
    let step = match parsed {
        Ok(Parsed::Complete { head, len }) => {
            HeadStep::Complete(head, len.saturating_sub(buffered))
        }
        Ok(Parsed::Partial) => {
            if buffered == 0 && rest.len() < MAX_HEAD_BYTES {
                buf.extend_from_slice(rest);
            }
            if buf.is_empty() || buf.len() >= MAX_HEAD_BYTES {
                HeadStep::TooLarge
            } else {
                return HeadStep::Partial;
            }
        }
        Err(error) => HeadStep::Error(error),
    };
    clear_head(buf);
    step
}

fn clear_head(buf: &mut Vec<u8>) {
    if buf.capacity() > KEEP_HEAD_CAPACITY {
        *buf = Vec::new();
    } else {
        buf.clear();
    }
}
