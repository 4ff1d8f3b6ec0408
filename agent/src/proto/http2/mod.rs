//! HTTP/2 (RFC 9113) and gRPC exchange parser, sans-IO: one connection's chunks in, one exchange
//! per stream out.
//!
//! Input: the [`Chunk`]s of one connection in syscall order per direction, gap and close notices.
//! Output: a [`Completed`] per stream: [`ExchangeKind::Rpc`] for gRPC calls (`content-type:
//! application/grpc*` or a `grpc-status`), [`ExchangeKind::Http`] otherwise; and [`ParseStats`].
//!
//! # What it follows
//! - The client preface (§3.4) at a connection seen from its start; SETTINGS (§6.5) for
//!   `SETTINGS_HEADER_TABLE_SIZE`; HEADERS + CONTINUATION (§6.2, §6.10) decoded with [`hpack`]
//!   (one decoder per direction, each mirroring the other end's encoder); DATA (§6.1) counted by
//!   length and never copied; RST_STREAM (§6.4); GOAWAY, PING, PRIORITY, WINDOW_UPDATE and unknown
//!   extension frames skipped by length; PUSH_PROMISE (§6.6) decoded to keep HPACK in step,
//!   counted and ignored.
//! - Streams multiplexed on one connection are separate exchanges, each timed from the first
//!   byte of its request HEADERS frame ([`Chunk::first_byte_ns`]) to the `end_ns` of the chunk
//!   holding its response's END_STREAM (trailers included). A connection that closes before a
//!   response's END_STREAM went by still reports it if its body reached its `content-length`
//!   (ending at that byte): clients close once they have the declared body.
//! - gRPC (<https://github.com/grpc/grpc/blob/master/doc/PROTOCOL-HTTP2.md>): a stream with
//!   `content-type: application/grpc*` or a `grpc-status`; when those fields are unknown (HPACK
//!   entries from before a join), a stream whose `content-type` is not known to be something else
//!   and whose connection carried gRPC before, or whose response ended with trailers. The method
//!   is the `:path`; the status is `grpc-status` from the trailers or a Trailers-Only response; without
//!   one, a non-200 `:status` is mapped as gRPC's HTTP-to-status table says. A stream reset
//!   (RST_STREAM) before its status ends the call as CANCELLED (CANCEL), or DEADLINE_EXCEEDED when
//!   the request's `grpc-timeout` had run out by then (within 2 %, at least 2 ms: encoders round the
//!   timeout), UNAVAILABLE (REFUSED_STREAM), RESOURCE_EXHAUSTED (ENHANCE_YOUR_CALM),
//!   PERMISSION_DENIED (INADEQUATE_SECURITY) or INTERNAL (any other code).
//!
//! # Holes, gaps and joins
//! DATA payloads are skipped by length, so a chunk's uncaptured tail inside a DATA frame costs
//! nothing. A hole over a header block loses that block (its stream's fields are unknown) and the
//! direction's HPACK table; a hole over a frame header, a [`Parser::on_gap`], or a frame header
//! breaking RFC 9113's rules loses the direction's framing until a chunk starts with a chain of
//! well-formed frames again. A connection joined mid-stream starts with an HPACK table whose
//! entries are unknown ([`hpack::Decoder::joined`]): fields referring to them are counted
//! (`hpack_unknown_index`); a stream whose `:method` or `:path` is unknown is still reported
//! when its status is known, with those fields empty (absent from its span, never guessed), and
//! counted (`request_headers_unknown`).
//!
//! # Redaction
//! Only `:method`, `:path` (query cut), `:authority`, `:status`, `content-type` (as a gRPC
//! flag), `grpc-status`, `grpc-timeout`, `user-agent` and `traceparent` leave the decoder; no
//! other header value, and no message byte, is kept (`grpc-message` may carry application data).

mod frame;
pub mod hpack;
mod stats;
#[cfg(test)]
mod tests;

use std::{collections::HashMap, mem};

use agent_common::Direction;

use self::frame::{flag, kind, Chain, FrameHeader, HEADER_BYTES, PREFACE};
pub use self::stats::ParseStats;
use super::{Chunk, Completed, Fit, Flow, Handoff, Parser, Side, Start};
use crate::exchange::{ExchangeKind, HttpExchange, HttpVersion, Role, RpcExchange, RpcSystem};

