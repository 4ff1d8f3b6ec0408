//! The HTTP server under load: nginx with its own configuration in the run directory, serving one
//! small static file over HTTP/1.1 keep-alive on one free loopback port, over h2c (HTTP/2 with
//! prior knowledge: nginx 1.22's `listen … http2` without `ssl` has no Upgrade) on another, and
//! over HTTPS (HTTP/1.1, OpenSSL, a self-signed certificate made with `openssl req`) on a third.
//!
//! One process (`master_process off`, `worker_processes 1`): the load generator, nginx and the agent
//! share the machine's cores, and one worker keeps nginx from taking all of them.

use std::{fs, path::Path, process::Command, time::Duration};

use anyhow::{Context as _, Result};

use super::child::{free_port, Child};

/// Size of the served file (`/index.html`), in bytes.
pub(super) const BODY_BYTES: usize = 1024;

/// `@DIR@`, `@PORT@`, `@H2C_PORT@` and `@TLS_PORT@` are replaced. `access_log off` keeps disk writes out of the
/// measurement; `sendfile on` is Debian's default (the body then never passes through `write`; over
/// HTTP/2 nginx still sends it with `sendfile`, after the frame headers). `keepalive_requests`
/// bounds the requests per HTTP/2 connection too (nginx ≥ 1.19.7).
const CONFIG: &str = "\
daemon off;
master_process off;
worker_processes 1;
worker_rlimit_nofile 8192;
pid @DIR@/nginx.pid;
error_log @DIR@/error.log warn;

events {
    worker_connections 4096;
}

http {
    default_type text/html;
    sendfile on;
    tcp_nopush on;
    access_log off;
    keepalive_timeout 65;
    keepalive_requests 1000000;

    client_body_temp_path @DIR@/client_body;
    proxy_temp_path @DIR@/proxy;
    fastcgi_temp_path @DIR@/fastcgi;
    uwsgi_temp_path @DIR@/uwsgi;
    scgi_temp_path @DIR@/scgi;

    server {
        listen 127.0.0.1:@PORT@ backlog=4096;
        root @DIR@/www;
        location / { }
    }

    server {
        listen 127.0.0.1:@H2C_PORT@ http2 backlog=4096;
        root @DIR@/www;
        location / { }
    }

    server {
        listen 127.0.0.1:@TLS_PORT@ ssl backlog=4096;
        ssl_certificate @DIR@/cert.pem;
        ssl_certificate_key @DIR@/key.pem;
        root @DIR@/www;
        location / { }
    }
}
";

/// A running nginx; stopped when dropped.
pub(super) struct Nginx {
    /// HTTP/1.1.
    pub(super) port: u16,
    /// h2c, prior knowledge.
    pub(super) h2c_port: u16,
    /// HTTPS (HTTP/1.1 over TLS; nginx cannot `sendfile` there, so the body goes through
    /// `SSL_write`).
    pub(super) tls_port: u16,
    _child: Child,
}

impl Nginx {
    /// Writes the configuration and `www/index.html` under `<run_dir>/nginx/` and starts nginx.
    pub(super) fn start(run_dir: &Path) -> Result<Self> {
        let root = run_dir.join("nginx");
        fs::create_dir_all(root.join("www")).context("create the nginx www dir")?;
        let body: String = (0..BODY_BYTES)
            .map(|i| if i % 64 == 63 { '\n' } else { 'x' })
            .collect();
        fs::write(root.join("www/index.html"), body)?;
        let status = Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            ])
            .args(["-subj", "/CN=localhost", "-keyout"])
            .arg(root.join("key.pem"))
            .arg("-out")
            .arg(root.join("cert.pem"))
            .stderr(std::process::Stdio::null())
            .status()
            .context("run openssl to make the HTTPS certificate")?;
        anyhow::ensure!(status.success(), "openssl req failed: {status}");
        let (port, h2c_port, tls_port) = (free_port()?, free_port()?, free_port()?);
        let conf = CONFIG
            .replace("@DIR@", &root.to_string_lossy())
            .replace("@PORT@", &port.to_string())
            .replace("@H2C_PORT@", &h2c_port.to_string())
            .replace("@TLS_PORT@", &tls_port.to_string());
        let conf_path = root.join("nginx.conf");
        fs::write(&conf_path, conf)?;
        let mut cmd = Command::new("nginx");
        cmd.arg("-p")
            .arg(&root)
            .arg("-e")
            .arg(root.join("error.log"))
            .arg("-c")
            .arg(&conf_path);
        let mut child = Child::spawn(
            "nginx",
            &mut cmd,
            &run_dir.join("nginx.log"),
            libc::SIGTERM,
            false,
        )?;
        child.wait_for_port(port, Duration::from_secs(10))?;
        child.wait_for_port(h2c_port, Duration::from_secs(10))?;
        child.wait_for_port(tls_port, Duration::from_secs(10))?;
        Ok(Self {
            port,
            h2c_port,
            tls_port,
            _child: child,
        })
    }

    /// The URL the HTTP/1.1 load generators request.
    pub(super) fn url(&self) -> String {
        format!("http://127.0.0.1:{}/index.html", self.port)
    }

    /// The same file over HTTPS.
    pub(super) fn tls_url(&self) -> String {
        format!("https://127.0.0.1:{}/index.html", self.tls_port)
    }

    /// The same file over h2c (h2load's `http://` means HTTP/2 with prior knowledge).
    pub(super) fn h2c_url(&self) -> String {
        format!("http://127.0.0.1:{}/index.html", self.h2c_port)
    }
}
