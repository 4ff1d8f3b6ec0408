//! Finding TLS libraries to instrument: which files the running processes map that export
//! OpenSSL/BoringSSL's `SSL_read`/`SSL_write` family, and where those functions return.
//!
//! Input: `/proc/<pid>/maps` and the ELF files they name (opened through `/proc/<pid>/root`, so
//! files in other mount namespaces — containers — are found too). Output: [`TlsTarget`]s, one per
//! distinct file (device + inode), with each function's symbol and the offsets of its `ret`
//! instructions (decoded with iced-x86, never by scanning for `0xC3` bytes).
//!
//! Candidates are files named like `libssl*.so*` or `*boringssl*`, and each process's own
//! executable (OpenSSL linked statically, e.g. Node.js exports `SSL_read` from `/usr/bin/node`).
//! Stripped files without the symbols are remembered as negative and skipped.

use std::{
    collections::HashSet,
    fs,
    os::fd::AsRawFd as _,
    path::{Path, PathBuf},
};

use iced_x86::{Decoder, DecoderOptions, Mnemonic};
use object::{Object as _, ObjectSection as _, ObjectSymbol as _};

/// The TLS library entry points Sonde probes, with the eBPF program for each.
pub const TLS_FUNCTIONS: [(&str, &str); 4] = [
    ("SSL_read", "ssl_read_enter"),
    ("SSL_read_ex", "ssl_read_ex_enter"),
    ("SSL_write", "ssl_write_enter"),
    ("SSL_write_ex", "ssl_write_ex_enter"),
];

/// A file's identity: `(st_dev as printed in maps, inode)`.
pub type FileId = (String, u64);

/// One function to probe in a [`TlsTarget`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFunction {
    /// Symbol name (`SSL_read`).
    pub symbol: &'static str,
    /// Entry program name in `agent-ebpf`.
    pub program: &'static str,
    /// Offsets of its `ret` instructions from the symbol's start.
    pub ret_offsets: Vec<u64>,
}

/// A file to attach TLS uprobes to, held open by the agent.
#[derive(Debug)]
pub struct TlsTarget {
    /// Identity (attach once per file).
    pub id: FileId,
    /// `/proc/self/fd/<n>` of the open file: stays valid even when the process that revealed the
    /// file (through its `/proc/<pid>/root`) exits before the uprobes are attached.
    pub path: PathBuf,
    /// Keeps `path` valid until the target is dropped.
    _file: fs::File,
    /// Path as the process sees it (for logs).
    pub display: String,
    /// Functions found (at least `SSL_read` or `SSL_read_ex`, and `SSL_write` or `SSL_write_ex`).
    pub functions: Vec<TlsFunction>,
}

/// Why a file yields no target (each is counted; none is an error of the agent).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TargetError {
    /// The file could not be opened or mapped (process exited, file deleted).
    #[error("cannot open")]
    Open,
    /// Not a parsable ELF file.
    #[error("not an ELF file")]
    NotElf,
    /// No `SSL_read*`/`SSL_write*` symbols (stripped, or no TLS library inside).
    #[error("no SSL_read/SSL_write symbols")]
    NoSymbols,
}

/// A mapped file seen in `/proc/<pid>/maps` that may hold a TLS library.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// Identity.
    pub id: FileId,
    /// Path as the process sees it.
    pub path: String,
    /// A process mapping it (to reach the file through `/proc/<pid>/root`).
    pub pid: u32,
}

/// Candidates mapped by process `pid` (nothing when the process is gone).
pub fn candidates(pid: u32) -> Vec<Candidate> {
    let Ok(maps) = fs::read_to_string(format!("/proc/{pid}/maps")) else {
        return Vec::new();
    };
    let exe = fs::read_link(format!("/proc/{pid}/exe"))
        .ok()
        .map(|p| p.to_string_lossy().into_owned());
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for line in maps.lines() {
        let Some((id, path)) = parse_maps_line(line) else {
            continue;
        };
        if !(is_tls_library_name(path) || exe.as_deref() == Some(path)) || !seen.insert(id.clone())
        {
            continue;
        }
        out.push(Candidate {
            id,
            path: path.to_owned(),
            pid,
        });
    }
    out
}

/// Every process id in `/proc`.
pub fn all_pids() -> Vec<u32> {
    fs::read_dir("/proc")
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// `addr perms offset dev inode path` → `((dev, inode), path)` for file-backed mappings.
fn parse_maps_line(line: &str) -> Option<(FileId, &str)> {
    let mut cols = line.splitn(6, ' ');
    let (_addr, _perms, _offset) = (cols.next()?, cols.next()?, cols.next()?);
    let dev = cols.next()?;
    let inode: u64 = cols.next()?.parse().ok()?;
    let path = cols.next()?.trim_start();
    (inode != 0 && path.starts_with('/')).then(|| ((dev.to_owned(), inode), path))
}

fn is_tls_library_name(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    (name.starts_with("libssl") && name.contains(".so")) || name.contains("boringssl")
}

/// Reads a candidate's ELF file and finds the TLS functions and their return sites.
///
/// # Errors
/// [`TargetError`] when the file is gone, not ELF, or lacks the symbols.
pub fn analyze(c: &Candidate) -> Result<TlsTarget, TargetError> {
    let path = Path::new("/proc")
        .join(c.pid.to_string())
        .join("root")
        .join(c.path.trim_start_matches('/'));
    let file = fs::File::open(&path).map_err(|_| TargetError::Open)?;
    // SAFETY: read-only private mapping; a file truncated underneath would fault, which is why
    // only regular files found in maps (libraries and executables, replaced not truncated) are read.
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|_| TargetError::Open)?;
    let functions = find_functions(&map)?;
    let fd_path = PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()));
    Ok(TlsTarget {
        id: c.id.clone(),
        path: fd_path,
        _file: file,
        display: c.path.clone(),
        functions,
    })
}

