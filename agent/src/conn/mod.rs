//! The connection table: `sk` → what is known about that TCP connection, and its protocol tracker.
//!
//! Input: decoded ring-buffer records ([`crate::ringbuf::Record`]). Output: completed
//! [`Exchange`]s with the process that made them. One owner (the capture task) mutates it.
//!
//! A connection's role and 4-tuple come from its `inet_sock_set_state` record (`SYN_SENT` →
//! client, `SYN_RECV` → server) or, for connections opened before the agent, from `/proc`
//! ([`resolve`]). Byte sequence numbers from the kernel reveal lost records; a gap resets the
//! parser's framing in that direction instead of pairing the wrong messages.
//!
//! The table knows no protocol: the first chunks of a connection go to [`proto::detect`] until a
//! protocol claims one (that chunk and all later ones go to its [`Parser`]); a connection no
//! protocol claims after [`UNCLAIMED_CHUNKS`] chunks each way becomes opaque. TLS plaintext
//! arriving for a socket starts detection again on the plaintext stream.
//!
//! What the table decides about a socket goes back to the kernel as a [`verdict`]: the capture
//! size its protocol needs, or that an ignored or opaque connection's bytes are not wanted at all.

pub mod resolve;
mod verdict;

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

use self::verdict::{Verdicts, SKIP_SOCKET};
use crate::{
    config::Selection,
    enrich::process::{ProcessCache, ProcessInfo},
    exchange::{ConnInfo, Exchange, Role},
    proto::{self, Chunk, Completed, Flow, Parser, Protocol, Side, Start},
    ringbuf::DataRecord,
};

/// Non-empty chunks each way that no protocol claimed before a connection becomes opaque.
pub const UNCLAIMED_CHUNKS: u8 = 3;

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

/// Connection-table and parser counters (self-telemetry).
#[derive(Debug, Default, Clone)]
pub struct ConnStats {
    /// The table's own events (snake_case name → count): `conn_opened`, `seq_gap`, ...
    pub counters: HashMap<&'static str, u64>,
    /// What parsers dropped or repaired: (protocol, reason) → count.
    pub parse: HashMap<(Protocol, &'static str), u64>,
}

impl ConnStats {
    fn add(&mut self, name: &'static str, n: u64) {
        if n > 0 {
            *self.counters.entry(name).or_default() += n;
        }
    }

