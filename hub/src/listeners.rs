//! The sockets the hub serves on, opened before [`crate::run`] starts:
//! bound from the configuration, or taken from those a service manager
//! passed, by name (`api`, `tunnel`, `tunnel-tcp`, `dns`, `dns-tcp`,
//! `metrics`).
//! `run` binds nothing itself, so a taken port or a wrong socket unit fails
//! the start, and tests can hand the hub sockets they bound.

use std::net::{TcpListener, UdpSocket};

use ferry_common::sockets::{SocketError, SocketSource};

use crate::config::HubConfig;
use crate::dns::DnsSockets;

/// Everything the hub serves on.
#[derive(Debug)]
pub struct Listeners {
    /// The HTTP API (`api.listen`; passed as `api`).
    pub api: TcpListener,
    /// The tunnel's sockets, when the configuration has `[tunnel]`.
    pub tunnel: Option<TunnelSockets>,
    /// The steering DNS's sockets, when it has `[dns]`.
    pub dns: Option<DnsSockets>,
    /// The operator listener (`metrics.listen`; passed as `metrics`).
    pub metrics: TcpListener,
}

/// The tunnel's two sockets.
#[derive(Debug)]
pub struct TunnelSockets {
    /// UDP for QUIC (`tunnel.listen`; passed as `tunnel`).
    pub quic: UdpSocket,
    /// TCP for TLS over TCP (`tunnel.tcp_listen`, else `tunnel.listen`'s
    /// address and port; passed as `tunnel-tcp`).
    pub tcp: TcpListener,
}

impl Listeners {
    /// The names of the sockets a service manager may pass, with the
    /// section that configures each.
    pub const NAMES: [(&'static str, &'static str); 6] = [
        ("api", "[api]"),
        ("tunnel", "[tunnel]"),
        ("tunnel-tcp", "[tunnel]"),
        ("dns", "[dns]"),
        ("dns-tcp", "[dns]"),
        ("metrics", "[metrics]"),
    ];

    /// Opens every socket `cfg` calls for from `sockets`.
    pub fn open(cfg: &HubConfig, sockets: &mut SocketSource) -> Result<Listeners, SocketError> {
        let api = sockets.tcp_listener("api", "api.listen", cfg.api.listen)?;
        let tunnel = match &cfg.tunnel {
            None => None,
            Some(t) => {
                let (quic, tcp) = match t.tcp_listen {
                    // Without tcp_listen, TCP takes UDP's port.
                    None => {
                        sockets.udp_and_tcp(("tunnel", "tunnel-tcp"), "tunnel.listen", t.listen)?
                    }
                    Some(tcp_listen) => (
                        sockets.udp_socket("tunnel", "tunnel.listen", t.listen)?,
                        sockets.tcp_listener("tunnel-tcp", "tunnel.tcp_listen", tcp_listen)?,
                    ),
                };
                Some(TunnelSockets { quic, tcp })
            }
        };
        let dns = match &cfg.dns {
            None => None,
            Some(d) => {
                let (udp, tcp) = sockets.udp_and_tcp(("dns", "dns-tcp"), "dns.listen", d.listen)?;
                Some(DnsSockets { udp, tcp })
            }
        };
        let metrics = sockets.tcp_listener("metrics", "metrics.listen", cfg.metrics.listen)?;
        Ok(Listeners {
            api,
            tunnel,
            dns,
            metrics,
        })
    }

    /// Binds every socket `cfg` calls for from its addresses.
    pub fn bind(cfg: &HubConfig) -> Result<Listeners, SocketError> {
        Self::open(cfg, &mut SocketSource::bind())
    }
}
