//! HPACK header-block decoder (RFC 7541) for passively observed HTTP/2 connections, tolerant of
//! joining a connection mid-stream and of lost header blocks.
//!
//! Input: one complete header block at a time (a HEADERS or PUSH_PROMISE fragment and its
//! CONTINUATION fragments concatenated, RFC 9113 §4.3), in the order the peer's encoder sent them
//! on one direction of one connection. Output: one [`Field`] per header field, in order, given
//! to a callback; names and values are raw octets (HPACK carries octets, not text).
//!
//! # Representations (RFC 7541 §6)
//! ```text
//!   1xxxxxxx  indexed field (§6.1): 7-bit prefix index
//!   01xxxxxx  literal with incremental indexing (§6.2.1): 6-bit prefix name index, 0 = literal name
//!   0000xxxx  literal without indexing (§6.2.2): 4-bit prefix name index
//!   0001xxxx  literal never indexed (§6.2.3): 4-bit prefix name index
//!   001xxxxx  dynamic table size update (§6.3): 5-bit prefix size, only at the start of a block
//! ```
//! Integers are prefix-coded (§5.1), strings are length-prefixed and raw or Huffman coded (§5.2,
//! Appendix B). Index space (§2.3.3): 1..=61 is the static table (Appendix A), 62 and up the
//! dynamic table, newest entry first. Only §6.2.1 inserts into the dynamic table; entries are
//! evicted oldest first when the table exceeds its maximum size, an entry's size being
//! `name + value + 32` octets (§4.1, §4.4).
//!
//! # Joining mid-stream
//! An observer may start after the connection began, or lose header blocks: the peer's dynamic
//! table then holds entries the decoder never saw. Such a decoder is *joined*
//! ([`Decoder::joined`], [`Decoder::lose_sync`], or any decoding error). It tracks the entries
//! inserted since: dynamic index `62 + k` (0-based `k`) is the `k+1`-th most recent insertion,
//! known if the decoder saw it, otherwise an unknown earlier entry, reported as
//! [`Field::Unknown`] instead of failing the block. A literal that indexes such a name still
//! reports its value, and when it inserts, the new entry is tracked with a known value and an
//! unknown name. Tracked entries are evicted only when their own total size exceeds the maximum
//! (the unknown, older entries are evicted first), so the decoder never forgets an entry the
//! peer still has, as long as its maximum is not below the peer's.
//!
//! A dynamic table size update to 0 empties the peer's table: the decoder is fully synchronised
//! again. Some encoders emit one now and then (nghttp2, gRPC).
//!
//! # Errors
//! See [`Error`]. A decoding error leaves the table state untrustworthy: the decoder becomes
//! joined (tracked entries forgotten, later insertions tracked again). Fields reported before
//! the error stay reported.

use std::borrow::Cow;
use std::fmt;

use table::{DynamicTable, ENTRY_OVERHEAD, STATIC_LEN};

mod huffman;
mod table;

#[cfg(test)]
mod tests;

/// Default `SETTINGS_HEADER_TABLE_SIZE` (RFC 9113 §6.5.2), in octets.
const DEFAULT_MAX_TABLE_SIZE: usize = 4096;

/// A header field as decoded. Name and value are raw octets (HPACK carries octets).
///
/// The lifetime is that of the header block: raw string literals and static-table entries are
/// borrowed; Huffman-decoded strings and dynamic-table entries are owned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Field<'a> {
    /// A field whose name and value are known.
    Known {
        /// Field name, as sent (HTTP/2 requires lowercase; not checked here).
        name: Cow<'a, [u8]>,
        /// Field value.
        value: Cow<'a, [u8]>,
    },
    /// An indexed field (§6.1) or a literal with indexed name (§6.2) referring to a
    /// dynamic-table entry that was inserted before the decoder started following the
    /// connection (or after it lost sync): its name is unknown.
    Unknown {
        /// The value: given for a literal with an unknown indexed name, and for an indexed field
        /// whose entry was inserted by such a literal; `None` when the entry is unknown entirely.
        value: Option<Cow<'a, [u8]>>,
    },
}

/// Why a header block could not be decoded (RFC 7541 §2.3.3, §5, §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// The block ended inside a representation (truncated integer or string: a string whose
    /// length runs past the end of the block counts as truncated).
    Truncated,
    /// An integer above `u32::MAX` (§5.1), or an integer coded on too many octets (malformed).
    BadInteger,
    /// Invalid Huffman code (§5.2): EOS symbol inside, padding longer than 7 bits, or padding
    /// not all ones.
    BadHuffman,
    /// Index 0, or a dynamic index past the table that cannot be an unknown earlier entry: past
    /// the known entries while synchronised, or past what the maximum table size can hold while
    /// joined.
    BadIndex,
    /// A dynamic table size update (§6.3) above the `SETTINGS_HEADER_TABLE_SIZE` limit, or not
    /// at the start of a block (§4.2).
    BadSizeUpdate,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Truncated => "HPACK block truncated inside a representation",
            Self::BadInteger => "HPACK integer too large",
            Self::BadHuffman => "invalid HPACK Huffman code",
            Self::BadIndex => "invalid HPACK table index",
            Self::BadSizeUpdate => "invalid HPACK dynamic table size update",
        })
    }
}

