//! [`Exchange`] → the fields of one span: the HTTP family here, following the OpenTelemetry HTTP
//! semantic conventions (<https://opentelemetry.io/docs/specs/semconv/http/http-spans/>), the RPC
//! family in [`super::rpc`]. Pure: no SDK state, no I/O (IP addresses are formatted once per
//! address and kept in a per-thread memo, [`ip_text`]).

use std::{
    borrow::Cow,
    cell::RefCell,
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::SystemTime,
};

use opentelemetry::{
    propagation::TextMapPropagator,
    trace::{SpanContext, SpanKind, Status, TraceContextExt},
    KeyValue, StringValue,
};
use opentelemetry_sdk::propagation::TraceContextPropagator;

use super::{clock::Clock, rpc, semconv};
use crate::exchange::{ConnInfo, Exchange, ExchangeKind, HttpExchange, Role};

/// Everything needed to record one span.
#[derive(Debug, Clone, PartialEq)]
pub struct SpanFields {
    /// HTTP: `{method}` or `{method} {route}` (`HTTP` for an unknown method); RPC:
    /// `{rpc.method}`. Borrowed when it is a method alone (no allocation per span).
    pub name: Cow<'static, str>,
    /// SERVER for the accepting side, CLIENT for the connecting side.
    pub kind: SpanKind,
    /// First request byte.
    pub start: SystemTime,
    /// Last response byte.
    pub end: SystemTime,
    /// Semantic-convention attributes.
    pub attributes: Vec<KeyValue>,
    /// HTTP: ERROR for 5xx on servers and >= 400 on clients; RPC: see [`rpc::is_error`].
    pub status: Status,
    /// The caller's span, from an incoming W3C `traceparent` (server spans only).
    pub parent: Option<SpanContext>,
}

/// Methods the semantic conventions name (RFC 9110 §9 plus PATCH, RFC 5789); others are `_OTHER`.
const KNOWN_METHODS: [&str; 9] = [
    "CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "TRACE",
];

/// Maps an exchange to span fields. `route`: the low-cardinality route of a server exchange
/// (`/users/{id}`), used for the span name (`GET /users/{id}`) and `http.route`. Copies the
/// exchange's strings; the export path uses [`into_fields`], which moves them.
pub fn from_exchange(ex: &Exchange, clock: &Clock, route: Option<&str>) -> SpanFields {
    into_fields(ex.clone(), clock, route.map(Arc::from))
}

/// [`from_exchange`] consuming the exchange: its path, user agent and `Host` become attribute
/// values without a copy, and `route` is shared with the router.
pub fn into_fields(ex: Exchange, clock: &Clock, route: Option<Arc<str>>) -> SpanFields {
    let Exchange {
        conn,
        start_ns,
        end_ns,
        kind,
    } = ex;
    let (start, end) = (clock.to_system_time(start_ns), clock.to_system_time(end_ns));
    match kind {
        ExchangeKind::Http(http) => http_span(&conn, http, start, end, route),
        ExchangeKind::Rpc(call) => {
            let role = conn.role;
            SpanFields {
                name: Cow::Owned(rpc::span_name(&call)),
                kind: span_kind(role).0,
                start,
                end,
                attributes: rpc::attributes(&conn, &call),
                status: rpc::status(role, &call),
                parent: incoming_parent(role, call.traceparent.as_deref()),
            }
        }
    }
}

/// The kind of the span `role`'s side records (SERVER for the accepting side, CLIENT for the
/// connecting side), with its name as the console summary shows it (`SERVER`, `CLIENT`).
pub(crate) fn span_kind(role: Role) -> (SpanKind, &'static str) {
    match role {
        Role::Server => (SpanKind::Server, "SERVER"),
        Role::Client => (SpanKind::Client, "CLIENT"),
    }
}

/// The caller's span context from an incoming `traceparent` (server spans only).
fn incoming_parent(role: Role, traceparent: Option<&str>) -> Option<SpanContext> {
    match role {
        Role::Server => traceparent.and_then(parse_traceparent),
        Role::Client => None,
    }
}

fn http_span(
    conn: &ConnInfo,
    http: HttpExchange,
    start: SystemTime,
    end: SystemTime,
    route: Option<Arc<str>>,
) -> SpanFields {
    let role = conn.role;
    let method = KNOWN_METHODS
        .iter()
        .find(|m| **m == http.method)
        .copied()
        .unwrap_or("HTTP");
    let status = if is_error(role, http.status) {
        Status::error("")
    } else {
        Status::Unset
    };
    let parent = incoming_parent(role, http.traceparent.as_deref());
    let name = match &route {
        Some(route) => Cow::Owned(format!("{method} {route}")),
        None => Cow::Borrowed(method),
    };
    SpanFields {
        name,
        kind: span_kind(role).0,
        start,
        end,
        attributes: owned_http_attributes(conn, http, route),
        status,
        parent,
    }
}

