//! Everything a benchmark run needs, started on loopback: a hub, a spoke on
//! QUIC, a spoke held on the TLS-over-TCP fallback, nginx as the provider's
//! own endpoint, and nginx as a tuned reverse proxy.

use std::net::{SocketAddr, UdpSocket};

use anyhow::{Context as _, bail};
use bytes::Bytes;
use ferry_tests::hub::{Hub, HubOptions};
use ferry_tests::scenarios::{Tenant, tenant};
use ferry_tests::spoke::{Spoke, SpokeOptions};
use serde_json::json;

use crate::client::{self, Target};
use crate::nginx::Nginx;

/// Where a request goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// The provider's own endpoint (nginx serving the folder).
    Direct,
    /// A ferry spoke (tunnel on QUIC).
    Spoke,
    /// nginx as a reverse proxy in front of the provider's endpoint.
    Nginx,
    /// The hub itself.
    Hub,
    /// The spoke whose tunnel runs on the TLS-over-TCP fallback.
    SpokeTcp,
    /// nginx as a reverse proxy in front of the hub.
    NginxToHub,
}

impl Via {
    /// Its name in tables and JSON.
    pub fn name(self) -> &'static str {
        match self {
            Via::Direct => "direct",
            Via::Spoke => "spoke",
            Via::Nginx => "nginx",
            Via::Hub => "hub",
            Via::SpokeTcp => "spoke-tcp",
            Via::NginxToHub => "nginx-to-hub",
        }
    }
}

/// Every client of the benchmark connects from 127.0.0.1, so one source
/// holds all of a burst's connections (320 in the memory scenario): the
/// spokes' per-source cap (256 by default) is lifted.
pub(crate) const ALL_FROM_LOOPBACK: &str = "max_connections_per_source = 100000\n";

/// Variables for the QUIC spoke's environment from `FERRY_BENCH_SPOKE_ENV`
/// (`NAME=value` separated by spaces), to run it under a profiler: e.g.
/// heaptrack's preload library and `DUMP_HEAPTRACK_OUTPUT`. Unless that
/// sets `FERRY_LOG`, the spoke's HTTP server logs its connections' ends
/// at debug: the log's tail, printed when a run fails, then says why a
/// connection was cut.
fn spoke_env() -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = std::env::var("FERRY_BENCH_SPOKE_ENV")
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            Some((k.to_owned(), v.to_owned()))
        })
        .collect();
    if !env.iter().any(|(k, _)| k == "FERRY_LOG") {
        env.push((
            "FERRY_LOG".to_owned(),
            "info,ferry_common::http_server=debug".to_owned(),
        ));
    }
    env
}

/// The running parts.
#[derive(Debug)]
pub struct Rig {
    /// The hub.
    pub hub: Hub,
    /// A spoke with its tunnel on QUIC, ferry's default timings.
    pub spoke: Spoke,
    /// A spoke whose QUIC is sent into a black hole, so it runs on TCP.
    pub spoke_tcp: Spoke,
    /// nginx serving the provider folder.
    pub origin: Nginx,
    /// nginx proxying to `origin` (and, on its second port, to the hub).
    pub proxy: Nginx,
    /// The benchmark's account.
    pub tenant: Tenant,
    _black_hole: UdpSocket,
}