impl std::error::Error for Error {}

/// HPACK decoder state of one direction of one HTTP/2 connection: the dynamic table as far as it
/// is known, and its size limits.
#[derive(Debug)]
pub struct Decoder {
    /// Entries inserted since the decoder (re)synchronised, and the current maximum size.
    table: DynamicTable,
    /// `SETTINGS_HEADER_TABLE_SIZE` in octets: the largest size a size update may set.
    limit: usize,
    /// The peer's table may hold entries older than `table`'s that the decoder never saw.
    joined: bool,
}

impl Default for Decoder {
    fn default() -> Self {
        Self::new()
    }
}

/// What an index refers to.
enum Slot<'t> {
    /// A static-table entry.
    Static(&'static [u8], &'static [u8]),
    /// A tracked dynamic-table entry.
    Dynamic(&'t table::Entry),
    /// A dynamic-table entry older than the tracked ones.
    Unknown,
}

impl Decoder {
    /// Decoder for a connection followed from its first byte: dynamic table empty and known,
    /// size limit 4096 octets (the `SETTINGS_HEADER_TABLE_SIZE` default).
    #[must_use]
    pub fn new() -> Self {
        Self {
            table: DynamicTable::new(DEFAULT_MAX_TABLE_SIZE),
            limit: DEFAULT_MAX_TABLE_SIZE,
            joined: false,
        }
    }

    /// Decoder for a connection joined mid-stream: the dynamic table may hold unknown entries.
    /// Size limit 4096 octets until [`Decoder::set_max_table_size`] says otherwise.
    #[must_use]
    pub fn joined() -> Self {
        Self {
            joined: true,
            ..Self::new()
        }
    }

    /// Decodes one complete header block (HEADERS + CONTINUATION fragments concatenated),
    /// calling `on_field` for each field in order.
    ///
    /// # Errors
    /// Any [`Error`]: decoding stops there. The dynamic table state is then no longer
    /// trustworthy: the decoder marks itself desynchronised (as [`Decoder::lose_sync`]); fields
    /// already reported stay reported.
    pub fn decode<'a>(
        &mut self,
        block: &'a [u8],
        mut on_field: impl FnMut(Field<'a>),
    ) -> Result<(), Error> {
        let result = self.decode_block(block, &mut on_field);
        if result.is_err() {
            self.lose_sync();
        }
        result
    }

    /// The peer's `SETTINGS_HEADER_TABLE_SIZE` (RFC 9113 §6.5.2) as acknowledged, in octets:
    /// the largest size a size update may set.
    ///
    /// Also sets the current maximum size to it (evicting if it shrank): a conforming encoder
    /// signals a smaller size in its next block anyway, and keeping entries the encoder evicted
    /// is harmless (it never refers to them).
    pub fn set_max_table_size(&mut self, bytes: usize) {
        self.limit = bytes;
        self.table.set_max_size(bytes);
    }

    /// Header blocks or fields lost: forget the dynamic table (same as an error from
    /// [`Decoder::decode`]). Entries inserted from the next block on are tracked again.
    pub fn lose_sync(&mut self) {
        self.table.clear();
        self.joined = true;
    }

    /// Number of entries currently tracked in the dynamic table (entries whose name is unknown
    /// included).
    #[must_use]
    pub fn known_entries(&self) -> usize {
        self.table.len()
    }

    /// True when the dynamic table may hold entries the decoder never saw.
    #[must_use]
    pub fn is_joined(&self) -> bool {
        self.joined
    }

    fn decode_block<'a>(
        &mut self,
        block: &'a [u8],
        on_field: &mut impl FnMut(Field<'a>),
    ) -> Result<(), Error> {
        let mut rest = block;
        let mut at_start = true;
        while let Some(&first) = rest.first() {
            if first & 0x80 != 0 {
                // §6.1 Indexed Header Field.
                let index = read_int(&mut rest, 7)?;
                let field = match self.lookup(index)? {
                    Slot::Static(name, value) => Field::Known {
                        name: Cow::Borrowed(name),
                        value: Cow::Borrowed(value),
                    },
                    Slot::Dynamic(entry) => match entry.name() {
                        Some(name) => Field::Known {
                            name: Cow::Owned(name.to_vec()),
                            value: Cow::Owned(entry.value().to_vec()),
                        },
                        None => Field::Unknown {
                            value: Some(Cow::Owned(entry.value().to_vec())),
                        },
                    },
                    Slot::Unknown => Field::Unknown { value: None },
                };
                on_field(field);
            } else if first & 0x40 != 0 {
                // §6.2.1 Literal Header Field with Incremental Indexing.
                let literal = self.read_literal(&mut rest, 6)?;
                self.table.insert(literal.name.as_deref(), &literal.value);
                on_field(literal.into_field());
            } else if first & 0x20 != 0 {
                // §6.3 Dynamic Table Size Update.
                if !at_start {
                    return Err(Error::BadSizeUpdate);
                }
                let size = read_int(&mut rest, 5)?;
                if size > self.limit {
                    return Err(Error::BadSizeUpdate);
                }
                self.table.set_max_size(size);
                if size == 0 {
                    // The peer's table is empty: everything in it from now on is seen.
                    self.joined = false;
                }
                continue;
            } else {
                // §6.2.2 Literal Header Field without Indexing (0000), §6.2.3 Never Indexed
                // (0001).
                let literal = self.read_literal(&mut rest, 4)?;
                on_field(literal.into_field());
            }
            at_start = false;
        }
        Ok(())
    }

