//! Path → tokens: splits a request path into segments and decides which ones are identifiers.
//!
//! Input: a request path (`/users/42/orders`). Output: at most [`MAX_DEPTH_SEGMENTS`] + 1
//! [`Token`]s. Empty segments are skipped (`//a/` is `/a`), segments recognised as identifiers
//! become [`Token::Id`], and a path deeper than [`MAX_DEPTH_SEGMENTS`] ends in one [`Token::Rest`].

use super::{MAX_DEPTH_SEGMENTS, MAX_SEGMENT_BYTES};

/// One position of a normalised path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Token<'p> {
    /// A segment kept as written (at most [`MAX_SEGMENT_BYTES`] bytes).
    Literal(&'p str),
    /// A segment recognised as an identifier (see [`is_identifier`]).
    Id,
    /// Everything past [`MAX_DEPTH_SEGMENTS`] segments.
    Rest,
}

/// Splits `path` into tokens: non-empty segments only, at most [`MAX_DEPTH_SEGMENTS`] of them,
/// then one [`Token::Rest`] if the path is deeper.
pub(super) fn tokens(path: &str) -> impl Iterator<Item = Token<'_>> {
    path.split('/')
        .filter(|segment| !segment.is_empty())
        .take(MAX_DEPTH_SEGMENTS + 1)
        .enumerate()
        .map(|(index, segment)| {
            if index == MAX_DEPTH_SEGMENTS {
                Token::Rest
            } else if is_identifier(segment) {
                Token::Id
            } else {
                Token::Literal(segment)
            }
        })
}

/// Whether a segment is an identifier, replaced by `{id}` on first sight.
///
/// True for: segments longer than [`MAX_SEGMENT_BYTES`]; all-decimal numbers (any length);
/// UUIDs (8-4-4-4-12 hex digits, any case); hex strings of at least 8 characters with at least
/// one decimal digit (`5f2b3c4d9e`, but not `deadbeef`, which reads as a word); and
/// base64/base64url-alphabet tokens of at least 16 characters holding both a digit and a letter.
/// ISO dates (`2024-01-15`), versions (`v2`) and words stay literal: they are few per position,
/// and the per-position collapse bounds them anyway.
pub(super) fn is_identifier(segment: &str) -> bool {
    segment.len() > MAX_SEGMENT_BYTES
        || is_decimal(segment)
        || is_uuid(segment)
        || is_hex_id(segment)
        || is_token(segment)
}

fn is_decimal(segment: &str) -> bool {
    !segment.is_empty() && segment.bytes().all(|b| b.is_ascii_digit())
}

fn is_uuid(segment: &str) -> bool {
    const DASHES: [usize; 4] = [8, 13, 18, 23];
    segment.len() == 36
        && segment.bytes().enumerate().all(|(i, b)| {
            if DASHES.contains(&i) {
                b == b'-'
            } else {
                b.is_ascii_hexdigit()
            }
        })
}

fn is_hex_id(segment: &str) -> bool {
    segment.len() >= 8
        && segment.bytes().all(|b| b.is_ascii_hexdigit())
        && segment.bytes().any(|b| b.is_ascii_digit())
}

fn is_token(segment: &str) -> bool {
    segment.len() >= 16
        && segment
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'+' | b'='))
        && segment.bytes().any(|b| b.is_ascii_digit())
        && segment.bytes().any(|b| b.is_ascii_alphabetic())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_numbers_of_any_length_are_ids() {
        for s in ["0", "42", "000123", "98765432109876543210"] {
            assert!(is_identifier(s), "{s}");
        }
    }

    #[test]
    fn uuids_are_ids_in_any_case() {
        assert!(is_identifier("550e8400-e29b-41d4-a716-446655440000"));
        assert!(is_identifier("550E8400-E29B-41D4-A716-446655440000"));
        // Wrong group lengths or a non-hex digit: not a UUID (and too punctuated for a token).
        assert!(!is_uuid("550e8400e-29b-41d4-a716-446655440000"));
        assert!(!is_uuid("550e8400-e29b-41d4-a716-44665544000g"));
    }

    #[test]
    fn hex_ids_need_eight_chars_and_a_digit() {
        assert!(is_identifier("5f2b3c4d9e"));
        assert!(is_identifier("0123abcd"));
        assert!(!is_identifier("5f2b3c4")); // 7 chars
        assert!(!is_identifier("deadbeef")); // no digit: reads as a word
        assert!(!is_identifier("facade"));
    }

    #[test]
    fn long_mixed_tokens_are_ids() {
        assert!(is_identifier("dGhpcyBpcyBhIHRva2Vu1")); // base64
        assert!(is_identifier("aZ3_-k9QmX2pL7vR")); // base64url, exactly 16
        assert!(is_identifier("aGVsbG8gd29ybGQ2=="));
        assert!(!is_identifier("aZ3_-k9QmX2pL7v")); // 15 chars
        assert!(!is_identifier("abcdefghijklmnopqrst")); // letters only
        assert!(!is_identifier("bootstrap-5.3.2.min.css")); // `.` is not in the alphabet
    }

    #[test]
    fn words_dates_and_versions_stay_literal() {
        for s in [
            "users",
            "v2",
            "2024-01-15",
            "profile",
            "index.html",
            "%20",
            "ümlaut",
        ] {
            assert!(!is_identifier(s), "{s}");
        }
    }

    #[test]
    fn segments_longer_than_the_cap_are_ids() {
        let at_cap = "a".repeat(MAX_SEGMENT_BYTES);
        let over = "a".repeat(MAX_SEGMENT_BYTES + 1);
        assert!(!is_identifier(&at_cap));
        assert!(is_identifier(&over));
    }

    #[test]
    fn empty_segments_and_trailing_slashes_are_ignored() {
        let t: Vec<_> = tokens("//users//42/").collect();
        assert_eq!(t, [Token::Literal("users"), Token::Id]);
        assert_eq!(tokens("/").count(), 0);
        assert_eq!(tokens("").count(), 0);
    }

    #[test]
    fn deep_paths_end_in_one_rest_token() {
        let exact = "/s".repeat(MAX_DEPTH_SEGMENTS);
        let t: Vec<_> = tokens(&exact).collect();
        assert_eq!(t.len(), MAX_DEPTH_SEGMENTS);
        assert!(t.iter().all(|t| *t == Token::Literal("s")));

        let deep = "/s".repeat(MAX_DEPTH_SEGMENTS + 100);
        let t: Vec<_> = tokens(&deep).collect();
        assert_eq!(t.len(), MAX_DEPTH_SEGMENTS + 1);
        assert_eq!(t.last(), Some(&Token::Rest));
    }
}