/// Largest header block (HEADERS + CONTINUATION payloads) decoded; a larger one is lost
/// (`header_block_lost`).
///
/// # Units
/// Bytes.
pub const MAX_HEADER_BLOCK_BYTES: usize = 64 * 1024;

/// Most streams followed at once on one connection (`stream_overflow` beyond).
pub const MAX_STREAMS: usize = 1024;

/// Longest header value kept (`:path`, `user-agent`...); longer ones are cut at a character
/// boundary.
///
/// # Units
/// Bytes.
pub const MAX_VALUE_BYTES: usize = 4096;

/// Capture size HTTP/2 sockets get ([`super::Spec::capture_bytes`]): one read often holds many
/// frames, and a header block cut by the capture's end is lost with the direction's HPACK table.
///
/// # Units
/// Bytes.
pub const CAPTURE_BYTES: u32 = agent_common::limits::PROTOCOL_CAPTURE_BYTES as u32;

/// HPACK table bound assumed for a connection joined mid-stream (bytes).
const JOINED_TABLE_BYTES: usize = 64 * 1024;

/// The largest frame payload RFC 9113 allows (§4.2: 2^24 - 1).
const MAX_FRAME_BYTES: u32 = (1 << 24) - 1;

/// [`super::Spec::detect`] for HTTP/2: [`Fit::Yes`] for the client preface (request side, at
/// least its first 4 bytes `PRI `), or for bytes that read as well-formed frames of the known
/// types (RFC 9113 §6) up to the default maximum size: ending exactly at the end of the capture,
/// or at least two frames with the last one running past it.
#[must_use]
pub fn detect(side: Side, data: &[u8], _first: bool) -> Fit {
    if side == Side::Request && data.len() >= 4 {
        let n = data.len().min(PREFACE.len());
        if data.get(..n) == PREFACE.get(..n) {
            return Fit::Yes;
        }
    }
    match frame::chain(data, frame::DETECT_MAX_FRAME_BYTES, true) {
        Chain::Exact { .. } => Fit::Yes,
        Chain::Open { frames } if frames >= 2 => Fit::Yes,
        Chain::Open { .. } | Chain::Broken => Fit::No,
    }
}

/// [`super::Spec::new`] for HTTP/2.
#[must_use]
pub fn new_parser(role: Role, start: Start) -> Box<dyn Parser> {
    Box::new(Http2Parser::new(role, start))
}

/// Where each direction is in its frame sequence.
#[derive(Debug, Default)]
struct Reader {
    /// Frame boundaries are known.
    synced: bool,
    /// Bytes of the client preface still expected (request side, at the connection's start).
    preface_left: usize,
    /// A frame header being read.
    header: [u8; HEADER_BYTES],
    header_len: usize,
    /// When the frame being read started ([`Chunk::first_byte_ns`] of its first byte's chunk).
    frame_start_ns: u64,
    /// The frame whose payload is being read.
    current: Option<Current>,
    /// A header block waiting for its CONTINUATION frames.
    block: Option<Block>,
}

impl Reader {
    fn lose_framing(&mut self) {
        self.synced = false;
        self.preface_left = 0;
        self.header_len = 0;
        self.current = None;
        self.block = None;
    }
}

/// A frame whose payload is being read.
#[derive(Debug)]
struct Current {
    header: FrameHeader,
    /// Payload bytes still to come.
    left: u32,
    /// The payload prefix kept ([`keep_bytes`] of it).
    payload: Vec<u8>,
    /// Some payload bytes that should have been kept were not captured.
    truncated: bool,
    started_ns: u64,
}

/// A header block (RFC 9113 §4.3) being assembled.
#[derive(Debug)]
struct Block {
    stream: u32,
    end_stream: bool,
    /// A PUSH_PROMISE's block: decoded for HPACK's sake only.
    promise: bool,
    bytes: Vec<u8>,
    /// Some of it was not captured.
    lost: bool,
    started_ns: u64,
}

/// The fields kept from one header block (see the module's `# Redaction`).
#[derive(Debug, Default)]
struct Fields {
    method: Option<String>,
    path: Option<String>,
    authority: Option<String>,
    status: Option<u16>,
    /// `content-type` was decoded (whatever its value).
    content_type_known: bool,
    grpc_content_type: bool,
    grpc_status: Option<u32>,
    grpc_timeout_ns: Option<u64>,
    /// `content-length` (RFC 9113 §8.1.1: the DATA payloads must add up to it).
    content_length: Option<u64>,
    user_agent: Option<String>,
    traceparent: Option<String>,
}