    fn add_parse(&mut self, protocol: Protocol, reason: &'static str, n: u64) {
        if n > 0 {
            *self.parse.entry((protocol, reason)).or_default() += n;
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
    /// Traced: what is known of the protocol, and the next expected byte offset per direction
    /// (of the socket bytes, or of the TLS plaintext once `info.tls`).
    Tracked {
        info: ConnInfo,
        process: Arc<ProcessInfo>,
        next_seq: [Option<u64>; 2],
        /// The agent saw the connection open: its first bytes are the protocol's first bytes.
        from_start: bool,
        proto: Proto,
        /// The kernel was asked to capture more of this socket's syscalls
        /// ([`ConnTable::take_capture_requests`]); undone when the connection goes.
        raised_capture: bool,
    },
    /// Not traced (filtered out or unresolvable); bytes are skipped cheaply.
    Ignored,
}

/// The protocol side of a traced connection.
#[derive(Debug)]
enum Proto {
    /// No protocol claimed it yet.
    Detecting {
        /// Non-empty chunks no protocol claimed, per direction.
        unclaimed: [u8; 2],
        /// The next chunk of each direction is that direction's first byte.
        first: [bool; 2],
    },
    /// A protocol's parser follows it.
    Parsing {
        protocol: Protocol,
        parser: Box<dyn Parser>,
    },
    /// Nobody's (or a parser gave up): bytes are skipped; only TLS plaintext can revive it.
    Opaque,
}

impl Proto {
    fn detecting(from_start: bool) -> Self {
        Self::Detecting {
            unclaimed: [0; 2],
            first: [from_start; 2],
        }
    }
}

#[derive(Debug)]
struct Conn {
    state: State,
    last_seen: Instant,
}

/// A map keyed by `sk`, hashed with foldhash: the kernel's socket addresses are not chosen by
/// anyone who could aim collisions at the table, and SipHash on every record cost ~1% of the
/// agent's CPU at saturation (`perf`, 2026-12-01).
type SkMap<V> = HashMap<u64, V, foldhash::fast::RandomState>;

/// `sk` → connection state. See the module docs.
#[derive(Debug)]
pub struct ConnTable {
    conns: SkMap<Conn>,
    /// Sockets that reached `CLOSE` recently. A syscall can outlive its socket's state: a write
    /// answered by a reset moves the socket to `CLOSE` inside the syscall, before its exit records
    /// the bytes. Such late records are dropped here (`data_after_close`) instead of costing a
    /// `/proc` lookup for a socket that is gone.
    closed: SkMap<Instant>,
    /// `(local, peer)` of the agent's own client connections (its OTLP export), with the time
    /// each closed. A connection accepted with the mirrored tuple is the collector's end.
    own: HashMap<(SocketAddr, SocketAddr), Option<Instant>>,
    /// `sk` → tuple of the agent's own connections, to mark them closed.
    own_by_sk: SkMap<(SocketAddr, SocketAddr)>,
    opened: SkMap<Opened>,
    processes: ProcessCache,
    resolver: resolve::Resolver,
    selection: Selection,
    idle_timeout: Duration,
    stats: ConnStats,
    completed: Vec<Completed>,
    /// Per-socket verdicts for the kernel ([`ConnTable::take_capture_requests`]).
    verdicts: Verdicts,
}

impl ConnTable {
    /// An empty table applying `selection`; connections idle longer than `idle_timeout` are
    /// forgotten by [`ConnTable::gc`].
    pub fn new(selection: Selection, idle_timeout: Duration) -> Self {
        Self {
            conns: SkMap::default(),
            closed: SkMap::default(),
            own: HashMap::new(),
            own_by_sk: SkMap::default(),
            opened: SkMap::default(),
            processes: ProcessCache::default(),
            resolver: resolve::Resolver::default(),
            selection,
            idle_timeout,
            stats: ConnStats::default(),
            completed: Vec::new(),
            verdicts: Verdicts::default(),
        }
    }

    /// Per-socket verdicts to apply to the kernel (map `SOCK_CAPTURE`, see [`verdict`]), oldest
    /// first: `(sk, Some(bytes))` when a protocol that needs more than the global capture size
    /// claimed the socket ([`proto::Spec::capture_bytes`]), `(sk, Some(SKIP_SOCKET))` when the
    /// connection is ignored or opaque, `(sk, None)` when that connection ended.
    pub fn take_capture_requests(&mut self) -> std::vec::Drain<'_, (u64, Option<u32>)> {
        self.verdicts.take()
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
                self.finish(ev.sk, old, ev.ts_ns, out);
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
                self.finish(ev.sk, conn, ev.ts_ns, out);
            }
        }
    }

    fn finish(&mut self, sk: u64, conn: Conn, ts_ns: u64, out: &mut Vec<Observed>) {
        self.verdicts.forget(sk);
        if let State::Tracked {
            info,
            process,
            proto:
                Proto::Parsing {
                    protocol,
                    mut parser,
                },
            ..
        } = conn.state
        {
            parser.on_close(ts_ns, &mut self.completed);
            drain(
                &mut self.stats,
                &mut self.completed,
                &info,
                &process,
                protocol,
                parser.as_mut(),
                out,
            );
        }
    }

