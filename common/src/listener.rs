//! The client-facing listener's configuration (`[api]`), shared by the
//! hub and the spoke so both are configured the same way.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use crate::config::{Problems, check_absolute};
use crate::http_server::Limits;
use crate::source_limit::SourceLimit;
use crate::tasks::NamedTasks;
use crate::tls::{ReloadingCert, TlsError, http_server_config};

/// The `[api]` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// Address to listen on, such as `0.0.0.0:443`; port 0 picks a free port
    /// (the bound address is logged). When a service manager passes the
    /// daemon its sockets, the one named `api` is served instead.
    pub listen: SocketAddr,
    /// Serve plain HTTP without TLS. Only for loopback and local development;
    /// exactly one of `plain_http = true` and `[api.tls]` must be given.
    #[serde(default)]
    pub plain_http: bool,
    /// TLS certificate and key.
    pub tls: Option<TlsConfig>,
    /// Most client connections open at once. Default 10000.
    #[serde(default = "defaults::max_connections")]
    pub max_connections: usize,
    /// Most connections one client host (an IPv4 address or an IPv6 /64)
    /// may hold open at once; one more is closed as soon as it is
    /// accepted. Default 256. Behind a proxy that hides client addresses,
    /// raise it to `max_connections`.
    #[serde(default = "defaults::max_connections_per_source")]
    pub max_connections_per_source: usize,
    /// Largest request head (request line and header fields), in bytes.
    /// Default 65536; from 8192 to 1048576.
    #[serde(default = "defaults::max_header_bytes")]
    pub max_header_bytes: usize,
    /// Most bytes one read of an HTTP/1 connection takes (an upload is
    /// read in pieces up to this size). Larger reads cost an upload less
    /// CPU, and each upload connection this much memory. Default 65536;
    /// from 8192 to 1048576.
    #[serde(default = "defaults::read_buffer_bytes")]
    pub read_buffer_bytes: usize,
    /// A connection with no request in flight for this long is closed
    /// gracefully (HTTP/1.1 and HTTP/2 alike: keep-alive pings do not
    /// count); one whose request moves no bytes either way for this long
    /// is cut. Default 120.
    #[serde(default = "defaults::idle_timeout_secs")]
    pub idle_timeout_secs: u64,
    /// Time allowed for a TLS handshake. Default 10.
    #[serde(default = "defaults::handshake_timeout_secs")]
    pub handshake_timeout_secs: u64,
    /// Largest JSON request body, in bytes (file uploads have no limit of
    /// ferry's own). Default 1048576.
    #[serde(default = "defaults::max_json_body_bytes")]
    pub max_json_body_bytes: usize,
    /// On shutdown, time in-flight requests get to finish. Default 30.
    #[serde(default = "defaults::shutdown_grace_secs")]
    pub shutdown_grace_secs: u64,
    /// The S3 door's host names: `<bucket>.<domain>` is a virtual-host
    /// style request for that bucket (`s3.md`). Read at start.
    #[serde(default)]
    pub s3_domains: Vec<String>,
}

/// The `[api.tls]` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM file with the certificate chain, leaf first.
    pub cert_file: PathBuf,
    /// PEM file with the private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// How often the files are checked for changes; a changed pair is loaded
    /// without a restart. Default 30.
    #[serde(default = "defaults::reload_interval_secs")]
    pub reload_interval_secs: u64,
}

mod defaults {
    pub fn max_connections() -> usize {
        10_000
    }
    pub fn max_connections_per_source() -> usize {
        256
    }
    pub fn read_buffer_bytes() -> usize {
        64 * 1024
    }
    pub fn max_header_bytes() -> usize {
        64 * 1024
    }
    pub fn idle_timeout_secs() -> u64 {
        120
    }
    pub fn handshake_timeout_secs() -> u64 {
        10
    }
    pub fn max_json_body_bytes() -> usize {
        1024 * 1024
    }
    pub fn shutdown_grace_secs() -> u64 {
        30
    }
    pub fn reload_interval_secs() -> u64 {
        30
    }
}

