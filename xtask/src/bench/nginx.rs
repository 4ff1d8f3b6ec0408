//! The server under load: nginx with its own configuration in the run directory, serving one small
//! static file over HTTP/1.1 keep-alive on a free loopback port.
//!
//! One process (`master_process off`, `worker_processes 1`): the load generator, nginx and the agent
//! share the machine's cores, and one worker keeps nginx from taking all of them.

use std::{fs, path::Path, process::Command, time::Duration};

use anyhow::{Context as _, Result};

use super::child::{free_port, Child};

/// Size of the served file (`/index.html`), in bytes.
pub(super) const BODY_BYTES: usize = 1024;

/// `@DIR@` and `@PORT@` are replaced. `access_log off` keeps disk writes out of the measurement;
/// `sendfile on` is Debian's default (the body then never passes through `write`).
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
}
";

/// A running nginx; stopped when dropped.
pub(super) struct Nginx {
    pub(super) port: u16,
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
        let port = free_port()?;
        let conf = CONFIG
            .replace("@DIR@", &root.to_string_lossy())
            .replace("@PORT@", &port.to_string());
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
        Ok(Self {
            port,
            _child: child,
        })
    }

    /// The URL the load generators request.
    pub(super) fn url(&self) -> String {
        format!("http://127.0.0.1:{}/index.html", self.port)
    }
}