/// ERROR for 5xx on the server side and for >= 400 on the client side (semantic conventions,
/// "Status").
pub(crate) fn is_error(role: Role, status: u16) -> bool {
    match role {
        Role::Server => status >= 500,
        Role::Client => status >= 400,
    }
}

/// Every attribute of an HTTP exchange's span (metrics keep a low-cardinality subset).
#[cfg(test)]
pub(crate) fn http_attributes(
    ex: &Exchange,
    http: &HttpExchange,
    route: Option<&str>,
) -> Vec<KeyValue> {
    owned_http_attributes(&ex.conn, http.clone(), route.map(Arc::from))
}

/// [`http_attributes`] moving the exchange's strings into the values.
fn owned_http_attributes(
    conn: &ConnInfo,
    http: HttpExchange,
    route: Option<Arc<str>>,
) -> Vec<KeyValue> {
    let role = conn.role;
    let mut attributes = Vec::with_capacity(16);
    // An empty method or path is unknown (an HTTP/2 field the agent could not decode): absent.
    let known = KNOWN_METHODS.iter().find(|m| **m == http.method);
    match (http.method.as_str(), known) {
        ("", _) => {}
        // The table's own `&'static str`: no copy per span.
        (_, Some(known)) => {
            attributes.push(KeyValue::new(semconv::HTTP_REQUEST_METHOD, *known));
        }
        (_, None) => {
            attributes.push(KeyValue::new(semconv::HTTP_REQUEST_METHOD, "_OTHER"));
            attributes.push(KeyValue::new(
                semconv::HTTP_REQUEST_METHOD_ORIGINAL,
                http.method,
            ));
        }
    }
    attributes.push(KeyValue::new(
        semconv::HTTP_RESPONSE_STATUS_CODE,
        i64::from(http.status),
    ));
    if !http.path.is_empty() {
        attributes.push(KeyValue::new(semconv::URL_PATH, http.path));
    }
    if let (Role::Server, Some(route)) = (role, route) {
        attributes.push(KeyValue::new(semconv::HTTP_ROUTE, StringValue::from(route)));
    }
    attributes.push(KeyValue::new(
        semconv::URL_SCHEME,
        if conn.tls { "https" } else { "http" },
    ));
    push_server_and_peer(&mut attributes, conn, host_parts(http.host));
    attributes.push(KeyValue::new(
        semconv::NETWORK_PROTOCOL_VERSION,
        http.version.as_str(),
    ));
    if let Some(ua) = http.user_agent {
        attributes.push(KeyValue::new(semconv::USER_AGENT_ORIGINAL, ua));
    }
    for (key, size) in [
        (semconv::HTTP_REQUEST_BODY_SIZE, http.request_body_bytes),
        (semconv::HTTP_RESPONSE_BODY_SIZE, http.response_body_bytes),
    ] {
        if let Some(size) = size {
            attributes.push(KeyValue::new(key, i64::try_from(size).unwrap_or(i64::MAX)));
        }
    }
    if is_error(role, http.status) {
        attributes.push(KeyValue::new(semconv::ERROR_TYPE, http.status.to_string()));
    }
    attributes
}

/// A `Host` header or `:authority` → (`server.address` value, port): the string itself when it is
/// the host alone (no copy), else the host part of it.
pub(crate) fn host_parts(host: Option<String>) -> (Option<StringValue>, Option<u16>) {
    let Some(h) = host else {
        return (None, None);
    };
    match split_host(Some(&h)) {
        (None, _) => (None, None),
        // Nothing was cut: `name` is all of `h`.
        (Some(name), port) if name.len() == h.len() => (Some(StringValue::from(h)), port),
        (Some(name), port) => (Some(StringValue::from(name.to_owned())), port),
    }
}

/// `server.address`/`server.port` (from `host`, the `Host` header or `:authority` split by
/// [`host_parts`], else the server socket), `client.address` on server spans, and
/// `network.peer.*`.
pub(crate) fn push_server_and_peer(
    attributes: &mut Vec<KeyValue>,
    conn: &ConnInfo,
    (host, host_port): (Option<StringValue>, Option<u16>),
) {
    let role = conn.role;
    let (server_sock, peer) = match role {
        Role::Server => (conn.local, conn.peer),
        Role::Client => (conn.peer, conn.peer),
    };
    let server_address = host.unwrap_or_else(|| ip_text(server_sock.ip()));
    let server_port = host_port.unwrap_or(server_sock.port());
    attributes.push(KeyValue::new(semconv::SERVER_ADDRESS, server_address));
    attributes.push(KeyValue::new(semconv::SERVER_PORT, i64::from(server_port)));
    if role == Role::Server {
        attributes.push(KeyValue::new(semconv::CLIENT_ADDRESS, ip_text(peer.ip())));
    }
    push_peer(attributes, peer);
}

