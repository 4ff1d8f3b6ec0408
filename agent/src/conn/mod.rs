//! The connection table: `sk` → what is known about that TCP connection, and its protocol tracker.
//!
//! Input: decoded ring-buffer records ([`crate::ringbuf::Record`]). Output: completed
//! [`Exchange`]s with the process that made them. One owner (the capture task) mutates it.
//!
//! A connection's role and 4-tuple come from its `inet_sock_set_state` record (`SYN_SENT` →
//! client, `SYN_RECV` → server) or, for connections opened before the agent, from `/proc`
//! ([`resolve`]). Byte sequence numbers from the kernel reveal lost records; a gap resets the
//! tracker's framing in that direction instead of pairing the wrong messages.

pub mod resolve;

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::Arc,
    time::{Duration, Instant},
};

use agent_common::{
    event::{AF_INET, CONN_FLAG_OWN, TCP_CLOSE, TCP_ESTABLISHED, TCP_SYN_RECV, TCP_SYN_SENT},
    ConnEvent,
};

use crate::{
    config::Selection,
    enrich::process::{ProcessCache, ProcessInfo},
    exchange::{ConnInfo, Exchange, ExchangeKind, Role},
    proto::{http1, Chunk},
    ringbuf::DataRecord,
};

/// How long a closed socket's late records are recognised as such.
const CLOSED_LINGER: Duration = Duration::from_secs(5);

/// How long the tuple of a closed own connection is remembered.
const OWN_LINGER: Duration = Duration::from_secs(30);

/// A completed exchange and the process it belongs to.
#[derive(Debug, Clone)]
pub struct Observed {
    /// The exchange.
    pub exchange: Exchange,
    /// The process that served or made it.
    pub process: Arc<ProcessInfo>,
}

/// Connection-level counters, labelled by reason (self-telemetry).
#[derive(Debug, Default, Clone)]
pub struct ConnStats {
    /// Counter name (snake_case, includes the reason) → value.
    pub counters: HashMap<&'static str, u64>,
}

impl ConnStats {
    fn add(&mut self, name: &'static str, n: u64) {
        if n > 0 {
            *self.counters.entry(name).or_default() += n;
        }
    }
}

/// Endpoints and role learned from `inet_sock_set_state` before any data moved.
#[derive(Debug, Clone, Copy)]
struct Opened {
    role: Role,
    local: SocketAddr,
    peer: SocketAddr,
    at: Instant,
}

#[derive(Debug)]
enum State {
    /// Traced: an HTTP/1 tracker and the next expected byte offset per direction (of the socket
    /// bytes, or of the TLS plaintext once `info.tls`).
    Tracked {
        info: ConnInfo,
        process: Arc<ProcessInfo>,
        tracker: Box<http1::Tracker>,
        next_seq: [Option<u64>; 2],
        /// The tracker gave up on these bytes; only TLS plaintext can revive the connection.
        not_http: bool,
    },
    /// Not traced (filtered out or unresolvable); bytes are skipped cheaply.
    Ignored,
}

#[derive(Debug)]
struct Conn {
    state: State,
    last_seen: Instant,
}

/// `sk` → connection state. See the module docs.
#[derive(Debug)]
pub struct ConnTable {
    conns: HashMap<u64, Conn>,
    /// Sockets that reached `CLOSE` recently. A syscall can outlive its socket's state: a write
    /// answered by a reset moves the socket to `CLOSE` inside the syscall, before its exit records
    /// the bytes. Such late records are dropped here (`data_after_close`) instead of costing a
    /// `/proc` lookup for a socket that is gone.
    closed: HashMap<u64, Instant>,
    /// `(local, peer)` of the agent's own client connections (its OTLP export), with the time
    /// each closed. A connection accepted with the mirrored tuple is the collector's end.
    own: HashMap<(SocketAddr, SocketAddr), Option<Instant>>,
    /// `sk` → tuple of the agent's own connections, to mark them closed.
    own_by_sk: HashMap<u64, (SocketAddr, SocketAddr)>,
    opened: HashMap<u64, Opened>,
    processes: ProcessCache,
    resolver: resolve::Resolver,
    selection: Selection,
    idle_timeout: Duration,
    stats: ConnStats,
    completed: Vec<http1::Completed>,
}

