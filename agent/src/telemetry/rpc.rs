//! The RPC family: an [`RpcExchange`] → span name, attributes and status, following the
//! OpenTelemetry RPC and gRPC semantic conventions (stable in v1.45.0,
//! <https://opentelemetry.io/docs/specs/semconv/rpc/grpc/>). Pure: no SDK state, no I/O.

use opentelemetry::{trace::Status, KeyValue};

use super::{semconv, span};
use crate::exchange::{ConnInfo, Role, RpcExchange, RpcSystem};

/// gRPC status code names, by code (<https://grpc.github.io/grpc/core/md_doc_statuscodes.html>).
const GRPC_CODES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

/// The `rpc.response.status_code` value of gRPC code `code`: its name (`NOT_FOUND`), or the
/// number for a code gRPC does not define.
#[must_use]
pub fn grpc_code_name(code: u32) -> String {
    usize::try_from(code)
        .ok()
        .and_then(|i| GRPC_CODES.get(i))
        .map_or_else(|| code.to_string(), |name| (*name).to_owned())
}

/// Whether a call that ended with `status` is an error for the side playing `role`: every
/// non-`OK` status for a client; for a server only `UNKNOWN`, `DEADLINE_EXCEEDED`,
/// `UNIMPLEMENTED`, `INTERNAL`, `UNAVAILABLE`, `DATA_LOSS` (the gRPC conventions: the others are
/// the caller's errors). A call without a status is not marked.
#[must_use]
pub fn is_error(role: Role, status: Option<u32>) -> bool {
    match (role, status) {
        (_, None | Some(0)) => false,
        (Role::Client, Some(_)) => true,
        (Role::Server, Some(code)) => matches!(code, 2 | 4 | 12 | 13 | 14 | 15),
    }
}

/// Span name: `{rpc.method}` (`sonde.test.Echo/Unary`), or the system (`grpc`) when the method
/// is empty.
#[must_use]
pub fn span_name(rpc: &RpcExchange) -> String {
    if rpc.method.is_empty() {
        system_name(rpc.system).to_owned()
    } else {
        rpc.method.clone()
    }
}

/// ERROR per [`is_error`], unset otherwise.
#[must_use]
pub fn status(role: Role, rpc: &RpcExchange) -> Status {
    if is_error(role, rpc.status) {
        Status::error("")
    } else {
        Status::Unset
    }
}

fn system_name(system: RpcSystem) -> &'static str {
    match system {
        RpcSystem::Grpc => "grpc",
    }
}

/// Every attribute of an RPC exchange's span (metrics keep a low-cardinality subset).
pub(crate) fn attributes(conn: &ConnInfo, rpc: &RpcExchange) -> Vec<KeyValue> {
    let role = conn.role;
    let mut attributes = Vec::with_capacity(12);
    attributes.push(KeyValue::new(
        semconv::RPC_SYSTEM_NAME,
        system_name(rpc.system),
    ));
    // An empty method is unknown (its `:path` could not be decoded): absent, never guessed.
    if !rpc.method.is_empty() {
        attributes.push(KeyValue::new(semconv::RPC_METHOD, rpc.method.clone()));
    }
    let code = rpc.status.map(grpc_code_name);
    if let Some(code) = &code {
        attributes.push(KeyValue::new(
            semconv::RPC_RESPONSE_STATUS_CODE,
            code.clone(),
        ));
    }
    span::push_server_and_peer(
        &mut attributes,
        conn,
        span::host_parts(rpc.authority.clone()),
    );
    attributes.push(KeyValue::new(semconv::NETWORK_PROTOCOL_NAME, "http"));
    attributes.push(KeyValue::new(semconv::NETWORK_PROTOCOL_VERSION, "2"));
    if let Some(ua) = &rpc.user_agent {
        attributes.push(KeyValue::new(semconv::USER_AGENT_ORIGINAL, ua.clone()));
    }
    if let (true, Some(code)) = (is_error(role, rpc.status), code) {
        attributes.push(KeyValue::new(semconv::ERROR_TYPE, code));
    }
    attributes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exchange::{Exchange, ExchangeKind};
    use opentelemetry::Value;

    fn call(role: Role, status: Option<u32>) -> Exchange {
        Exchange {
            conn: ConnInfo {
                role,
                local: "127.0.0.1:50051".parse().unwrap(),
                peer: "127.0.0.1:40000".parse().unwrap(),
                tgid: 7,
                tls: false,
            },
            start_ns: 0,
            end_ns: 10,
            kind: ExchangeKind::Rpc(RpcExchange {
                system: RpcSystem::Grpc,
                method: "sonde.test.Echo/Unary".into(),
                status,
                authority: Some("localhost:50051".into()),
                user_agent: Some("grpc-python/1.85.1".into()),
                traceparent: None,
                request_bytes: Some(10),
                response_bytes: Some(10),
            }),
        }
    }

    fn attr(ex: &Exchange, key: &str) -> Option<Value> {
        let ExchangeKind::Rpc(rpc) = &ex.kind else {
            unreachable!()
        };
        attributes(&ex.conn, rpc)
            .into_iter()
            .find(|kv| kv.key.as_str() == key)
            .map(|kv| kv.value)
    }

    #[test]
    fn codes_are_named() {
        assert_eq!(grpc_code_name(0), "OK");
        assert_eq!(grpc_code_name(4), "DEADLINE_EXCEEDED");
        assert_eq!(grpc_code_name(16), "UNAUTHENTICATED");
        assert_eq!(grpc_code_name(99), "99");
    }

    #[test]
    fn server_errors_are_the_servers_own() {
        for (code, server, client) in [
            (0, false, false),
            (1, false, true),
            (2, true, true),
            (5, false, true),
            (4, true, true),
            (12, true, true),
            (16, false, true),
        ] {
            assert_eq!(is_error(Role::Server, Some(code)), server, "code {code}");
            assert_eq!(is_error(Role::Client, Some(code)), client, "code {code}");
        }
        assert!(!is_error(Role::Client, None));
    }

    #[test]
    fn span_attributes_follow_the_grpc_conventions() {
        let ex = call(Role::Client, Some(5));
        assert_eq!(attr(&ex, "rpc.system.name"), Some(Value::from("grpc")));
        assert_eq!(
            attr(&ex, "rpc.method"),
            Some(Value::from("sonde.test.Echo/Unary"))
        );
        assert_eq!(
            attr(&ex, "rpc.response.status_code"),
            Some(Value::from("NOT_FOUND"))
        );
        assert_eq!(attr(&ex, "error.type"), Some(Value::from("NOT_FOUND")));
        assert_eq!(attr(&ex, "server.address"), Some(Value::from("localhost")));
        assert_eq!(attr(&ex, "server.port"), Some(Value::I64(50051)));
        let server = call(Role::Server, Some(5));
        assert_eq!(attr(&server, "error.type"), None);
        assert_eq!(
            attr(&server, "client.address"),
            Some(Value::from("127.0.0.1"))
        );
    }
}