/// One stream's request and what of its response has arrived.
#[derive(Debug)]
struct Stream {
    start_ns: u64,
    /// The request's header fields; `None` when its block was lost.
    request: Option<Fields>,
    /// Final `:status` of the response (1xx skipped).
    status: Option<u16>,
    /// gRPC by its own markers (`content-type: application/grpc*`, `grpc-status`).
    grpc: bool,
    /// The request's `content-type` was decoded and is not gRPC's.
    not_grpc: bool,
    grpc_status: Option<u32>,
    /// Response header blocks seen (decoded or lost); a second one with END_STREAM is trailers.
    response_blocks: u8,
    /// The response ended with a trailers block, as gRPC responses do (plain HTTP rarely).
    trailers: bool,
    /// The response's `content-length`.
    response_length: Option<u64>,
    /// When the response body reached its `content-length` (the `end_ns` of that chunk): the
    /// response is whole even if its END_STREAM never comes (a client that stops reading once it
    /// has the declared body, and closes).
    body_done_ns: Option<u64>,
    /// DATA payload bytes per side (`[request, response]`); `None` once some were unknown.
    bytes: [Option<u64>; 2],
}

impl Stream {
    /// A stream whose request's first byte went by at `start_ns` (`request`: its header fields,
    /// `None` when lost; `request_bytes`: its DATA payload bytes so far), nothing of its response
    /// seen yet. gRPC or not by the request's `content-type`, when decoded.
    fn new(start_ns: u64, request: Option<Fields>, request_bytes: Option<u64>) -> Self {
        Self {
            start_ns,
            grpc: request.as_ref().is_some_and(|f| f.grpc_content_type),
            not_grpc: request
                .as_ref()
                .is_some_and(|f| f.content_type_known && !f.grpc_content_type),
            request,
            status: None,
            grpc_status: None,
            response_blocks: 0,
            trailers: false,
            response_length: None,
            body_done_ns: None,
            bytes: [request_bytes, Some(0)],
        }
    }
}

/// The HTTP/2 parser of one connection; see the module docs.
#[derive(Debug)]
struct Http2Parser {
    role: Role,
    /// Indexed by [`side_index`].
    readers: [Reader; 2],
    /// HPACK decoders, indexed like `readers`: the request side's mirrors the client's encoder.
    decoders: [hpack::Decoder; 2],
    streams: HashMap<u32, Stream>,
    /// A stream of this connection was gRPC by its own markers: a channel carries only gRPC, so a
    /// stream whose markers went unknown (HPACK entries from before a join or a loss) is too.
    grpc_seen: bool,
    stats: ParseStats,
    flow: Flow,
}

fn side_index(side: Side) -> usize {
    match side {
        Side::Request => 0,
        Side::Response => 1,
    }
}

/// Payload bytes of a frame the parser needs to see (the rest is skipped by length).
fn keep_bytes(h: &FrameHeader) -> usize {
    match h.kind {
        kind::HEADERS | kind::CONTINUATION | kind::PUSH_PROMISE => MAX_HEADER_BLOCK_BYTES,
        kind::RST_STREAM | kind::GOAWAY => 8,
        // Six bytes per setting (§6.5.1); the table size is all that matters here.
        kind::SETTINGS => 6 * 16,
        kind::DATA if h.flags & flag::PADDED != 0 => 1,
        _ => 0,
    }
}

impl Http2Parser {
    fn new(role: Role, start: Start) -> Self {
        let from_start = start == Start::Beginning;
        let decoder = || {
            if from_start {
                hpack::Decoder::new()
            } else {
                // The SETTINGS that set the table's bound went by before the join: assume the
                // largest common one (browsers advertise 64 KiB). Too high only keeps entries
                // longer than the encoder does, and it never refers to those.
                let mut d = hpack::Decoder::joined();
                d.set_max_table_size(JOINED_TABLE_BYTES);
                d
            }
        };
        let mut readers = [Reader::default(), Reader::default()];
        for r in &mut readers {
            r.synced = from_start;
        }
        if from_start {
            readers[0].preface_left = PREFACE.len();
        }
        Self {
            role,
            readers,
            decoders: [decoder(), decoder()],
            streams: HashMap::new(),
            grpc_seen: false,
            stats: ParseStats::default(),
            flow: Flow::Parsing,
        }
    }