impl ConnTable {
    /// An empty table applying `selection`; connections idle longer than `idle_timeout` are
    /// forgotten by [`ConnTable::gc`].
    pub fn new(selection: Selection, idle_timeout: Duration) -> Self {
        Self {
            conns: HashMap::new(),
            closed: HashMap::new(),
            own: HashMap::new(),
            own_by_sk: HashMap::new(),
            opened: HashMap::new(),
            processes: ProcessCache::default(),
            resolver: resolve::Resolver::default(),
            selection,
            idle_timeout,
            stats: ConnStats::default(),
            completed: Vec::new(),
        }
    }

    /// Number of connections currently tracked or ignored.
    pub fn len(&self) -> usize {
        self.conns.len()
    }

    /// Whether no connection is known.
    pub fn is_empty(&self) -> bool {
        self.conns.is_empty()
    }

    /// Counters accumulated so far.
    pub fn stats(&self) -> &ConnStats {
        &self.stats
    }

    /// Applies a TCP state change. A close finishes the connection's last exchange (responses
    /// delimited by close) into `out`.
    pub fn on_conn_event(&mut self, ev: &ConnEvent, now: Instant, out: &mut Vec<Observed>) {
        if ev.newstate == TCP_ESTABLISHED {
            let role = match ev.oldstate {
                TCP_SYN_SENT => Role::Client,
                TCP_SYN_RECV => Role::Server,
                _ => return,
            };
            let local = sockaddr(ev.family, &ev.saddr, ev.sport);
            let peer = sockaddr(ev.family, &ev.daddr, ev.dport);
            if ev.flags & CONN_FLAG_OWN != 0 {
                self.own.insert((local, peer), None);
                self.own_by_sk.insert(ev.sk, (local, peer));
                return;
            }
            // A new connection on a reused `sk`: the old one is over.
            if let Some(old) = self.conns.remove(&ev.sk) {
                self.finish(old, ev.ts_ns, out);
            }
            self.closed.remove(&ev.sk);
            self.opened.insert(
                ev.sk,
                Opened {
                    role,
                    local,
                    peer,
                    at: now,
                },
            );
            self.stats.add("conn_opened", 1);
        } else if ev.newstate == TCP_CLOSE {
            self.opened.remove(&ev.sk);
            self.closed.insert(ev.sk, now);
            if let Some(tuple) = self.own_by_sk.remove(&ev.sk) {
                // Kept a while: the collector's records may still be in flight behind this one.
                self.own.insert(tuple, Some(now));
            }
            if let Some(conn) = self.conns.remove(&ev.sk) {
                self.finish(conn, ev.ts_ns, out);
            }
        }
    }

    fn finish(&mut self, conn: Conn, ts_ns: u64, out: &mut Vec<Observed>) {
        if let State::Tracked {
            info,
            process,
            mut tracker,
            ..
        } = conn.state
        {
            tracker.on_close(ts_ns, &mut self.completed);
            drain(
                &mut self.stats,
                &mut self.completed,
                &info,
                &process,
                &mut tracker,
                out,
            );
        }
    }

