//! The agent's HTTP span contract (OTel stable semconv), checked field by field so a failure lists
//! every mismatch at once.

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

/// The expected shape of one HTTP/1.1 span; `None` fields are not checked.
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
            max_duration: None,
        }
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
        m.str("server.address", self.address);
        m.int("server.port", i64::from(self.server_port));
        m.str("network.peer.address", self.address);
        m.str("network.protocol.version", "1.1");
        if is_server {
            m.str("client.address", self.address);
            match self.client_port {
                Some(port) => m.int("network.peer.port", i64::from(port)),
                None => match span.attr_int("network.peer.port") {
                    Some(p) if p > 0 && p != i64::from(self.server_port) => {}
                    other => m.out.push(format!(
                        "network.peer.port: {other:?}, want the client's port"
                    )),
                },
            }
        } else {
            m.int("network.peer.port", i64::from(self.server_port));
        }
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
        if let Some(bytes) = self.request_body_size {
            m.int("http.request.body.size", bytes);
        }
        if let Some(bytes) = self.response_body_size {
            m.int("http.response.body.size", bytes);
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

        let service = span.resource_str("service.name");
        if let Some(want) = self.service {
            if !service.is_some_and(|s| want.matches(s)) {
                m.out
                    .push(format!("resource service.name: {service:?}, want {want:?}"));
            }
        }
        if service.is_none() || span.resource_str("process.executable.name") != service {
            m.out.push(format!(
                "resource process.executable.name: {:?}, want it equal to service.name {service:?}",
                span.resource_str("process.executable.name")
            ));
        }
        let pid = span.resource_int("process.pid");
        match self.pid {
            Some(want) if pid != Some(i64::from(want)) => m
                .out
                .push(format!("resource process.pid: {pid:?}, want {want}")),
            None if pid.is_none_or(|p| p <= 0) => m
                .out
                .push(format!("resource process.pid: {pid:?}, want a pid")),
            _ => {}
        }
        let host = host_name();
        if span.resource_str("host.name") != Some(host.as_str()) {
            m.out.push(format!(
                "resource host.name: {:?}, want {host:?}",
                span.resource_str("host.name")
            ));
        }

        let duration = span.duration_ns();
        if duration <= 0 {
            m.out
                .push(format!("duration: end - start = {duration} ns, want > 0"));
        }
        if let Some(wall) = self.max_duration {
            if duration > i128::try_from(wall.as_nanos()).unwrap_or(i128::MAX) {
                m.out.push(format!(
                    "duration: {duration} ns, longer than the client's whole run ({wall:?})"
                ));
            }
        }
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

struct Mismatches<'a> {
    span: &'a Span,
    out: Vec<String>,
}

impl Mismatches<'_> {
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
