//! Role and 4-tuple of a connection that was open before the agent started (no
//! `inet_sock_set_state` record was seen for it): `/proc/<tgid>/fd/<fd>` → `socket:[inode]` → the
//! matching row of `/proc/<tgid>/net/tcp{,6}` (the process's own network namespace). A local port
//! that also has a `LISTEN` row marks the accepted (server) side.

use std::{
    collections::HashMap,
    fs,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    time::Instant,
};

use crate::exchange::Role;

/// A connection's endpoints and role as read from `/proc`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// Local address.
    pub local: SocketAddr,
    /// Remote address.
    pub peer: SocketAddr,
    /// Server when the local port is listening, client otherwise.
    pub role: Role,
}

/// Why `/proc` could not tell.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ResolveError {
    /// The fd is gone or is not a socket (process exited, fd closed).
    #[error("fd is not a socket any more")]
    NotASocket,
    /// No row of `/proc/<tgid>/net/tcp{,6}` has the socket's inode.
    #[error("socket inode not found in /proc/net/tcp")]
    NotFound,
}

impl ResolveError {
    /// The self-telemetry counter this outcome is counted under.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::NotASocket => "conn_unresolved_not_a_socket",
            Self::NotFound => "conn_unresolved_inode_not_found",
        }
    }
}

/// `TCP_LISTEN` as printed in the `st` column.
const ST_LISTEN: u8 = 0x0A;

/// One row of `/proc/net/tcp{,6}`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Row {
    local: SocketAddr,
    remote: SocketAddr,
    state: u8,
    inode: u64,
}

/// Resolves sockets through `/proc`, parsing each network namespace's `/proc/<pid>/net/tcp{,6}`
/// at most once per batch of records (one `now`): under connection churn (after ring-buffer
/// drops, many connections arrive without their `inet_sock_set_state` record) parsing a table of
/// thousands of rows per connection would stall the capture task. A socket missing from a table
/// read for an earlier batch triggers a fresh read.
#[derive(Debug, Default)]
pub struct Resolver {
    tables: HashMap<String, NetTable>,
}

/// One network namespace's TCP table.
#[derive(Debug)]
struct NetTable {
    read_at: Instant,
    rows: Vec<Row>,
}

impl Resolver {
    /// Resolves `(tgid, fd)`; `now` identifies the batch: a table is read at most once per batch.
    ///
    /// # Errors
    /// [`ResolveError`] when the fd is gone or the socket is not listed.
    pub fn resolve(&mut self, tgid: u32, fd: i32, now: Instant) -> Result<Resolved, ResolveError> {
        let link =
            fs::read_link(format!("/proc/{tgid}/fd/{fd}")).map_err(|_| ResolveError::NotASocket)?;
        let inode = socket_inode(&link.to_string_lossy()).ok_or(ResolveError::NotASocket)?;
        let netns = fs::read_link(format!("/proc/{tgid}/ns/net")).map_or_else(
            |_| format!("pid:{tgid}"),
            |p| p.to_string_lossy().into_owned(),
        );
        let stale = self.tables.get(&netns).is_none_or(|t| t.read_at < now);
        if let Some(t) = self.tables.get(&netns) {
            let found = from_rows(&t.rows, inode);
            if found.is_ok() || !stale {
                return found;
            }
        }
        let rows = read_rows(tgid);
        let found = from_rows(&rows, inode);
        self.tables.insert(netns, NetTable { read_at: now, rows });
        found
    }

    /// Drops tables not refreshed since `before`.
    pub fn retain_read_since(&mut self, before: Instant) {
        self.tables.retain(|_, t| t.read_at >= before);
    }
}

fn read_rows(tgid: u32) -> Vec<Row> {
    let mut rows = Vec::new();
    for file in ["tcp", "tcp6"] {
        if let Ok(text) = fs::read_to_string(format!("/proc/{tgid}/net/{file}")) {
            rows.extend(text.lines().skip(1).filter_map(parse_row));
        }
    }
    rows
}

fn from_rows(rows: &[Row], inode: u64) -> Result<Resolved, ResolveError> {
    let row = rows
        .iter()
        .find(|r| r.inode == inode && r.state != ST_LISTEN)
        .ok_or(ResolveError::NotFound)?;
    let listening = rows.iter().any(|r| {
        r.state == ST_LISTEN
            && r.local.port() == row.local.port()
            && (r.local.ip().is_unspecified() || r.local.ip() == row.local.ip())
    });
    Ok(Resolved {
        local: row.local,
        peer: row.remote,
        role: if listening {
            Role::Server
        } else {
            Role::Client
        },
    })
}

