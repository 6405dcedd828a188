//! Where a daemon's sockets come from: bound from its configuration, or
//! taken from those a service manager passed ([`crate::activation`]), by
//! name. Either way the daemon gets them before its `run` starts, so a
//! taken port or a wrong unit fails the start, naming the configuration
//! key and the address or the socket's name.
//!
//! When sockets are passed, every socket the configuration needs must be
//! among them, and every one passed must be used: a half-activated daemon
//! that binds the rest itself would hide a mistake in the units.

use std::net::{SocketAddr, TcpListener, UdpSocket};

use crate::activation::{self, ActivationError, PassedSocket, SocketKind};
use crate::tunnel_io::UDP_BUFFER_BYTES;

/// Pending connections the kernel queues on a listener ferry binds (and
/// `Backlog=` in its systemd units).
pub const LISTEN_BACKLOG: i32 = 1024;

/// How often binding UDP and TCP on one free port is tried when the TCP
/// side finds the port UDP picked taken.
const SAME_PORT_TRIES: usize = 16;

/// Why a daemon cannot have one of its sockets.
#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    /// The address is taken or not the host's; retrying helps only once
    /// whatever holds the port lets it go.
    #[error("cannot listen on {transport} {addr} ({key}): {error}")]
    Bind {
        /// The configuration key naming the address.
        key: String,
        /// The address.
        addr: SocketAddr,
        /// `TCP` or `UDP`.
        transport: &'static str,
        /// What the kernel said.
        error: std::io::Error,
    },
    /// No port was free on both UDP and TCP for a key that shares one.
    #[error("no port free on both UDP and TCP at {addr} ({key}): {error}")]
    NoSharedPort {
        /// The configuration key naming the address.
        key: String,
        /// The address (port 0).
        addr: SocketAddr,
        /// The last failure.
        error: std::io::Error,
    },
    /// The service manager's variables are broken.
    #[error(transparent)]
    Activation(#[from] ActivationError),
    /// Sockets were passed, but not the one this key needs.
    #[error(
        "the service manager passed sockets ({passed}) but none named '{name}', which {key} needs: pass one with FileDescriptorName={name}"
    )]
    NotPassed {
        /// The socket's name.
        name: String,
        /// The configuration key it stands for.
        key: String,
        /// The names that were passed.
        passed: String,
    },
    /// The socket passed under this name is of the wrong kind.
    #[error(
        "the socket passed as '{name}' is {found}, but {key} needs a {wanted} (ListenStream= for TCP, ListenDatagram= for UDP)"
    )]
    WrongKind {
        /// The socket's name.
        name: String,
        /// The configuration key it stands for.
        key: String,
        /// `TCP listener` or `UDP socket`.
        wanted: &'static str,
        /// What it is.
        found: SocketKind,
    },
    /// Sockets were passed that the configuration does not use.
    #[error("the service manager passed sockets this configuration does not use: {0}")]
    NotUsed(String),
    /// A socket could not be made non-blocking.
    #[error("cannot set up the socket for {key}: {error}")]
    Setup {
        /// The configuration key it stands for.
        key: String,
        /// What the kernel said.
        error: std::io::Error,
    },
}

impl SocketError {
    /// Whether a restart cannot help: the units or the configuration
    /// must change (the binaries exit 2 then, like for a bad
    /// configuration, so systemd does not retry).
    pub fn needs_a_change(&self) -> bool {
        !matches!(
            self,
            SocketError::Bind { .. } | SocketError::NoSharedPort { .. } | SocketError::Setup { .. }
        )
    }
}

/// Where the sockets come from.
#[derive(Debug)]
pub struct SocketSource {
    /// The sockets the service manager passed and nobody took yet; `None`
    /// when it passed none and everything is bound from the configuration.
    passed: Option<Vec<PassedSocket>>,
    /// The names of all sockets passed, for messages.
    passed_names: Vec<String>,
}

impl SocketSource {
    /// Binds every socket from the configuration.
    pub fn bind() -> SocketSource {
        SocketSource {
            passed: None,
            passed_names: Vec::new(),
        }
    }

    /// Takes every socket from `passed`.
    pub fn passed(passed: Vec<PassedSocket>) -> SocketSource {
        SocketSource {
            passed_names: passed.iter().map(|p| p.name.clone()).collect(),
            passed: Some(passed),
        }
    }

    /// The sockets the service manager passed to this process, else
    /// binding from the configuration; see [`activation::take`] for when
    /// to call it. Returns whether `LISTEN_*` could not be cleared too.
    pub fn from_environment() -> Result<(SocketSource, bool), ActivationError> {
        Ok(match activation::take()? {
            Some(taken) => (
                SocketSource::passed(taken.sockets),
                !taken.environment_cleared,
            ),
            None => (SocketSource::bind(), false),
        })
    }

    /// The names of the sockets passed (empty when binding).
    pub fn passed_names(&self) -> &[String] {
        &self.passed_names
    }

