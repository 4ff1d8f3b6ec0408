//! Drop and skip counters of the HTTP/1.x tracker, one per `reason` label.
//!
//! Input: incremented by [`super::Tracker`] wherever it drops bytes, a message or an exchange.
//! Output: [`ParseStats`], drained by the caller with [`super::Tracker::take_stats`] and added to
//! the agent's self-telemetry (`parse errors{protocol="http1", reason}`).

/// Declares [`ParseStats`] so that each field and its `reason` label are spelled once.
macro_rules! parse_stats {
    ($($(#[doc = $doc:literal])+ $name:ident,)+) => {
        /// Counters accumulated by a [`super::Tracker`] since the last
        /// [`super::Tracker::take_stats`].
        ///
        /// # Units
        /// Every field counts events (chunks, messages or exchanges, as its doc says), never bytes.
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
        pub struct ParseStats {
            $($(#[doc = $doc])+ pub $name: u64,)+
        }

        impl ParseStats {
            /// Every counter as `(reason, count)`, reasons in `snake_case`, zero counts included.
            pub fn iter(&self) -> impl Iterator<Item = (&'static str, u64)> {
                [$((stringify!($name), self.$name),)+].into_iter()
            }

            /// Adds every counter of `other` to `self` (saturating).
            pub fn add(&mut self, other: &Self) {
                $(self.$name = self.$name.saturating_add(other.$name);)+
            }
        }
    };
}

parse_stats! {
    /// Request heads `httparse` rejected (bad syntax, too many headers); the request is skipped.
    bad_request_head,
    /// Response heads `httparse` rejected; the direction resyncs.
    bad_response_head,
    /// Heads still incomplete after [`super::MAX_HEAD_BYTES`]; the direction resyncs.
    head_too_large,
    /// `Content-Length` values that are not a decimal `u64` (RFC 9112 §6.3 item 5).
    bad_content_length,
    /// Differing `Content-Length` values, or `Content-Length` together with `Transfer-Encoding`.
    conflicting_length,
    /// `Transfer-Encoding` a request can't be framed by (`chunked` not last, or applied twice).
    bad_transfer_encoding,
    /// Chunk-size lines that are not hex, too long, or above [`super::MAX_CHUNK_BYTES`].
    bad_chunk_size,
    /// Chunk data not followed by CRLF, or trailer section above [`super::MAX_HEAD_BYTES`].
    bad_chunk_delimiter,
    /// Uncaptured bytes (a hole) where a head was expected or in progress: framing lost.
    hole_in_head,
    /// A hole covering a chunk-size line or the trailer section: framing lost.
    hole_in_chunk_framing,
    /// Calls to `on_gap` (records lost by the kernel) while the connection was tracked.
    gap,
    /// Requests (queued or answered in progress) dropped because a gap made pairing unsafe.
    dropped_by_gap,
    /// Final responses with no pending request to pair with (mid-stream join, lost request).
    unpaired_response,
    /// Pending requests dropped because more than [`super::MAX_PENDING`] were queued.
    pending_overflow,
    /// Chunks skipped while a direction waited for a message start to resync at.
    unsynced_chunks,
    /// Requests still waiting for a final response when the connection closed.
    unanswered_at_close,
    /// Messages cut short by the close (partial head, or body shorter than its framing said).
    truncated_at_close,
    /// Chunked responses whose framing was lost and whose end was inferred (see module docs).
    chunked_end_guessed,
    /// Connections given up on as not HTTP/1.x (counted once per connection).
    not_http,
    /// Connections that switched protocol (`101`, or `2xx` to `CONNECT`); tracking stopped.
    protocol_switch,
}

impl ParseStats {
    /// Sum of all counters.
    pub fn total(&self) -> u64 {
        self.iter().map(|(_, n)| n).fold(0, u64::saturating_add)
    }
}

#[cfg(test)]
mod tests {
    use super::ParseStats;

    #[test]
    fn iter_names_every_field_in_snake_case() {
        let stats = ParseStats {
            gap: 2,
            not_http: 1,
            ..ParseStats::default()
        };
        let all: Vec<_> = stats.iter().collect();
        assert_eq!(all.len(), 20);
        assert!(all.contains(&("gap", 2)));
        assert!(all.contains(&("not_http", 1)));
        assert!(all
            .iter()
            .all(|(name, _)| name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')));
        assert_eq!(stats.total(), 3);
        let mut sum = stats;
        sum.add(&stats);
        assert_eq!((sum.gap, sum.not_http), (4, 2));
    }
}