    /// Resolves an HPACK index (§2.3.3).
    fn lookup(&self, index: usize) -> Result<Slot<'_>, Error> {
        if let Some((name, value)) = table::static_entry(index) {
            return Ok(Slot::Static(name, value));
        }
        // 0-based position among dynamic entries, newest first.
        let k = index.checked_sub(STATIC_LEN + 1).ok_or(Error::BadIndex)?;
        if let Some(entry) = self.table.get(k) {
            return Ok(Slot::Dynamic(entry));
        }
        // Past the tracked entries: an older entry, if the table can hold that many (each entry
        // takes at least 32 octets).
        let older = k.saturating_sub(self.table.len());
        let room = self.table.max_size().saturating_sub(self.table.size()) / ENTRY_OVERHEAD;
        if self.joined && older < room {
            Ok(Slot::Unknown)
        } else {
            Err(Error::BadIndex)
        }
    }

    /// Reads a literal representation (§6.2) whose name index has a `prefix`-bit prefix. The
    /// name is `None` when it indexes an unknown entry.
    fn read_literal<'a>(&self, rest: &mut &'a [u8], prefix: u8) -> Result<Literal<'a>, Error> {
        let index = read_int(rest, prefix)?;
        let name = if index == 0 {
            Some(read_string(rest)?)
        } else {
            match self.lookup(index)? {
                Slot::Static(name, _) => Some(Cow::Borrowed(name)),
                Slot::Dynamic(entry) => entry.name().map(|name| Cow::Owned(name.to_vec())),
                Slot::Unknown => None,
            }
        };
        let value = read_string(rest)?;
        Ok(Literal { name, value })
    }
}

/// A decoded literal representation (§6.2).
struct Literal<'a> {
    /// `None`: an indexed name the decoder does not know.
    name: Option<Cow<'a, [u8]>>,
    value: Cow<'a, [u8]>,
}

impl<'a> Literal<'a> {
    fn into_field(self) -> Field<'a> {
        match self.name {
            Some(name) => Field::Known {
                name,
                value: self.value,
            },
            None => Field::Unknown {
                value: Some(self.value),
            },
        }
    }
}

/// Reads a prefix-coded integer (§5.1) whose first octet holds a `prefix`-bit prefix (1..=8) in
/// its low bits, advancing `rest` past it.
///
/// # Errors
/// [`Error::Truncated`] if the block ends inside it; [`Error::BadInteger`] above `u32::MAX` or
/// when coded on more octets than any such value needs (plus leading zero groups up to 63 bits).
fn read_int(rest: &mut &[u8], prefix: u8) -> Result<usize, Error> {
    let (&first, mut tail) = rest.split_first().ok_or(Error::Truncated)?;
    let mask = u8::MAX
        .checked_shr(u32::from(8u8.saturating_sub(prefix)))
        .unwrap_or(0);
    let mut value = u64::from(first & mask);
    if value == u64::from(mask) {
        let mut shift = 0u32;
        loop {
            let (&byte, next) = tail.split_first().ok_or(Error::Truncated)?;
            tail = next;
            if shift > 56 {
                return Err(Error::BadInteger);
            }
            value += u64::from(byte & 0x7f) << shift;
            if value > u64::from(u32::MAX) {
                return Err(Error::BadInteger);
            }
            shift += 7;
            if byte & 0x80 == 0 {
                break;
            }
        }
    }
    *rest = tail;
    usize::try_from(value).map_err(|_| Error::BadInteger)
}

/// Reads a string literal (§5.2), advancing `rest` past it: borrowed when raw, owned when
/// Huffman coded.
///
/// # Errors
/// [`Error::Truncated`] if its length runs past the block, [`Error::BadInteger`] for a length
/// above `u32::MAX`, [`Error::BadHuffman`] for an invalid Huffman code.
fn read_string<'a>(rest: &mut &'a [u8]) -> Result<Cow<'a, [u8]>, Error> {
    let huffman = rest.first().is_some_and(|&b| b & 0x80 != 0);
    let len = read_int(rest, 7)?;
    let (raw, tail) = rest.split_at_checked(len).ok_or(Error::Truncated)?;
    *rest = tail;
    if huffman {
        huffman::decode(raw).map(Cow::Owned)
    } else {
        Ok(Cow::Borrowed(raw))
    }
}
