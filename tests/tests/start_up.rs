//! How the daemons get their sockets: bound from the configuration (a
//! taken port fails the start with status 1, naming the key and the
//! address), or passed by a service manager, where a socket of the wrong
//! kind, one the configuration does not use, a name the daemon does not
//! know, or a socket it needs and misses stops the start with status 2
//! and says which. Sockets announced for another process are left alone.
//! (Every other test hands the daemons their sockets through the
//! harness, as systemd would.)

use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use ferry_tests::hub::{MASTER_KEY, binary};
use ferry_tests::launch::{self, Notifications, Sockets};
use ferry_tests::process::Daemon;

/// A hub configuration in `dir` with the API on `api_listen` and `extra`
/// sections.
fn hub_config(dir: &Path, api_listen: &str, extra: &str) -> PathBuf {
    let path = dir.join("hub.toml");
    std::fs::write(
        &path,
        format!(
            "state_dir = {:?}\n\n[api]\nlisten = \"{api_listen}\"\nplain_http = true\n\n\
             [metrics]\nlisten = \"127.0.0.1:0\"\n\n{extra}\n",
            dir.join("state")
        ),
    )
    .unwrap();
    path
}

/// Starts `cmd` (a daemon with `--config`) and waits for it to exit on
/// its own; returns its status code and log.
fn exits(mut cmd: Command) -> (Option<i32>, String) {
    cmd.env("FERRY_MASTER_KEY", MASTER_KEY);
    let mut daemon = Daemon::spawn(cmd);
    let status = daemon
        .wait_exit(Duration::from_secs(30))
        .unwrap_or_else(|| panic!("it did not exit:\n{}", daemon.log()));
    (status.code(), daemon.full_log(Duration::from_secs(5)))
}

/// Runs the hub on `config` with `sockets` passed to it; returns how it
/// exited.
fn hub_exits(config: &Path, sockets: &Sockets) -> (Option<i32>, String) {
    let notify = Notifications::new();
    let mut cmd = launch::command(&binary("ferry-hub"), sockets, &notify);
    cmd.arg("--config").arg(config);
    exits(cmd)
}

#[test]
fn a_taken_port_fails_the_start_naming_the_key_and_the_address() {
    let dir = tempfile::tempdir().unwrap();
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let config = hub_config(dir.path(), &addr.to_string(), "");
    let (code, log) = hub_exits(&config, &Sockets::new());
    assert_eq!(code, Some(1), "{log}");
    assert!(
        log.contains(&format!("cannot listen on TCP {addr} (api.listen)")),
        "{log}"
    );

    let taken = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let config = hub_config(
        dir.path(),
        "127.0.0.1:0",
        &format!("[dns]\nlisten = \"{addr}\"\nzone = \"ferry.test\"\n"),
    );
    let (code, log) = hub_exits(&config, &Sockets::new());
    assert_eq!(code, Some(1), "{log}");
    assert!(
        log.contains(&format!("cannot listen on UDP {addr} (dns.listen)")),
        "{log}"
    );
}

