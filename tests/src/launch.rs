//! Starting a ferry daemon the way a service manager does: the harness
//! binds the sockets the daemon serves on (so it knows their addresses
//! without reading any log) and passes them as descriptors 3… with
//! `LISTEN_FDS`, `LISTEN_FDNAMES` and `LISTEN_PID` (set to the daemon's
//! own pid by the shell that execs it); the daemon says `READY=1` on a
//! notification socket of the harness's, which the harness waits for.
//! The harness keeps its copies of the sockets, so a daemon started again
//! gets the very same ones: its ports cannot be lost in between.

use std::net::{IpAddr, SocketAddr, TcpListener, UdpSocket};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use command_fds::{CommandFdExt as _, FdMapping};

use crate::process::Daemon;

/// How often binding UDP and TCP on one free port is tried.
const SAME_PORT_TRIES: usize = 16;

/// One socket held for a daemon.
#[derive(Debug)]
enum Held {
    Tcp(TcpListener),
    Udp(UdpSocket),
}

/// The sockets a daemon is given, by name, held by the harness.
#[derive(Debug, Default)]
pub struct Sockets {
    held: Vec<(String, Held)>,
}

impl Sockets {
    /// No sockets yet.
    pub fn new() -> Sockets {
        Sockets::default()
    }

    /// Binds a TCP listener on `ip`, port 0, passed as `name`.
    pub fn tcp(&mut self, name: &str, ip: IpAddr) -> SocketAddr {
        let listener = TcpListener::bind((ip, 0)).expect("a free TCP port");
        self.add_tcp(name, listener)
    }

    /// Binds UDP and TCP on one free port of `ip`, passed as `udp_name`
    /// and `tcp_name` (the port UDP picks is tried on TCP, a bounded number
    /// of times should another process hold it there).
    pub fn udp_and_tcp(&mut self, udp_name: &str, tcp_name: &str, ip: IpAddr) -> SocketAddr {
        for _ in 0..SAME_PORT_TRIES {
            let udp = UdpSocket::bind((ip, 0)).expect("a free UDP port");
            let addr = udp.local_addr().expect("a bound socket has an address");
            if let Ok(tcp) = TcpListener::bind(addr) {
                self.add_udp(udp_name, udp);
                self.add_tcp(tcp_name, tcp);
                return addr;
            }
        }
        panic!("no port free on both UDP and TCP on {ip} after {SAME_PORT_TRIES} tries");
    }

    /// Passes `listener` as `name`, with the backlog ferry's own listeners
    /// and its systemd units have (std's is 128: a burst of a few hundred
    /// connections overflowed it, the kernel dropped their SYNs, and they
    /// waited a second to try again or, once SYN cookies were in play,
    /// were reset).
    pub fn add_tcp(&mut self, name: &str, listener: TcpListener) -> SocketAddr {
        socket2::SockRef::from(&listener)
            .listen(ferry_common::sockets::LISTEN_BACKLOG)
            .expect("a deeper backlog");
        let addr = listener.local_addr().expect("a bound listener");
        self.held.push((name.to_owned(), Held::Tcp(listener)));
        addr
    }

    /// Passes `socket` as `name`.
    pub fn add_udp(&mut self, name: &str, socket: UdpSocket) -> SocketAddr {
        let addr = socket.local_addr().expect("a bound socket");
        self.held.push((name.to_owned(), Held::Udp(socket)));
        addr
    }

    /// Passes copies of the sockets to the process `cmd` starts, as
    /// descriptors 3, 4, … with `LISTEN_FDS` and `LISTEN_FDNAMES`
    /// (`LISTEN_PID` is the caller's to set).
    pub fn pass_to(&self, cmd: &mut Command) {
        cmd.env("LISTEN_FDS", self.held.len().to_string())
            .env("LISTEN_FDNAMES", self.names())
            .fd_mappings(self.mappings())
            .expect("each descriptor is mapped once");
    }

    /// A copy of each socket for a child, as descriptors 3, 4, …
    fn mappings(&self) -> Vec<FdMapping> {
        (3..)
            .zip(&self.held)
            .map(|(child_fd, (_, held))| FdMapping {
                parent_fd: match held {
                    Held::Tcp(s) => OwnedFd::from(s.try_clone().expect("a copy of the socket")),
                    Held::Udp(s) => OwnedFd::from(s.try_clone().expect("a copy of the socket")),
                },
                child_fd,
            })
            .collect()
    }

    fn names(&self) -> String {
        self.held
            .iter()
            .map(|(name, _)| name.as_str())
            .collect::<Vec<_>>()
            .join(":")
    }
}

/// A command that runs `binary` with `sockets` passed as a service
/// manager passes them and `NOTIFY_SOCKET` pointing at `notify`; add the
/// daemon's own arguments to it.
pub fn command(binary: &Path, sockets: &Sockets, notify: &Notifications) -> Command {
    // $$ is the shell's pid, which exec hands on to the daemon.
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c")
        .arg("export LISTEN_PID=$$; exec \"$0\" \"$@\"")
        .arg(binary)
        .env("NOTIFY_SOCKET", notify.path())
        .env_remove("LISTEN_PID");
    sockets.pass_to(&mut cmd);
    cmd
}

