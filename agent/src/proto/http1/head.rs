//! Message heads: start line and header section (RFC 9112 §2–§5), parsed with `httparse`, reduced
//! to the redacted fields the tracker keeps and the body framing (RFC 9112 §6).
//!
//! Input: the bytes of one direction from the first byte of a head. Output: [`Parsed::Partial`],
//! or the head and its length in bytes, or a [`HeadError`].
//!
//! # Wire format
//! ```text
//! HTTP-message = start-line CRLF *( field-line CRLF ) CRLF [ message-body ]
//! ```

use std::{mem::MaybeUninit, str};

/// Header fields parsed per head; more is [`HeadError::Syntax`] (`httparse::Error::TooManyHeaders`).
const MAX_HEADERS: usize = 96;

/// Outcome of parsing the bytes buffered so far.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Parsed<T> {
    /// More bytes are needed (not an error).
    Partial,
    /// A whole head of `len` bytes (start line to the empty line, inclusive).
    Complete { head: T, len: usize },
}

/// Why a head can't be used. Each maps to one [`super::ParseStats`] reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum HeadError {
    /// `httparse` rejected the start line or a header line.
    Syntax,
    /// A `Content-Length` value is not 1*DIGIT fitting a `u64` (RFC 9112 §6.3 item 5).
    BadContentLength,
    /// `Content-Length` values differ, or both it and `Transfer-Encoding` are present (a request
    /// smuggling signal, RFC 9112 §6.3 item 3, §11.2).
    ConflictingLength,
    /// A request `Transfer-Encoding` whose final coding isn't `chunked`, or `chunked` twice
    /// (RFC 9112 §6.3 item 4, §7).
    BadTransferEncoding,
}

/// How the message body after a head is delimited (RFC 9112 §6.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Framing {
    /// No body.
    None,
    /// Exactly this many bytes.
    Length(u64),
    /// Chunked transfer coding (RFC 9112 §7.1).
    Chunked,
    /// Everything until the connection closes (responses only).
    UntilClose,
}

/// The fields of a request head the tracker keeps, already redacted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct RequestHead {
    pub(super) method: String,
    /// Path only: no query, no fragment, no scheme or authority.
    pub(super) path: String,
    pub(super) version_minor: u8,
    pub(super) host: Option<String>,
    pub(super) user_agent: Option<String>,
    pub(super) traceparent: Option<String>,
    pub(super) framing: Framing,
    /// `Upgrade: h2c` (RFC 7540 §3.2): a `101` answer continues as HTTP/2, stream 1 answering
    /// this request.
    pub(super) upgrade_h2c: bool,
}

/// A response head: status plus what its framing depends on (the request method decides the rest).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct ResponseHead {
    pub(super) status: u16,
    content_length: Option<u64>,
    coding: Coding,
}

/// The `Transfer-Encoding` of a message.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Coding {
    #[default]
    Absent,
    /// `chunked` is the final (and only once) coding.
    Chunked,
    /// Present, but the final coding isn't `chunked`.
    Other,
}

/// Parses a request head from the start of `buf`.
///
/// # Errors
/// Any [`HeadError`]; the caller then skips the request.
pub(super) fn parse_request(buf: &[u8]) -> Result<Parsed<RequestHead>, HeadError> {
    // Uninitialised: filling 96 empty headers on every head cost ~15% of the parse (criterion).
    let mut headers = [const { MaybeUninit::uninit() }; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    let len = match req.parse_with_uninit_headers(buf, &mut headers) {
        Ok(httparse::Status::Partial) => return Ok(Parsed::Partial),
        Ok(httparse::Status::Complete(len)) => len,
        Err(_) => return Err(HeadError::Syntax),
    };
    let (Some(method), Some(target), Some(version_minor)) = (req.method, req.path, req.version)
    else {
        return Err(HeadError::Syntax);
    };
    let fields = Fields::collect(req.headers)?;
    let framing = match (fields.coding, fields.content_length) {
        (Coding::Absent, None) => Framing::None,
        (Coding::Absent, Some(n)) => Framing::Length(n),
        (Coding::Chunked, None) => Framing::Chunked,
        (Coding::Other, None) => return Err(HeadError::BadTransferEncoding),
        (Coding::Chunked | Coding::Other, Some(_)) => return Err(HeadError::ConflictingLength),
    };
    let head = RequestHead {
        method: method.to_owned(),
        path: redact_target(target).to_owned(),
        version_minor,
        host: fields.host,
        user_agent: fields.user_agent,
        traceparent: fields.traceparent,
        framing,
        upgrade_h2c: fields.upgrade_h2c,
    };
    Ok(Parsed::Complete { head, len })
}

/// Parses a response head from the start of `buf`.
///
/// # Errors
/// Any [`HeadError`] but [`HeadError::BadTransferEncoding`].
pub(super) fn parse_response(buf: &[u8]) -> Result<Parsed<ResponseHead>, HeadError> {
    let mut headers = [const { MaybeUninit::uninit() }; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut []);
    let len = match httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut resp,
        buf,
        &mut headers,
    ) {
        Ok(httparse::Status::Partial) => return Ok(Parsed::Partial),
        Ok(httparse::Status::Complete(len)) => len,
        Err(_) => return Err(HeadError::Syntax),
    };
    let (Some(status), Some(_)) = (resp.code, resp.version) else {
        return Err(HeadError::Syntax);
    };
    let fields = Fields::collect(resp.headers)?;
    let head = ResponseHead {
        status,
        content_length: fields.content_length,
        coding: fields.coding,
    };
    Ok(Parsed::Complete { head, len })
}

