//! The servers under load, started once for the whole benchmark: nginx (HTTP/1.1, h2c and HTTPS, always)
//! and the gRPC server (only when a gRPC scenario runs), and what a scenario's load targets on
//! each: the port the agent traces and the requests.

use std::path::Path;

use anyhow::{Context as _, Result};

use super::{grpc::GrpcServer, load::Target, nginx::Nginx};

/// The server a scenario loads, and the protocol spoken to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Server {
    /// nginx over HTTP/1.1: GET of the static file.
    Http1,
    /// nginx over h2c (prior knowledge): GET of the same file.
    H2c,
    /// nginx over HTTPS (HTTP/1.1 over TLS, OpenSSL on both sides): GET of the same file.
    Https,
    /// The Python grpcio server over h2c: unary echo calls.
    Grpc,
}

/// The running servers; stopped when dropped.
pub(super) struct Servers {
    nginx: Nginx,
    grpc: Option<GrpcServer>,
}

impl Servers {
    /// Starts nginx, and the gRPC server when `with_grpc`, with their files in `run_dir`.
    pub(super) fn start(run_dir: &Path, with_grpc: bool) -> Result<Self> {
        let nginx = Nginx::start(run_dir)?;
        let grpc = with_grpc.then(|| GrpcServer::start(run_dir)).transpose()?;
        Ok(Self { nginx, grpc })
    }

    /// The port the agent traces (`--port`) and the load's target, for `server`.
    pub(super) fn endpoint(&self, server: Server) -> Result<(u16, Target)> {
        let get = |url| Target {
            url,
            grpc_message: None,
        };
        Ok(match server {
            Server::Http1 => (self.nginx.port, get(self.nginx.url())),
            Server::H2c => (self.nginx.h2c_port, get(self.nginx.h2c_url())),
            Server::Https => (self.nginx.tls_port, get(self.nginx.tls_url())),
            Server::Grpc => {
                let grpc = self
                    .grpc
                    .as_ref()
                    .context("the gRPC server was not started")?;
                (grpc.port, grpc.target())
            }
        })
    }
}
