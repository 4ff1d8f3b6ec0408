//! HTTP/2 frame headers (RFC 9113 §4.1) and the checks that tell a frame boundary from random
//! bytes, shared by detection and resync.
//!
//! # Wire format
//! ```text
//! +-----------------------------------------------+
//! |                 Length (24)                   |
//! +---------------+---------------+---------------+
//! |   Type (8)    |   Flags (8)   |
//! +-+-------------+---------------+-------------------------------+
//! |R|                 Stream Identifier (31)                      |
//! +=+=============================================================+
//! |                   Frame Payload (Length octets)             ...
//! +---------------------------------------------------------------+
//! ```

/// Bytes of a frame header.
pub(super) const HEADER_BYTES: usize = 9;

/// The client connection preface (RFC 9113 §3.4), before the client's first SETTINGS frame.
pub(super) const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Largest frame payload accepted when judging whether bytes are frames: the initial
/// `SETTINGS_MAX_FRAME_SIZE` (RFC 9113 §6.5.2). Once following a connection, any length up to
/// 2^24 - 1 is accepted (a peer may raise the limit).
pub(super) const DETECT_MAX_FRAME_BYTES: u32 = 16_384;

/// Frame types (RFC 9113 §6).
pub(super) mod kind {
    pub(in super::super) const DATA: u8 = 0x0;
    pub(in super::super) const HEADERS: u8 = 0x1;
    pub(in super::super) const PRIORITY: u8 = 0x2;
    pub(in super::super) const RST_STREAM: u8 = 0x3;
    pub(in super::super) const SETTINGS: u8 = 0x4;
    pub(in super::super) const PUSH_PROMISE: u8 = 0x5;
    pub(in super::super) const PING: u8 = 0x6;
    pub(in super::super) const GOAWAY: u8 = 0x7;
    pub(in super::super) const WINDOW_UPDATE: u8 = 0x8;
    pub(in super::super) const CONTINUATION: u8 = 0x9;
}

/// Frame flags (RFC 9113 §6).
pub(super) mod flag {
    /// DATA, HEADERS: last frame of the stream from this endpoint.
    pub(in super::super) const END_STREAM: u8 = 0x1;
    /// SETTINGS, PING: acknowledgement.
    pub(in super::super) const ACK: u8 = 0x1;
    /// HEADERS, PUSH_PROMISE, CONTINUATION: the header block ends here.
    pub(in super::super) const END_HEADERS: u8 = 0x4;
    /// DATA, HEADERS, PUSH_PROMISE: a Pad Length byte and padding.
    pub(in super::super) const PADDED: u8 = 0x8;
    /// HEADERS: the 5 priority bytes (RFC 7540 §6.2, deprecated but still sent).
    pub(in super::super) const PRIORITY: u8 = 0x20;
}

/// A parsed frame header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct FrameHeader {
    /// Payload length, bytes.
    pub(super) len: u32,
    /// Frame type ([`kind`]).
    pub(super) kind: u8,
    /// Flags ([`flag`]).
    pub(super) flags: u8,
    /// Stream identifier (reserved bit cleared).
    pub(super) stream: u32,
}

impl FrameHeader {
    /// Parses the 9 header bytes.
    pub(super) fn parse(b: &[u8; HEADER_BYTES]) -> Self {
        let [l0, l1, l2, kind, flags, s0, s1, s2, s3] = *b;
        Self {
            len: u32::from_be_bytes([0, l0, l1, l2]),
            kind,
            flags,
            stream: u32::from_be_bytes([s0 & 0x7f, s1, s2, s3]),
        }
    }

    /// Whether the header is consistent with RFC 9113's rules for its type (the fixed payload
    /// sizes and which types belong to stream 0). Unknown types (extensions) are accepted: a
    /// receiver ignores them (§4.1, §5.5).
    pub(super) fn is_plausible(&self, reserved_bit: bool) -> bool {
        if reserved_bit {
            return false;
        }
        let on_stream = self.stream != 0;
        match self.kind {
            kind::DATA | kind::HEADERS | kind::CONTINUATION | kind::PUSH_PROMISE => on_stream,
            kind::PRIORITY => on_stream && self.len == 5,
            kind::RST_STREAM => on_stream && self.len == 4,
            kind::SETTINGS => {
                !on_stream
                    && self.len.is_multiple_of(6)
                    && (self.flags & flag::ACK == 0 || self.len == 0)
            }
            kind::PING => !on_stream && self.len == 8,
            kind::GOAWAY => !on_stream && self.len >= 8,
            kind::WINDOW_UPDATE => self.len == 4,
            _ => true,
        }
    }
}

