//! The HPACK static table (RFC 7541 Appendix A) and the dynamic table (§2.3.2, §4) as far as a
//! decoder that may have joined mid-stream knows it.
//!
//! Index space (§2.3.3): indexes 1..=61 are the static table, 62 and up the dynamic table, newest
//! entry first.

use std::collections::VecDeque;

/// Number of entries in the static table; dynamic indexes start after it.
pub(super) const STATIC_LEN: usize = 61;

/// Octets added to `name.len() + value.len()` for an entry's size (§4.1).
pub(super) const ENTRY_OVERHEAD: usize = 32;

/// RFC 7541 Appendix A: `(name, value)` of indexes 1..=61.
static STATIC: [(&[u8], &[u8]); STATIC_LEN] = [
    (b":authority", b""),
    (b":method", b"GET"),
    (b":method", b"POST"),
    (b":path", b"/"),
    (b":path", b"/index.html"),
    (b":scheme", b"http"),
    (b":scheme", b"https"),
    (b":status", b"200"),
    (b":status", b"204"),
    (b":status", b"206"),
    (b":status", b"304"),
    (b":status", b"400"),
    (b":status", b"404"),
    (b":status", b"500"),
    (b"accept-charset", b""),
    (b"accept-encoding", b"gzip, deflate"),
    (b"accept-language", b""),
    (b"accept-ranges", b""),
    (b"accept", b""),
    (b"access-control-allow-origin", b""),
    (b"age", b""),
    (b"allow", b""),
    (b"authorization", b""),
    (b"cache-control", b""),
    (b"content-disposition", b""),
    (b"content-encoding", b""),
    (b"content-language", b""),
    (b"content-length", b""),
    (b"content-location", b""),
    (b"content-range", b""),
    (b"content-type", b""),
    (b"cookie", b""),
    (b"date", b""),
    (b"etag", b""),
    (b"expect", b""),
    (b"expires", b""),
    (b"from", b""),
    (b"host", b""),
    (b"if-match", b""),
    (b"if-modified-since", b""),
    (b"if-none-match", b""),
    (b"if-range", b""),
    (b"if-unmodified-since", b""),
    (b"last-modified", b""),
    (b"link", b""),
    (b"location", b""),
    (b"max-forwards", b""),
    (b"proxy-authenticate", b""),
    (b"proxy-authorization", b""),
    (b"range", b""),
    (b"referer", b""),
    (b"refresh", b""),
    (b"retry-after", b""),
    (b"server", b""),
    (b"set-cookie", b""),
    (b"strict-transport-security", b""),
    (b"transfer-encoding", b""),
    (b"user-agent", b""),
    (b"vary", b""),
    (b"via", b""),
    (b"www-authenticate", b""),
];

/// The static entry at HPACK `index` (1-based), `None` outside 1..=61.
pub(super) fn static_entry(index: usize) -> Option<(&'static [u8], &'static [u8])> {
    STATIC.get(index.checked_sub(1)?).copied()
}

/// One dynamic-table entry. Its name is unknown when it was inserted by a literal whose indexed
/// name referred to an entry inserted before the decoder (re)synchronised.
#[derive(Debug)]
pub(super) struct Entry {
    /// Name then value, one allocation; the value alone when the name is unknown.
    bytes: Box<[u8]>,
    /// Length of the name prefix of `bytes`; `None`: the name is unknown.
    name_len: Option<usize>,
}

impl Entry {
    fn new(name: Option<&[u8]>, value: &[u8]) -> Self {
        let name_bytes = name.unwrap_or_default();
        let mut bytes = Vec::with_capacity(name_bytes.len().saturating_add(value.len()));
        bytes.extend_from_slice(name_bytes);
        bytes.extend_from_slice(value);
        Self {
            bytes: bytes.into_boxed_slice(),
            name_len: name.map(<[u8]>::len),
        }
    }

    /// The name, `None` when unknown.
    pub(super) fn name(&self) -> Option<&[u8]> {
        self.bytes.get(..self.name_len?)
    }

    /// The value.
    pub(super) fn value(&self) -> &[u8] {
        self.bytes
            .get(self.name_len.unwrap_or(0)..)
            .unwrap_or_default()
    }

    /// Size in octets (§4.1): name + value + 32. A lower bound when the name is unknown.
    fn size(&self) -> usize {
        self.bytes.len().saturating_add(ENTRY_OVERHEAD)
    }
}

/// The newest part of the dynamic table: every entry inserted since the decoder (re)synchronised
/// that is not evicted yet. Older entries the decoder never saw may follow them in the peer's
/// table; that is the decoder's business, not this type's.
#[derive(Debug)]
pub(super) struct DynamicTable {
    /// Newest first: `entries[0]` is HPACK index 62.
    entries: VecDeque<Entry>,
    /// Sum of the entries' sizes (§4.1), in octets; a lower bound when a name is unknown.
    size: usize,
    /// Current maximum size (§4.2), in octets.
    max_size: usize,
}

impl DynamicTable {
    /// An empty table of maximum size `max_size` octets.
    pub(super) fn new(max_size: usize) -> Self {
        Self {
            entries: VecDeque::new(),
            size: 0,
            max_size,
        }
    }

    /// The `i`-th most recent entry (0: newest, HPACK index 62).
    pub(super) fn get(&self, i: usize) -> Option<&Entry> {
        self.entries.get(i)
    }

    /// Number of entries.
    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Sum of the entries' sizes in octets (a lower bound when a name is unknown).
    pub(super) fn size(&self) -> usize {
        self.size
    }

    /// Current maximum size in octets.
    pub(super) fn max_size(&self) -> usize {
        self.max_size
    }

    /// Adds an entry (§4.4): evicts the oldest entries until it fits; an entry larger than the
    /// maximum size empties the table and is not added.
    pub(super) fn insert(&mut self, name: Option<&[u8]>, value: &[u8]) {
        let entry = Entry::new(name, value);
        let entry_size = entry.size();
        if entry_size > self.max_size {
            self.clear();
            return;
        }
        self.evict_to(self.max_size - entry_size);
        self.size += entry_size;
        self.entries.push_front(entry);
    }

    /// Sets the maximum size (§4.3), evicting the oldest entries until the table fits.
    pub(super) fn set_max_size(&mut self, max_size: usize) {
        self.max_size = max_size;
        self.evict_to(max_size);
    }

    /// Drops every entry.
    pub(super) fn clear(&mut self) {
        self.entries.clear();
        self.size = 0;
    }

    /// Evicts the oldest entries until the size is at most `target` octets.
    fn evict_to(&mut self, target: usize) {
        while self.size > target {
            match self.entries.pop_back() {
                Some(old) => self.size = self.size.saturating_sub(old.size()),
                None => {
                    self.size = 0;
                    break;
                }
            }
        }
    }

    /// The entries, newest first.
    #[cfg(test)]
    pub(super) fn iter(&self) -> impl Iterator<Item = &Entry> + '_ {
        self.entries.iter()
    }
}
