//! The agent's span contracts (OTel stable semconv): HTTP ([`HttpSpan`], HTTP/1.1 and HTTP/2) and
//! gRPC ([`RpcSpan`]), checked field by field so a failure lists every mismatch at once.

use std::{fmt::Write as _, time::Duration};

use crate::{
    host_name,
    span::{AttrValue, Span, CLIENT, SERVER, STATUS_ERROR, STATUS_UNSET},
};

/// How the resource's `service.name` must look.
#[derive(Debug, Clone, Copy)]
pub enum Service {
    /// Exactly this executable name (`curl`, `nginx`).
    Exact(&'static str),
    /// Starts with this (`python3` matches `python3` and `python3.11`).
    Prefix(&'static str),
}

impl Service {
    fn matches(self, name: &str) -> bool {
        match self {
            Self::Exact(want) => name == want,
            Self::Prefix(want) => name.starts_with(want),
        }
    }
}

/// What `user_agent.original` must be.
#[derive(Debug, Clone, Copy)]
pub enum UserAgent {
    Unchecked,
    Prefix(&'static str),
    Absent,
}

/// The expected shape of one HTTP span (HTTP/1.1, or HTTP/2 with [`HttpSpan::http2`]); `None`
/// fields are not checked.
#[derive(Debug, Clone)]
pub struct HttpSpan {
    pub kind: &'static str,
    pub method: &'static str,
    pub path: String,
    pub status: i64,
    pub server_port: u16,
    /// `url.scheme`: `http` unless set with [`HttpSpan::scheme`] (`https` for exchanges over TLS).
    pub scheme: &'static str,
    /// The loopback address both ends use: `server.address`, `network.peer.address` and (server
    /// spans) `client.address`. `127.0.0.1` unless set with [`HttpSpan::address`].
    pub address: &'static str,
    pub service: Option<Service>,
    pub pid: Option<u32>,
    /// Server spans: the client's ephemeral port. Client spans always expect `server_port`.
    pub client_port: Option<u16>,
    pub user_agent: UserAgent,
    pub request_body_size: Option<i64>,
    pub response_body_size: Option<i64>,
    /// Whether an absent `http.request.body.size`/`http.response.body.size` passes (a present one
    /// must still equal the expected size): set with [`HttpSpan::optional_body_sizes`].
    pub body_sizes_optional: bool,
    /// `network.protocol.version`: `1.1` unless set with [`HttpSpan::http2`].
    pub protocol_version: &'static str,
    /// Upper bound on the span's duration (the client's own wall time).
    pub max_duration: Option<Duration>,
}

impl HttpSpan {
    pub fn server(method: &'static str, path: &str, status: i64, server_port: u16) -> Self {
        Self::new(SERVER, method, path, status, server_port)
    }

    pub fn client(method: &'static str, path: &str, status: i64, server_port: u16) -> Self {
        Self::new(CLIENT, method, path, status, server_port)
    }

    fn new(
        kind: &'static str,
        method: &'static str,
        path: &str,
        status: i64,
        server_port: u16,
    ) -> Self {
        Self {
            kind,
            method,
            path: path.to_owned(),
            status,
            server_port,
            scheme: "http",
            address: "127.0.0.1",
            service: None,
            pid: None,
            client_port: None,
            user_agent: UserAgent::Unchecked,
            request_body_size: None,
            response_body_size: None,
            body_sizes_optional: false,
            protocol_version: "1.1",
            max_duration: None,
        }
    }

    /// An HTTP/2 exchange (one stream): `network.protocol.version` must be `2`.
    #[must_use]
    pub fn http2(mut self) -> Self {
        self.protocol_version = "2";
        self
    }

    /// The expected body sizes need not be reported, but any reported one must be exact (HTTP/2
    /// spans carry the DATA payload totals only for streams the agent saw whole).
    #[must_use]
    pub fn optional_body_sizes(mut self) -> Self {
        self.body_sizes_optional = true;
        self
    }

    /// `url.scheme` must be `scheme` (`https` when the exchange went over TLS).
    #[must_use]
    pub fn scheme(mut self, scheme: &'static str) -> Self {
        self.scheme = scheme;
        self
    }

    /// Both ends on this loopback address (`::1` for IPv6; `server.address` is the URL's host
    /// without brackets).
    #[must_use]
    pub fn address(mut self, address: &'static str) -> Self {
        self.address = address;
        self
    }

    #[must_use]
    pub fn service(mut self, service: Service) -> Self {
        self.service = Some(service);
        self
    }

    #[must_use]
    pub fn pid(mut self, pid: u32) -> Self {
        self.pid = Some(pid);
        self
    }

    #[must_use]
    pub fn client_port(mut self, port: u16) -> Self {
        self.client_port = Some(port);
        self
    }

    #[must_use]
    pub fn user_agent_prefix(mut self, prefix: &'static str) -> Self {
        self.user_agent = UserAgent::Prefix(prefix);
        self
    }

    /// The client sends no `User-Agent` header, so the span must not have `user_agent.original`.
    #[must_use]
    pub fn no_user_agent(mut self) -> Self {
        self.user_agent = UserAgent::Absent;
        self
    }

    #[must_use]
    pub fn request_body_size(mut self, bytes: i64) -> Self {
        self.request_body_size = Some(bytes);
        self
    }

    #[must_use]
    pub fn response_body_size(mut self, bytes: i64) -> Self {
        self.response_body_size = Some(bytes);
        self
    }

    #[must_use]
    pub fn max_duration(mut self, wall: Duration) -> Self {
        self.max_duration = Some(wall);
        self
    }

    /// Every way `span` differs from this expectation (empty when it matches).
    pub fn mismatches(&self, span: &Span) -> Vec<String> {
        let mut m = Mismatches {
            span,
            out: Vec::new(),
        };
        let is_server = self.kind == SERVER;
        m.eq("kind", Some(span.kind.as_str()), self.kind);
        // Server spans are named `{method} {http.route}` (semantic conventions), with a route
        // that is a template of the requested path; client spans carry no route.
        if is_server {
            match span.attr_str("http.route") {
                Some(route) => {
                    m.eq(
                        "name",
                        Some(span.name.as_str()),
                        &format!("{} {route}", self.method),
                    );
                    if !route_matches(route, &self.path) {
                        m.out.push(format!(
                            "http.route {route:?} is not a template of {:?}",
                            self.path
                        ));
                    }
                }
                None => m
                    .out
                    .push("http.route: missing on a server span".to_owned()),
            }
        } else {
            m.eq("name", Some(span.name.as_str()), self.method);
            if let Some(route) = span.attr_str("http.route") {
                m.out.push(format!("http.route {route:?} on a client span"));
            }
        }
        m.str("http.request.method", self.method);
        m.int("http.response.status_code", self.status);
        m.str("url.path", &self.path);
        m.str("url.scheme", self.scheme);
        m.str("network.protocol.version", self.protocol_version);
        m.endpoints(is_server, self.address, self.server_port, self.client_port);
        match (self.user_agent, span.attr("user_agent.original")) {
            (UserAgent::Unchecked, _) | (UserAgent::Absent, None) => {}
            (UserAgent::Prefix(prefix), Some(AttrValue::Str(ua))) if ua.starts_with(prefix) => {}
            (UserAgent::Prefix(prefix), other) => {
                m.out.push(format!(
                    "user_agent.original: {other:?}, want \"{prefix}…\""
                ));
            }
            (UserAgent::Absent, Some(other)) => {
                m.out.push(format!(
                    "user_agent.original: {other}, want none (the client sent no User-Agent)"
                ));
            }
        }
        for (key, want) in [
            ("http.request.body.size", self.request_body_size),
            ("http.response.body.size", self.response_body_size),
        ] {
            if let Some(bytes) = want {
                if !(self.body_sizes_optional && span.attr(key).is_none()) {
                    m.int(key, bytes);
                }
            }
        }
        let error = if is_server {
            self.status >= 500
        } else {
            self.status >= 400
        };
        m.eq(
            "status",
            Some(span.status_code.as_str()),
            if error { STATUS_ERROR } else { STATUS_UNSET },
        );

        m.resource(self.service, self.pid);
        m.duration(self.max_duration);
        m.out
    }

    /// Panics listing every mismatch (and the span) unless `span` matches.
    pub fn assert(&self, span: &Span) {
        let mismatches = self.mismatches(span);
        if !mismatches.is_empty() {
            let mut msg = format!(
                "span does not match the expected {} {} {}:\n",
                self.kind, self.method, self.path
            );
            for line in &mismatches {
                let _ = writeln!(msg, "  - {line}");
            }
            let _ = write!(msg, "span: {span}");
            panic!("{msg}");
        }
    }
}

/// gRPC status names that make a SERVER span an error (semconv's gRPC server rule); on CLIENT spans
/// every status but `OK` is one.
pub const GRPC_SERVER_ERRORS: [&str; 6] = [
    "UNKNOWN",
    "DEADLINE_EXCEEDED",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
];

/// Whether a gRPC span of `kind` that ended with status `status` (a grpc status name) is an error.
pub fn grpc_status_is_error(kind: &str, status: &str) -> bool {
    if kind == SERVER {
        GRPC_SERVER_ERRORS.contains(&status)
    } else {
        status != "OK"
    }
}

/// The expected shape of one gRPC call's span (semconv v1.45 RPC, `rpc.system.name` `grpc`): named
/// `rpc.method`, the `:path` without its leading `/`; `rpc.response.status_code` the grpc status
/// name; span status ERROR per [`grpc_status_is_error`], and then `error.type` = that status name
/// (absent otherwise). `network.protocol.name`/`network.protocol.version` are optional, but must
/// say `http`/`2` when present. `None` fields are not checked.
#[derive(Debug, Clone)]
pub struct RpcSpan {
    pub kind: &'static str,
    /// `rpc.method` and the span name: `sonde.test.Echo/Unary`.
    pub method: String,
    /// The accepted `rpc.response.status_code` values: the expected one, then any
    /// [`RpcSpan::or_status`] alternatives. The span status and `error.type` are checked against
    /// the status the span reports.
    pub statuses: Vec<&'static str>,
    pub server_port: u16,
    /// The loopback address both ends use (`server.address`, from `:authority`, the peer address,
    /// and on server spans `client.address`). `127.0.0.1`.
    pub address: &'static str,
    pub service: Option<Service>,
    pub pid: Option<u32>,
    /// Server spans: the client's ephemeral port. Client spans always expect `server_port`.
    pub client_port: Option<u16>,
    /// Upper bound on the span's duration (the client's own wall time).
    pub max_duration: Option<Duration>,
}

impl RpcSpan {
    /// A SERVER span of `method` (`sonde.test.Echo/Unary`) that ended with `status` (`OK`).
    pub fn server(method: &str, status: &'static str, server_port: u16) -> Self {
        Self::new(SERVER, method, status, server_port)
    }

    /// A CLIENT span of `method` that ended with `status`.
    pub fn client(method: &str, status: &'static str, server_port: u16) -> Self {
        Self::new(CLIENT, method, status, server_port)
    }

    fn new(kind: &'static str, method: &str, status: &'static str, server_port: u16) -> Self {
        Self {
            kind,
            method: method.to_owned(),
            statuses: vec![status],
            server_port,
            address: "127.0.0.1",
            service: None,
            pid: None,
            client_port: None,
            max_duration: None,
        }
    }

    /// Also accept `rpc.response.status_code` `status` (when the wire allows either, e.g. a
    /// server that saw its client cancel at the deadline).
    #[must_use]
    pub fn or_status(mut self, status: &'static str) -> Self {
        self.statuses.push(status);
        self
    }

    #[must_use]
    pub fn service(mut self, service: Service) -> Self {
        self.service = Some(service);
        self
    }

    #[must_use]
    pub fn pid(mut self, pid: u32) -> Self {
        self.pid = Some(pid);
        self
    }

    #[must_use]
    pub fn client_port(mut self, port: u16) -> Self {
        self.client_port = Some(port);
        self
    }

    #[must_use]
    pub fn max_duration(mut self, wall: Duration) -> Self {
        self.max_duration = Some(wall);
        self
    }

    /// Whether `span`'s `rpc.response.status_code` is one of the accepted statuses.
    pub fn status_accepted(&self, span: &Span) -> bool {
        span.attr_str("rpc.response.status_code")
            .is_some_and(|got| self.statuses.contains(&got))
    }

    /// Every way `span` differs from this expectation (empty when it matches).
    pub fn mismatches(&self, span: &Span) -> Vec<String> {
        let mut m = Mismatches {
            span,
            out: Vec::new(),
        };
        let is_server = self.kind == SERVER;
        m.eq("kind", Some(span.kind.as_str()), self.kind);
        m.eq("name", Some(span.name.as_str()), &self.method);
        m.str("rpc.system.name", "grpc");
        m.str("rpc.method", &self.method);
        // The span status and `error.type` are judged by the status the span reports (a wrong
        // status is one mismatch, not three), or by the expected one if it reports none.
        let got = span.attr_str("rpc.response.status_code");
        if !got.is_some_and(|got| self.statuses.contains(&got)) {
            m.out.push(format!(
                "rpc.response.status_code: {:?}, want {}",
                span.attr("rpc.response.status_code"),
                self.statuses.join(" or ")
            ));
        }
        let status = got.unwrap_or(self.statuses[0]);
        for (key, want) in [
            ("network.protocol.name", "http"),
            ("network.protocol.version", "2"),
        ] {
            if span.attr(key).is_some() {
                m.str(key, want);
            }
        }
        m.endpoints(is_server, self.address, self.server_port, self.client_port);
        let error = grpc_status_is_error(self.kind, status);
        m.eq(
            "status",
            Some(span.status_code.as_str()),
            if error { STATUS_ERROR } else { STATUS_UNSET },
        );
        match (error, span.attr("error.type")) {
            (true, _) => m.str("error.type", status),
            (false, None) => {}
            (false, Some(other)) => m.out.push(format!(
                "error.type: {other}, want none ({status} is not an error on a {} span)",
                if is_server { "server" } else { "client" }
            )),
        }
        m.resource(self.service, self.pid);
        m.duration(self.max_duration);
        m.out
    }

    /// Panics listing every mismatch (and the span) unless `span` matches.
    pub fn assert(&self, span: &Span) {
        let mismatches = self.mismatches(span);
        if !mismatches.is_empty() {
            let mut msg = format!(
                "span does not match the expected {} {} {}:\n",
                self.kind,
                self.method,
                self.statuses.join("|")
            );
            for line in &mismatches {
                let _ = writeln!(msg, "  - {line}");
            }
            let _ = write!(msg, "span: {span}");
            panic!("{msg}");
        }
    }
}

/// Why `client` does not contain `server` (the same exchange seen from both ends, both timed by
/// the kernel's clock), each end allowed to stick out by `slack`; `None` when it does.
pub fn containment_mismatch(client: &Span, server: &Span, slack: Duration) -> Option<String> {
    let slack_ns = i128::try_from(slack.as_nanos()).unwrap_or(i128::MAX);
    let starts_early = i128::from(client.start_time_unix_nano)
        <= i128::from(server.start_time_unix_nano) + slack_ns;
    let ends_late =
        i128::from(client.end_time_unix_nano) + slack_ns >= i128::from(server.end_time_unix_nano);
    (!(starts_early && ends_late)).then(|| {
        format!(
            "CLIENT span [{}, {}] does not contain SERVER span [{}, {}] (± {slack:?}): starts {} \
             ns, ends {} ns after it",
            client.start_time_unix_nano,
            client.end_time_unix_nano,
            server.start_time_unix_nano,
            server.end_time_unix_nano,
            i128::from(client.start_time_unix_nano) - i128::from(server.start_time_unix_nano),
            i128::from(client.end_time_unix_nano) - i128::from(server.end_time_unix_nano),
        )
    })
}

struct Mismatches<'a> {
    span: &'a Span,
    out: Vec<String>,
}

impl Mismatches<'_> {
    /// The resource: `service.name` (as `service` says), `process.executable.name` equal to it,
    /// `process.pid` (`pid`, or any pid), `host.name` this machine's.
    fn resource(&mut self, service: Option<Service>, pid: Option<u32>) {
        let span = self.span;
        let name = span.resource_str("service.name");
        if let Some(want) = service {
            if !name.is_some_and(|s| want.matches(s)) {
                self.out
                    .push(format!("resource service.name: {name:?}, want {want:?}"));
            }
        }
        if name.is_none() || span.resource_str("process.executable.name") != name {
            self.out.push(format!(
                "resource process.executable.name: {:?}, want it equal to service.name {name:?}",
                span.resource_str("process.executable.name")
            ));
        }
        let got = span.resource_int("process.pid");
        match pid {
            Some(want) if got != Some(i64::from(want)) => self
                .out
                .push(format!("resource process.pid: {got:?}, want {want}")),
            None if got.is_none_or(|p| p <= 0) => self
                .out
                .push(format!("resource process.pid: {got:?}, want a pid")),
            _ => {}
        }
        let host = host_name();
        if span.resource_str("host.name") != Some(host.as_str()) {
            self.out.push(format!(
                "resource host.name: {:?}, want {host:?}",
                span.resource_str("host.name")
            ));
        }
    }

    /// `server.address`, `server.port`, `network.peer.address` and `network.peer.port` (the other
    /// end's), and on server spans `client.address`; both ends on the loopback `address`.
    /// `client_port`: the client's port if known (server spans; otherwise any port but the
    /// server's).
    fn endpoints(
        &mut self,
        is_server: bool,
        address: &str,
        server_port: u16,
        client_port: Option<u16>,
    ) {
        self.str("server.address", address);
        self.int("server.port", i64::from(server_port));
        self.str("network.peer.address", address);
        if is_server {
            self.str("client.address", address);
            match client_port {
                Some(port) => self.int("network.peer.port", i64::from(port)),
                None => match self.span.attr_int("network.peer.port") {
                    Some(p) if p > 0 && p != i64::from(server_port) => {}
                    other => self.out.push(format!(
                        "network.peer.port: {other:?}, want the client's port"
                    )),
                },
            }
        } else {
            self.int("network.peer.port", i64::from(server_port));
        }
    }

    /// A positive duration, at most `max` when given.
    fn duration(&mut self, max: Option<Duration>) {
        let duration = self.span.duration_ns();
        if duration <= 0 {
            self.out
                .push(format!("duration: end - start = {duration} ns, want > 0"));
        }
        if let Some(wall) = max {
            if duration > i128::try_from(wall.as_nanos()).unwrap_or(i128::MAX) {
                self.out.push(format!(
                    "duration: {duration} ns, longer than the client's whole run ({wall:?})"
                ));
            }
        }
    }

    fn eq(&mut self, what: &str, got: Option<&str>, want: &str) {
        if got != Some(want) {
            self.out.push(format!("{what}: {got:?}, want {want:?}"));
        }
    }

    fn str(&mut self, key: &str, want: &str) {
        if self.span.attr_str(key) != Some(want) {
            self.out
                .push(format!("{key}: {:?}, want {want:?}", self.span.attr(key)));
        }
    }

    fn int(&mut self, key: &str, want: i64) {
        if self.span.attr_int(key) != Some(want) {
            self.out.push(format!(
                "{key}: {:?}, want Int({want})",
                self.span.attr(key)
            ));
        }
    }
}

/// Whether `route` (`/users/{id}`, `/static/*`, `/a/{*}`) is a template of `path`: every literal
/// segment equal, `{...}` standing for one segment, a final `*` or `{*}` for the rest.
pub fn route_matches(route: &str, path: &str) -> bool {
    let path = path.split('?').next().unwrap_or(path);
    let r: Vec<&str> = route.split('/').filter(|s| !s.is_empty()).collect();
    let p: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    for (i, seg) in r.iter().enumerate() {
        if *seg == "*" || (*seg == "{*}" && i + 1 == r.len() && p.len() > r.len()) {
            return true;
        }
        match p.get(i) {
            Some(_) if seg.starts_with('{') && seg.ends_with('}') => {}
            Some(ps) if ps == seg => {}
            _ => return false,
        }
    }
    r.len() == p.len()
}

#[cfg(test)]
mod route_tests {
    use super::route_matches;