    /// At a chunk start of an unsynced direction: does the chunk start at a frame boundary (or
    /// with the preface)? Then framing is known again from here.
    fn try_resync(&mut self, side: Side, data: &[u8]) -> bool {
        let r = &mut self.readers[side_index(side)];
        if side == Side::Request && data.starts_with(PREFACE) {
            r.synced = true;
            r.preface_left = PREFACE.len();
            return true;
        }
        match frame::chain(data, MAX_FRAME_BYTES, true) {
            Chain::Exact { .. } => {}
            Chain::Open { frames } if frames >= 2 => {}
            Chain::Open { .. } | Chain::Broken => return false,
        }
        r.synced = true;
        true
    }

    fn read(&mut self, side: Side, chunk: Chunk<'_>, out: &mut Vec<Completed>) {
        let i = side_index(side);
        let data = chunk.data;
        if !self.readers[i].synced && !self.try_resync(side, data) {
            self.stats.unsynced_chunks += 1;
            return;
        }
        let mut pos = 0usize;
        while let Some(rest) = data.get(pos..).filter(|r| !r.is_empty()) {
            let r = &mut self.readers[i];
            if r.preface_left > 0 {
                let done = PREFACE.len() - r.preface_left;
                let n = r.preface_left.min(rest.len());
                if rest.get(..n) != PREFACE.get(done..done + n) {
                    self.stats.bad_preface += 1;
                    self.flow = Flow::NotMine;
                    return;
                }
                r.preface_left -= n;
                pos += n;
                continue;
            }
            if let Some(cur) = &mut r.current {
                let n = (cur.left as usize).min(rest.len());
                let room = keep_bytes(&cur.header).saturating_sub(cur.payload.len());
                if let Some(kept) = rest.get(..n.min(room)) {
                    cur.payload.extend_from_slice(kept);
                }
                cur.truncated |= n > room && keep_bytes(&cur.header) == MAX_HEADER_BLOCK_BYTES;
                cur.left -= n as u32;
                pos += n;
                if cur.left == 0 {
                    if let Some(done) = r.current.take() {
                        self.on_frame(side, done, chunk, out);
                    }
                }
                continue;
            }
            if r.header_len == 0 {
                r.frame_start_ns = chunk.first_byte_ns(self.role, side);
            }
            let n = (HEADER_BYTES - r.header_len).min(rest.len());
            if let (Some(dst), Some(src)) = (
                r.header.get_mut(r.header_len..r.header_len + n),
                rest.get(..n),
            ) {
                dst.copy_from_slice(src);
            }
            r.header_len += n;
            pos += n;
            if r.header_len < HEADER_BYTES {
                continue;
            }
            r.header_len = 0;
            let reserved = r.header[5] & 0x80 != 0;
            let header = FrameHeader::parse(&r.header);
            if !header.is_plausible(reserved) {
                self.stats.bad_frame += 1;
                self.lose_direction(side);
                return;
            }
            let cur = Current {
                header,
                left: header.len,
                payload: Vec::new(),
                truncated: false,
                started_ns: r.frame_start_ns,
            };
            if header.len == 0 {
                self.on_frame(side, cur, chunk, out);
            } else {
                r.current = Some(cur);
            }
            if self.flow != Flow::Parsing {
                return;
            }
        }
        self.skip_hole(side, chunk, out);
    }

    /// The chunk's uncaptured tail: skipped by length inside a frame payload, framing lost
    /// anywhere else.
    fn skip_hole(&mut self, side: Side, chunk: Chunk<'_>, out: &mut Vec<Completed>) {
        let hole = chunk.hole();
        if hole == 0 {
            return;
        }
        let r = &mut self.readers[side_index(side)];
        let inside = r.preface_left == 0
            && r.header_len == 0
            && r.current
                .as_ref()
                .is_some_and(|c| u64::from(c.left) >= hole);
        if !inside {
            self.stats.hole_in_frame_header += 1;
            self.lose_direction(side);
            return;
        }
        if let Some(cur) = &mut r.current {
            cur.left -= hole as u32;
            cur.truncated |= keep_bytes(&cur.header) > cur.payload.len();
            if cur.left == 0 {
                if let Some(done) = r.current.take() {
                    self.on_frame(side, done, chunk, out);
                }
            }
        }
    }

