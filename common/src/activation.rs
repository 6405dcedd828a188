//! Sockets a service manager hands over (systemd's socket activation,
//! sd_listen_fds(3)): `LISTEN_PID` names the process they are for,
//! `LISTEN_FDS` says how many there are, from descriptor 3 on, and
//! `LISTEN_FDNAMES` names them (colon-separated, in order). [`take`] adopts
//! them once, at start-up, and clears the three variables so that no
//! program the daemon might start takes them too.
//!
//! Taking ownership of an inherited descriptor number is `unsafe` by
//! nature. The `listenfd` crate, which does that for others, is not used:
//! it takes the descriptors when `LISTEN_PID` is missing (sd_listen_fds
//! takes them only when it names this process), reads no names, and
//! clears only two of the variables; and clearing one is `unsafe` in
//! ferry's own code anyway (Rust 2024). So [`adopt`] is one audited
//! function with `unsafe` blocks, beside `tcp_rtt`'s `getsockopt`.

use std::net::SocketAddr;
use std::os::fd::{FromRawFd as _, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};

/// The first descriptor a service manager passes (`SD_LISTEN_FDS_START`).
const FIRST_FD: RawFd = 3;

/// More sockets than any daemon of ferry's takes: a larger `LISTEN_FDS`
/// is a mistake, not a list to walk.
const MAX_SOCKETS: usize = 64;

/// The variables of the protocol, cleared once read.
const VARIABLES: [&str; 3] = ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"];

/// Set by the first [`take`]: a descriptor is owned once.
static TAKEN: AtomicBool = AtomicBool::new(false);

/// Why the sockets a service manager announced cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ActivationError {
    /// `LISTEN_FDS` is not a number (or an absurd one): the service
    /// manager's environment is broken; a restart does not help.
    #[error("LISTEN_FDS={0:?} is not a count of sockets (0 to {MAX_SOCKETS})")]
    BadCount(String),
    /// `LISTEN_FDNAMES` names more or fewer sockets than `LISTEN_FDS`
    /// counts.
    #[error("LISTEN_FDNAMES names {names} socket(s) but LISTEN_FDS counts {count}")]
    NameCount {
        /// How many names there are.
        names: usize,
        /// How many sockets `LISTEN_FDS` announces.
        count: usize,
    },
    /// Two sockets have the same name: ferry serves each name on one
    /// socket (give each its own `.socket` unit and `FileDescriptorName=`).
    #[error("two sockets are named '{0}': each name must be one socket")]
    DuplicateName(String),
    /// A descriptor `LISTEN_FDS` announces is not open in this process.
    #[error("descriptor {fd} ('{name}'), which LISTEN_FDS announces, is not open")]
    NotOpen {
        /// The descriptor number.
        fd: RawFd,
        /// Its name.
        name: String,
    },
}

/// One socket the service manager passed, with its name.
#[derive(Debug)]
pub struct PassedSocket {
    /// Its `FileDescriptorName=` (systemd's default is the socket unit's
    /// name; `unknown` when the manager gives no names).
    pub name: String,
    /// The socket itself, owned by this process and closed on `exec`.
    pub fd: OwnedFd,
}

/// What a passed socket turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SocketKind {
    /// A listening TCP socket, bound to this address.
    TcpListener(SocketAddr),
    /// A UDP socket, bound to this address.
    Udp(SocketAddr),
    /// A TCP socket that does not listen (`Accept=yes`, or not listening).
    TcpNotListening,
    /// Something else: a Unix socket, a FIFO, a file.
    Other,
}

impl std::fmt::Display for SocketKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SocketKind::TcpListener(addr) => write!(f, "a TCP listener on {addr}"),
            SocketKind::Udp(addr) => write!(f, "a UDP socket on {addr}"),
            SocketKind::TcpNotListening => f.write_str("a TCP socket that does not listen"),
            SocketKind::Other => f.write_str("neither a TCP listener nor a UDP socket"),
        }
    }
}

impl PassedSocket {
    /// What kind of socket this is, asked of the kernel.
    pub fn kind(&self) -> SocketKind {
        let socket = socket2::SockRef::from(&self.fd);
        let Some(addr) = socket.local_addr().ok().and_then(|a| a.as_socket()) else {
            return SocketKind::Other;
        };
        match socket.r#type() {
            Ok(socket2::Type::DGRAM) => SocketKind::Udp(addr),
            Ok(socket2::Type::STREAM) if socket.is_listener().unwrap_or(false) => {
                SocketKind::TcpListener(addr)
            }
            Ok(socket2::Type::STREAM) => SocketKind::TcpNotListening,
            _ => SocketKind::Other,
        }
    }
}

/// Takes the sockets passed to this process, if any (`None` when
/// `LISTEN_FDS` is unset or zero, or `LISTEN_PID` is not this process),
/// and clears `LISTEN_*` from the environment. Call it first thing in
/// `main`, before any thread starts: the variables are cleared only while
/// this is the process's one thread (the result says whether they were).
/// A second call finds nothing.
pub fn take() -> Result<Option<Taken>, ActivationError> {
    let read = |var: &str| std::env::var(var).ok();
    let announced = announced(
        read("LISTEN_PID").as_deref(),
        read("LISTEN_FDS").as_deref(),
        read("LISTEN_FDNAMES").as_deref(),
        std::process::id(),
    )?;
    if TAKEN.swap(true, Ordering::SeqCst) {
        return Ok(None);
    }
    let (sockets, environment_cleared) = adopt(announced)?;
    Ok((!sockets.is_empty()).then_some(Taken {
        sockets,
        environment_cleared,
    }))
}