    #[test]
    fn templates_match_their_paths_only() {
        assert!(route_matches("/status/{id}", "/status/404"));
        assert!(route_matches("/index.html", "/index.html"));
        assert!(route_matches("/static/*", "/static/a/b.css"));
        assert!(route_matches("/", "/"));
        assert!(!route_matches("/status/{id}", "/status/404/x"));
        assert!(!route_matches("/users/{id}", "/orders/7"));
        assert!(!route_matches("/a", "/b"));
    }
}

#[cfg(test)]
mod rpc_tests {
    use std::collections::BTreeMap;

    use super::*;

    fn span(kind: &str, status: &str, error: bool, error_type: Option<&str>) -> Span {
        let mut attributes = BTreeMap::new();
        let mut put = |k: &str, v: AttrValue| {
            attributes.insert(k.to_owned(), v);
        };
        put("rpc.system.name", AttrValue::Str("grpc".into()));
        put("rpc.method", AttrValue::Str("sonde.test.Echo/Fail".into()));
        put("rpc.response.status_code", AttrValue::Str(status.into()));
        put("server.address", AttrValue::Str("127.0.0.1".into()));
        put("server.port", AttrValue::Int(50051));
        put("network.peer.address", AttrValue::Str("127.0.0.1".into()));
        let peer_port = if kind == SERVER { 40000 } else { 50051 };
        put("network.peer.port", AttrValue::Int(peer_port));
        put("network.protocol.version", AttrValue::Str("2".into()));
        if kind == SERVER {
            put("client.address", AttrValue::Str("127.0.0.1".into()));
        }
        if let Some(t) = error_type {
            put("error.type", AttrValue::Str(t.into()));
        }
        let mut resource = BTreeMap::new();
        for key in ["service.name", "process.executable.name"] {
            resource.insert(key.to_owned(), AttrValue::Str("python3.11".into()));
        }
        resource.insert("process.pid".to_owned(), AttrValue::Int(7));
        resource.insert("host.name".to_owned(), AttrValue::Str(host_name()));
        Span {
            resource,
            name: "sonde.test.Echo/Fail".to_owned(),
            kind: kind.to_owned(),
            attributes,
            status_code: if error { STATUS_ERROR } else { STATUS_UNSET }.to_owned(),
            start_time_unix_nano: 10,
            end_time_unix_nano: 20,
            trace_id: String::new(),
            span_id: String::new(),
            parent_span_id: String::new(),
        }
    }

