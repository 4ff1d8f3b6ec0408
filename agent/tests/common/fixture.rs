//! The golden fixtures (`agent/tests/fixtures/<protocol>/*.bin`, HTTP/1 and HTTP/2): one reader for
//! the golden tests and the criterion benchmarks (all include this file with `#[path]`).

use std::{
    fs,
    path::{Path, PathBuf},
};

/// One recorded `recv()` of the relay that made the fixture (or one synthetic syscall): who sent
/// it, and the bytes.
pub(crate) struct Record {
    /// Sent by the client (else by the server).
    pub(crate) from_client: bool,
    /// The bytes.
    pub(crate) data: Vec<u8>,
}

/// `agent/tests/fixtures/http1`.
pub(crate) fn fixture_dir() -> PathBuf {
    protocol_fixture_dir("http1")
}

/// `agent/tests/fixtures/<protocol>` (`http1`, `http2`).
pub(crate) fn protocol_fixture_dir(protocol: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(protocol)
}

/// Parses a fixture: repeated `direction (b'C' | b'S'), u32 LE length, bytes` records.
///
/// # Panics
/// On an unreadable file, a bad direction byte or a truncated record (a broken fixture).
pub(crate) fn read_records(path: &Path) -> Vec<Record> {
    let bytes = fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let mut records = Vec::new();
    let mut rest = bytes.as_slice();
    while let [tag, a, b, c, d, tail @ ..] = rest {
        let from_client = match tag {
            b'C' => true,
            b'S' => false,
            other => panic!("{}: bad direction byte {other:#x}", path.display()),
        };
        let len = usize::try_from(u32::from_le_bytes([*a, *b, *c, *d])).expect("u32 fits usize");
        assert!(tail.len() >= len, "{}: truncated record", path.display());
        let (data, next) = tail.split_at(len);
        records.push(Record {
            from_client,
            data: data.to_vec(),
        });
        rest = next;
    }
    records
}