/// Distinct addresses the per-thread memo of [`ip_text`] holds before it starts over.
const IP_TEXT_MEMO: usize = 4096;

/// `ip` as text (`127.0.0.1`, `::1`), shared: formatting an address for every span and cloning
/// the string into its metric attributes cost 6% of the agent's CPU at saturation (`perf`,
/// 2026-12-01); a reference-counted string is formatted once per address and cloned for free.
fn ip_text(ip: IpAddr) -> StringValue {
    thread_local! {
        static MEMO: RefCell<HashMap<IpAddr, Arc<str>>> = RefCell::new(HashMap::new());
    }
    MEMO.with(|memo| {
        let mut memo = memo.borrow_mut();
        if memo.len() >= IP_TEXT_MEMO && !memo.contains_key(&ip) {
            memo.clear();
        }
        StringValue::from(Arc::clone(
            memo.entry(ip).or_insert_with(|| Arc::from(ip.to_string())),
        ))
    })
}

fn push_peer(attributes: &mut Vec<KeyValue>, peer: SocketAddr) {
    attributes.push(KeyValue::new(
        semconv::NETWORK_PEER_ADDRESS,
        ip_text(peer.ip()),
    ));
    attributes.push(KeyValue::new(
        semconv::NETWORK_PEER_PORT,
        i64::from(peer.port()),
    ));
}

/// `Host` header → (host, port): `example.com:8080`, `[::1]:80`, `example.com`.
fn split_host(host: Option<&str>) -> (Option<&str>, Option<u16>) {
    let Some(h) = host.map(str::trim).filter(|h| !h.is_empty()) else {
        return (None, None);
    };
    if let Some(rest) = h.strip_prefix('[') {
        let Some((addr, tail)) = rest.split_once(']') else {
            return (Some(h), None);
        };
        let port = tail.strip_prefix(':').and_then(|p| p.parse().ok());
        return (Some(addr), port);
    }
    match h.rsplit_once(':') {
        Some((name, port)) if !name.contains(':') => match port.parse() {
            Ok(p) => (Some(name), Some(p)),
            Err(_) => (Some(h), None),
        },
        _ => (Some(h), None),
    }
}