    /// The TCP listener for `key` at `addr`, or the socket passed as `name`.
    pub fn tcp_listener(
        &mut self,
        name: &str,
        key: &str,
        addr: SocketAddr,
    ) -> Result<TcpListener, SocketError> {
        let listener = match self.take(name, key)? {
            Some(passed) => match passed.kind() {
                SocketKind::TcpListener(_) => TcpListener::from(passed.fd),
                found => return Err(wrong_kind(name, key, "TCP listener", found)),
            },
            None => bind_tcp(key, addr)?,
        };
        nonblocking(key, listener.set_nonblocking(true))?;
        Ok(listener)
    }

    /// The UDP socket for `key` at `addr`, or the socket passed as `name`,
    /// with the large buffers QUIC and DNS want.
    pub fn udp_socket(
        &mut self,
        name: &str,
        key: &str,
        addr: SocketAddr,
    ) -> Result<UdpSocket, SocketError> {
        let socket = match self.take(name, key)? {
            Some(passed) => match passed.kind() {
                SocketKind::Udp(_) => UdpSocket::from(passed.fd),
                found => return Err(wrong_kind(name, key, "UDP socket", found)),
            },
            None => UdpSocket::bind(addr).map_err(|error| SocketError::Bind {
                key: key.to_owned(),
                addr,
                transport: "UDP",
                error,
            })?,
        };
        raise_buffers(&socket);
        nonblocking(key, socket.set_nonblocking(true))?;
        Ok(socket)
    }

    /// UDP and TCP for `key` at `addr` on one port (with port 0, the port
    /// UDP picks, tried again should TCP find it taken), or the sockets
    /// passed as `udp_name` and `tcp_name`.
    pub fn udp_and_tcp(
        &mut self,
        (udp_name, tcp_name): (&str, &str),
        key: &str,
        addr: SocketAddr,
    ) -> Result<(UdpSocket, TcpListener), SocketError> {
        if self.passed.is_some() || addr.port() != 0 {
            let udp = self.udp_socket(udp_name, key, addr)?;
            let tcp = self.tcp_listener(tcp_name, key, addr)?;
            return Ok((udp, tcp));
        }
        let mut last = None;
        for _ in 0..SAME_PORT_TRIES {
            let udp = self.udp_socket(udp_name, key, addr)?;
            let picked = udp.local_addr().map_err(|error| SocketError::Setup {
                key: key.to_owned(),
                error,
            })?;
            match self.tcp_listener(tcp_name, key, picked) {
                Ok(tcp) => return Ok((udp, tcp)),
                Err(SocketError::Bind { error, .. }) => last = Some(error),
                Err(other) => return Err(other),
            }
        }
        Err(SocketError::NoSharedPort {
            key: key.to_owned(),
            addr,
            error: last.expect("the loop ran"),
        })
    }

    /// Checks that every socket passed was taken; `known` maps each name
    /// the daemon knows to what configures it (such as `("dns", "[dns]")`).
    pub fn finish(self, known: &[(&str, &str)]) -> Result<(), SocketError> {
        let Some(left) = self.passed else {
            return Ok(());
        };
        if left.is_empty() {
            return Ok(());
        }
        let names: Vec<String> = left
            .iter()
            .map(|p| match known.iter().find(|(n, _)| *n == p.name) {
                Some((name, what)) => format!("'{name}' (for {what}, which is not configured)"),
                None => format!(
                    "'{}' (not a name this daemon knows: {})",
                    p.name,
                    known.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
                ),
            })
            .collect();
        Err(SocketError::NotUsed(names.join("; ")))
    }

    /// The socket passed as `name`; `None` when binding from the
    /// configuration.
    fn take(&mut self, name: &str, key: &str) -> Result<Option<PassedSocket>, SocketError> {
        let Some(passed) = &mut self.passed else {
            return Ok(None);
        };
        match passed.iter().position(|p| p.name == name) {
            Some(i) => Ok(Some(passed.swap_remove(i))),
            None => Err(SocketError::NotPassed {
                name: name.to_owned(),
                key: key.to_owned(),
                passed: self.passed_names.join(", "),
            }),
        }
    }
}

fn wrong_kind(name: &str, key: &str, wanted: &'static str, found: SocketKind) -> SocketError {
    SocketError::WrongKind {
        name: name.to_owned(),
        key: key.to_owned(),
        wanted,
        found,
    }
}

fn nonblocking(key: &str, result: std::io::Result<()>) -> Result<(), SocketError> {
    result.map_err(|error| SocketError::Setup {
        key: key.to_owned(),
        error,
    })
}

