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

use iced_x86::{
    Decoder, DecoderOptions, FlowControl, Instruction, InstructionInfoFactory, Mnemonic, OpAccess,
    OpKind, Register,
};
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
    /// Where the entry uprobe goes, from the symbol's start: 0, or past a leading `endbr64` when
    /// the next instruction is one the kernel emulates (see [`entry_offset`]).
    pub entry_offset: u64,
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
                entry_offset: entry_offset(code, sym.address()),
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

/// Instructions of a prologue searched for an emulated one (see [`entry_offset`]).
const PROLOGUE_SCAN: usize = 12;

/// Whether Linux's x86 uprobes emulate `instr` instead of single-stepping a copy of it:
/// `push` of a 64-bit register (at most 2 bytes), the one-byte `nop`, and relative
/// `jmp`/`call`/`jcc` (`arch/x86/kernel/uprobes.c`: `branch_setup_xol_ops`,
/// `push_setup_xol_ops`; push emulation since Linux 6.11, the others for much longer).
fn kernel_emulates(instr: &Instruction) -> bool {
    match instr.mnemonic() {
        Mnemonic::Push => instr.len() <= 2 && instr.op0_kind() == OpKind::Register,
        Mnemonic::Nop => instr.len() == 1,
        _ => {
            matches!(
                instr.flow_control(),
                FlowControl::UnconditionalBranch
                    | FlowControl::ConditionalBranch
                    | FlowControl::Call
            ) && matches!(
                instr.op0_kind(),
                OpKind::NearBranch16 | OpKind::NearBranch32 | OpKind::NearBranch64
            )
        }
    }
}

/// Where to put a function's entry uprobe (offset from its start) so that the probed instruction
/// is one the kernel emulates: a single-stepped one costs a second trap (`#DB`) per call, which
/// took 53% of all CPU under HTTPS load in this VM (`perf`: `exc_debug_user`). Debian's
/// `SSL_read` starts with `sub rsp, 0x18` (single-stepped); its first emulated instruction is a
/// `js` 0x16 bytes in.
///
/// The probe moves to the first emulated instruction among the first [`PROLOGUE_SCAN`] only
/// when the entry program still sees the call's arguments there: every instruction before it
/// runs straight on (no branch, call or return), writes none of the argument registers `rdi`,
/// `rsi`, `rdx`, `rcx`, and no direct branch of the function lands after the start and at or
/// before the new offset (which would run the probe without a call). Otherwise 0.
pub fn entry_offset(code: &[u8], address: u64) -> u64 {
    let args = [Register::RDI, Register::RSI, Register::RDX, Register::RCX];
    let mut info = InstructionInfoFactory::new();
    let mut decoder = Decoder::with_ip(64, code, address, DecoderOptions::NONE);
    let mut target = None;
    for instr in decoder.iter().take(PROLOGUE_SCAN) {
        if kernel_emulates(&instr) {
            target = Some(instr.ip());
            break;
        }
        let writes_an_argument = info.info(&instr).used_registers().iter().any(|r| {
            args.contains(&r.register().full_register())
                && !matches!(r.access(), OpAccess::Read | OpAccess::CondRead)
        });
        if instr.flow_control() != FlowControl::Next || writes_an_argument || instr.is_invalid() {
            return 0;
        }
    }
    let Some(target) = target.filter(|t| *t != address) else {
        return 0;
    };
    // A direct branch into (start, target] would fire the probe without a call.
    let lands_inside = Decoder::with_ip(64, code, address, DecoderOptions::NONE)
        .into_iter()
        .any(|i| {
            matches!(
                i.op0_kind(),
                OpKind::NearBranch16 | OpKind::NearBranch32 | OpKind::NearBranch64
            ) && (address + 1..=target).contains(&i.near_branch_target())
        });
    if lands_inside {
        0
    } else {
        target - address
    }
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
    fn entry_probe_moves_onto_the_first_emulated_instruction_when_the_arguments_survive() {
        // Debian's SSL_read: sub rsp,0x18; mov rax,fs:[0x28]; mov [rsp+8],rax; xor eax,eax;
        // test edx,edx; js +0x2f; mov rcx,rsp; ...
        let ssl_read = [
            0x48, 0x83, 0xec, 0x18, 0x64, 0x48, 0x8b, 0x04, 0x25, 0x28, 0x00, 0x00, 0x00, 0x48,
            0x89, 0x44, 0x24, 0x08, 0x31, 0xc0, 0x85, 0xd2, 0x78, 0x2f, 0x48, 0x89, 0xe1, 0xc3,
        ];
        assert_eq!(entry_offset(&ssl_read, 0x35430), 0x16);
        // endbr64; push r15
        assert_eq!(
            entry_offset(&[0xf3, 0x0f, 0x1e, 0xfa, 0x41, 0x57, 0xc3], 0x1000),
            4
        );
        // sub rsp,8; call rel32 (SSL_read_ex)
        assert_eq!(
            entry_offset(
                &[0x48, 0x83, 0xec, 0x08, 0xe8, 0xc7, 0xfd, 0xff, 0xff, 0xc3],
                0
            ),
            4
        );
        // push rbp first: already emulated at the symbol.
        assert_eq!(entry_offset(&[0x55, 0x48, 0x89, 0xe5, 0xc3], 0), 0);
    }

    #[test]
    fn entry_probe_stays_put_when_moving_it_is_unsafe() {
        // mov rsi,rdi (an argument overwritten); push rbp
        assert_eq!(entry_offset(&[0x48, 0x89, 0xfe, 0x55, 0xc3], 0), 0);
        // mov ecx,1 (rcx's low half written); push rbp
        assert_eq!(
            entry_offset(&[0xb9, 0x01, 0x00, 0x00, 0x00, 0x55, 0xc3], 0),
            0
        );
        // sub rsp,8; push rbp; ... ; jmp back to offset 4 (the push): a branch lands on it.
        assert_eq!(
            entry_offset(&[0x48, 0x83, 0xec, 0x08, 0x55, 0x90, 0xeb, 0xfc, 0xc3], 0),
            0
        );
        // ret before anything emulated: no straight run to move along.
        assert_eq!(entry_offset(&[0x48, 0x83, 0xec, 0x08, 0xc3, 0x55], 0), 0);
        // Nothing emulated within the scan.
        assert_eq!(
            entry_offset(&[0x48, 0x83, 0xec, 0x08, 0x48, 0x83, 0xc4, 0x08], 0),
            0
        );
    }

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