/// What a daemon told its notification socket, in order.
#[derive(Debug, Default)]
struct Received {
    messages: Mutex<Vec<String>>,
    arrived: Condvar,
}

/// A notification socket standing in for systemd's, collecting every
/// message (`READY=1`, `WATCHDOG=1`, …) on a thread of its own.
#[derive(Debug)]
pub struct Notifications {
    _dir: tempfile::TempDir,
    path: PathBuf,
    received: Arc<Received>,
    /// Messages already returned by [`Notifications::next`].
    taken: Mutex<usize>,
    stop: Arc<AtomicBool>,
}

impl Notifications {
    /// A new socket in a temporary folder of its own (short enough a path
    /// for a Unix socket).
    pub fn new() -> Notifications {
        let dir = tempfile::Builder::new()
            .prefix("ferry-notify")
            .tempdir()
            .expect("a temporary directory");
        let path = dir.path().join("notify");
        let socket = UnixDatagram::bind(&path).expect("a notification socket");
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let received = Arc::new(Received::default());
        let stop = Arc::new(AtomicBool::new(false));
        let (sink, stopped) = (received.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while !stopped.load(Ordering::Relaxed) {
                if let Ok(n) = socket.recv(&mut buf) {
                    let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                    sink.messages.lock().unwrap().push(text);
                    sink.arrived.notify_all();
                }
            }
        });
        Notifications {
            _dir: dir,
            path,
            received,
            taken: Mutex::new(0),
            stop,
        }
    }

    /// The socket's path (`NOTIFY_SOCKET`).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How many messages have arrived.
    pub fn count(&self) -> usize {
        self.received.messages.lock().unwrap().len()
    }

    /// Every message so far.
    pub fn messages(&self) -> Vec<String> {
        self.received.messages.lock().unwrap().clone()
    }

    /// Waits (at most `timeout`) for `want` among the messages from
    /// index `from` on; `check` runs every 100 ms meanwhile and ends the
    /// wait early by returning false (a daemon that exited).
    fn wait_for(
        &self,
        want: &str,
        from: usize,
        timeout: Duration,
        mut check: impl FnMut() -> bool,
    ) -> bool {
        let deadline = Instant::now() + timeout;
        let mut messages = self.received.messages.lock().unwrap();
        loop {
            if messages.iter().skip(from).any(|m| m == want) {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            drop(messages);
            if !check() {
                // One last look: the message may have come just before.
                return self.messages().iter().skip(from).any(|m| m == want);
            }
            messages = self.received.messages.lock().unwrap();
            let wait = (deadline - now).min(Duration::from_millis(100));
            messages = self
                .received
                .arrived
                .wait_timeout(messages, wait)
                .unwrap()
                .0;
        }
    }

    /// The next message not yet taken with `next` or `until` (at most 20 s).
    pub fn next(&self) -> String {
        let mut taken = self.taken.lock().unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut messages = self.received.messages.lock().unwrap();
        while messages.len() <= *taken {
            let now = Instant::now();
            assert!(now < deadline, "no notification within 20 s");
            messages = self
                .received
                .arrived
                .wait_timeout(messages, deadline - now)
                .unwrap()
                .0;
        }
        *taken += 1;
        messages[*taken - 1].clone()
    }

    /// Takes messages until `want`, and returns how many watchdog pings
    /// came before it (at most 200 messages, 20 s each).
    pub fn until(&self, want: &str) -> usize {
        let mut pings = 0;
        for _ in 0..200 {
            let got = self.next();
            if got == want {
                return pings;
            }
            if got == "WATCHDOG=1" {
                pings += 1;
            }
        }
        panic!("no {want}");
    }
}

impl Default for Notifications {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Notifications {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Waits (at most `timeout`) until `daemon` says `READY=1` as message
/// `from` or later; `Err` with its log if it exits or the time runs out.
pub fn wait_ready(
    daemon: &mut Daemon,
    notify: &Notifications,
    from: usize,
    timeout: Duration,
) -> Result<(), String> {
    if notify.wait_for("READY=1", from, timeout, || daemon.running()) {
        return Ok(());
    }
    if daemon.running() {
        return Err(format!(
            "{}\n(not ready within {} s)",
            daemon.log(),
            timeout.as_secs()
        ));
    }
    Err(daemon.full_log(Duration::from_secs(5)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A burst of connections larger than std's backlog (128) is queued
    /// whole on a listener passed to a daemon, not dropped.
    #[test]
    fn a_passed_listener_queues_a_burst_of_connections() {
        let mut sockets = Sockets::new();
        let addr = sockets.tcp("api", IpAddr::from([127, 0, 0, 1]));
        let queued: Vec<_> = (0..300)
            .map(|i| {
                std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))
                    .unwrap_or_else(|e| panic!("connection {i} of 300: {e}"))
            })
            .collect();
        assert_eq!(queued.len(), 300);
    }
}