/// Binds a TCP listener as tokio would (address reuse, so a restart finds
/// its port free while old connections linger), with a deep backlog.
fn bind_tcp(key: &str, addr: SocketAddr) -> Result<TcpListener, SocketError> {
    let bind = || -> std::io::Result<TcpListener> {
        let socket = socket2::Socket::new(
            socket2::Domain::for_address(addr),
            socket2::Type::STREAM,
            Some(socket2::Protocol::TCP),
        )?;
        socket.set_reuse_address(true)?;
        socket.bind(&addr.into())?;
        socket.listen(LISTEN_BACKLOG)?;
        Ok(socket.into())
    };
    bind().map_err(|error| SocketError::Bind {
        key: key.to_owned(),
        addr,
        transport: "TCP",
        error,
    })
}

/// Asks for large UDP buffers: the kernel's defaults drop datagrams under
/// load. Linux caps them at `net.core.rmem_max`/`wmem_max` silently.
fn raise_buffers(socket: &UdpSocket) {
    let socket = socket2::SockRef::from(socket);
    if let Err(e) = socket.set_recv_buffer_size(UDP_BUFFER_BYTES) {
        tracing::warn!(error = %e, "cannot raise the UDP receive buffer");
    }
    if let Err(e) = socket.set_send_buffer_size(UDP_BUFFER_BYTES) {
        tracing::warn!(error = %e, "cannot raise the UDP send buffer");
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::OwnedFd;

    use super::*;

    fn passed(name: &str, fd: impl Into<OwnedFd>) -> PassedSocket {
        PassedSocket {
            name: name.to_owned(),
            fd: fd.into(),
        }
    }

    #[test]
    fn a_taken_port_names_the_key_and_the_address() {
        let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = holder.local_addr().unwrap();
        let err = SocketSource::bind()
            .tcp_listener("api", "api.listen", addr)
            .unwrap_err();
        assert!(!err.needs_a_change());
        let text = err.to_string();
        assert!(
            text.starts_with(&format!("cannot listen on TCP {addr} (api.listen): ")),
            "{text}"
        );
        let udp_holder = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = udp_holder.local_addr().unwrap();
        let err = SocketSource::bind()
            .udp_and_tcp(("dns", "dns-tcp"), "dns.listen", addr)
            .unwrap_err();
        assert!(
            err.to_string()
                .starts_with(&format!("cannot listen on UDP {addr} (dns.listen): ")),
            "{err}"
        );
    }

    #[test]
    fn port_0_gives_udp_and_tcp_one_port() {
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let (udp, tcp) = SocketSource::bind()
            .udp_and_tcp(("dns", "dns-tcp"), "dns.listen", any)
            .unwrap();
        assert_ne!(udp.local_addr().unwrap().port(), 0);
        assert_eq!(udp.local_addr().unwrap(), tcp.local_addr().unwrap());
    }

    #[test]
    fn passed_sockets_are_taken_by_name_and_kind() {
        let api = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let api_addr = api.local_addr().unwrap();
        let dns = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let dns_addr = dns.local_addr().unwrap();
        let dns_tcp = std::net::TcpListener::bind(dns_addr).unwrap();
        let mut source = SocketSource::passed(vec![
            passed("dns", dns),
            passed("api", api),
            passed("dns-tcp", dns_tcp),
        ]);
        let unused: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let got = source.tcp_listener("api", "api.listen", unused).unwrap();
        assert_eq!(got.local_addr().unwrap(), api_addr);
        let (udp, tcp) = source
            .udp_and_tcp(("dns", "dns-tcp"), "dns.listen", unused)
            .unwrap();
        assert_eq!(udp.local_addr().unwrap(), dns_addr);
        assert_eq!(tcp.local_addr().unwrap(), dns_addr);
        source.finish(&[("api", "[api]")]).unwrap();
    }

    #[test]
    fn wrong_missing_and_unused_sockets_are_named() {
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let udp_addr = udp.local_addr().unwrap();
        let tunnel = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let web = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut source = SocketSource::passed(vec![
            passed("api", udp),
            passed("tunnel", tunnel),
            passed("web", web),
        ]);
        let addr: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let err = source.tcp_listener("api", "api.listen", addr).unwrap_err();
        assert!(err.needs_a_change());
        assert_eq!(
            err.to_string(),
            format!(
                "the socket passed as 'api' is a UDP socket on {udp_addr}, but api.listen needs a TCP listener (ListenStream= for TCP, ListenDatagram= for UDP)"
            )
        );
        let err = source.udp_socket("dns", "dns.listen", addr).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the service manager passed sockets (api, tunnel, web) but none named 'dns', which dns.listen needs: pass one with FileDescriptorName=dns"
        );
        let err = source
            .finish(&[("api", "[api]"), ("tunnel", "[tunnel]")])
            .unwrap_err();
        assert!(err.needs_a_change());
        let text = err.to_string();
        assert!(
            text.contains("'tunnel' (for [tunnel], which is not configured)"),
            "{text}"
        );
        assert!(
            text.contains("'web' (not a name this daemon knows: api, tunnel)"),
            "{text}"
        );
    }
}
