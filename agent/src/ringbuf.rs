//! Decoding ring-buffer records into `agent_common` types. Bytes in, typed records out; nothing is
//! transmuted into an enum: kinds and directions are checked with `TryFrom`.

use agent_common::{
    event::{DATA_HEADER_BYTES, MAX_DATA_RECORD_BYTES},
    ConnEvent, DataEventHeader, DataSource, Direction, EventKind, ExecEvent,
};

/// A decoded record, borrowing its payload from the ring buffer.
#[derive(Debug)]
pub enum Record<'a> {
    /// Payload moved by one syscall.
    Data(DataRecord<'a>),
    /// A TCP state change.
    Conn(ConnEvent),
    /// A process exec'd.
    Exec(ExecEvent),
}

/// A data record with its enums decoded.
#[derive(Debug)]
pub struct DataRecord<'a> {
    /// The raw header.
    pub header: DataEventHeader,
    /// Decoded `header.direction`.
    pub direction: Direction,
    /// Decoded `header.source`.
    pub source: DataSource,
    /// Captured payload prefix (`header.captured` bytes).
    pub payload: &'a [u8],
}

/// Why a record could not be decoded (each is counted, the record dropped).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    /// Shorter than its fixed header.
    #[error("record of {0} bytes is too short")]
    Short(usize),
    /// Unknown [`EventKind`].
    #[error("unknown event kind {0}")]
    Kind(u32),
    /// Unknown [`Direction`].
    #[error("unknown direction {0}")]
    Direction(u32),
    /// Unknown [`DataSource`].
    #[error("unknown syscall source {0}")]
    Source(u32),
    /// `captured` disagrees with the record size or exceeds `len`.
    #[error("captured length {captured} does not fit a record of {size} bytes")]
    Captured {
        /// Claimed payload bytes.
        captured: u32,
        /// Record size.
        size: usize,
    },
}

impl DecodeError {
    /// Stable label for self-telemetry.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Short(_) => "short",
            Self::Kind(_) => "kind",
            Self::Direction(_) => "direction",
            Self::Source(_) => "source",
            Self::Captured { .. } => "captured",
        }
    }
}

fn read<T: Copy>(bytes: &[u8]) -> Result<T, DecodeError> {
    if bytes.len() < size_of::<T>() {
        return Err(DecodeError::Short(bytes.len()));
    }
    // SAFETY: length checked; `T` is a plain-old-data `#[repr(C)]` type from agent-common, valid for
    // any bit pattern; the read is unaligned-safe.
    Ok(unsafe { bytes.as_ptr().cast::<T>().read_unaligned() })
}

/// Decodes one ring-buffer record.
///
/// # Errors
/// [`DecodeError`] for a record that is truncated or carries an unknown enum value.
pub fn decode(bytes: &[u8]) -> Result<Record<'_>, DecodeError> {
    let kind: u32 = read(bytes)?;
    match EventKind::try_from(kind).map_err(DecodeError::Kind)? {
        EventKind::Conn => Ok(Record::Conn(read::<ConnEvent>(bytes)?)),
        EventKind::Exec => Ok(Record::Exec(read::<ExecEvent>(bytes)?)),
        EventKind::Data => {
            let header: DataEventHeader = read(bytes)?;
            let direction =
                Direction::try_from(header.direction).map_err(DecodeError::Direction)?;
            let source = DataSource::try_from(header.source).map_err(DecodeError::Source)?;
            let end = DATA_HEADER_BYTES + header.captured as usize;
            if end > bytes.len()
                || end > MAX_DATA_RECORD_BYTES
                || u64::from(header.captured) > header.len
            {
                return Err(DecodeError::Captured {
                    captured: header.captured,
                    size: bytes.len(),
                });
            }
            Ok(Record::Data(DataRecord {
                header,
                direction,
                source,
                payload: &bytes[DATA_HEADER_BYTES..end],
            }))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data_record(captured: u32, len: u64, payload: &[u8]) -> Vec<u8> {
        let h = DataEventHeader {
            kind: EventKind::Data as u32,
            direction: Direction::Ingress as u32,
            ts_enter_ns: 1,
            ts_exit_ns: 2,
            sk: 0xffff_8880_0000_1000,
            seq: 0,
            len,
            tgid: 10,
            tid: 11,
            fd: 3,
            captured,
            source: DataSource::Read as u32,
            _pad: 0,
            comm: *b"curl\0\0\0\0\0\0\0\0\0\0\0\0",
        };
        // SAFETY: reading a POD struct as bytes for the test.
        let mut v = unsafe {
            std::slice::from_raw_parts((&raw const h).cast::<u8>(), size_of::<DataEventHeader>())
        }
        .to_vec();
        v.extend_from_slice(payload);
        v
    }

    #[test]
    fn decodes_data_with_payload() {
        let bytes = data_record(5, 9, b"GET /");
        let Ok(Record::Data(d)) = decode(&bytes) else {
            panic!("not data")
        };
        assert_eq!(d.payload, b"GET /");
        assert_eq!(d.direction, Direction::Ingress);
        assert_eq!(d.source, DataSource::Read);
        assert_eq!(d.header.len, 9);
    }

    #[test]
    fn rejects_truncated_and_unknown() {
        assert_eq!(decode(&[1, 0]).unwrap_err(), DecodeError::Short(2));
        assert_eq!(decode(&[9, 0, 0, 0]).unwrap_err(), DecodeError::Kind(9));
        let bytes = data_record(10, 10, b"short");
        assert!(matches!(decode(&bytes), Err(DecodeError::Captured { .. })));
        let bytes = data_record(5, 4, b"GET /");
        assert!(matches!(decode(&bytes), Err(DecodeError::Captured { .. })));
    }
}