/// Reads the frame header at the start of `data`, if 9 bytes are there.
pub(super) fn header_at(data: &[u8]) -> Option<(FrameHeader, bool)> {
    let bytes: &[u8; HEADER_BYTES] = data.get(..HEADER_BYTES)?.try_into().ok()?;
    let reserved = bytes[5] & 0x80 != 0;
    Some((FrameHeader::parse(bytes), reserved))
}

/// How a run of bytes reads as a sequence of frames from its first byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Chain {
    /// Some header is implausible, or the bytes end inside a frame header.
    Broken,
    /// `frames` plausible frames end exactly at the end of the bytes.
    Exact { frames: usize },
    /// `frames` plausible frames, the last running past the end of the bytes (a truncated
    /// capture or a frame continued in the next syscall).
    Open { frames: usize },
}

/// Walks `data` as frames with payloads of at most `max_len` bytes (§4.2), known types only
/// when `known_only` (detection: extension frames are too rare to count as evidence).
pub(super) fn chain(data: &[u8], max_len: u32, known_only: bool) -> Chain {
    let mut pos = 0usize;
    let mut frames = 0usize;
    loop {
        let Some(rest) = data.get(pos..) else {
            return Chain::Broken;
        };
        if rest.is_empty() {
            return if frames > 0 {
                Chain::Exact { frames }
            } else {
                Chain::Broken
            };
        }
        let Some((h, reserved)) = header_at(rest) else {
            return Chain::Broken;
        };
        if h.len > max_len
            || !h.is_plausible(reserved)
            || (known_only && h.kind > kind::CONTINUATION)
        {
            return Chain::Broken;
        }
        frames += 1;
        let end = HEADER_BYTES.saturating_add(h.len as usize);
        if end > rest.len() {
            return Chain::Open { frames };
        }
        pos = pos.saturating_add(end);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SETTINGS: [u8; 15] = [0, 0, 6, 4, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 100];
    const WINDOW: [u8; 13] = [0, 0, 4, 8, 0, 0, 0, 0, 0, 0, 0x0f, 0, 1];

    #[test]
    fn headers_parse_and_are_checked_by_type() {
        let (h, reserved) = header_at(&SETTINGS).unwrap();
        assert_eq!(
            h,
            FrameHeader {
                len: 6,
                kind: kind::SETTINGS,
                flags: 0,
                stream: 0
            }
        );
        assert!(!reserved && h.is_plausible(false));
        let rst_on_zero = FrameHeader {
            len: 4,
            kind: kind::RST_STREAM,
            flags: 0,
            stream: 0,
        };
        assert!(!rst_on_zero.is_plausible(false));
        let ping_short = FrameHeader {
            len: 7,
            kind: kind::PING,
            flags: 0,
            stream: 0,
        };
        assert!(!ping_short.is_plausible(false));
    }

    #[test]
    fn chains_of_frames_are_told_from_other_bytes() {
        let mut two = SETTINGS.to_vec();
        two.extend_from_slice(&WINDOW);
        assert_eq!(chain(&two, 16_384, true), Chain::Exact { frames: 2 });
        assert_eq!(chain(&two[..20], 16_384, true), Chain::Broken);
        let mut open = two.clone();
        open.extend_from_slice(&[0, 0x10, 0, 0, 0, 0, 0, 0, 1, b'x']);
        assert_eq!(chain(&open, 16_384, true), Chain::Open { frames: 3 });
        assert_eq!(
            chain(b"GET / HTTP/1.1\r\n\r\n", 16_384, true),
            Chain::Broken
        );
        assert_eq!(chain(b"", 16_384, true), Chain::Broken);
    }
}