    /// Process `tgid` exec'd: its metadata is read now, while it runs (a short-lived client may
    /// be gone by the time its first records are read), replacing what an earlier program of that
    /// tgid left in the cache.
    pub fn on_exec(&mut self, tgid: u32, now: Instant) {
        self.processes.refresh(tgid, now);
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
            if matches!(state, State::Ignored) {
                // Its bytes are not wanted: the kernel stops sending them.
                self.verdicts.set(h.sk, SKIP_SOCKET);
            }
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
            next_seq,
            from_start,
            proto,
            raised_capture,
        } = &mut conn.state
        else {
            return;
        };
        let tls = rec.source.is_tls();
        if tls && !info.tls {
            // First plaintext from a TLS library: the bytes seen so far were the handshake and
            // ciphertext. Detect and parse the plaintext stream from scratch (it has its own
            // offsets).
            info.tls = true;
            *proto = Proto::detecting(*from_start);
            // The plaintext streams are numbered from 0 too.
            *next_seq = [Some(0); 2];
            self.stats.add("conn_tls", 1);
        }
        if matches!(proto, Proto::Opaque) || tls != info.tls {
            return;
        }
        let idx = rec.direction as usize & 1;
        let gap = next_seq[idx].is_some_and(|expected| expected != h.seq);
        next_seq[idx] = Some(h.seq.wrapping_add(h.len));
        let chunk = Chunk {
            start_ns: h.ts_enter_ns,
            end_ns: h.ts_exit_ns,
            data: rec.payload,
            len: h.len,
        };
        if gap {
            self.stats.add("seq_gap", 1);
        }
        let side = Side::of(info.role, rec.direction);
        let mut chunk = chunk;
        let mut gap = gap;
        loop {
            if let Proto::Detecting { unclaimed, first } = proto {
                if gap {
                    first[idx] = false;
                }
                let Some(spec) = proto::detect(side, chunk.data, first[idx]) else {
                    self.stats.add("conn_unclaimed_chunks", 1);
                    first[idx] = false;
                    if !chunk.data.is_empty() {
                        unclaimed[idx] = unclaimed[idx].saturating_add(1);
                    }
                    if unclaimed.iter().all(|n| *n >= UNCLAIMED_CHUNKS) {
                        *proto = opaque(&mut self.stats, &mut self.verdicts, h.sk);
                    }
                    return;
                };
                // From the beginning only if no byte of either direction went by unparsed.
                let start = if first.iter().all(|f| *f) {
                    Start::Beginning
                } else {
                    Start::Joined
                };
                *proto = start_parser(
                    &mut self.stats,
                    &mut self.verdicts,
                    (h.sk, info.role),
                    spec,
                    start,
                    None,
                    raised_capture,
                );
            } else if let (true, Proto::Parsing { parser, .. }) = (gap, &mut *proto) {
                parser.on_gap(rec.direction);
            }
            let Proto::Parsing { protocol, parser } = proto else {
                return;
            };
            parser.on_chunk(rec.direction, chunk, &mut self.completed);
            drain(
                &mut self.stats,
                &mut self.completed,
                info,
                process,
                *protocol,
                parser.as_mut(),
                out,
            );
            let rest_at = match parser.flow() {
                Flow::Parsing => return,
                Flow::NotMine => {
                    *proto = opaque(&mut self.stats, &mut self.verdicts, h.sk);
                    return;
                }
                Flow::Switched { rest_at } => rest_at,
            };
            self.stats.add("conn_protocol_switch", 1);
            let handoff = parser.take_handoff();
            *proto = match handoff.as_ref().and_then(|h| proto::spec_of(h.protocol())) {
                // The handoff names the next protocol (`Upgrade: h2c`): it starts right after the
                // switch in both directions, so from its beginning.
                Some(spec) => start_parser(
                    &mut self.stats,
                    &mut self.verdicts,
                    (h.sk, info.role),
                    spec,
                    Start::Beginning,
                    handoff,
                    raised_capture,
                ),
                // A switch to something else (a `CONNECT` tunnel, WebSocket): detected afresh.
                None => Proto::detecting(*from_start),
            };
            // The rest of the switching chunk is the next protocol's first bytes.
            let Some(tail) = chunk.tail(rest_at) else {
                return;
            };
            chunk = tail;
            gap = false;
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
        let (role, local, peer, from_start) = match self.opened.remove(&h.sk) {
            Some(o) => (o.role, o.local, o.peer, true),
            None => match self.resolver.resolve(h.tgid, h.fd, now) {
                Ok(r) => {
                    self.stats.add("conn_resolved_from_proc", 1);
                    (r.role, r.local, r.peer, false)
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
            // The kernel numbers each direction of a socket from the first record it made of
            // it, from the connection's opening or, for one older than the agent, from its first
            // byte seen. So a first record past offset 0 reveals a loss, in either direction and
            // whether or not the opening was seen: a response lost before the connection's first
            // seen response would otherwise shift every later response onto the wrong request.
            // (A connection forgotten while idle and seen again also starts with a gap: its first
            // exchange then may be dropped, never mispaired.)
            next_seq: [Some(0); 2],
            from_start,
            proto: Proto::detecting(from_start),
            raised_capture: false,
        }
    }

    /// Forgets idle connections and stale bookkeeping. Call periodically.
    pub fn gc(&mut self, now: Instant) {
        let idle = self.idle_timeout;
        let before = self.conns.len();
        let verdicts = &mut self.verdicts;
        self.conns.retain(|sk, c| {
            let keep = now.duration_since(c.last_seen) < idle;
            if !keep {
                verdicts.forget(*sk);
            }
            keep
        });
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

/// A connection no protocol wants: counted, and the kernel is asked to stop sending its socket's
/// bytes (kept, not forgotten: TLS plaintext may still arrive for this socket).
fn opaque(stats: &mut ConnStats, verdicts: &mut Verdicts, sk: u64) -> Proto {
    stats.add("conn_opaque", 1);
    verdicts.set(sk, SKIP_SOCKET);
    Proto::Opaque
}

/// A parser of `spec`'s protocol for socket `sk` (on which the process plays `role`), given what
/// the protocol before a switch handed over; asks the kernel for the protocol's capture size once
/// per connection.
fn start_parser(
    stats: &mut ConnStats,
    verdicts: &mut Verdicts,
    (sk, role): (u64, Role),
    spec: &'static proto::Spec,
    start: Start,
    handoff: Option<proto::Handoff>,
    raised_capture: &mut bool,
) -> Proto {
    stats.add(spec.protocol.detected_event(), 1);
    if let (Some(bytes), false) = (spec.capture_bytes, *raised_capture) {
        verdicts.set(sk, bytes);
        *raised_capture = true;
    }
    let mut parser = (spec.new)(role, start);
    if let Some(handoff) = handoff {
        parser.accept_handoff(handoff);
    }
    Proto::Parsing {
        protocol: spec.protocol,
        parser,
    }
}

/// Moves a parser's completed exchanges and counters out.
fn drain(
    stats: &mut ConnStats,
    completed: &mut Vec<Completed>,
    info: &ConnInfo,
    process: &Arc<ProcessInfo>,
    protocol: Protocol,
    parser: &mut dyn Parser,
    out: &mut Vec<Observed>,
) {
    parser.take_counters(&mut |reason, n| stats.add_parse(protocol, reason, n));
    for c in completed.drain(..) {
        out.push(Observed {
            exchange: Exchange {
                conn: info.clone(),
                start_ns: c.start_ns,
                end_ns: c.end_ns.max(c.start_ns),
                kind: c.kind,
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
    use crate::exchange::ExchangeKind;
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
        let ExchangeKind::Http(h) = &ex.kind else {
            panic!("not HTTP: {ex:?}");
        };
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

    /// A connection older than the agent (no open event: resolved through `/proc`) whose first
    /// response record was lost: the next response must not answer the first request.
    #[test]
    fn first_response_lost_on_a_connection_not_seen_opening_is_a_gap() {
        use std::os::fd::AsRawFd as _;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let _server = listener.accept().unwrap();
        let mut t = ConnTable::new(Selection::default(), Duration::from_secs(60));
        let now = Instant::now();
        let mut out = Vec::new();
        let rec = |dir, seq, ts, payload| {
            let mut r = data(dir, seq, ts, payload);
            r.header.fd = client.as_raw_fd();
            r
        };
        let second = b"GET /b HTTP/1.1\r\nHost: x\r\n\r\n";
        t.on_data(&rec(Direction::Egress, 0, 100, REQ), now, &mut out);
        // The first response (offset 0) was lost; the client sent its next request after it.
        t.on_data(
            &rec(Direction::Egress, REQ.len() as u64, 300, second),
            now,
            &mut out,
        );
        t.on_data(&rec(Direction::Ingress, 64, 400, RESP), now, &mut out);
        assert_eq!(t.stats().counters.get("conn_resolved_from_proc"), Some(&1));
        assert_eq!(t.stats().counters.get("seq_gap"), Some(&1));
        assert!(
            out.is_empty(),
            "a response paired across a lost one: {out:?}"
        );
        // The connection goes on: the next exchange is reported.
        let third_at = (REQ.len() + second.len()) as u64;
        t.on_data(&rec(Direction::Egress, third_at, 500, REQ), now, &mut out);
        t.on_data(
            &rec(Direction::Ingress, 64 + RESP.len() as u64, 600, RESP),
            now,
            &mut out,
        );
        assert_eq!(out.len(), 1, "{out:?}");
        let ExchangeKind::Http(h) = &out[0].exchange.kind else {
            panic!("not HTTP: {out:?}");
        };
        assert_eq!((h.path.as_str(), out[0].exchange.end_ns), ("/a", 610));
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
        assert_eq!(t.stats().counters.get("conn_opaque"), Some(&1));
        // The kernel is told to stop sending the opaque socket's bytes (not its TLS plaintext).
        let verdicts: Vec<_> = t.take_capture_requests().collect();
        assert_eq!(verdicts, [(SK, Some(SKIP_SOCKET))]);
        // Then the plaintext from SSL_read/SSL_write (its own stream offsets, from 0).
        t.on_data(&tls(Direction::Ingress, 0, 100, REQ), now, &mut out);
        // Ciphertext still arriving for the socket is ignored, not parsed.
        t.on_data(&data(Direction::Egress, seq[0], 150, &hello), now, &mut out);
        t.on_data(&tls(Direction::Egress, 0, 200, RESP), now, &mut out);
        assert_eq!(out.len(), 1, "{out:?}");
        let ex = &out[0].exchange;
        assert!(ex.conn.tls);
        assert_eq!(ex.conn.role, Role::Server);
        let ExchangeKind::Http(h) = &ex.kind else {
            panic!("not HTTP: {ex:?}");
        };
        assert_eq!((h.path.as_str(), h.status), ("/a", 200));
        assert_eq!(t.stats().counters.get("conn_tls"), Some(&1));
    }

    /// An HTTP/2 frame (RFC 9113 §4.1).
    fn h2_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let mut f = u32::try_from(payload.len()).unwrap().to_be_bytes()[1..].to_vec();
        f.extend_from_slice(&[kind, flags]);
        f.extend_from_slice(&stream.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    /// An HPACK block of literal fields without indexing (RFC 7541 §6.2.2), short strings.
    fn h2_block(fields: &[(&str, &str)]) -> Vec<u8> {
        let mut b = Vec::new();
        for (name, value) in fields {
            b.push(0);
            b.push(u8::try_from(name.len()).unwrap());
            b.extend_from_slice(name.as_bytes());
            b.push(u8::try_from(value.len()).unwrap());
            b.extend_from_slice(value.as_bytes());
        }
        b
    }

    #[test]
    fn h2c_grpc_connection_is_detected_and_parsed() {
        let mut t = ConnTable::new(Selection::default(), Duration::from_secs(60));
        let now = Instant::now();
        let mut out = Vec::new();
        t.on_conn_event(&established(SK, TCP_SYN_RECV), now, &mut out);
        let mut req = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        req.extend(h2_frame(4, 0, 0, &[]));
        let headers = h2_block(&[
            (":method", "POST"),
            (":path", "/sonde.test.Echo/Unary"),
            ("content-type", "application/grpc"),
        ]);
        req.extend(h2_frame(1, 0x4, 1, &headers));
        req.extend(h2_frame(0, 0x1, 1, b"\0\0\0\0\x02hi"));
        t.on_data(&data(Direction::Ingress, 0, 100, &req), now, &mut out);
        let mut resp = h2_frame(4, 0, 0, &[]);
        resp.extend(h2_frame(1, 0x4, 1, &h2_block(&[(":status", "200")])));
        resp.extend(h2_frame(0, 0, 1, b"\0\0\0\0\x02hi"));
        resp.extend(h2_frame(1, 0x5, 1, &h2_block(&[("grpc-status", "0")])));
        t.on_data(&data(Direction::Egress, 0, 200, &resp), now, &mut out);
        assert_eq!(out.len(), 1, "{:?}", t.stats());
        let ExchangeKind::Rpc(rpc) = &out[0].exchange.kind else {
            panic!("not RPC: {out:?}");
        };
        assert_eq!(
            (rpc.method.as_str(), rpc.status),
            ("sonde.test.Echo/Unary", Some(0))
        );
        assert_eq!(t.stats().counters.get("conn_detected_http2"), Some(&1));
        assert!(t.stats().parse.is_empty(), "{:?}", t.stats().parse);
        // The kernel is asked to capture more of this socket, and to forget it at close.
        let raised: Vec<_> = t.take_capture_requests().collect();
        assert_eq!(raised, [(SK, Some(proto::http2::CAPTURE_BYTES))]);
        t.on_conn_event(&closed(SK), now, &mut out);
        let forgotten: Vec<_> = t.take_capture_requests().collect();
        assert_eq!(forgotten, [(SK, None)]);
    }

    /// Client side of `curl --http2 http://…`; `together`: the server's first HTTP/2 frames
    /// (with the whole answer) arrive in the same read as the `101`.
    fn h2c_upgrade(together: bool) {
        let mut t = ConnTable::new(Selection::default(), Duration::from_secs(60));
        let now = Instant::now();
        let mut out = Vec::new();
        t.on_conn_event(&established(SK, TCP_SYN_SENT), now, &mut out);
        let upgrade = b"GET /up?x=1 HTTP/1.1\r\nHost: h\r\nConnection: Upgrade, HTTP2-Settings\r\n\
                        Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAoAAAAAIAAAAA\r\n\r\n";
        t.on_data(&data(Direction::Egress, 0, 100, upgrade), now, &mut out);
        let switching =
            b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n";
        let mut answer = h2_frame(4, 0, 0, &[]);
        answer.extend(h2_frame(1, 0x4, 1, &h2_block(&[(":status", "200")])));
        answer.extend(h2_frame(0, 0x1, 1, b"hello"));
        if together {
            let mut both = switching.to_vec();
            both.extend(&answer);
            t.on_data(&data(Direction::Ingress, 0, 200, &both), now, &mut out);
        } else {
            t.on_data(&data(Direction::Ingress, 0, 200, switching), now, &mut out);
            assert!(
                out.is_empty(),
                "the 101 is not an exchange of its own: {out:?}"
            );
        }
        let mut preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        preface.extend(h2_frame(4, 0, 0, &[]));
        let up_len = upgrade.len() as u64;
        t.on_data(
            &data(Direction::Egress, up_len, 300, &preface),
            now,
            &mut out,
        );
        if !together {
            let sw_len = switching.len() as u64;
            t.on_data(
                &data(Direction::Ingress, sw_len, 400, &answer),
                now,
                &mut out,
            );
        }
        assert_eq!(out.len(), 1, "{:?}", t.stats());
        let ex = &out[0].exchange;
        let ExchangeKind::Http(h) = &ex.kind else {
            panic!("not HTTP: {ex:?}");
        };
        assert_eq!(
            (h.method.as_str(), h.path.as_str(), h.status),
            ("GET", "/up", 200)
        );
        assert_eq!(h.version, crate::exchange::HttpVersion::Http2);
        assert_eq!(h.response_body_bytes, Some(5));
        let end_ns = if together { 210 } else { 410 };
        assert_eq!((ex.start_ns, ex.end_ns), (100, end_ns));
        let counters: Vec<_> = t.stats().parse.keys().copied().collect();
        assert_eq!(counters, [(Protocol::Http1, "protocol_switch")]);
        assert_eq!(t.stats().counters.get("conn_detected_http2"), Some(&1));
    }

    #[test]
    fn h2c_upgrade_hands_the_request_to_stream_one() {
        h2c_upgrade(false);
    }

    #[test]
    fn h2c_upgrade_answer_read_with_the_101_is_parsed() {
        h2c_upgrade(true);
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
