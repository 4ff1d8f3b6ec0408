//! Cheap recognisers for the start of an HTTP/1.x message at a syscall boundary.
//!
//! Input: the captured prefix of one chunk. Output: whether it starts like a request line
//! (RFC 9112 §3) or a status line (RFC 9112 §4). The tracker uses these to classify a connection
//! and to resync a direction after framing was lost; they never allocate.
//!
//! # Wire format
//! ```text
//! request-line = method SP request-target SP "HTTP/1." DIGIT CRLF     (GET /a?b HTTP/1.1)
//! status-line  = "HTTP/1." DIGIT SP 3DIGIT SP [ reason-phrase ] CRLF  (HTTP/1.1 200 OK)
//! ```

use crate::proto::Side;

/// HTTP/2 connection preface sent by prior-knowledge clients (RFC 9113 §3.4).
pub(super) const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0";

/// Longest method token accepted when guessing a request line (`PROPPATCH`, `VERSION-CONTROL`).
const MAX_METHOD_LEN: usize = 20;

/// Empty lines tolerated before a request line (RFC 9112 §2.2 allows some).
const MAX_LEADING_NEWLINE_BYTES: usize = 4;

/// Chunks shorter than this may be accepted on a consistent prefix (see [`Fit::Prefix`]).
pub(super) const MAX_PREFIX_FIT_BYTES: usize = 64;

/// How well bytes match the start of a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Fit {
    /// Contradicts the grammar.
    No,
    /// Consistent so far, but the bytes end before the start line could be checked.
    Prefix,
    /// The start line is there up to the version (request) or the status code (response).
    Line,
}

/// Does `data` start with an HTTP/1.x request line or status line?
///
/// Meant for the first captured bytes of a chunk: it requires the request line up to
/// `HTTP/1.x`, or the status line up to its 3-digit code. HTTP/2 (`PRI * HTTP/2.0`) is not
/// HTTP/1.x and gives `false`.
///
/// # Examples
/// ```
/// use agent::proto::http1::looks_like_http1;
/// assert!(looks_like_http1(b"GET /index.html?x=1 HTTP/1.1\r\nHost: a\r\n\r\n"));
/// assert!(looks_like_http1(b"HTTP/1.0 404 Not Found\r\n"));
/// assert!(!looks_like_http1(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"));
/// assert!(!looks_like_http1(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"));
/// ```
#[must_use]
pub fn looks_like_http1(data: &[u8]) -> bool {
    request_line_fit(data) == Fit::Line || status_line_fit(data) == Fit::Line
}

/// How well `data` matches the start of a message of `side`: a request line or a status line.
pub(super) fn start_line_fit(side: Side, data: &[u8]) -> Fit {
    match side {
        Side::Request => request_line_fit(data),
        Side::Response => status_line_fit(data),
    }
}

/// How well `data` matches the start of a request line.
pub(super) fn request_line_fit(data: &[u8]) -> Fit {
    let mut rest = data;
    let mut skipped = 0;
    while let [b'\r' | b'\n', tail @ ..] = rest {
        if skipped == MAX_LEADING_NEWLINE_BYTES {
            return Fit::No;
        }
        rest = tail;
        skipped += 1;
    }
    // method: an upper-case token (RFC 9110 §9.1 methods are case-sensitive; all registered ones
    // are upper case), then one SP.
    let method_len = rest
        .iter()
        .take_while(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || **b == b'-' || **b == b'_')
        .count();
    if method_len == 0 || method_len > MAX_METHOD_LEN {
        return if rest.is_empty() && skipped > 0 {
            Fit::Prefix
        } else {
            Fit::No
        };
    }
    if !rest.first().is_some_and(u8::is_ascii_uppercase) {
        return Fit::No;
    }
    let Some(rest) = rest.get(method_len..) else {
        return Fit::Prefix;
    };
    let rest = match rest {
        [] => return Fit::Prefix,
        [b' ', tail @ ..] => tail,
        _ => return Fit::No,
    };
    // request-target: origin-form `/..`, absolute-form `http://..`, authority-form, or `*`.
    match rest.first() {
        None => return Fit::Prefix,
        Some(b'/' | b'*') => {}
        Some(b) if b.is_ascii_alphanumeric() => {}
        Some(_) => return Fit::No,
    }
    let target_len = rest.iter().take_while(|b| is_target_byte(**b)).count();
    let Some(rest) = rest.get(target_len..) else {
        return Fit::Prefix;
    };
    let rest = match rest {
        [] => return Fit::Prefix,
        [b' ', tail @ ..] => tail,
        _ => return Fit::No,
    };
    version_fit(rest)
}