    /// Framing of `side` is lost: so are its HPACK table and the block in progress; a loss in
    /// the response direction may hide the end of every open stream, which are dropped.
    fn lose_direction(&mut self, side: Side) {
        let i = side_index(side);
        self.readers[i].lose_framing();
        self.decoders[i].lose_sync();
        if side == Side::Response {
            self.stats.dropped_by_gap += self.streams.len() as u64;
            self.streams.clear();
        }
    }

    fn on_frame(&mut self, side: Side, cur: Current, chunk: Chunk<'_>, out: &mut Vec<Completed>) {
        let h = cur.header;
        match h.kind {
            kind::DATA => self.on_data(side, &cur, chunk, out),
            kind::HEADERS | kind::PUSH_PROMISE => {
                let promise = h.kind == kind::PUSH_PROMISE;
                if promise {
                    self.stats.push_promise += 1;
                }
                let fragment = strip_padding_and_priority(&cur, promise);
                let block = Block {
                    stream: h.stream,
                    end_stream: !promise && h.flags & flag::END_STREAM != 0,
                    promise,
                    bytes: fragment.map(<[u8]>::to_vec).unwrap_or_default(),
                    lost: fragment.is_none() || cur.truncated,
                    started_ns: cur.started_ns,
                };
                self.on_block_fragment(side, block, h.flags, chunk, out);
            }
            kind::CONTINUATION => {
                let i = side_index(side);
                match self.readers[i].block.take() {
                    Some(mut block) if block.stream == h.stream => {
                        block.lost |= cur.truncated;
                        if !block.lost
                            && block.bytes.len() + cur.payload.len() > MAX_HEADER_BLOCK_BYTES
                        {
                            block.lost = true;
                        }
                        if !block.lost {
                            block.bytes.extend_from_slice(&cur.payload);
                        }
                        self.on_block_fragment(side, block, h.flags, chunk, out);
                    }
                    // Only a CONTINUATION of the block in progress is legal (§6.10).
                    _ => {
                        self.stats.bad_frame += 1;
                        self.lose_direction(side);
                    }
                }
            }
            kind::RST_STREAM => {
                let code = cur
                    .payload
                    .get(..4)
                    .and_then(|b| <[u8; 4]>::try_from(b).ok())
                    .map(u32::from_be_bytes);
                self.on_reset(h.stream, code, chunk, out);
            }
            kind::SETTINGS if h.flags & flag::ACK == 0 => {
                // SETTINGS_HEADER_TABLE_SIZE from one end bounds the other end's encoder,
                // which the other side's decoder mirrors.
                for setting in cur.payload.as_chunks::<6>().0 {
                    if let [0, 1, a, b, c, d] = *setting {
                        let size = u32::from_be_bytes([a, b, c, d]) as usize;
                        let other = 1 - side_index(side);
                        self.decoders[other].set_max_table_size(size);
                    }
                }
            }
            kind::GOAWAY => self.stats.goaway += 1,
            _ => {}
        }
    }

    fn on_data(&mut self, side: Side, cur: &Current, chunk: Chunk<'_>, out: &mut Vec<Completed>) {
        let h = cur.header;
        let Some(stream) = self.streams.get_mut(&h.stream) else {
            if side == Side::Response && h.flags & flag::END_STREAM != 0 {
                self.stats.unpaired_response += 1;
            }
            return;
        };
        let payload = if h.flags & flag::PADDED != 0 {
            cur.payload
                .first()
                .and_then(|pad| h.len.checked_sub(1 + u32::from(*pad)))
        } else {
            Some(h.len)
        };
        let slot = &mut stream.bytes[side_index(side)];
        *slot = match (*slot, payload) {
            (Some(sum), Some(n)) => Some(sum.saturating_add(u64::from(n))),
            _ => None,
        };
        if side == Side::Response
            && stream.response_length.is_some()
            && stream.bytes[1] == stream.response_length
        {
            stream.body_done_ns = Some(chunk.end_ns);
        }
        if side == Side::Response && h.flags & flag::END_STREAM != 0 {
            self.complete(h.stream, chunk.end_ns, out);
        }
    }

    fn on_block_fragment(
        &mut self,
        side: Side,
        block: Block,
        flags: u8,
        chunk: Chunk<'_>,
        out: &mut Vec<Completed>,
    ) {
        if flags & flag::END_HEADERS == 0 {
            self.readers[side_index(side)].block = Some(block);
            return;
        }
        let fields = self.decode(side, &block);
        if block.promise {
            return;
        }
        match side {
            Side::Request => self.on_request_headers(block, fields),
            Side::Response => self.on_response_headers(block, fields, chunk, out),
        }
    }