    /// Feeds one data record; completed exchanges go to `out`.
    pub fn on_data(&mut self, rec: &DataRecord<'_>, now: Instant, out: &mut Vec<Observed>) {
        let h = &rec.header;
        if !self.conns.contains_key(&h.sk) && self.closed.contains_key(&h.sk) {
            self.stats.add("data_after_close", 1);
            return;
        }
        if !self.conns.contains_key(&h.sk) {
            let state = self.new_state(rec, now);
            self.conns.insert(
                h.sk,
                Conn {
                    state,
                    last_seen: now,
                },
            );
        }
        let Some(conn) = self.conns.get_mut(&h.sk) else {
            return;
        };
        conn.last_seen = now;
        let State::Tracked {
            info,
            process,
            tracker,
            next_seq,
            not_http,
        } = &mut conn.state
        else {
            return;
        };
        let tls = rec.source.is_tls();
        if tls && !info.tls {
            // First plaintext from a TLS library: the bytes seen so far were the handshake and
            // ciphertext. Parse the plaintext stream from scratch (it has its own offsets).
            info.tls = true;
            **tracker = http1::Tracker::new(info.role);
            *next_seq = [None; 2];
            *not_http = false;
            self.stats.add("conn_tls", 1);
        }
        if *not_http || tls != info.tls {
            return;
        }
        let idx = rec.direction as usize & 1;
        if next_seq[idx].is_some_and(|expected| expected != h.seq) {
            self.stats.add("seq_gap", 1);
            tracker.on_gap(rec.direction);
        }
        next_seq[idx] = Some(h.seq.wrapping_add(h.len));
        let chunk = Chunk {
            start_ns: h.ts_enter_ns,
            end_ns: h.ts_exit_ns,
            data: rec.payload,
            len: h.len,
        };
        tracker.on_chunk(rec.direction, chunk, &mut self.completed);
        drain(
            &mut self.stats,
            &mut self.completed,
            info,
            process,
            tracker,
            out,
        );
        if tracker.is_not_http() {
            // Kept (not forgotten): TLS plaintext may still arrive for this socket.
            self.stats.add("conn_not_http", 1);
            *not_http = true;
        }
    }

    /// Decides how to treat a connection seen for the first time.
    fn new_state(&mut self, rec: &DataRecord<'_>, now: Instant) -> State {
        let h = &rec.header;
        let process = self.processes.get(h.tgid, &h.comm, now);
        if !self.selection.process_matches(h.tgid, &process.exe_name) {
            self.stats.add("conn_filtered", 1);
            return State::Ignored;
        }
        // The kernel numbers a socket's bytes from its first record, so on a connection seen
        // opening, a first record past offset 0 already reveals a loss.
        let (role, local, peer, first_seq) = match self.opened.remove(&h.sk) {
            Some(o) => (o.role, o.local, o.peer, Some(0)),
            None => match self.resolver.resolve(h.tgid, h.fd, now) {
                Ok(r) => {
                    self.stats.add("conn_resolved_from_proc", 1);
                    (r.role, r.local, r.peer, None)
                }
                Err(e) => {
                    self.stats.add(e.reason(), 1);
                    return State::Ignored;
                }
            },
        };
        if !self.selection.ports_match(local.port(), peer.port()) {
            self.stats.add("conn_filtered", 1);
            return State::Ignored;
        }
        // The collector's end of the agent's own export connection: tracing it would export a
        // span per export, forever.
        if role == Role::Server && self.own.contains_key(&(peer, local)) {
            self.stats.add("conn_own_export", 1);
            return State::Ignored;
        }
        State::Tracked {
            info: ConnInfo {
                role,
                local,
                peer,
                tgid: h.tgid,
                tls: false,
            },
            process,
            tracker: Box::new(http1::Tracker::new(role)),
            next_seq: [first_seq; 2],
            not_http: false,
        }
    }

