//! OpenTelemetry semantic-convention keys used by Sonde, re-exported from
//! `opentelemetry-semantic-conventions` (stable HTTP conventions v1.23+; body sizes, `host.name`
//! and `process.executable.name` are still marked experimental there).

pub use opentelemetry_semantic_conventions::attribute::{
    CLIENT_ADDRESS, ERROR_TYPE, HOST_NAME, HTTP_REQUEST_BODY_SIZE, HTTP_REQUEST_METHOD,
    HTTP_REQUEST_METHOD_ORIGINAL, HTTP_RESPONSE_BODY_SIZE, HTTP_RESPONSE_STATUS_CODE,
    NETWORK_PEER_ADDRESS, NETWORK_PEER_PORT, NETWORK_PROTOCOL_VERSION, PROCESS_EXECUTABLE_NAME,
    PROCESS_EXECUTABLE_PATH, PROCESS_PID, SERVER_ADDRESS, SERVER_PORT, URL_PATH, URL_SCHEME,
    USER_AGENT_ORIGINAL,
};
pub use opentelemetry_semantic_conventions::resource::SERVICE_NAME;

/// Instrumentation scope name of every span Sonde reports.
pub const SCOPE_NAME: &str = "sonde";
