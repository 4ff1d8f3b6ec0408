//! Drop and repair counters of the HTTP/2 parser, one per `reason` label of
//! `sonde.parse.errors{protocol="http2"}`.

/// Declares [`ParseStats`] so that each field and its `reason` label are spelled once.
macro_rules! parse_stats {
    ($($(#[doc = $doc:literal])+ $name:ident,)+) => {
        /// Counters accumulated since the parser last handed them over.
        ///
        /// # Units
        /// Every field counts events (frames, header blocks, streams or chunks, as its doc says).
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
        pub struct ParseStats {
            $($(#[doc = $doc])+ pub $name: u64,)+
        }

        impl ParseStats {
            /// Every counter as `(reason, count)`, zero counts included.
            pub fn iter(&self) -> impl Iterator<Item = (&'static str, u64)> {
                [$((stringify!($name), self.$name),)+].into_iter()
            }
        }
    };
}

parse_stats! {
    /// Request-side bytes at the connection's start that were not the client preface (§3.4).
    bad_preface,
    /// Frame headers breaking RFC 9113's rules (a PING of 7 bytes, RST_STREAM on stream 0): the
    /// direction's framing is lost until a chunk starts with frames again.
    bad_frame,
    /// Uncaptured bytes (a hole) where a frame header was: framing lost, as above.
    hole_in_frame_header,
    /// Header blocks with uncaptured bytes (or above the size bound): their fields are unknown
    /// and the direction's HPACK table is no longer known.
    header_block_lost,
    /// Header blocks HPACK could not decode (RFC 7541 §5, §6); the table is no longer known.
    hpack_error,
    /// Header fields that referenced a table entry added before the agent followed the
    /// connection (or before a loss): their names are unknown.
    hpack_unknown_index,
    /// Streams reported without a known `:method` or `:path` (their request's block was lost, or
    /// referred to table entries from before the join): those attributes are absent.
    request_headers_unknown,
    /// gRPC calls reported without a status (`grpc-status` referred to an unknown table entry).
    grpc_status_unknown,
    /// HTTP (not gRPC) responses that ended without a known final `:status`: dropped.
    response_headers_unknown,
    /// Response frames on a stream whose request the agent never saw (joined mid-stream).
    unpaired_response,
    /// Streams reset (RST_STREAM) before an HTTP response: dropped (gRPC calls become
    /// CANCELLED or DEADLINE_EXCEEDED spans instead).
    reset_before_response,
    /// Streams still open when the connection closed.
    unanswered_at_close,
    /// New streams beyond the per-connection bound: not followed.
    stream_overflow,
    /// PUSH_PROMISE frames (server push): decoded to keep HPACK in step, otherwise ignored.
    push_promise,
    /// Calls to `on_gap` (records lost by the kernel).
    gap,
    /// Streams dropped because a gap in the response direction may have hidden their end.
    dropped_by_gap,
    /// Chunks skipped while a direction waited for a frame boundary to resync at.
    unsynced_chunks,
    /// GOAWAY frames (connection shutdown by either end).
    goaway,
}

impl ParseStats {
    /// Counter names with the field names as labels (`bad_frame`), for tests.
    #[cfg(test)]
    pub(super) fn nonzero(&self) -> Vec<(&'static str, u64)> {
        self.iter().filter(|(_, n)| *n > 0).collect()
    }
}