    /// Forgets idle connections and stale bookkeeping. Call periodically.
    pub fn gc(&mut self, now: Instant) {
        let idle = self.idle_timeout;
        let before = self.conns.len();
        self.conns
            .retain(|_, c| now.duration_since(c.last_seen) < idle);
        self.stats
            .add("conn_idle_evicted", (before - self.conns.len()) as u64);
        self.opened.retain(|_, o| now.duration_since(o.at) < idle);
        self.closed
            .retain(|_, at| now.duration_since(*at) < CLOSED_LINGER);
        self.own
            .retain(|_, closed| closed.is_none_or(|t| now.duration_since(t) < OWN_LINGER));
        if let Some(cutoff) = now.checked_sub(idle) {
            self.processes.retain_used_since(cutoff);
        }
        // Cached /proc tables only help within a burst of new connections.
        if let Some(cutoff) = now.checked_sub(Duration::from_secs(1)) {
            self.resolver.retain_read_since(cutoff);
        }
    }
}

/// Moves a tracker's completed exchanges and counters out.
fn drain(
    stats: &mut ConnStats,
    completed: &mut Vec<http1::Completed>,
    info: &ConnInfo,
    process: &Arc<ProcessInfo>,
    tracker: &mut http1::Tracker,
    out: &mut Vec<Observed>,
) {
    for (reason, n) in tracker.take_stats().iter() {
        stats.add(reason, n);
    }
    for c in completed.drain(..) {
        out.push(Observed {
            exchange: Exchange {
                conn: info.clone(),
                start_ns: c.start_ns,
                end_ns: c.end_ns.max(c.start_ns),
                kind: ExchangeKind::Http(c.http),
            },
            process: Arc::clone(process),
        });
    }
}

/// Builds a socket address from a `ConnEvent` address field.
fn sockaddr(family: u16, addr: &[u8; 16], port: u16) -> SocketAddr {
    let ip = if family == AF_INET {
        IpAddr::V4(Ipv4Addr::new(addr[0], addr[1], addr[2], addr[3]))
    } else {
        let v6 = Ipv6Addr::from(*addr);
        v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4)
    };
    SocketAddr::new(ip, port)
}

#[cfg(test)]
mod tests {
    use super::*;
    use agent_common::{DataEventHeader, DataSource, Direction, EventKind};

    const SK: u64 = 0xffff_8880_1234_5000;

    fn established(sk: u64, oldstate: u32) -> ConnEvent {
        let mut saddr = [0u8; 16];
        saddr[..4].copy_from_slice(&[127, 0, 0, 1]);
        ConnEvent {
            kind: EventKind::Conn as u32,
            family: AF_INET,
            flags: 0,
            ts_ns: 1,
            sk,
            oldstate,
            newstate: TCP_ESTABLISHED,
            sport: 8080,
            dport: 50000,
            tgid: 0,
            saddr,
            daddr: saddr,
        }
    }

    fn closed(sk: u64) -> ConnEvent {
        ConnEvent {
            newstate: TCP_CLOSE,
            oldstate: TCP_ESTABLISHED,
            ..established(sk, 0)
        }
    }