/// The TLS functions in an ELF image and their `ret` offsets.
///
/// # Errors
/// [`TargetError::NotElf`] or [`TargetError::NoSymbols`].
pub fn find_functions(data: &[u8]) -> Result<Vec<TlsFunction>, TargetError> {
    let obj = object::File::parse(data).map_err(|_| TargetError::NotElf)?;
    let mut out = Vec::new();
    for (symbol, program) in TLS_FUNCTIONS {
        let sym = obj
            .dynamic_symbols()
            .chain(obj.symbols())
            .find(|s| s.is_definition() && s.name() == Ok(symbol) && s.size() > 0);
        let Some(sym) = sym else { continue };
        let Some(code) = function_bytes(&obj, data, sym.address(), sym.size()) else {
            continue;
        };
        let ret_offsets = ret_offsets(code, sym.address());
        if !ret_offsets.is_empty() {
            out.push(TlsFunction {
                symbol,
                program,
                ret_offsets,
            });
        }
    }
    let has = |prefix: &str| out.iter().any(|f| f.symbol.starts_with(prefix));
    if has("SSL_read") && has("SSL_write") {
        Ok(out)
    } else {
        Err(TargetError::NoSymbols)
    }
}

/// The bytes of `[address, address + size)` from the section that contains them.
fn function_bytes<'d>(
    obj: &object::File<'d>,
    data: &'d [u8],
    address: u64,
    size: u64,
) -> Option<&'d [u8]> {
    let section = obj
        .sections()
        .find(|s| s.address() <= address && address + size <= s.address() + s.size())?;
    let (file_off, _) = section.file_range()?;
    let start = usize::try_from(file_off + (address - section.address())).ok()?;
    data.get(start..start.checked_add(usize::try_from(size).ok()?)?)
}

/// Offsets (from `address`) of the near `ret` instructions in x86-64 `code`.
pub fn ret_offsets(code: &[u8], address: u64) -> Vec<u64> {
    let mut decoder = Decoder::with_ip(64, code, address, DecoderOptions::NONE);
    let mut out = Vec::new();
    for instr in &mut decoder {
        if instr.mnemonic() == Mnemonic::Ret {
            out.push(instr.ip() - address);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_file_backed_maps_lines() {
        let line = "7f1c2a000000-7f1c2a08f000 r-xp 00022000 fd:01 1312437                    /usr/lib/x86_64-linux-gnu/libssl.so.3";
        let ((dev, inode), path) = parse_maps_line(line).unwrap();
        assert_eq!(
            (dev.as_str(), inode, path),
            ("fd:01", 1_312_437, "/usr/lib/x86_64-linux-gnu/libssl.so.3")
        );
        assert_eq!(
            parse_maps_line("7ffd-7ffe rw-p 00000000 00:00 0                          [stack]"),
            None
        );
        assert!(is_tls_library_name("/usr/lib/x86_64-linux-gnu/libssl.so.3"));
        assert!(!is_tls_library_name(
            "/usr/lib/x86_64-linux-gnu/libcrypto.so.3"
        ));
        assert!(!is_tls_library_name("/usr/lib/libssl3.a"));
    }

    #[test]
    fn finds_ret_instructions_not_c3_bytes() {
        // mov eax, 0xc3 (b8 c3 00 00 00); ret (c3); ret 8 (c2 08 00); jmp rel8 (eb fe)
        let code = [
            0xb8, 0xc3, 0x00, 0x00, 0x00, 0xc3, 0xc2, 0x08, 0x00, 0xeb, 0xfe,
        ];
        assert_eq!(ret_offsets(&code, 0x1000), vec![5, 6]);
    }

    #[test]
    fn system_libssl_has_all_four_functions_with_returns() {
        let path = "/usr/lib/x86_64-linux-gnu/libssl.so.3";
        let Ok(data) = fs::read(path) else {
            println!("skipping: {path} not installed");
            return;
        };
        let funcs = find_functions(&data).unwrap();
        let names: Vec<_> = funcs.iter().map(|f| f.symbol).collect();
        assert_eq!(
            names,
            ["SSL_read", "SSL_read_ex", "SSL_write", "SSL_write_ex"]
        );
        assert!(funcs.iter().all(|f| !f.ret_offsets.is_empty()));
    }

    #[test]
    fn files_without_the_symbols_are_rejected() {
        assert_eq!(find_functions(b"not an elf"), Err(TargetError::NotElf));
        let me = fs::read("/proc/self/exe").unwrap();
        assert_eq!(find_functions(&me), Err(TargetError::NoSymbols));
    }
}