/// How well `data` matches the start of a status line, up to the status code.
pub(super) fn status_line_fit(data: &[u8]) -> Fit {
    match version_fit(data) {
        Fit::Line => {}
        other => return other,
    }
    let code = data.get(b"HTTP/1.1".len()..).unwrap_or_default();
    let want = [Class::Space, Class::Digit, Class::Digit, Class::Digit];
    for (i, class) in want.iter().enumerate() {
        match code.get(i) {
            None => return Fit::Prefix,
            Some(b) if class.matches(*b) => {}
            Some(_) => return Fit::No,
        }
    }
    Fit::Line
}

/// Does `data` start with the HTTP/2 prior-knowledge preface (or a prefix of it)?
pub(super) fn is_h2_preface(data: &[u8]) -> bool {
    let n = data.len().min(H2_PREFACE.len());
    n >= b"PRI *".len() && data.get(..n) == H2_PREFACE.get(..n)
}

/// How well `data` matches `HTTP/1.` DIGIT.
fn version_fit(data: &[u8]) -> Fit {
    const VERSION: &[u8] = b"HTTP/1.";
    let n = data.len().min(VERSION.len());
    if data.get(..n) != VERSION.get(..n) {
        return Fit::No;
    }
    match data.get(VERSION.len()) {
        None => Fit::Prefix,
        Some(b) if b.is_ascii_digit() => Fit::Line,
        Some(_) => Fit::No,
    }
}

/// Bytes allowed in a request target by this guess: visible ASCII and non-ASCII (lenient).
fn is_target_byte(b: u8) -> bool {
    b.is_ascii_graphic() || b >= 0x80
}

/// A byte class in [`status_line_fit`].
enum Class {
    Space,
    Digit,
}

impl Class {
    fn matches(&self, b: u8) -> bool {
        match self {
            Self::Space => b == b' ',
            Self::Digit => b.is_ascii_digit(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{is_h2_preface, looks_like_http1, request_line_fit, status_line_fit, Fit};

    #[test]
    fn request_lines() {
        assert_eq!(request_line_fit(b"GET / HTTP/1.1\r\n"), Fit::Line);
        assert_eq!(request_line_fit(b"\r\nPOST /a HTTP/1.0\r\n"), Fit::Line);
        assert_eq!(request_line_fit(b"OPTIONS * HTTP/1.1\r\n"), Fit::Line);
        assert_eq!(
            request_line_fit(b"GET http://h/p?q HTTP/1.1\r\n"),
            Fit::Line
        );
        assert_eq!(request_line_fit(b"CONNECT h:443 HTTP/1.1\r\n"), Fit::Line);
        assert_eq!(request_line_fit(b"G"), Fit::Prefix);
        assert_eq!(request_line_fit(b"GET /x HTT"), Fit::Prefix);
        assert_eq!(request_line_fit(b"get / HTTP/1.1\r\n"), Fit::No);
        assert_eq!(request_line_fit(b"GET / HTTP/2.0\r\n"), Fit::No);
        assert_eq!(request_line_fit(b"PRI * HTTP/2.0\r\n"), Fit::No);
        assert_eq!(request_line_fit(b"GET  / HTTP/1.1\r\n"), Fit::No);
        assert_eq!(request_line_fit(b""), Fit::No);
        assert_eq!(request_line_fit(b"\x16\x03\x01"), Fit::No);
        assert_eq!(request_line_fit(b"\r\n\r\n\r\nGET"), Fit::No);
    }

    #[test]
    fn status_lines() {
        assert_eq!(status_line_fit(b"HTTP/1.1 200 OK\r\n"), Fit::Line);
        assert_eq!(status_line_fit(b"HTTP/1.0 404\r\n"), Fit::Line);
        assert_eq!(status_line_fit(b"HTTP/1.1 2"), Fit::Prefix);
        assert_eq!(status_line_fit(b"HTT"), Fit::Prefix);
        assert_eq!(status_line_fit(b"HTTP/2 200\r\n"), Fit::No);
        assert_eq!(status_line_fit(b"HTTP/1.1 OK\r\n"), Fit::No);
        assert_eq!(status_line_fit(b"xHTTP/1.1 200"), Fit::No);
    }

    #[test]
    fn looks_like_http1_needs_a_whole_start_line() {
        assert!(looks_like_http1(b"DELETE /users/42 HTTP/1.1\r\n"));
        assert!(looks_like_http1(b"HTTP/1.1 101 Switching Protocols\r\n"));
        assert!(!looks_like_http1(b"GET /"));
        assert!(!looks_like_http1(b"Q\x00\x00\x00\x0dSELECT 1\x00"));
        assert!(!looks_like_http1(b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n"));
    }

    #[test]
    fn h2_preface() {
        assert!(is_h2_preface(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"));
        assert!(is_h2_preface(b"PRI * HT"));
        assert!(!is_h2_preface(b"PRI"));
        assert!(!is_h2_preface(b"PRIX * HTTP/2.0"));
    }
}