/// W3C Trace Context `traceparent` → remote span context (RFC-like spec:
/// <https://www.w3.org/TR/trace-context/#traceparent-header>), parsed by the SDK's propagator.
fn parse_traceparent(value: &str) -> Option<SpanContext> {
    let carrier = HashMap::from([("traceparent".to_owned(), value.to_owned())]);
    let cx = TraceContextPropagator::new().extract(&carrier);
    let sc = cx.span().span_context().clone();
    sc.is_valid().then_some(sc)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exchange::ConnInfo;
    use opentelemetry::Value;

    fn exchange(role: Role, status: u16, method: &str) -> Exchange {
        Exchange {
            conn: ConnInfo {
                role,
                local: "127.0.0.1:8080".parse().unwrap(),
                peer: "127.0.0.1:50000".parse().unwrap(),
                tgid: 42,
                tls: false,
            },
            start_ns: 1_000,
            end_ns: 3_500,
            kind: ExchangeKind::Http(HttpExchange {
                method: method.into(),
                path: "/users/7".into(),
                version: crate::exchange::HttpVersion::Http11,
                host: Some("example.test:8080".into()),
                user_agent: Some("curl/7.88.1".into()),
                traceparent: None,
                status,
                request_body_bytes: Some(0),
                response_body_bytes: Some(12),
            }),
        }
    }

    fn attr<'a>(f: &'a SpanFields, key: &str) -> Option<&'a Value> {
        f.attributes
            .iter()
            .find(|kv| kv.key.as_str() == key)
            .map(|kv| &kv.value)
    }

    #[test]
    fn host_alone_is_moved_and_host_with_port_is_cut() {
        let (host, port) = host_parts(Some("example.test".into()));
        assert_eq!(
            (host.as_ref().map(StringValue::as_str), port),
            (Some("example.test"), None)
        );
        let (host, port) = host_parts(Some("example.test:8080".into()));
        assert_eq!(
            (host.as_ref().map(StringValue::as_str), port),
            (Some("example.test"), Some(8080))
        );
        let (host, port) = host_parts(Some("[::1]:80".into()));
        assert_eq!(
            (host.as_ref().map(StringValue::as_str), port),
            (Some("::1"), Some(80))
        );
        assert_eq!(host_parts(Some("  ".into())), (None, None));
        assert_eq!(host_parts(None), (None, None));
    }

    #[test]
    fn into_fields_moves_the_strings_and_names_known_methods_without_allocating() {
        let f = into_fields(
            exchange(Role::Client, 200, "GET"),
            &Clock::with_offset_ns(0),
            None,
        );
        assert!(matches!(f.name, Cow::Borrowed("GET")), "{:?}", f.name);
        assert_eq!(attr(&f, "url.path"), Some(&Value::from("/users/7")));
        let routed = into_fields(
            exchange(Role::Server, 200, "GET"),
            &Clock::with_offset_ns(0),
            Some(Arc::from("/users/{id}")),
        );
        assert_eq!(routed.name, "GET /users/{id}");
        assert_eq!(
            attr(&routed, "http.route"),
            Some(&Value::from("/users/{id}"))
        );
    }

    #[test]
    fn server_span_fields() {
        let f = from_exchange(
            &exchange(Role::Server, 200, "GET"),
            &Clock::with_offset_ns(0),
            None,
        );
        assert_eq!(f.name, "GET");
        assert_eq!(f.kind, SpanKind::Server);
        assert_eq!(f.end.duration_since(f.start).unwrap().as_nanos(), 2_500);
        assert_eq!(
            attr(&f, "http.response.status_code"),
            Some(&Value::I64(200))
        );
        assert_eq!(
            attr(&f, "server.address"),
            Some(&Value::from("example.test"))
        );
        assert_eq!(attr(&f, "server.port"), Some(&Value::I64(8080)));
        assert_eq!(attr(&f, "client.address"), Some(&Value::from("127.0.0.1")));
        assert_eq!(attr(&f, "network.peer.port"), Some(&Value::I64(50000)));
        assert_eq!(attr(&f, "url.path"), Some(&Value::from("/users/7")));
        assert_eq!(f.status, Status::Unset);
    }

    #[test]
    fn status_rules_differ_by_role() {
        let c = Clock::with_offset_ns(0);
        assert_eq!(
            from_exchange(&exchange(Role::Server, 404, "GET"), &c, None).status,
            Status::Unset
        );
        assert!(matches!(
            from_exchange(&exchange(Role::Server, 503, "GET"), &c, None).status,
            Status::Error { .. }
        ));
        let client = from_exchange(&exchange(Role::Client, 404, "GET"), &c, None);
        assert!(matches!(client.status, Status::Error { .. }));
        assert_eq!(attr(&client, "error.type"), Some(&Value::from("404")));
        assert_eq!(attr(&client, "client.address"), None);
    }

    #[test]
    fn route_names_the_server_span() {
        let c = Clock::with_offset_ns(0);
        let f = from_exchange(&exchange(Role::Server, 200, "GET"), &c, Some("/users/{id}"));
        assert_eq!(f.name, "GET /users/{id}");
        assert_eq!(attr(&f, "http.route"), Some(&Value::from("/users/{id}")));
        let f = from_exchange(&exchange(Role::Client, 200, "GET"), &c, None);
        assert_eq!(f.name, "GET");
        assert_eq!(attr(&f, "http.route"), None);
    }

    #[test]
    fn unknown_method_is_other() {
        let f = from_exchange(
            &exchange(Role::Server, 200, "PURGE"),
            &Clock::with_offset_ns(0),
            None,
        );
        assert_eq!(f.name, "HTTP");
        assert_eq!(
            attr(&f, "http.request.method"),
            Some(&Value::from("_OTHER"))
        );
        assert_eq!(
            attr(&f, "http.request.method_original"),
            Some(&Value::from("PURGE"))
        );
    }

    #[test]
    fn incoming_traceparent_becomes_parent() {
        let with_traceparent = |value: &str| {
            let mut ex = exchange(Role::Server, 200, "GET");
            let ExchangeKind::Http(h) = &mut ex.kind else {
                unreachable!()
            };
            h.traceparent = Some(value.into());
            from_exchange(&ex, &Clock::with_offset_ns(0), None)
        };
        let f = with_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
        let p = f.parent.expect("parent");
        assert_eq!(
            format!("{:032x}", p.trace_id()),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert!(p.is_remote());
        assert_eq!(with_traceparent("garbage").parent, None);
    }

    #[test]
    fn host_header_forms() {
        assert_eq!(split_host(Some("a.b:81")), (Some("a.b"), Some(81)));
        assert_eq!(split_host(Some("[::1]:80")), (Some("::1"), Some(80)));
        assert_eq!(split_host(Some("a.b")), (Some("a.b"), None));
        assert_eq!(split_host(Some("")), (None, None));
        assert_eq!(split_host(None), (None, None));
    }
}