/// The sockets [`take`] found.
#[derive(Debug)]
pub struct Taken {
    /// The sockets, in the order they were passed.
    pub sockets: Vec<PassedSocket>,
    /// Whether `LISTEN_*` could be cleared (not when other threads ran).
    pub environment_cleared: bool,
}

/// The descriptors and names the variables announce to process `me`,
/// checked as sd_listen_fds_with_names(3) does.
fn announced(
    pid: Option<&str>,
    fds: Option<&str>,
    names: Option<&str>,
    me: u32,
) -> Result<Vec<(RawFd, String)>, ActivationError> {
    let Some(fds) = fds else {
        return Ok(Vec::new());
    };
    if pid.and_then(|p| p.trim().parse::<u32>().ok()) != Some(me) {
        return Ok(Vec::new());
    }
    let count: usize = fds
        .trim()
        .parse()
        .ok()
        .filter(|n| *n <= MAX_SOCKETS)
        .ok_or_else(|| ActivationError::BadCount(fds.to_owned()))?;
    let names: Vec<String> = match names {
        Some(n) if count > 0 => n.split(':').map(str::to_owned).collect(),
        _ => vec!["unknown".to_owned(); count],
    };
    if names.len() != count {
        return Err(ActivationError::NameCount {
            names: names.len(),
            count,
        });
    }
    for (i, name) in names.iter().enumerate() {
        if names[..i].contains(name) {
            return Err(ActivationError::DuplicateName(name.clone()));
        }
    }
    Ok((FIRST_FD..).zip(names).collect())
}

/// Takes ownership of the `announced` descriptors, marks each
/// close-on-exec, and clears `LISTEN_*` from the environment while this is
/// the process's only thread. Returns the sockets and whether the
/// environment was cleared.
#[allow(unsafe_code)]
fn adopt(announced: Vec<(RawFd, String)>) -> Result<(Vec<PassedSocket>, bool), ActivationError> {
    let mut sockets = Vec::with_capacity(announced.len());
    for (fd, name) in announced {
        // SAFETY: F_GETFD and F_SETFD read and set the descriptor's own
        // flags and touch no memory; on a number that is not open they
        // fail with EBADF and change nothing.
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
        if flags < 0 {
            return Err(ActivationError::NotOpen { fd, name });
        }
        // SAFETY: as above.
        unsafe { libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC) };
        // SAFETY: the descriptor is open (checked above) and, by
        // sd_listen_fds(3), handed to this process (LISTEN_PID names it)
        // for it to own. Nothing else in ferry uses descriptors it did
        // not open, and each is taken once: `take` adopts only on its
        // first call, and this loop visits each number once.
        sockets.push(PassedSocket {
            name,
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        });
    }
    let alone = std::fs::read_dir("/proc/self/task").is_ok_and(|tasks| tasks.count() == 1);
    if alone {
        for var in VARIABLES {
            // SAFETY: this is the process's only thread (checked just
            // above; only it could start another), so nothing reads or
            // writes the environment at the same time.
            unsafe { std::env::remove_var(var) };
        }
    }
    Ok((sockets, alone))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockets_are_announced_only_to_the_process_listen_pid_names() {
        let me = 4242;
        assert!(announced(None, None, None, me).unwrap().is_empty());
        assert!(
            announced(None, Some("2"), None, me).unwrap().is_empty(),
            "no LISTEN_PID: not ours (sd_listen_fds requires it)"
        );
        assert!(
            announced(Some("4243"), Some("2"), None, me)
                .unwrap()
                .is_empty()
        );
        assert!(
            announced(Some("4242"), Some("0"), Some(""), me)
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            announced(Some("4242"), Some("3"), Some("api:tunnel:dns"), me).unwrap(),
            vec![
                (3, "api".to_owned()),
                (4, "tunnel".to_owned()),
                (5, "dns".to_owned())
            ]
        );
        assert_eq!(
            announced(Some("4242"), Some("1"), None, me).unwrap(),
            vec![(3, "unknown".to_owned())]
        );
    }

    #[test]
    fn broken_announcements_are_errors() {
        let me = 7;
        assert!(matches!(
            announced(Some("7"), Some("two"), None, me),
            Err(ActivationError::BadCount(_))
        ));
        assert!(matches!(
            announced(Some("7"), Some("100000"), None, me),
            Err(ActivationError::BadCount(_))
        ));
        assert!(matches!(
            announced(Some("7"), Some("2"), Some("api"), me),
            Err(ActivationError::NameCount { names: 1, count: 2 })
        ));
        let err = announced(Some("7"), Some("2"), Some("api:api"), me).unwrap_err();
        assert_eq!(
            err.to_string(),
            "two sockets are named 'api': each name must be one socket"
        );
    }

    #[test]
    fn the_kind_of_a_socket_is_asked_of_the_kernel() {
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = tcp.local_addr().unwrap();
        let passed = |fd: OwnedFd| PassedSocket {
            name: "x".into(),
            fd,
        };
        assert_eq!(passed(tcp.into()).kind(), SocketKind::TcpListener(addr));
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = udp.local_addr().unwrap();
        assert_eq!(passed(udp.into()).kind(), SocketKind::Udp(addr));
        let unbound =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        unbound
            .bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
            .unwrap();
        assert_eq!(
            passed(OwnedFd::from(unbound)).kind(),
            SocketKind::TcpNotListening
        );
        let (unix, _peer) = std::os::unix::net::UnixStream::pair().unwrap();
        assert_eq!(passed(unix.into()).kind(), SocketKind::Other);
    }
}