/// `socket:[12345]` → 12345.
fn socket_inode(link: &str) -> Option<u64> {
    link.strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// Parses `sl local rem st tx:rx tr:when retr uid timeout inode ...`.
fn parse_row(line: &str) -> Option<Row> {
    let mut cols = line.split_whitespace();
    let _sl = cols.next()?;
    let local = parse_addr(cols.next()?)?;
    let remote = parse_addr(cols.next()?)?;
    let state = u8::from_str_radix(cols.next()?, 16).ok()?;
    let inode = cols.nth(5)?.parse().ok()?;
    Some(Row {
        local,
        remote,
        state,
        inode,
    })
}

/// `0100007F:1F90` (IPv4) or 32 hex digits + port (IPv6). The kernel prints each 32-bit word of
/// the network-order address as a native-endian integer (`%08X`), so each word's bytes come back
/// with `to_le_bytes` on little-endian hosts.
fn parse_addr(s: &str) -> Option<SocketAddr> {
    let (addr, port) = s.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let word = |hex: &str| u32::from_str_radix(hex, 16).ok().map(u32::to_ne_bytes);
    let ip = match addr.len() {
        8 => IpAddr::V4(Ipv4Addr::from(word(addr)?)),
        32 => {
            let mut b = [0u8; 16];
            for (i, chunk) in b.chunks_mut(4).enumerate() {
                chunk.copy_from_slice(&word(addr.get(i * 8..i * 8 + 8)?)?);
            }
            let v6 = Ipv6Addr::from(b);
            v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4)
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    // Rows in the exact shape of this machine's /proc/net/tcp (kernel 6.18).
    const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:4E20 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1111 1 0000000000000000 100 0 0 10 0
   1: 0100007F:4E20 0100007F:C350 01 00000000:00000000 00:00000000 00000000     0        0 2222 1 0000000000000000 20 4 30 10 -1
   2: 0100007F:C350 0100007F:4E20 01 00000000:00000000 00:00000000 00000000     0        0 3333 1 0000000000000000 20 4 30 10 -1";

    fn rows() -> Vec<Row> {
        TCP.lines().skip(1).filter_map(parse_row).collect()
    }

    #[test]
    fn accepted_socket_is_server() {
        let r = from_rows(&rows(), 2222).unwrap();
        assert_eq!(r.role, Role::Server);
        assert_eq!(r.local, "127.0.0.1:20000".parse().unwrap());
        assert_eq!(r.peer, "127.0.0.1:50000".parse().unwrap());
    }

    #[test]
    fn connected_socket_is_client() {
        let r = from_rows(&rows(), 3333).unwrap();
        assert_eq!(r.role, Role::Client);
        assert_eq!(r.peer, "127.0.0.1:20000".parse().unwrap());
    }

    #[test]
    fn unknown_inode_and_listener_are_not_found() {
        assert_eq!(from_rows(&rows(), 9), Err(ResolveError::NotFound));
        assert_eq!(from_rows(&rows(), 1111), Err(ResolveError::NotFound));
    }

    #[test]
    fn parses_ipv6_and_mapped_ipv4() {
        let a = parse_addr("00000000000000000000000001000000:0050").unwrap();
        assert_eq!(a, "[::1]:80".parse().unwrap());
        let m = parse_addr("0000000000000000FFFF00000100007F:0050").unwrap();
        assert_eq!(m, "127.0.0.1:80".parse().unwrap());
        assert_eq!(socket_inode("socket:[42]"), Some(42));
        assert_eq!(socket_inode("pipe:[42]"), None);
    }

    #[test]
    fn resolves_a_live_loopback_pair() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        use std::os::fd::AsRawFd;
        let me = std::process::id();
        let mut r = Resolver::default();
        let now = Instant::now();
        let c = r.resolve(me, client.as_raw_fd(), now).unwrap();
        // Same batch: served from the table read for the first lookup.
        let s = r.resolve(me, server.as_raw_fd(), now).unwrap();
        assert_eq!(c.role, Role::Client);
        assert_eq!(s.role, Role::Server);
        assert_eq!(c.local, s.peer);
        assert_eq!(c.peer, s.local);
    }
}
