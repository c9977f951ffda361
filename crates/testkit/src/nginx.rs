//! Debian's nginx as the HA harness uses it: [`Nginx::serve`] is a content node
//! serving the shared content directory (with the `/readyz` location that
//! `deploy/README.md` gives HAProxy to check), [`Nginx::proxy_cache`] a branch
//! office's `proxy_cache` in front of the content address. Each runs in the
//! foreground in a temporary prefix of its own on a free port of 127.0.0.1, and
//! is killed when dropped.

use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};

/// Debian's nginx binary.
pub const NGINX: &str = "/usr/sbin/nginx";

/// A running nginx (see the module documentation).
pub struct Nginx {
    child: Option<Child>,
    prefix: tempfile::TempDir,
    port: u16,
}

impl Nginx {
    /// nginx serving `root` as an Avail content node: plain files with byte
    /// ranges, `sendfile on`, `tcp_nopush off` (deploy/README.md), and
    /// `GET /readyz` answering 200.
    pub fn serve(root: &Path) -> Result<Nginx> {
        let server = format!(
            "    root {root};\n    location = /readyz {{ return 200 \"ok\\n\"; }}\n",
            root = root.display()
        );
        Self::start("", &server)
    }

    /// nginx as a branch office's cache in front of `upstream`
    /// (`http://host:port`): every `200`/`206` answer is kept (package files
    /// are immutable), byte ranges are cached by their range, and `/readyz`
    /// answers 200.
    pub fn proxy_cache(upstream: &str) -> Result<Nginx> {
        let http = "  proxy_cache_path {p}/cache levels=1:2 keys_zone=avail:10m max_size=2g \
                    inactive=1h use_temp_path=off;\n";
        let server = format!(
            "    location = /readyz {{ return 200 \"ok\\n\"; }}\n\
             \x20   location / {{\n\
             \x20     proxy_pass {upstream};\n\
             \x20     proxy_http_version 1.1;\n\
             \x20     proxy_set_header Connection \"\";\n\
             \x20     proxy_set_header Range $http_range;\n\
             \x20     proxy_cache avail;\n\
             \x20     proxy_cache_key \"$uri $http_range\";\n\
             \x20     proxy_cache_valid 200 206 1h;\n\
             \x20     proxy_cache_lock on;\n\
             \x20     proxy_next_upstream error timeout http_502 http_503 http_504;\n\
             \x20     add_header X-Cache-Status $upstream_cache_status;\n\
             \x20   }}\n"
        );
        Self::start(http, &server)
    }

    /// Write the configuration (`http_extra` in `http`, `server_body` in its
    /// one server; `{p}` in `http_extra` is the prefix) and start nginx.
    fn start(http_extra: &str, server_body: &str) -> Result<Nginx> {
        if !Path::new(NGINX).exists() {
            bail!("{NGINX} is missing: install Debian's nginx (scripts/test does)");
        }
        let prefix = tempfile::tempdir()?;
        let p = prefix.path().display().to_string();
        let port = crate::free_port()?;
        let conf = format!(
            "daemon off;\nmaster_process off;\nworker_processes 1;\npid {p}/nginx.pid;\n\
             error_log {p}/error.log info;\nevents {{ worker_connections 1024; }}\n\
             http {{\n  default_type application/octet-stream;\n  sendfile on;\n  tcp_nopush off;\n\
             \x20 log_format bytes '$request_method $request_uri [$http_range] $status $bytes_sent';\n\
             \x20 access_log {p}/access.log bytes;\n\
             \x20 client_body_temp_path {p}/body;\n  proxy_temp_path {p}/proxy;\n\
             \x20 fastcgi_temp_path {p}/fastcgi;\n  uwsgi_temp_path {p}/uwsgi;\n  scgi_temp_path {p}/scgi;\n\
             {http}\
             \x20 server {{\n    listen 127.0.0.1:{port};\n{server_body}  }}\n}}\n",
            http = http_extra.replace("{p}", &p),
        );
        std::fs::write(prefix.path().join("nginx.conf"), conf)?;
        let mut nginx = Nginx {
            child: None,
            prefix,
            port,
        };
        nginx.restart()?;
        Ok(nginx)
    }

    /// Start it (again) on the same port and configuration; returns once it
    /// accepts connections.
    pub fn restart(&mut self) -> Result<()> {
        self.kill();
        let p = self.prefix.path();
        let child = Command::new(NGINX)
            .arg("-p")
            .arg(p)
            .arg("-e")
            .arg(p.join("error.log"))
            .arg("-c")
            .arg(p.join("nginx.conf"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(p.join("stderr.log"))?)
            .spawn()
            .context("cannot run nginx")?;
        let child = self.child.insert(child);
        let started = Instant::now();
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Some(status) = child.try_wait()? {
                bail!(
                    "nginx exited with {status}: {}{}",
                    std::fs::read_to_string(p.join("stderr.log")).unwrap_or_default(),
                    std::fs::read_to_string(p.join("error.log")).unwrap_or_default()
                );
            }
            if started.elapsed() > Duration::from_secs(10) {
                bail!("nginx did not listen on port {} within 10 s", self.port);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// Stop it gracefully (SIGQUIT: it stops accepting and finishes the
    /// requests it is answering) and wait for it, at most 30 s.
    pub fn quit(&mut self) -> Result<()> {
        match self.child.take() {
            Some(mut child) => {
                crate::process::stop(&mut child, "QUIT", Duration::from_secs(30), "nginx")
            }
            None => Ok(()),
        }
    }

    /// Kill it (SIGKILL) and wait for it; nothing when it is not running.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr())
    }

    /// Its access log: one `METHOD URI [RANGE] STATUS BYTES` line per request.
    pub fn access_log(&self) -> String {
        std::fs::read_to_string(self.prefix.path().join("access.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        self.kill();
    }
}