impl ApiConfig {
    /// Adds every problem with these values, naming keys under `prefix`.
    pub fn validate(&self, prefix: &str, p: &mut Problems) {
        let api = self;
        match (&api.tls, api.plain_http) {
            (None, false) => p.add(
                format!("{prefix}.tls"),
                "is required unless plain_http = true",
            ),
            (Some(_), true) => p.add(
                format!("{prefix}.plain_http"),
                "cannot be true when a tls section is given",
            ),
            _ => {}
        }
        if let Some(tls) = &api.tls {
            check_absolute(p, &format!("{prefix}.tls.cert_file"), &tls.cert_file);
            check_absolute(p, &format!("{prefix}.tls.key_file"), &tls.key_file);
            if tls.reload_interval_secs == 0 {
                p.add(
                    format!("{prefix}.tls.reload_interval_secs"),
                    "must be at least 1",
                );
            }
        }
        for d in &api.s3_domains {
            if !crate::s3_door::valid_domain(d) {
                p.add(
                    format!("{prefix}.s3_domains"),
                    format!("'{d}' is not a DNS name (no port, no trailing dot)"),
                );
            }
        }
        if api.max_connections == 0 {
            p.add(format!("{prefix}.max_connections"), "must be at least 1");
        }
        if api.max_connections_per_source == 0 {
            p.add(
                format!("{prefix}.max_connections_per_source"),
                "must be at least 1",
            );
        }
        if !(8192..=1024 * 1024).contains(&api.max_header_bytes) {
            p.add(
                format!("{prefix}.max_header_bytes"),
                "must be from 8192 to 1048576",
            );
        }
        if !(8192..=1024 * 1024).contains(&api.read_buffer_bytes) {
            p.add(
                format!("{prefix}.read_buffer_bytes"),
                "must be from 8192 to 1048576",
            );
        }
        if api.idle_timeout_secs == 0 {
            p.add(format!("{prefix}.idle_timeout_secs"), "must be at least 1");
        }
        if api.handshake_timeout_secs == 0 {
            p.add(
                format!("{prefix}.handshake_timeout_secs"),
                "must be at least 1",
            );
        }
        if api.max_json_body_bytes < 1024 {
            p.add(
                format!("{prefix}.max_json_body_bytes"),
                "must be at least 1024",
            );
        }
    }

    /// The listener limits; connections refused for their source's share
    /// are counted in `refused`.
    pub fn limits(&self, refused: Counter) -> Limits {
        Limits {
            connections: crate::http_server::ConnectionLimit::new(self.max_connections),
            per_source: SourceLimit::new(self.max_connections_per_source, refused),
            max_header_bytes: self.max_header_bytes,
            read_buffer_bytes: self.read_buffer_bytes,
            idle_timeout: Duration::from_secs(self.idle_timeout_secs),
            handshake_timeout: Duration::from_secs(self.handshake_timeout_secs),
            shutdown_grace: Duration::from_secs(self.shutdown_grace_secs),
            rtt_sink: None,
        }
    }

    /// Loads the TLS certificate (if configured) and keeps reloading it
    /// until `shutdown`, from a task started in `tasks`.
    pub fn tls_acceptor(
        &self,
        shutdown: &CancellationToken,
        tasks: &mut NamedTasks,
    ) -> Result<Option<tokio_rustls::TlsAcceptor>, TlsError> {
        let Some(t) = &self.tls else { return Ok(None) };
        let certs = ReloadingCert::load(&t.cert_file, &t.key_file)?;
        tasks.spawn(
            "certificate reload",
            certs.clone().watch(
                Duration::from_secs(t.reload_interval_secs),
                shutdown.child_token(),
            ),
        );
        Ok(Some(tokio_rustls::TlsAcceptor::from(http_server_config(
            certs,
        ))))
    }
}
