//! Message body framing: counts body bytes by `Content-Length`, chunked coding or until close.
//!
//! Input: body bytes of one message, captured ([`Body::feed`]) or a hole of known size
//! ([`Body::skip`]). Output: how many input bytes belong to the body, how many of them are
//! payload (chunked framing excluded), and whether the body ended. Nothing is buffered: every
//! state fits in a few integers, so a split anywhere costs nothing.
//!
//! # Wire format (RFC 9112 §7.1)
//! ```text
//! chunked-body = *chunk last-chunk trailer-section CRLF
//! chunk        = chunk-size [ chunk-ext ] CRLF chunk-data CRLF     (1a;name=val\r\n<26 bytes>\r\n)
//! last-chunk   = 1*("0") [ chunk-ext ] CRLF                         (0\r\n)
//! trailer-section = *( field-line CRLF )                            (Digest: x\r\n)
//! ```
//! A hole can be skipped inside chunk data and its CRLF (known sizes), never inside a
//! chunk-size line or the trailer section: that is [`BodyError::FramingInHole`].

use super::{len_u64, MAX_CHUNK_BYTES, MAX_HEAD_BYTES};

/// Longest chunk-size line accepted, extensions included.
const MAX_CHUNK_LINE_BYTES: usize = 4096;

/// A body being read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Body {
    /// `Content-Length`: bytes still to come.
    Length { remaining: u64 },
    /// Chunked transfer coding.
    Chunked(Chunked),
    /// Delimited by the connection closing: never ends by itself.
    UntilClose,
}

/// State of a chunked body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Chunked {
    /// In the hex chunk-size (`value` so far, `digits` read).
    Size { value: u64, digits: u8 },
    /// After the size: `BWS`, `;ext`, up to the LF. `line` bytes of the line read so far.
    SizeTail {
        value: u64,
        in_ext: bool,
        line: usize,
    },
    /// In chunk data.
    Data { remaining: u64 },
    /// Expecting the CRLF after chunk data (`seen_cr`: the CR was read).
    DataEnd { seen_cr: bool },
    /// In the trailer section: `line` bytes of the current field line, `total` of all of them.
    Trailer { line: usize, total: usize },
}

/// What a call consumed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Progress {
    /// Input bytes that belong to this body (the rest starts the next message).
    pub(super) consumed: u64,
    /// Payload bytes among them (chunk-size lines, CRLFs and trailers excluded).
    pub(super) payload: u64,
    /// The body ended inside the input.
    pub(super) done: bool,
}

/// Why the framing of a body was lost. Each maps to one [`super::ParseStats`] reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum BodyError {
    /// Chunk-size not hex, above [`MAX_CHUNK_BYTES`], or its line too long.
    BadChunkSize,
    /// Chunk data not followed by CRLF, or a trailer section above [`MAX_HEAD_BYTES`].
    BadChunkDelimiter,
    /// A hole covers a chunk-size line or the trailer section.
    FramingInHole,
}

impl Body {
    /// A chunked body before its first chunk-size line.
    pub(super) fn chunked() -> Self {
        Self::Chunked(Chunked::Size {
            value: 0,
            digits: 0,
        })
    }

    /// Reads captured bytes.
    ///
    /// # Errors
    /// [`BodyError::BadChunkSize`] or [`BodyError::BadChunkDelimiter`]: framing is lost.
    pub(super) fn feed(&mut self, data: &[u8]) -> Result<Progress, BodyError> {
        match self {
            Self::Length { remaining } => Ok(take_length(remaining, len_u64(data))),
            Self::UntilClose => {
                let n = len_u64(data);
                Ok(Progress {
                    consumed: n,
                    payload: n,
                    done: false,
                })
            }
            Self::Chunked(state) => state.feed(data),
        }
    }

    /// Skips a hole of `len` bytes whose content is unknown.
    ///
    /// # Errors
    /// [`BodyError::FramingInHole`] when the hole reaches a chunk-size line or the trailers.
    pub(super) fn skip(&mut self, len: u64) -> Result<Progress, BodyError> {
        match self {
            Self::Length { remaining } => Ok(take_length(remaining, len)),
            Self::UntilClose => Ok(Progress {
                consumed: len,
                payload: len,
                done: false,
            }),
            Self::Chunked(state) => state.skip(len),
        }
    }
}