#[test]
fn passed_sockets_of_the_wrong_kind_or_name_stop_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let loopback = "127.0.0.1".parse().unwrap();
    let plain = hub_config(dir.path(), "127.0.0.1:0", "");

    // UDP where the API needs TCP.
    let mut sockets = Sockets::new();
    let udp = sockets.add_udp("api", UdpSocket::bind("127.0.0.1:0").unwrap());
    let (code, log) = hub_exits(&plain, &sockets);
    assert_eq!(code, Some(2), "{log}");
    assert!(
        log.contains(&format!(
            "the socket passed as 'api' is a UDP socket on {udp}, but api.listen needs a TCP listener"
        )),
        "{log}"
    );

    // A DNS socket for a hub without [dns], and a name nobody knows.
    let mut sockets = Sockets::new();
    sockets.tcp("api", loopback);
    sockets.udp_and_tcp("dns", "dns-tcp", loopback);
    sockets.tcp("metrics", loopback);
    sockets.tcp("web", loopback);
    let (code, log) = hub_exits(&plain, &sockets);
    assert_eq!(code, Some(2), "{log}");
    for says in [
        "the service manager passed sockets this configuration does not use",
        "'dns' (for [dns], which is not configured)",
        "'dns-tcp' (for [dns], which is not configured)",
        "'web' (not a name this daemon knows: api, tunnel, tunnel-tcp, dns, dns-tcp, metrics)",
    ] {
        assert!(log.contains(says), "{says}: {log}");
    }

    // A tunnel configured but not passed.
    let with_tunnel = hub_config(
        dir.path(),
        "127.0.0.1:0",
        "[tunnel]\nlisten = \"127.0.0.1:0\"\n",
    );
    let mut sockets = Sockets::new();
    sockets.tcp("api", loopback);
    let (code, log) = hub_exits(&with_tunnel, &sockets);
    assert_eq!(code, Some(2), "{log}");
    assert!(
        log.contains(
            "the service manager passed sockets (api) but none named 'tunnel', which tunnel.listen needs: pass one with FileDescriptorName=tunnel"
        ),
        "{log}"
    );

    // A spoke given its socket under systemd's default name, the unit's.
    let spoke_dir = tempfile::tempdir().unwrap();
    let spoke_config = spoke_dir.path().join("spoke.toml");
    std::fs::write(
        &spoke_config,
        format!(
            "name = \"fra1\"\nstate_dir = {:?}\n\n[api]\nlisten = \"127.0.0.1:0\"\nplain_http = true\n\n\
             [hub]\napi_url = \"http://127.0.0.1:9\"\ntunnel_addr = \"127.0.0.1:9\"\ntunnel_tcp_addr = \"127.0.0.1:9\"\n",
            spoke_dir.path().join("state")
        ),
    )
    .unwrap();
    let mut sockets = Sockets::new();
    sockets.tcp("ferry-spoke.socket", loopback);
    let notify = Notifications::new();
    let mut cmd = launch::command(&binary("ferry-spoke"), &sockets, &notify);
    cmd.arg("--config").arg(&spoke_config);
    let (code, log) = exits(cmd);
    assert_eq!(code, Some(2), "{log}");
    assert!(
        log.contains("passed sockets (ferry-spoke.socket) but none named 'api'"),
        "{log}"
    );
}

#[test]
fn sockets_announced_for_another_process_are_left_alone() {
    // A UDP socket as `api` would stop the start if the hub took it; with
    // LISTEN_PID naming another process, the hub binds from its
    // configuration and serves.
    let dir = tempfile::tempdir().unwrap();
    let config = hub_config(dir.path(), "127.0.0.1:0", "");
    let mut sockets = Sockets::new();
    sockets.add_udp("api", UdpSocket::bind("127.0.0.1:0").unwrap());
    let notify = Notifications::new();
    let mut cmd = Command::new(binary("ferry-hub"));
    cmd.arg("--config")
        .arg(&config)
        .env("FERRY_MASTER_KEY", MASTER_KEY)
        .env("NOTIFY_SOCKET", notify.path())
        .env("LISTEN_PID", "1");
    sockets.pass_to(&mut cmd);
    let mut daemon = Daemon::spawn(cmd);
    launch::wait_ready(&mut daemon, &notify, 0, Duration::from_secs(30))
        .unwrap_or_else(|log| panic!("the hub did not start:\n{log}"));
    assert!(
        !daemon.log().contains("service manager passed"),
        "{}",
        daemon.log()
    );
    let status = daemon.stop().expect("it stops on SIGTERM");
    assert!(status.success(), "{}", daemon.log());
}

#[test]
fn a_short_admin_token_stops_the_start_before_any_port_is_bound() {
    let dir = tempfile::tempdir().unwrap();
    let held = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = held.local_addr().unwrap();
    // The API's port is taken: had the hub gone on to bind it, it would
    // say so and exit 1.
    let config = hub_config(dir.path(), &addr.to_string(), "");
    let mut cmd = Command::new(binary("ferry-hub"));
    cmd.arg("--config")
        .arg(&config)
        .env("FERRY_ADMIN_TOKEN", "only-twenty-seven-chars-xyz");
    let (code, log) = exits(cmd);
    assert_eq!(code, Some(2), "{log}");
    assert!(
        log.contains("FERRY_ADMIN_TOKEN has 27 characters; it needs at least 32"),
        "{log}"
    );
    assert!(!log.contains("cannot listen"), "{log}");
}
