//! Debian's nginx, twice: as the provider's own HTTP endpoint (the "direct"
//! baseline: static files with sendfile, PUT through the DAV module) and as
//! a reverse proxy tuned the way an operator would tune it for large bodies.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

/// A running nginx, stopped when dropped.
#[derive(Debug)]
pub struct Nginx {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
    /// A second listener (the proxy's route to the hub), if any.
    pub second: Option<SocketAddr>,
    dir: tempfile::TempDir,
}

/// An unused loopback port (bound and released; nginx binds it next).
fn free_port() -> anyhow::Result<SocketAddr> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

/// Settings both instances share.
fn main_section(dir: &Path) -> String {
    format!(
        "user root root;\nworker_processes auto;\ndaemon off;\nmaster_process on;\n\
         error_log {dir}/error.log warn;\npid {dir}/nginx.pid;\n\
         events {{ worker_connections 4096; }}\n",
        dir = dir.display()
    )
}

/// The `http` settings both share; request bodies are buffered in
/// `body_dir`.
fn http_common(dir: &Path, body_dir: &Path) -> String {
    format!(
        "access_log off;\nsendfile on;\ntcp_nopush on;\ntcp_nodelay on;\n\
         keepalive_requests 1000000;\nkeepalive_timeout 60s;\n\
         client_max_body_size 0;\nclient_body_buffer_size 256k;\n\
         client_body_temp_path {body};\nproxy_temp_path {dir}/proxy;\n\
         fastcgi_temp_path {dir}/fastcgi;\nuwsgi_temp_path {dir}/uwsgi;\nscgi_temp_path {dir}/scgi;\n",
        dir = dir.display(),
        body = body_dir.display(),
    )
}

/// The tuned proxy settings (documented in `docs/benchmarks.md`).
pub const PROXY_TUNING: &str = "proxy_http_version 1.1;\n\
     proxy_set_header Connection \"\";\n\
     proxy_set_header Host $http_host;\n\
     proxy_buffering on;\n\
     proxy_buffer_size 256k;\n\
     proxy_buffers 4 256k;\n\
     proxy_busy_buffers_size 256k;\n\
     proxy_max_temp_file_size 0;\n\
     proxy_request_buffering off;\n";

impl Nginx {
    /// nginx serving `root` as the provider's HTTP endpoint: GET with
    /// sendfile, PUT written through a temporary file on the same file
    /// system and renamed into place.
    pub fn origin(root: &Path) -> anyhow::Result<Nginx> {
        let dir = tempfile::tempdir()?;
        let addr = free_port()?;
        // Uploads land in a temporary file beside the data, then a rename.
        let body_dir = root.join(".nginx-body");
        std::fs::create_dir_all(&body_dir)?;
        let conf = format!(
            "{main}http {{\n{common}\
             server {{\nlisten {addr};\nroot {root};\n\
             location / {{ dav_methods PUT; create_full_put_path on; }}\n}}\n}}\n",
            main = main_section(dir.path()),
            common = http_common(dir.path(), &body_dir),
            root = root.display(),
        );
        Self::spawn(dir, &conf, addr, None)
    }

    /// nginx as a reverse proxy: `/` to `origin`, and a second listener
    /// that proxies to `hub` (for control requests).
    pub fn proxy(origin: SocketAddr, hub: SocketAddr) -> anyhow::Result<Nginx> {
        let dir = tempfile::tempdir()?;
        let addr = free_port()?;
        let second = free_port()?;
        let conf = format!(
            "{main}http {{\n{common}\
             upstream origin {{ server {origin}; keepalive 64; }}\n\
             upstream hub {{ server {hub}; keepalive 64; }}\n\
             server {{\nlisten {addr};\nlocation / {{\nproxy_pass http://origin;\n{PROXY_TUNING}}}\n}}\n\
             server {{\nlisten {second};\nlocation / {{\nproxy_pass http://hub;\n{PROXY_TUNING}}}\n}}\n}}\n",
            main = main_section(dir.path()),
            common = http_common(dir.path(), &dir.path().join("body")),
        );
        Self::spawn(dir, &conf, addr, Some(second))
    }

    /// nginx as an HTTPS proxy to `origin`: TLS 1.3 only, with the
    /// certificate chain and key in `cert` and `key` (PEM).
    pub fn tls_proxy(origin: SocketAddr, cert: &Path, key: &Path) -> anyhow::Result<Nginx> {
        let dir = tempfile::tempdir()?;
        let addr = free_port()?;
        let conf = format!(
            "{main}http {{\n{common}\
             upstream origin {{ server {origin}; keepalive 64; }}\n\
             server {{\nlisten {addr} ssl;\nssl_certificate {cert};\nssl_certificate_key {key};\n\
             ssl_protocols TLSv1.3;\nssl_session_cache shared:bench:1m;\n\
             location / {{\nproxy_pass http://origin;\n{PROXY_TUNING}}}\n}}\n}}\n",
            main = main_section(dir.path()),
            common = http_common(dir.path(), &dir.path().join("body")),
            cert = cert.display(),
            key = key.display(),
        );
        Self::spawn(dir, &conf, addr, None)
    }

    fn spawn(
        dir: tempfile::TempDir,
        conf: &str,
        addr: SocketAddr,
        second: Option<SocketAddr>,
    ) -> anyhow::Result<Nginx> {
        for sub in ["body", "proxy", "fastcgi", "uwsgi", "scgi"] {
            std::fs::create_dir_all(dir.path().join(sub))?;
        }
        let conf_path = dir.path().join("nginx.conf");
        std::fs::write(&conf_path, conf)?;
        let child = Command::new(nginx_binary())
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(&conf_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .context("cannot start nginx (install Debian's nginx package)")?;
        let mut nginx = Nginx {
            child,
            addr,
            second,
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let up = std::net::TcpStream::connect(addr).is_ok()
                && second.is_none_or(|s| std::net::TcpStream::connect(s).is_ok());
            if up {
                break;
            }
            if let Some(status) = nginx.child.try_wait()? {
                bail!(
                    "nginx exited ({status}):\n{}",
                    std::fs::read_to_string(nginx.dir.path().join("error.log")).unwrap_or_default()
                );
            }
            if Instant::now() > deadline {
                bail!("nginx did not listen on {addr} within 10 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(nginx)
    }

    /// The master's process id (its workers are its children).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM is nginx's fast shutdown: the master stops its workers.
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// nginx's path: `FERRY_BENCH_NGINX`, else Debian's.
fn nginx_binary() -> PathBuf {
    std::env::var_os("FERRY_BENCH_NGINX")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/sbin/nginx"))
}

#[cfg(test)]
mod tests {
    /// docs/benchmarks.md states the proxy's configuration; it must be the
    /// one the benchmark runs.
    #[test]
    fn the_documented_proxy_configuration_is_the_one_used() {
        let docs = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/benchmarks.md"),
        )
        .unwrap();
        for line in super::PROXY_TUNING.lines() {
            assert!(
                docs.contains(line.trim()),
                "docs/benchmarks.md lacks `{line}`"
            );
        }
        for line in [
            "keepalive 64;",
            "sendfile on;",
            "dav_methods PUT;",
            "client_body_buffer_size 256k;",
        ] {
            assert!(docs.contains(line), "docs/benchmarks.md lacks `{line}`");
        }
    }
}