impl ResponseHead {
    /// Is this a `1xx` interim response other than `101` (RFC 9110 §15.2)?
    pub(super) fn is_interim(&self) -> bool {
        (100..200).contains(&self.status) && self.status != 101
    }

    /// The body framing of this response to a request with `method` (`None`: unknown, assumed
    /// not `HEAD`), per RFC 9112 §6.3.
    ///
    /// # Errors
    /// [`HeadError::ConflictingLength`] when both `Content-Length` and `Transfer-Encoding` are
    /// present (the RFC lets `Transfer-Encoding` win; we refuse to guess).
    pub(super) fn framing(&self, method: Option<&str>) -> Result<Framing, HeadError> {
        if method == Some("HEAD") || matches!(self.status, 100..=199 | 204 | 304) {
            return Ok(Framing::None);
        }
        Ok(match (self.coding, self.content_length) {
            (Coding::Chunked | Coding::Other, Some(_)) => return Err(HeadError::ConflictingLength),
            (Coding::Chunked, None) => Framing::Chunked,
            (Coding::Other | Coding::Absent, None) => Framing::UntilClose,
            (Coding::Absent, Some(n)) => Framing::Length(n),
        })
    }
}

/// The header fields the tracker looks at.
#[derive(Default)]
struct Fields {
    host: Option<String>,
    user_agent: Option<String>,
    traceparent: Option<String>,
    content_length: Option<u64>,
    coding: Coding,
    upgrade_h2c: bool,
}

impl Fields {
    /// Reads the framing fields and keeps only the allow-listed values (first occurrence).
    fn collect(headers: &[httparse::Header<'_>]) -> Result<Self, HeadError> {
        let mut fields = Self::default();
        let mut codings = Codings::default();
        for header in headers {
            let name = header.name;
            if name.eq_ignore_ascii_case("content-length") {
                for value in header.value.split(|b| *b == b',') {
                    let n = parse_decimal(value.trim_ascii()).ok_or(HeadError::BadContentLength)?;
                    match fields.content_length {
                        Some(seen) if seen != n => return Err(HeadError::ConflictingLength),
                        _ => fields.content_length = Some(n),
                    }
                }
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                codings.add(header.value);
            } else if name.eq_ignore_ascii_case("host") {
                keep_first(&mut fields.host, header.value);
            } else if name.eq_ignore_ascii_case("user-agent") {
                keep_first(&mut fields.user_agent, header.value);
            } else if name.eq_ignore_ascii_case("traceparent") {
                keep_first(&mut fields.traceparent, header.value);
            } else if name.eq_ignore_ascii_case("upgrade") {
                fields.upgrade_h2c |= header
                    .value
                    .split(|b| *b == b',')
                    .any(|token| token.trim_ascii().eq_ignore_ascii_case(b"h2c"));
            }
        }
        fields.coding = codings.finish()?;
        Ok(fields)
    }
}

/// Accumulates `Transfer-Encoding` list elements across header lines (RFC 9112 §6.1).
#[derive(Default)]
struct Codings {
    present: bool,
    chunked_count: u32,
    last_is_chunked: bool,
}

impl Codings {
    fn add(&mut self, value: &[u8]) {
        self.present = true;
        for element in value.split(|b| *b == b',') {
            // transfer-coding = token *( OWS ";" OWS transfer-parameter )
            let name = element
                .split(|b| *b == b';')
                .next()
                .unwrap_or_default()
                .trim_ascii();
            if name.is_empty() {
                continue;
            }
            self.last_is_chunked = name.eq_ignore_ascii_case(b"chunked");
            if self.last_is_chunked {
                self.chunked_count = self.chunked_count.saturating_add(1);
            }
        }
    }

