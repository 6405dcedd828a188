//! The kernel's round-trip time of a TCP connection (`TCP_INFO`), which a
//! spoke samples on the client connections it accepts and reports to its
//! hub for steering.
//!
//! One of ferry's four uses of `unsafe` (the others are adopting the
//! sockets a service manager passes, in `activation`, asking the
//! allocator what it holds, in `heap`, and reading cached file bytes
//! without waiting, in `cached_read`): neither the standard
//! library nor socket2, rustix or nix read `TCP_INFO`, so one `getsockopt`
//! call is made here through libc, on a descriptor borrowed from a live
//! socket.
#![allow(unsafe_code)]

use std::os::fd::AsFd;
#[cfg(target_os = "linux")]
use std::os::fd::AsRawFd as _;
use std::time::Duration;

/// The smoothed RTT the kernel keeps for the connection, if it has one
/// (`None` off Linux, on a socket that is not TCP, or before any sample).
#[cfg(target_os = "linux")]
pub fn kernel_rtt(socket: &impl AsFd) -> Option<Duration> {
    let fd = socket.as_fd();
    // SAFETY: `tcp_info` is plain old data for which all zeroes is a valid
    // value; `getsockopt` writes at most `len` bytes into it and updates
    // `len`; the descriptor is borrowed from a socket that stays open for
    // the duration of the call.
    let (rc, info, len) = unsafe {
        let mut info: libc::tcp_info = std::mem::zeroed();
        let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
        let rc = libc::getsockopt(
            fd.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        );
        (rc, info, len)
    };
    // tcpi_rtt sits well inside the oldest layout of the struct.
    let needed = std::mem::offset_of!(libc::tcp_info, tcpi_rttvar);
    if rc != 0 || (len as usize) < needed || info.tcpi_rtt == 0 {
        return None;
    }
    Some(Duration::from_micros(u64::from(info.tcpi_rtt)))
}

/// The smoothed RTT the kernel keeps for the connection (Linux only).
#[cfg(not(target_os = "linux"))]
pub fn kernel_rtt(_socket: &impl AsFd) -> Option<Duration> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_loopback_connection_has_a_small_rtt() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        for s in [&client, &server] {
            let rtt = kernel_rtt(s).expect("the kernel measured the handshake");
            assert!(rtt < Duration::from_millis(500), "{rtt:?}");
        }
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        assert_eq!(kernel_rtt(&udp), None);
    }
}