    /// Decodes a complete block with the side's HPACK decoder (always, to keep its table in
    /// step); `None` when the block or its decoding was lost.
    fn decode(&mut self, side: Side, block: &Block) -> Option<Fields> {
        let decoder = &mut self.decoders[side_index(side)];
        if block.lost {
            self.stats.header_block_lost += 1;
            decoder.lose_sync();
            return None;
        }
        let mut fields = Fields::default();
        let mut unknown = 0u64;
        let result = decoder.decode(&block.bytes, |field| match field {
            hpack::Field::Known { name, value } => keep_field(&mut fields, &name, &value),
            hpack::Field::Unknown { .. } => unknown += 1,
        });
        self.stats.hpack_unknown_index += unknown;
        if result.is_err() {
            self.stats.hpack_error += 1;
            return None;
        }
        Some(fields)
    }

    fn on_request_headers(&mut self, block: Block, fields: Option<Fields>) {
        if self.streams.contains_key(&block.stream) {
            // Request trailers: nothing kept from them.
            return;
        }
        if self.streams.len() >= MAX_STREAMS {
            self.stats.stream_overflow += 1;
            return;
        }
        self.streams
            .insert(block.stream, Stream::new(block.started_ns, fields, Some(0)));
    }

    fn on_response_headers(
        &mut self,
        block: Block,
        fields: Option<Fields>,
        chunk: Chunk<'_>,
        out: &mut Vec<Completed>,
    ) {
        let Some(stream) = self.streams.get_mut(&block.stream) else {
            self.stats.unpaired_response += 1;
            return;
        };
        if let Some(f) = fields {
            if stream.status.is_none() {
                // 1xx interim responses (RFC 9113 §8.1) are followed by the final one.
                stream.status = f.status.filter(|s| *s >= 200);
            }
            stream.grpc |= f.grpc_content_type || f.grpc_status.is_some();
            stream.grpc_status = f.grpc_status.or(stream.grpc_status);
            if stream.status.is_some() && stream.response_length.is_none() {
                stream.response_length = f.content_length;
                if f.content_length == Some(0) {
                    stream.body_done_ns = Some(chunk.end_ns);
                }
            }
        }
        stream.response_blocks = stream.response_blocks.saturating_add(1);
        stream.trailers |= block.end_stream && stream.response_blocks > 1;
        if block.end_stream {
            self.complete(block.stream, chunk.end_ns, out);
        }
    }

    /// RST_STREAM (§6.4) from either end.
    fn on_reset(&mut self, id: u32, code: Option<u32>, chunk: Chunk<'_>, out: &mut Vec<Completed>) {
        let grpc_seen = self.grpc_seen;
        let Some(stream) = self.streams.get_mut(&id) else {
            return;
        };
        let grpc = is_grpc(grpc_seen, stream);
        if grpc && stream.grpc_status.is_none() {
            let elapsed = chunk.end_ns.saturating_sub(stream.start_ns);
            let timeout = stream.request.as_ref().and_then(|f| f.grpc_timeout_ns);
            stream.grpc_status = Some(reset_status(code, elapsed, timeout));
        } else if grpc || stream.status.is_none() {
            // A gRPC call that has its status already, or an HTTP stream with no status yet.
            self.streams.remove(&id);
            self.stats.reset_before_response += 1;
            return;
        }
        stream.bytes[1] = None;
        self.complete(id, chunk.end_ns, out);
    }