fn take_length(remaining: &mut u64, available: u64) -> Progress {
    let n = available.min(*remaining);
    *remaining -= n;
    Progress {
        consumed: n,
        payload: n,
        done: *remaining == 0,
    }
}

impl Chunked {
    fn feed(&mut self, data: &[u8]) -> Result<Progress, BodyError> {
        let mut progress = Progress::default();
        let mut i = 0;
        while let Some(rest) = data.get(i..).filter(|rest| !rest.is_empty()) {
            if let Self::Data { remaining } = self {
                // Bulk path: chunk data is counted, not looked at.
                let n = len_u64(rest).min(*remaining);
                *remaining -= n;
                progress.payload += n;
                i = i.saturating_add(usize::try_from(n).unwrap_or(usize::MAX));
                if *remaining == 0 {
                    *self = Self::DataEnd { seen_cr: false };
                }
                continue;
            }
            let Some(&b) = rest.first() else { break };
            i += 1;
            if self.step(b)? {
                progress.done = true;
                break;
            }
        }
        progress.consumed = len_u64(data.get(..i).unwrap_or(data));
        Ok(progress)
    }

    /// Advances over one framing byte; `Ok(true)` when it ends the body.
    fn step(&mut self, b: u8) -> Result<bool, BodyError> {
        match *self {
            Self::Size { value, digits } => match (b as char).to_digit(16) {
                Some(d) => {
                    let value = value
                        .checked_mul(16)
                        .map(|v| v + u64::from(d))
                        .filter(|v| *v <= MAX_CHUNK_BYTES)
                        .ok_or(BodyError::BadChunkSize)?;
                    *self = Self::Size {
                        value,
                        digits: digits.saturating_add(1),
                    };
                }
                None if digits == 0 => return Err(BodyError::BadChunkSize),
                None => {
                    *self = Self::SizeTail {
                        value,
                        in_ext: false,
                        line: 0,
                    };
                    return self.step(b);
                }
            },
            Self::SizeTail {
                value,
                in_ext,
                line,
            } => {
                let line = line.saturating_add(1);
                if line > MAX_CHUNK_LINE_BYTES {
                    return Err(BodyError::BadChunkSize);
                }
                match b {
                    b'\n' if value == 0 => *self = Self::Trailer { line: 0, total: 0 },
                    b'\n' => *self = Self::Data { remaining: value },
                    b';' => {
                        *self = Self::SizeTail {
                            value,
                            in_ext: true,
                            line,
                        }
                    }
                    b' ' | b'\t' | b'\r' => {
                        *self = Self::SizeTail {
                            value,
                            in_ext,
                            line,
                        }
                    }
                    _ if in_ext => {
                        *self = Self::SizeTail {
                            value,
                            in_ext,
                            line,
                        }
                    }
                    _ => return Err(BodyError::BadChunkSize),
                }
            }
            Self::Data { .. } => {}
            Self::DataEnd { seen_cr } => match b {
                b'\r' if !seen_cr => *self = Self::DataEnd { seen_cr: true },
                // A bare LF is accepted as a line terminator (RFC 9112 §2.2).
                b'\n' => {
                    *self = Self::Size {
                        value: 0,
                        digits: 0,
                    }
                }
                _ => return Err(BodyError::BadChunkDelimiter),
            },
            Self::Trailer { line, total } => {
                let total = total.saturating_add(1);
                if total > MAX_HEAD_BYTES {
                    return Err(BodyError::BadChunkDelimiter);
                }
                match b {
                    b'\n' if line == 0 => return Ok(true),
                    b'\n' => *self = Self::Trailer { line: 0, total },
                    b'\r' => *self = Self::Trailer { line, total },
                    _ => {
                        *self = Self::Trailer {
                            line: line.saturating_add(1),
                            total,
                        }
                    }
                }
            }
        }
        Ok(false)
    }