impl Rig {
    /// Removes every file of a mebibyte or more from the provider folders
    /// (what a scenario uploaded or seeded), so that a full run does not
    /// fill the memory its folders live in. A file that cannot be removed
    /// is left; the next scenario seeds what it reads.
    pub fn remove_large_files(&self) {
        fn walk(dir: &std::path::Path) {
            let Ok(entries) = std::fs::read_dir(dir) else {
                return;
            };
            for entry in entries.flatten() {
                let Ok(kind) = entry.file_type() else {
                    continue;
                };
                if kind.is_dir() {
                    walk(&entry.path());
                } else if kind.is_file() && entry.metadata().is_ok_and(|m| m.len() >= 1 << 20) {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
        walk(&self.hub.data_dir);
    }

    /// Starts everything.
    pub async fn start(data_in: Option<std::path::PathBuf>) -> anyhow::Result<Rig> {
        let hub = Hub::start_with(HubOptions {
            log_level: Some("warn,ferry_hub=info".into()),
            default_timings: true,
            dir_in: data_in,
            // The S3 scenario's moto listens on loopback.
            extra_toml: "[providers.remote]\nallow_private_endpoints = true\n".into(),
            ..HubOptions::default()
        });
        let tenant = tenant(&hub.url(), "bench", &hub.data_dir).await;
        let root = hub.data_dir.join("bench");
        std::fs::create_dir_all(&root)?;
        let spoke = Spoke::start_with(
            &hub,
            "bench1",
            &hub.spoke_token("bench1", None),
            &SpokeOptions {
                log_level: Some("warn,ferry_spoke=info".into()),
                default_timings: true,
                api_extra: ALL_FROM_LOOPBACK.into(),
                env: spoke_env(),
                ..SpokeOptions::default()
            },
        )
        .map_err(|log| anyhow::anyhow!("the QUIC spoke did not start:\n{log}"))?;
        let black_hole = UdpSocket::bind("127.0.0.1:0")?;
        let spoke_tcp = Spoke::start_with(
            &hub,
            "bench2",
            &hub.spoke_token("bench2", None),
            &SpokeOptions {
                log_level: Some("warn,ferry_spoke=info".into()),
                quic_via: Some(black_hole.local_addr()?),
                tunnel_extra: "quic_handshake_timeout_ms = 300\n".into(),
                api_extra: ALL_FROM_LOOPBACK.into(),
                ..SpokeOptions::default()
            },
        )
        .map_err(|log| anyhow::anyhow!("the TCP spoke did not start:\n{log}"))?;
        // Ready means a tunnel is published; its log line follows.
        let on_tcp = spoke_tcp
            .daemon()
            .wait_for("tunnel up", std::time::Duration::from_secs(10))
            .is_some_and(|l| l.contains("tcp"));
        if !on_tcp {
            bail!(
                "the second spoke did not fall back to TCP:\n{}",
                spoke_tcp.log()
            );
        }
        let origin = Nginx::origin(&root)?;
        let proxy = Nginx::proxy(origin.addr, hub.addr)?;
        let created = tenant
            .api
            .post("/v1/connections")
            .json(&json!({ "name": "mem", "provider": "memory" }))
            .send()
            .await;
        if created.status != http::StatusCode::CREATED {
            bail!("cannot create the memory connection: {}", created.status);
        }
        Ok(Rig {
            hub,
            spoke,
            spoke_tcp,
            origin,
            proxy,
            tenant,
            _black_hole: black_hole,
        })
    }

    /// The address a request `via` goes to.
    pub fn addr(&self, via: Via) -> SocketAddr {
        match via {
            Via::Direct => self.origin.addr,
            Via::Spoke => self.spoke.addr,
            Via::Nginx => self.proxy.addr,
            Via::Hub => self.hub.addr,
            Via::SpokeTcp => self.spoke_tcp.addr,
            Via::NginxToHub => self.proxy.second.expect("the proxy has a hub listener"),
        }
    }

    /// The process whose CPU and memory count for `via`: the spoke, nginx's
    /// master and workers, or the hub.
    pub fn pid(&self, via: Via) -> u32 {
        let pid = match via {
            Via::Direct => Some(self.origin.pid()),
            Via::Spoke => self.spoke.daemon().pid(),
            Via::Nginx | Via::NginxToHub => Some(self.proxy.pid()),
            Via::Hub => self.hub.daemon().pid(),
            Via::SpokeTcp => self.spoke_tcp.daemon().pid(),
        };
        pid.expect("the process runs")
    }

    /// A file in the `local` connection (the provider folder), as `via`
    /// names it.
    pub fn file(&self, via: Via, path: &str) -> Target {
        let (path, token) = match via {
            Via::Direct | Via::Nginx => (format!("/{path}"), None),
            _ => (
                format!("/v1/connections/local/files/{path}"),
                Some(self.tenant.key.clone()),
            ),
        };
        Target {
            addr: self.addr(via),
            path,
            token,
        }
    }

    /// A file in the hub's `mem` connection, through `via`.
    pub fn mem_file(&self, via: Via, path: &str) -> Target {
        Target {
            addr: self.addr(via),
            path: format!("/v1/connections/mem/files/{path}"),
            token: Some(self.tenant.key.clone()),
        }
    }

    /// The control request: a listing of a small folder.
    pub fn listing(&self, via: Via) -> Target {
        Target {
            addr: self.addr(via),
            path: "/v1/connections/local/list/ctl".into(),
            token: Some(self.tenant.key.clone()),
        }
    }

    /// Writes `size` bytes of `block` through the hub so ferry knows the
    /// object (checksum, size) as it would after a real upload.
    pub async fn seed(&self, target: Target, size: u64, block: &Bytes) -> anyhow::Result<()> {
        client::upload(&target, size, block.clone(), &[])
            .await
            .with_context(|| format!("seeding {}", target.path))?;
        Ok(())
    }
}