    fn data<'a>(dir: Direction, seq: u64, ts: u64, payload: &'a [u8]) -> DataRecord<'a> {
        DataRecord {
            header: DataEventHeader {
                kind: EventKind::Data as u32,
                direction: dir as u32,
                ts_enter_ns: ts,
                ts_exit_ns: ts + 10,
                sk: SK,
                seq,
                len: payload.len() as u64,
                tgid: std::process::id(),
                tid: std::process::id(),
                fd: -1,
                captured: payload.len() as u32,
                source: DataSource::Read as u32,
                _pad: 0,
                comm: [0; 16],
            },
            direction: dir,
            source: DataSource::Read,
            payload,
        }
    }

    /// A TLS plaintext record (`SSL_read` for ingress, `SSL_write` for egress).
    fn tls<'a>(dir: Direction, seq: u64, ts: u64, payload: &'a [u8]) -> DataRecord<'a> {
        let source = match dir {
            Direction::Ingress => DataSource::SslRead,
            Direction::Egress => DataSource::SslWrite,
        };
        let mut r = data(dir, seq, ts, payload);
        r.header.source = source as u32;
        r.source = source;
        r
    }

    const REQ: &[u8] = b"GET /a?secret=1 HTTP/1.1\r\nHost: x\r\n\r\n";
    const RESP: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";

    #[test]
    fn accepted_connection_yields_server_exchange() {
        let mut t = ConnTable::new(Selection::default(), Duration::from_secs(60));
        let now = Instant::now();
        let mut out = Vec::new();
        t.on_conn_event(&established(SK, TCP_SYN_RECV), now, &mut out);
        t.on_data(&data(Direction::Ingress, 0, 100, REQ), now, &mut out);
        t.on_data(&data(Direction::Egress, 0, 200, RESP), now, &mut out);
        assert_eq!(out.len(), 1);
        let ex = &out[0].exchange;
        assert_eq!(ex.conn.role, Role::Server);
        assert_eq!(ex.conn.local, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(ex.conn.peer, "127.0.0.1:50000".parse().unwrap());
        assert_eq!((ex.start_ns, ex.end_ns), (110, 210));
        let ExchangeKind::Http(h) = &ex.kind;
        assert_eq!((h.path.as_str(), h.status), ("/a", 200));
        t.on_conn_event(&closed(SK), now, &mut out);
        assert!(t.is_empty());
    }

    #[test]
    fn sequence_gap_is_counted_and_resyncs() {
        let mut t = ConnTable::new(Selection::default(), Duration::from_secs(60));
        let now = Instant::now();
        let mut out = Vec::new();
        t.on_conn_event(&established(SK, TCP_SYN_SENT), now, &mut out);
        t.on_data(&data(Direction::Egress, 0, 100, REQ), now, &mut out);
        // A response record was lost: the next one starts past the expected offset.
        t.on_data(&data(Direction::Ingress, 500, 200, RESP), now, &mut out);
        assert_eq!(t.stats().counters.get("seq_gap"), Some(&1));
        t.on_data(
            &data(Direction::Egress, REQ.len() as u64, 300, REQ),
            now,
            &mut out,
        );
        t.on_data(
            &data(Direction::Ingress, 500 + RESP.len() as u64, 400, RESP),
            now,
            &mut out,
        );
        assert!(out.iter().all(|o| o.exchange.conn.role == Role::Client));
        assert!(out.iter().any(|o| o.exchange.end_ns == 410), "{out:?}");
    }

    #[test]
    fn collector_end_of_own_export_is_ignored() {
        let mut t = ConnTable::new(Selection::default(), Duration::from_secs(60));
        let now = Instant::now();
        let mut out = Vec::new();
        // The agent connected 127.0.0.1:50000 -> 127.0.0.1:8080 (flagged by the kernel) ...
        let mut own = established(SK + 1, TCP_SYN_SENT);
        own.flags = CONN_FLAG_OWN;
        (own.sport, own.dport) = (50000, 8080);
        t.on_conn_event(&own, now, &mut out);
        t.on_conn_event(&closed(SK + 1), now, &mut out);
        // ... and the collector accepted 127.0.0.1:8080 <- 127.0.0.1:50000.
        t.on_conn_event(&established(SK, TCP_SYN_RECV), now, &mut out);
        t.on_data(&data(Direction::Ingress, 0, 100, REQ), now, &mut out);
        t.on_data(&data(Direction::Egress, 0, 200, RESP), now, &mut out);
        assert!(out.is_empty(), "{out:?}");
        assert_eq!(t.stats().counters.get("conn_own_export"), Some(&1));
        t.gc(now + OWN_LINGER);
        assert!(t.own.is_empty());
    }

    #[test]
    fn tls_plaintext_revives_a_connection_given_up_as_not_http() {
        let mut t = ConnTable::new(Selection::default(), Duration::from_secs(60));
        let now = Instant::now();
        let mut out = Vec::new();
        t.on_conn_event(&established(SK, TCP_SYN_RECV), now, &mut out);
        // Handshake ciphertext (TLS records start with 0x16 0x03) in both directions: not HTTP.
        let hello = [0x16u8, 0x03, 0x01, 0x00, 0x20, 0x01, 0x00, 0x00];
        let mut seq = [0u64; 2];
        for i in 0..4u64 {
            for dir in [Direction::Ingress, Direction::Egress] {
                let idx = dir as usize;
                t.on_data(&data(dir, seq[idx], 10 * i, &hello), now, &mut out);
                seq[idx] += hello.len() as u64;
            }
        }
        assert_eq!(t.stats().counters.get("conn_not_http"), Some(&1));
        // Then the plaintext from SSL_read/SSL_write (its own stream offsets, from 0).
        t.on_data(&tls(Direction::Ingress, 0, 100, REQ), now, &mut out);
        // Ciphertext still arriving for the socket is ignored, not parsed.
        t.on_data(&data(Direction::Egress, seq[0], 150, &hello), now, &mut out);
        t.on_data(&tls(Direction::Egress, 0, 200, RESP), now, &mut out);
        assert_eq!(out.len(), 1, "{out:?}");
        let ex = &out[0].exchange;
        assert!(ex.conn.tls);
        assert_eq!(ex.conn.role, Role::Server);
        let ExchangeKind::Http(h) = &ex.kind;
        assert_eq!((h.path.as_str(), h.status), ("/a", 200));
        assert_eq!(t.stats().counters.get("conn_tls"), Some(&1));
    }

    #[test]
    fn records_after_close_are_dropped_without_a_lookup() {
        let mut t = ConnTable::new(Selection::default(), Duration::from_secs(60));
        let now = Instant::now();
        let mut out = Vec::new();
        t.on_conn_event(&established(SK, TCP_SYN_RECV), now, &mut out);
        t.on_data(&data(Direction::Ingress, 0, 100, REQ), now, &mut out);
        t.on_conn_event(&closed(SK), now, &mut out);
        // The response write completed after a reset closed the socket.
        t.on_data(&data(Direction::Egress, 0, 200, RESP), now, &mut out);
        assert_eq!(t.stats().counters.get("data_after_close"), Some(&1));
        assert!(t.is_empty());
        assert_eq!(t.stats().counters.get("conn_unresolved_not_a_socket"), None);
        // The socket's address is reused by a new connection: traced again.
        t.on_conn_event(&established(SK, TCP_SYN_RECV), now, &mut out);
        t.on_data(&data(Direction::Ingress, 0, 300, REQ), now, &mut out);
        t.on_data(&data(Direction::Egress, 0, 400, RESP), now, &mut out);
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn filtered_port_is_ignored() {
        let sel = Selection {
            ports: vec![9999],
            ..Selection::default()
        };
        let mut t = ConnTable::new(sel, Duration::from_secs(60));
        let now = Instant::now();
        let mut out = Vec::new();
        t.on_conn_event(&established(SK, TCP_SYN_RECV), now, &mut out);
        t.on_data(&data(Direction::Ingress, 0, 100, REQ), now, &mut out);
        t.on_data(&data(Direction::Egress, 0, 200, RESP), now, &mut out);
        assert!(out.is_empty());
        assert_eq!(t.stats().counters.get("conn_filtered"), Some(&1));
    }

    #[test]
    fn idle_connections_are_forgotten() {
        let mut t = ConnTable::new(Selection::default(), Duration::from_secs(1));
        let now = Instant::now();
        let mut out = Vec::new();
        t.on_conn_event(&established(SK, TCP_SYN_RECV), now, &mut out);
        t.on_data(&data(Direction::Ingress, 0, 100, REQ), now, &mut out);
        assert_eq!(t.len(), 1);
        t.gc(now + Duration::from_secs(2));
        assert!(t.is_empty());
        assert_eq!(t.stats().counters.get("conn_idle_evicted"), Some(&1));
    }
}