    #[test]
    fn grpc_error_rules_per_side() {
        let method = "sonde.test.Echo/Fail";
        let client =
            RpcSpan::client(method, "NOT_FOUND", 50051).service(Service::Prefix("python3"));
        assert_eq!(
            client.mismatches(&span(CLIENT, "NOT_FOUND", true, Some("NOT_FOUND"))),
            Vec::<String>::new()
        );
        // NOT_FOUND is no server error: status unset, no error.type.
        let server = RpcSpan::server(method, "NOT_FOUND", 50051).client_port(40000);
        assert_eq!(
            server.mismatches(&span(SERVER, "NOT_FOUND", false, None)),
            Vec::<String>::new()
        );
        assert_eq!(
            server
                .mismatches(&span(SERVER, "NOT_FOUND", true, Some("NOT_FOUND")))
                .len(),
            2
        );
        // An alternative status is judged by its own rule.
        let slow = RpcSpan::server(method, "DEADLINE_EXCEEDED", 50051).or_status("CANCELLED");
        assert!(slow
            .mismatches(&span(SERVER, "CANCELLED", false, None))
            .is_empty());
        assert!(slow
            .mismatches(&span(
                SERVER,
                "DEADLINE_EXCEEDED",
                true,
                Some("DEADLINE_EXCEEDED")
            ))
            .is_empty());
        assert_eq!(slow.mismatches(&span(SERVER, "OK", false, None)).len(), 1);
    }

    #[test]
    fn containment_allows_the_slack_only() {
        let mut client = span(CLIENT, "OK", false, None);
        let mut server = span(SERVER, "OK", false, None);
        (client.start_time_unix_nano, client.end_time_unix_nano) = (1_000_000, 5_000_000);
        (server.start_time_unix_nano, server.end_time_unix_nano) = (1_500_000, 5_900_000);
        let slack = Duration::from_millis(1);
        assert!(containment_mismatch(&client, &server, slack).is_none());
        server.end_time_unix_nano = 6_000_001;
        assert!(containment_mismatch(&client, &server, slack).is_some());
    }
}