    fn finish(&self) -> Result<Coding, HeadError> {
        match (self.present, self.chunked_count, self.last_is_chunked) {
            (false, _, _) => Ok(Coding::Absent),
            (true, 1, true) => Ok(Coding::Chunked),
            (true, 0, _) => Ok(Coding::Other),
            (true, _, _) => Err(HeadError::BadTransferEncoding),
        }
    }
}

/// `1*DIGIT` as a `u64`; `None` when empty, not all digits, or too big.
fn parse_decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u64, |acc, b| {
        let digit = (*b as char).to_digit(10)?;
        acc.checked_mul(10)?.checked_add(u64::from(digit))
    })
}

fn keep_first(slot: &mut Option<String>, value: &[u8]) {
    if slot.is_none() {
        *slot = Some(String::from_utf8_lossy(value.trim_ascii()).into_owned());
    }
}

/// The path of a request target (RFC 9112 §3.2): the query and fragment are cut; for the
/// absolute form (`http://user@host:8080/p?q`) only `/p` is kept (an empty path becomes `/`);
/// the authority form (`host:443`) and `*` are kept as they are.
pub(super) fn redact_target(target: &str) -> &str {
    let (path, absolute) = match split_absolute_form(target) {
        Some(after_authority) => (after_authority, true),
        None => (target, false),
    };
    let end = path.find(['?', '#']).unwrap_or(path.len());
    let path = path.get(..end).unwrap_or_default();
    if absolute && path.is_empty() {
        "/"
    } else {
        path
    }
}

/// For `scheme://authority<rest>`, returns `<rest>` (which starts with `/`, `?`, `#` or is empty).
fn split_absolute_form(target: &str) -> Option<&str> {
    let (scheme, rest) = target.split_once("://")?;
    let mut chars = scheme.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic());
    if !first_ok || !chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')) {
        return None;
    }
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    rest.get(authority_end..)
}

#[cfg(test)]
mod tests {
    use super::{parse_request, parse_response, redact_target, Framing, HeadError, Parsed};

    fn request(buf: &[u8]) -> super::RequestHead {
        match parse_request(buf) {
            Ok(Parsed::Complete { head, len }) => {
                assert_eq!(len, buf.len());
                head
            }
            other => panic!("expected a complete head, got {other:?}"),
        }
    }

    fn response(buf: &[u8]) -> super::ResponseHead {
        match parse_response(buf) {
            Ok(Parsed::Complete { head, .. }) => head,
            other => panic!("expected a complete head, got {other:?}"),
        }
    }

    #[test]
    fn request_keeps_only_allow_listed_fields() {
        let head = request(
            b"GET /api/v1/users?id=42&token=secret#frag HTTP/1.1\r\nHost: example.com:8080\r\n\
              User-Agent: curl/7.88.1\r\nAuthorization: Bearer secret\r\nCookie: s=1\r\n\
              traceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\r\n\r\n",
        );
        assert_eq!(head.method, "GET");
        assert_eq!(head.path, "/api/v1/users");
        assert_eq!(head.version_minor, 1);
        assert_eq!(head.host.as_deref(), Some("example.com:8080"));
        assert_eq!(head.user_agent.as_deref(), Some("curl/7.88.1"));
        assert_eq!(
            head.traceparent.as_deref(),
            Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
        );
        assert_eq!(head.framing, Framing::None);
        let debug = format!("{head:?}");
        assert!(!debug.contains("secret"), "{debug}");
    }

    #[test]
    fn request_target_forms() {
        assert_eq!(redact_target("/p?q"), "/p");
        assert_eq!(redact_target("/p#f"), "/p");
        assert_eq!(redact_target("http://host/p?q"), "/p");
        assert_eq!(redact_target("HTTP://user:pw@host:80/a/b"), "/a/b");
        assert_eq!(redact_target("http://host"), "/");
        assert_eq!(redact_target("http://host?q=1"), "/");
        assert_eq!(redact_target("example.com:443"), "example.com:443");
        assert_eq!(redact_target("*"), "*");
        assert_eq!(redact_target("/a://b?c"), "/a://b");
    }