    fn skip(&mut self, len: u64) -> Result<Progress, BodyError> {
        let mut left = len;
        let mut progress = Progress::default();
        while left > 0 {
            match *self {
                Self::Data { remaining } => {
                    let n = left.min(remaining);
                    left -= n;
                    progress.payload += n;
                    *self = match remaining - n {
                        0 => Self::DataEnd { seen_cr: false },
                        remaining => Self::Data { remaining },
                    };
                }
                // The CRLF after chunk data has a known size: assume it is there.
                Self::DataEnd { seen_cr } => {
                    let need = if seen_cr { 1 } else { 2 };
                    if left < need {
                        *self = Self::DataEnd { seen_cr: true };
                        left = 0;
                    } else {
                        left -= need;
                        *self = Self::Size {
                            value: 0,
                            digits: 0,
                        };
                    }
                }
                Self::Size { .. } | Self::SizeTail { .. } | Self::Trailer { .. } => {
                    return Err(BodyError::FramingInHole);
                }
            }
        }
        progress.consumed = len;
        Ok(progress)
    }
}

#[cfg(test)]
mod tests {
    use super::{Body, BodyError, Progress};

    fn feed_all(body: &mut Body, data: &[u8]) -> Result<Progress, BodyError> {
        body.feed(data)
    }

    #[test]
    fn content_length_stops_at_the_end() {
        let mut body = Body::Length { remaining: 5 };
        let p = body.feed(b"helloGET").expect("length never fails");
        assert_eq!(
            p,
            Progress {
                consumed: 5,
                payload: 5,
                done: true
            }
        );
    }

    #[test]
    fn content_length_hole_is_counted() {
        let mut body = Body::Length { remaining: 10_000 };
        let p = body.feed(&[0; 4096]).expect("length never fails");
        assert!(!p.done);
        let p = body.skip(20_000).expect("length never fails");
        assert_eq!(
            p,
            Progress {
                consumed: 5904,
                payload: 5904,
                done: true
            }
        );
    }

    #[test]
    fn chunked_with_extensions_and_trailers() {
        let wire = b"4;name=value\r\nWiki\r\n5 ; x\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\nExpires: never\r\nX: y\r\n\r\nNEXT";
        let mut body = Body::chunked();
        let p = feed_all(&mut body, wire).expect("valid chunked body");
        assert_eq!(p.payload, 23);
        assert!(p.done);
        assert_eq!(p.consumed, u64::try_from(wire.len() - 4).expect("small"));
    }

    #[test]
    fn chunked_split_byte_by_byte() {
        let wire = b"1a\r\nabcdefghijklmnopqrstuvwxyz\r\n10\n0123456789abcdef\n0\r\n\r\n";
        let mut body = Body::chunked();
        let mut total = Progress::default();
        for b in wire {
            let p = body
                .feed(std::slice::from_ref(b))
                .expect("valid chunked body");
            total.consumed += p.consumed;
            total.payload += p.payload;
            total.done |= p.done;
        }
        assert_eq!(
            total,
            Progress {
                consumed: 57,
                payload: 42,
                done: true
            }
        );
    }

    #[test]
    fn chunked_hole_inside_data_and_crlf() {
        let mut body = Body::chunked();
        let p = body.feed(b"2000\r\nabc").expect("valid");
        assert_eq!(p.payload, 3);
        // Rest of the data (8189) and its CRLF (2) in a hole.
        let p = body.skip(8191).expect("data and CRLF may be skipped");
        assert_eq!(p.payload, 8189);
        let p = body.feed(b"0\r\n\r\n").expect("valid");
        assert!(p.done);
    }

    #[test]
    fn chunked_hole_over_size_line_loses_framing() {
        let mut body = Body::chunked();
        body.feed(b"3\r\nabc\r\n").expect("valid");
        assert_eq!(body.skip(4), Err(BodyError::FramingInHole));
    }

    #[test]
    fn chunked_errors() {
        for (wire, want) in [
            (&b"zz\r\n"[..], BodyError::BadChunkSize),
            (b"\r\n", BodyError::BadChunkSize),
            (b"10000000000000000\r\n", BodyError::BadChunkSize),
            (b"ffffffffff\r\n", BodyError::BadChunkSize),
            (b"3x\r\n", BodyError::BadChunkSize),
            (b"3\r\nabcX", BodyError::BadChunkDelimiter),
        ] {
            let mut body = Body::chunked();
            assert_eq!(
                body.feed(wire),
                Err(want),
                "{}",
                String::from_utf8_lossy(wire)
            );
        }
        let mut body = Body::chunked();
        let long_ext = [b"1;".as_slice(), &[b'x'; 5000]].concat();
        assert_eq!(body.feed(&long_ext), Err(BodyError::BadChunkSize));
    }
}
