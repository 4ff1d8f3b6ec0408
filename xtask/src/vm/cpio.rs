//! A writer of cpio archives in the "newc" format, the one the kernel unpacks as an initramfs.
//!
//! Input: directories, regular files and device nodes, each with a path relative to the archive
//! root. Output: the archive's bytes (uncompressed; the kernel needs no decompressor for it).
//!
//! # Wire format
//! Per entry (kernel `Documentation/driver-api/early-userspace/buffer-format.rst`):
//! ```text
//! "070701" ino mode uid gid nlink mtime filesize devmajor devminor rdevmajor rdevminor namesize check
//!          (13 fields of 8 uppercase hex digits: 110 header bytes in all)
//! name NUL, padded with NULs to a multiple of 4 bytes (counting the header)
//! data, padded with NULs to a multiple of 4 bytes
//! ```
//! The archive ends with an entry named `TRAILER!!!`. Owner is root, mtime 0.

use std::collections::BTreeSet;

const MAGIC: &str = "070701";
const TRAILER: &str = "TRAILER!!!";
const S_IFDIR: u32 = 0o040_000;
const S_IFREG: u32 = 0o100_000;
const S_IFCHR: u32 = 0o020_000;

/// An archive being written; parent directories are added on demand.
#[derive(Debug, Default)]
pub(crate) struct Archive {
    bytes: Vec<u8>,
    next_ino: u32,
    dirs: BTreeSet<String>,
}

/// One entry's header fields that vary.
struct Entry<'a> {
    path: &'a str,
    mode: u32,
    data: &'a [u8],
    rdev: (u32, u32),
}

impl Archive {
    /// Adds directory `path` (mode 0755) and its missing parents.
    pub(crate) fn dir(&mut self, path: &str) {
        let path = path.trim_matches('/');
        if path.is_empty() || self.dirs.contains(path) {
            return;
        }
        self.parents(path);
        self.dirs.insert(path.to_owned());
        self.entry(&Entry {
            path,
            mode: S_IFDIR | 0o755,
            data: &[],
            rdev: (0, 0),
        });
    }

    /// Adds regular file `path` with permission bits `perm` (e.g. `0o755`).
    pub(crate) fn file(&mut self, path: &str, perm: u32, data: &[u8]) {
        let path = path.trim_start_matches('/');
        self.parents(path);
        self.entry(&Entry {
            path,
            mode: S_IFREG | (perm & 0o7777),
            data,
            rdev: (0, 0),
        });
    }

    /// Adds character device `path` (`major`, `minor`) with permission bits `perm`.
    pub(crate) fn char_device(&mut self, path: &str, perm: u32, major: u32, minor: u32) {
        let path = path.trim_start_matches('/');
        self.parents(path);
        self.entry(&Entry {
            path,
            mode: S_IFCHR | (perm & 0o7777),
            data: &[],
            rdev: (major, minor),
        });
    }

    /// Appends the trailer and returns the archive.
    pub(crate) fn finish(mut self) -> Vec<u8> {
        self.entry(&Entry {
            path: TRAILER,
            mode: 0,
            data: &[],
            rdev: (0, 0),
        });
        self.bytes
    }

    fn parents(&mut self, path: &str) {
        if let Some((parent, _)) = path.rsplit_once('/') {
            self.dir(parent);
        }
    }

    fn entry(&mut self, entry: &Entry<'_>) {
        self.next_ino += 1;
        let is_trailer = entry.path == TRAILER;
        let fields = [
            if is_trailer { 0 } else { self.next_ino },
            entry.mode,
            0, // uid
            0, // gid
            if entry.mode & S_IFDIR == S_IFDIR {
                2
            } else {
                1
            },
            0, // mtime
            field(entry.data.len()),
            0, // devmajor
            0, // devminor
            entry.rdev.0,
            entry.rdev.1,
            field(entry.path.len() + 1),
            0, // check
        ];
        self.bytes.extend_from_slice(MAGIC.as_bytes());
        for value in fields {
            self.bytes
                .extend_from_slice(format!("{value:08X}").as_bytes());
        }
        self.bytes.extend_from_slice(entry.path.as_bytes());
        self.bytes.push(0);
        self.pad();
        self.bytes.extend_from_slice(entry.data);
        self.pad();
    }

    fn pad(&mut self) {
        let len = self.bytes.len().next_multiple_of(4);
        self.bytes.resize(len, 0);
    }
}

/// A size as a header field. Sizes past 4 GiB cannot be written in newc; nothing here comes near.
fn field(len: usize) -> u32 {
    u32::try_from(len).expect("cpio newc entries are limited to 4 GiB")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header_field(entry: &[u8], index: usize) -> u32 {
        let start = 6 + index * 8;
        let hex = std::str::from_utf8(&entry[start..start + 8]).unwrap();
        u32::from_str_radix(hex, 16).unwrap()
    }

    #[test]
    fn file_entry_layout_and_padding() {
        let mut archive = Archive::default();
        archive.file("init", 0o755, b"#!/bin/sh\n");
        let bytes = archive.finish();
        assert_eq!(&bytes[..6], b"070701");
        assert_eq!(header_field(&bytes, 1), S_IFREG | 0o755);
        assert_eq!(header_field(&bytes, 6), 10, "filesize");
        assert_eq!(header_field(&bytes, 11), 5, "namesize counts the NUL");
        // 110-byte header + "init\0" = 115, padded to 116; data 10 bytes, padded to 12.
        assert_eq!(&bytes[110..116], b"init\0\0");
        assert_eq!(&bytes[116..126], b"#!/bin/sh\n");
        assert_eq!(&bytes[126..128], b"\0\0");
        assert_eq!(
            &bytes[128..134],
            b"070701",
            "the trailer starts on a 4-byte boundary"
        );
        assert!(bytes.len() % 4 == 0);
    }

    #[test]
    fn parents_are_added_once_before_children() {
        let mut archive = Archive::default();
        archive.file("lib/modules/a.ko", 0o644, b"x");
        archive.file("lib/modules/b.ko", 0o644, b"y");
        let bytes = archive.finish();
        let text = String::from_utf8_lossy(&bytes);
        let lib = text.find("lib\0").unwrap();
        let modules = text.find("lib/modules\0").unwrap();
        let a = text.find("lib/modules/a.ko\0").unwrap();
        assert!(lib < modules && modules < a);
        assert_eq!(text.matches("lib/modules\0").count(), 1);
    }

    #[test]
    fn archive_ends_with_trailer() {
        let bytes = Archive::default().finish();
        let text = String::from_utf8_lossy(&bytes);
        assert!(text.contains("TRAILER!!!\0"));
        assert_eq!(bytes.len(), 124, "110 + 11 name bytes, padded to 124");
    }

    #[test]
    fn char_device_carries_rdev() {
        let mut archive = Archive::default();
        archive.char_device("dev/console", 0o600, 5, 1);
        let bytes = archive.finish();
        // The first entry is the `dev` directory; find the console entry's header.
        let at = bytes
            .windows(12)
            .position(|w| w == b"dev/console\0")
            .unwrap()
            - 110;
        assert_eq!(header_field(&bytes[at..], 1), S_IFCHR | 0o600);
        assert_eq!(header_field(&bytes[at..], 9), 5);
        assert_eq!(header_field(&bytes[at..], 10), 1);
    }
}