    #[test]
    fn request_framing() {
        let len = request(b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\n");
        assert_eq!(len.framing, Framing::Length(5));
        let same = request(b"POST / HTTP/1.1\r\nContent-Length: 5, 5\r\nContent-length: 5\r\n\r\n");
        assert_eq!(same.framing, Framing::Length(5));
        let chunked = request(b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip, Chunked\r\n\r\n");
        assert_eq!(chunked.framing, Framing::Chunked);
        let split = request(
            b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n",
        );
        assert_eq!(split.framing, Framing::Chunked);
    }

    #[test]
    fn request_framing_errors() {
        let cases: &[(&[u8], HeadError)] = &[
            (
                b"POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
                HeadError::ConflictingLength,
            ),
            (
                b"POST / HTTP/1.1\r\nContent-Length: 5, 6\r\n\r\n",
                HeadError::ConflictingLength,
            ),
            (
                b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
                HeadError::BadContentLength,
            ),
            (
                b"POST / HTTP/1.1\r\nContent-Length: +5\r\n\r\n",
                HeadError::BadContentLength,
            ),
            (
                b"POST / HTTP/1.1\r\nContent-Length: \r\n\r\n",
                HeadError::BadContentLength,
            ),
            (
                b"POST / HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n",
                HeadError::BadContentLength,
            ),
            (
                b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
                HeadError::ConflictingLength,
            ),
            (
                b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
                HeadError::BadTransferEncoding,
            ),
            (
                b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
                HeadError::BadTransferEncoding,
            ),
            (b"GET / HTTP/1.1\r\nBad Header\r\n\r\n", HeadError::Syntax),
            (b"GET / HTTP/2.0\r\n\r\n", HeadError::Syntax),
            (b"\x16\x03\x01\x00\xa5\x01\x00", HeadError::Syntax),
        ];
        for (buf, want) in cases {
            assert_eq!(
                parse_request(buf),
                Err(*want),
                "{}",
                String::from_utf8_lossy(buf)
            );
        }
    }

    #[test]
    fn too_many_headers_is_a_syntax_error() {
        let mut buf = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..200 {
            buf.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
        }
        buf.extend_from_slice(b"\r\n");
        assert_eq!(parse_request(&buf), Err(HeadError::Syntax));
    }

    #[test]
    fn partial_heads() {
        assert_eq!(
            parse_request(b"GET / HTTP/1.1\r\nHost: a\r\n"),
            Ok(Parsed::Partial)
        );
        assert_eq!(parse_request(b"G"), Ok(Parsed::Partial));
        assert_eq!(parse_response(b"HTTP/1.1 200 OK\r\n"), Ok(Parsed::Partial));
    }

    #[test]
    fn response_framing() {
        let r = response(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n");
        assert_eq!(r.framing(Some("GET")), Ok(Framing::Length(3)));
        assert_eq!(r.framing(Some("HEAD")), Ok(Framing::None));
        assert_eq!(r.framing(None), Ok(Framing::Length(3)));
        let r = response(b"HTTP/1.1 204 No Content\r\nContent-Length: 3\r\n\r\n");
        assert_eq!(r.framing(Some("GET")), Ok(Framing::None));
        let r = response(b"HTTP/1.1 304 Not Modified\r\n\r\n");
        assert_eq!(r.framing(Some("GET")), Ok(Framing::None));
        let r = response(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert_eq!(r.framing(Some("GET")), Ok(Framing::Chunked));
        let r = response(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n");
        assert_eq!(r.framing(Some("GET")), Ok(Framing::UntilClose));
        let r = response(b"HTTP/1.0 200 OK\r\n\r\n");
        assert_eq!(r.framing(Some("GET")), Ok(Framing::UntilClose));
        let r =
            response(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n");
        assert_eq!(r.framing(Some("GET")), Err(HeadError::ConflictingLength));
        assert!(response(b"HTTP/1.1 100 Continue\r\n\r\n").is_interim());
        assert!(!response(b"HTTP/1.1 101 Switching Protocols\r\n\r\n").is_interim());
    }
}
