//! OpenTelemetry semantic-convention keys used by Sonde, re-exported from
//! `opentelemetry-semantic-conventions` (stable HTTP conventions v1.23+; body sizes, `host.name`
//! and `process.executable.name` are still marked experimental there; the RPC keys follow the
//! RPC conventions as stabilised in semantic conventions v1.45.0: `rpc.system.name`,
//! `rpc.method` fully qualified, `rpc.response.status_code`, `rpc.{server,client}.call.duration`).

pub use opentelemetry_semantic_conventions::attribute::{
    CLIENT_ADDRESS, ERROR_TYPE, HOST_NAME, HTTP_REQUEST_BODY_SIZE, HTTP_REQUEST_METHOD,
    HTTP_REQUEST_METHOD_ORIGINAL, HTTP_RESPONSE_BODY_SIZE, HTTP_RESPONSE_STATUS_CODE, HTTP_ROUTE,
    NETWORK_PEER_ADDRESS, NETWORK_PEER_PORT, NETWORK_PROTOCOL_NAME, NETWORK_PROTOCOL_VERSION,
    PROCESS_EXECUTABLE_NAME, PROCESS_EXECUTABLE_PATH, PROCESS_PID, RPC_METHOD,
    RPC_RESPONSE_STATUS_CODE, RPC_SYSTEM_NAME, SERVER_ADDRESS, SERVER_PORT, URL_PATH, URL_SCHEME,
    USER_AGENT_ORIGINAL,
};
pub use opentelemetry_semantic_conventions::metric::{
    HTTP_CLIENT_REQUEST_BODY_SIZE, HTTP_CLIENT_REQUEST_DURATION, HTTP_CLIENT_RESPONSE_BODY_SIZE,
    HTTP_SERVER_REQUEST_BODY_SIZE, HTTP_SERVER_REQUEST_DURATION, HTTP_SERVER_RESPONSE_BODY_SIZE,
    RPC_CLIENT_CALL_DURATION, RPC_SERVER_CALL_DURATION,
};
pub use opentelemetry_semantic_conventions::resource::SERVICE_NAME;

/// Explicit bucket boundaries of the HTTP duration histograms, in seconds, as the semantic
/// conventions advise (`http.server.request.duration`).
pub const HTTP_DURATION_BOUNDARIES_S: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];

/// Instrumentation scope name of every span Sonde reports.
pub const SCOPE_NAME: &str = "sonde";
