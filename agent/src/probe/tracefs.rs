//! tracefs: find it (mounting it when missing, as `perf` and production agents do) and read
//! tracepoint field offsets from `events/<category>/<name>/format`, so no kernel layout is compiled
//! into the eBPF programs.

use std::{
    collections::HashMap,
    ffi::CString,
    fs,
    path::{Path, PathBuf},
};

use agent_common::TracepointLayout;

use super::LoadError;

const TRACEFS: &str = "/sys/kernel/tracing";
const DEBUGFS_TRACING: &str = "/sys/kernel/debug/tracing";

/// Returns the tracefs root, mounting tracefs at `/sys/kernel/tracing` when it is not mounted.
///
/// # Errors
/// [`LoadError::Tracefs`] when it is missing and cannot be mounted.
pub(super) fn ensure_mounted() -> Result<PathBuf, LoadError> {
    for dir in [TRACEFS, DEBUGFS_TRACING] {
        if Path::new(dir).join("events").is_dir() {
            return Ok(PathBuf::from(dir));
        }
    }
    // Mounted but unreadable: not root (tracefs is mode 0700).
    let mounts = fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    if let Some(dir) = mounts.lines().find_map(|l| {
        let mut f = l.split_whitespace();
        let (dir, fstype) = (f.nth(1)?, f.next()?);
        (fstype == "tracefs").then_some(dir)
    }) {
        return Err(LoadError::TracefsAccess {
            path: PathBuf::from(dir),
        });
    }
    let target = CString::new(TRACEFS).expect("no NUL in a constant path");
    let fstype = CString::new("tracefs").expect("no NUL in a constant");
    // SAFETY: valid NUL-terminated strings; no data argument.
    let rc = unsafe {
        libc::mount(
            fstype.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(LoadError::Tracefs {
            source: std::io::Error::last_os_error(),
        });
    }
    tracing::info!(path = TRACEFS, "mounted tracefs");
    Ok(PathBuf::from(TRACEFS))
}

/// Field name → byte offset, parsed from a tracefs `format` file.
///
/// # Errors
/// [`LoadError::TracepointFormat`] when the file cannot be read.
pub(super) fn field_offsets(
    tracefs: &Path,
    category: &str,
    name: &str,
) -> Result<HashMap<String, u32>, LoadError> {
    let path = tracefs
        .join("events")
        .join(category)
        .join(name)
        .join("format");
    let text = fs::read_to_string(&path).map_err(|source| LoadError::TracepointFormat {
        tracepoint: format!("{category}:{name}"),
        source,
    })?;
    Ok(parse_format(&text))
}

/// Parses lines like `\tfield:__u16 family;\toffset:16;\tsize:2;\tsigned:0;`.
fn parse_format(text: &str) -> HashMap<String, u32> {
    let mut out = HashMap::new();
    for line in text.lines() {
        let mut decl = None;
        let mut offset = None;
        for part in line.split(';') {
            let part = part.trim();
            if let Some(d) = part.strip_prefix("field:") {
                decl = Some(d);
            } else if let Some(o) = part.strip_prefix("offset:") {
                offset = o.trim().parse::<u32>().ok();
            }
        }
        if let (Some(decl), Some(offset)) = (decl, offset) {
            let last = decl.split_whitespace().last().unwrap_or_default();
            let name = last
                .split('[')
                .next()
                .unwrap_or_default()
                .trim_start_matches('*');
            out.insert(name.to_owned(), offset);
        }
    }
    out
}

/// Builds the [`TracepointLayout`] global from this kernel's `sock:*` format files, and says
/// whether the `tracepoint` capture mode is possible: `Err(reason)` when the kernel lacks
/// `sock:sock_{send,recv}_length` (before Linux 6.3; their offsets are then left at 0 and unused).
///
/// # Errors
/// [`LoadError::TracepointFormat`] / [`LoadError::TracepointField`] for `inet_sock_set_state`,
/// which every mode needs.
pub(super) fn tracepoint_layout(
    tracefs: &Path,
) -> Result<(TracepointLayout, Result<(), String>), LoadError> {
    let state = field_offsets(tracefs, "sock", "inet_sock_set_state")?;
    let len = (
        field_offsets(tracefs, "sock", "sock_send_length"),
        field_offsets(tracefs, "sock", "sock_recv_length"),
    );
    let (send, recv) = match len {
        (Ok(send), Ok(recv)) => (send, recv),
        _ => {
            let reason = "sock:sock_send_length / sock:sock_recv_length missing (Linux 6.3+)";
            return Ok((layout(&state, None)?, Err(reason.to_owned())));
        }
    };
    // Both length tracepoints share one event class; check they agree.
    for f in ["sk", "family", "protocol", "ret", "flags"] {
        let (a, b) = (send.get(f), recv.get(f));
        if a.is_none() || a != b {
            let reason = format!(
                "sock:sock_recv_length field `{f}` is missing or differs from sock_send_length"
            );
            return Ok((layout(&state, None)?, Err(reason)));
        }
    }
    Ok((layout(&state, Some(&send))?, Ok(())))
}

/// The layout from `inet_sock_set_state`'s fields and, when usable, `sock_send_length`'s.
fn layout(
    state: &HashMap<String, u32>,
    send: Option<&HashMap<String, u32>>,
) -> Result<TracepointLayout, LoadError> {
    let get = |map: &HashMap<String, u32>, tp: &str, field: &str| {
        map.get(field)
            .copied()
            .ok_or_else(|| LoadError::TracepointField {
                tracepoint: tp.to_owned(),
                field: field.to_owned(),
            })
    };
    let len = |field: &str| send.and_then(|m| m.get(field).copied()).unwrap_or(0);
    let s = "sock:inet_sock_set_state";
    Ok(TracepointLayout {
        len_sk: len("sk"),
        len_family: len("family"),
        len_protocol: len("protocol"),
        len_flags: len("flags"),
        state_skaddr: get(state, s, "skaddr")?,
        state_oldstate: get(state, s, "oldstate")?,
        state_newstate: get(state, s, "newstate")?,
        state_sport: get(state, s, "sport")?,
        state_dport: get(state, s, "dport")?,
        state_family: get(state, s, "family")?,
        state_protocol: get(state, s, "protocol")?,
        state_saddr: get(state, s, "saddr")?,
        state_daddr: get(state, s, "daddr")?,
        state_saddr_v6: get(state, s, "saddr_v6")?,
        state_daddr_v6: get(state, s, "daddr_v6")?,
        len_ret: len("ret"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Copied from this project's test kernel (6.18) `events/sock/inet_sock_set_state/format`.
    const STATE_FORMAT: &str = "name: inet_sock_set_state\nID: 2287\nformat:\n\
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;\n\n\
\tfield:const void * skaddr;\toffset:8;\tsize:8;\tsigned:0;\n\
\tfield:int oldstate;\toffset:16;\tsize:4;\tsigned:1;\n\
\tfield:__u8 saddr_v6[16];\toffset:40;\tsize:16;\tsigned:0;\n\n\
print fmt: \"family=%s\", REC->family\n";

    #[test]
    fn parses_names_pointers_and_arrays() {
        let m = parse_format(STATE_FORMAT);
        assert_eq!(m.get("skaddr"), Some(&8));
        assert_eq!(m.get("oldstate"), Some(&16));
        assert_eq!(m.get("saddr_v6"), Some(&40));
        assert_eq!(m.get("common_pid"), Some(&4));
        assert_eq!(m.len(), 5);
    }
}