    /// The response of stream `id` ended at `end_ns`: its exchange is reported.
    fn complete(&mut self, id: u32, end_ns: u64, out: &mut Vec<Completed>) {
        let Some(stream) = self.streams.remove(&id) else {
            return;
        };
        // A request whose block was lost, or whose `:method`/`:path` referred to table entries
        // from before the join, is still reported when its status is known: the unknown fields
        // stay empty (absent from the span), never guessed.
        let grpc = is_grpc(self.grpc_seen, &stream);
        self.grpc_seen |= stream.grpc;
        let request = stream.request.unwrap_or_default();
        let unknown_fields = request.method.is_none() || request.path.is_none();
        let kind = if grpc {
            let status = stream
                .grpc_status
                .or_else(|| stream.status.filter(|s| *s != 200).map(http_to_grpc_status));
            if status.is_none() {
                // `grpc-status` referred to a table entry from before a join or a loss: the
                // call is reported without it.
                self.stats.grpc_status_unknown += 1;
            }
            ExchangeKind::Rpc(RpcExchange {
                system: RpcSystem::Grpc,
                method: request
                    .path
                    .as_deref()
                    .unwrap_or_default()
                    .trim_start_matches('/')
                    .to_owned(),
                status,
                authority: request.authority,
                user_agent: request.user_agent,
                traceparent: request.traceparent,
                request_bytes: stream.bytes[0],
                response_bytes: stream.bytes[1],
            })
        } else {
            let Some(status) = stream.status else {
                self.stats.response_headers_unknown += 1;
                return;
            };
            ExchangeKind::Http(HttpExchange {
                method: request.method.unwrap_or_default(),
                path: request.path.unwrap_or_default(),
                version: HttpVersion::Http2,
                host: request.authority,
                user_agent: request.user_agent,
                traceparent: request.traceparent,
                status,
                request_body_bytes: stream.bytes[0],
                response_body_bytes: stream.bytes[1],
            })
        };
        if unknown_fields {
            self.stats.request_headers_unknown += 1;
        }
        out.push(Completed {
            start_ns: stream.start_ns,
            end_ns: end_ns.max(stream.start_ns),
            kind,
        });
    }
}

impl Parser for Http2Parser {
    fn on_chunk(&mut self, dir: Direction, chunk: Chunk<'_>, out: &mut Vec<Completed>) {
        if self.flow != Flow::Parsing {
            return;
        }
        let side = Side::of(self.role, dir);
        self.read(side, chunk, out);
    }

    fn on_gap(&mut self, dir: Direction) {
        self.stats.gap += 1;
        self.lose_direction(Side::of(self.role, dir));
    }

    fn on_close(&mut self, _ts_ns: u64, out: &mut Vec<Completed>) {
        // A response whose body reached its `content-length` is whole: it ends at that byte even
        // though its END_STREAM never went by (curl closes once it has the declared body, before
        // reading a trailing empty DATA frame with END_STREAM). Everything else is unanswered.
        let mut done: Vec<(u32, u64)> = self
            .streams
            .iter()
            .filter(|(_, s)| s.status.is_some() && !s.grpc)
            .filter_map(|(id, s)| s.body_done_ns.map(|t| (*id, t)))
            .collect();
        done.sort_unstable();
        for (id, end_ns) in done {
            self.complete(id, end_ns, out);
        }
        self.stats.unanswered_at_close += self.streams.len() as u64;
        self.streams.clear();
    }

    fn flow(&self) -> Flow {
        self.flow
    }

    fn accept_handoff(&mut self, handoff: Handoff) {
        match handoff {
            // RFC 7540 §3.2: the upgraded request is stream 1 (half-closed by the client); the
            // server answers it first on the new connection.
            Handoff::H2cUpgrade { start_ns, request } => {
                let fields = Fields {
                    method: Some(request.method),
                    path: Some(request.path),
                    authority: request.host,
                    user_agent: request.user_agent,
                    traceparent: request.traceparent,
                    ..Fields::default()
                };
                // No `content-type` among the fields: neither gRPC nor known not to be.
                self.streams.insert(
                    1,
                    Stream::new(start_ns, Some(fields), request.request_body_bytes),
                );
            }
        }
    }

    fn take_counters(&mut self, add: &mut dyn FnMut(&'static str, u64)) {
        for (reason, n) in mem::take(&mut self.stats).iter() {
            if n > 0 {
                add(reason, n);
            }
        }
    }
}

/// Whether `stream` is a gRPC call: by its own markers; else, unless its `content-type` said
/// otherwise, when its connection carried gRPC before (`grpc_seen`) or its response ended with
/// trailers.
fn is_grpc(grpc_seen: bool, stream: &Stream) -> bool {
    stream.grpc || (!stream.not_grpc && (grpc_seen || stream.trailers))
}

/// The header block fragment of a HEADERS (or PUSH_PROMISE) frame: without the Pad Length byte
/// and padding, the priority fields (HEADERS) or the promised stream id (PUSH_PROMISE). `None`
/// when the frame is too short for what its flags announce, or its prefix was not captured.
fn strip_padding_and_priority(cur: &Current, promise: bool) -> Option<&[u8]> {
    let flags = cur.header.flags;
    let mut start = 0usize;
    let mut pad = 0usize;
    if flags & flag::PADDED != 0 {
        pad = usize::from(*cur.payload.first()?);
        start = 1;
    }
    if promise {
        start += 4;
    } else if flags & flag::PRIORITY != 0 {
        start += 5;
    }
    let end = (cur.header.len as usize).checked_sub(pad)?;
    if start > end {
        return None;
    }
    // A truncated payload is flagged by the caller; keep what there is.
    let end = end.min(cur.payload.len());
    cur.payload.get(start.min(end)..end)
}

/// Keeps `name: value` in `fields` if it is one of the named ones.
fn keep_field(fields: &mut Fields, name: &[u8], value: &[u8]) {
    let text = || cut(value);
    match name {
        b":method" => fields.method = Some(text()),
        b":path" => {
            let path = value
                .iter()
                .position(|b| *b == b'?' || *b == b'#')
                .map_or(value, |i| value.get(..i).unwrap_or_default());
            fields.path = Some(cut(path));
        }
        b":authority" => fields.authority = Some(text()),
        b"host" if fields.authority.is_none() => fields.authority = Some(text()),
        b":status" => {
            fields.status = std::str::from_utf8(value).ok().and_then(|s| s.parse().ok());
        }
        b"content-type" => {
            fields.content_type_known = true;
            fields.grpc_content_type = value.starts_with(b"application/grpc");
        }
        b"grpc-status" => {
            fields.grpc_status = std::str::from_utf8(value).ok().and_then(|s| s.parse().ok());
        }
        b"grpc-timeout" => fields.grpc_timeout_ns = parse_grpc_timeout(value),
        b"content-length" => {
            fields.content_length = std::str::from_utf8(value).ok().and_then(|s| s.parse().ok());
        }
        b"user-agent" => fields.user_agent = Some(text()),
        b"traceparent" => fields.traceparent = Some(text()),
        _ => {}
    }
}

/// A header value as text, at most [`MAX_VALUE_BYTES`], invalid UTF-8 replaced.
fn cut(value: &[u8]) -> String {
    let mut s = String::from_utf8_lossy(value.get(..MAX_VALUE_BYTES).unwrap_or(value)).into_owned();
    if value.len() > MAX_VALUE_BYTES {
        // The cut may have split a character: drop the replacement it became.
        while s.ends_with('\u{fffd}') {
            s.pop();
        }
    }
    s
}

/// `grpc-timeout` (`1S`, `250m`, `100000u`: at most 8 digits and a unit, H M S m u n) in ns.
fn parse_grpc_timeout(value: &[u8]) -> Option<u64> {
    let (unit, digits) = value.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    let ns_per = match unit {
        b'H' => 3_600_000_000_000,
        b'M' => 60_000_000_000,
        b'S' => 1_000_000_000,
        b'm' => 1_000_000,
        b'u' => 1_000,
        b'n' => 1,
        _ => return None,
    };
    n.checked_mul(ns_per)
}

/// The gRPC status of a call reset (RST_STREAM `code`) after `elapsed_ns`, given the request's
/// `grpc-timeout`: see the module docs.
fn reset_status(code: Option<u32>, elapsed_ns: u64, timeout_ns: Option<u64>) -> u32 {
    const CANCEL: u32 = 0x8;
    match code {
        Some(CANCEL) => {
            let expired = timeout_ns.is_some_and(|t| {
                let slack = (t / 50).max(2_000_000);
                elapsed_ns.saturating_add(slack) >= t
            });
            if expired {
                4
            } else {
                1
            }
        }
        // REFUSED_STREAM: UNAVAILABLE.
        Some(0x7) => 14,
        // ENHANCE_YOUR_CALM: RESOURCE_EXHAUSTED.
        Some(0xb) => 8,
        // INADEQUATE_SECURITY: PERMISSION_DENIED.
        Some(0xc) => 7,
        _ => 13,
    }
}

/// gRPC's mapping of an HTTP status without `grpc-status` (doc/http-grpc-status-mapping.md).
fn http_to_grpc_status(status: u16) -> u32 {
    match status {
        400 => 13,
        401 => 16,
        403 => 7,
        404 => 12,
        429 | 502 | 503 | 504 => 14,
        _ => 2,
    }
}
