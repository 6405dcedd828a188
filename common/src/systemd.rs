//! systemd's service protocol, for `Type=notify` units: `READY=1` once the
//! daemon serves, `WATCHDOG=1` pings while its runtime runs, `RELOADING=1`
//! around a reload and `STOPPING=1` when it drains. Everything is a no-op
//! when the daemon was not started by systemd (no `NOTIFY_SOCKET`).

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::tasks::NamedTasks;

/// Sends `state` (such as `READY=1`) to systemd's notification socket, if
/// there is one. Failures are logged and otherwise ignored: a daemon never
/// stops because systemd did not listen.
pub fn notify(state: &str) {
    if let Some(path) = std::env::var_os("NOTIFY_SOCKET")
        && let Err(e) = notify_to(&path, state)
    {
        tracing::warn!(error = %e, state, "could not notify systemd");
    }
}

/// Sends `state` to the notification socket at `path` (`@name` for an
/// abstract socket).
fn notify_to(path: &std::ffi::OsStr, state: &str) -> std::io::Result<()> {
    let socket = std::os::unix::net::UnixDatagram::unbound()?;
    if let Some(name) = path.as_encoded_bytes().strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt as _;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
        socket.send_to_addr(state.as_bytes(), &addr)?;
    } else {
        socket.send_to(state.as_bytes(), path)?;
    }
    Ok(())
}

/// The daemon serves.
pub fn ready() {
    notify("READY=1");
}

/// The daemon began to drain.
pub fn stopping() {
    notify("STOPPING=1");
}

/// The daemon began to reload its configuration; `ready()` ends it.
pub fn reloading() {
    notify("RELOADING=1");
}

/// How often systemd wants a watchdog ping (`WATCHDOG_USEC`, when
/// `WATCHDOG_PID` is unset or this process).
pub fn watchdog_interval() -> Option<Duration> {
    interval_for(
        std::env::var("WATCHDOG_USEC").ok().as_deref(),
        std::env::var("WATCHDOG_PID").ok().as_deref(),
        std::process::id(),
    )
}

fn interval_for(usec: Option<&str>, pid: Option<&str>, me: u32) -> Option<Duration> {
    let usec: u64 = usec?.parse().ok()?;
    if let Some(pid) = pid
        && pid.parse::<u32>().ok() != Some(me)
    {
        return None;
    }
    (usec > 0).then(|| Duration::from_micros(usec))
}

/// Pings the watchdog at half its interval until `stop`, from a task of
/// the runtime (started in `tasks`): a runtime that stops running tasks
/// stops the pings, and systemd restarts the daemon.
pub fn spawn_watchdog(stop: CancellationToken, tasks: &mut NamedTasks) {
    let Some(interval) = watchdog_interval() else {
        return;
    };
    tracing::info!(
        interval_ms = interval.as_millis() as u64,
        "pinging systemd's watchdog"
    );
    tasks.spawn("watchdog", async move {
        let mut tick = tokio::time::interval(interval / 2);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => notify("WATCHDOG=1"),
            }
        }
    });
}

/// Calls `reload` on every SIGHUP until `stop`, from a task started in
/// `tasks`, telling systemd that a reload runs (`RELOADING=1`, then
/// `READY=1`).
pub fn on_sighup<F>(stop: CancellationToken, tasks: &mut NamedTasks, reload: F)
where
    F: Fn() + Send + 'static,
{
    use tokio::signal::unix::{SignalKind, signal};
    let mut hup = match signal(SignalKind::hangup()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot install the SIGHUP handler: reloads are off");
            return;
        }
    };
    tasks.spawn("reload", async move {
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                got = hup.recv() => {
                    if got.is_none() {
                        return;
                    }
                    reloading();
                    reload();
                    ready();
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notifications_reach_the_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let socket = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        notify_to(path.as_os_str(), "READY=1").unwrap();
        let mut buf = [0u8; 64];
        let n = socket.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
        // An abstract socket.
        use std::os::linux::net::SocketAddrExt as _;
        let name = format!("ferry-test-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let abstract_socket = std::os::unix::net::UnixDatagram::bind_addr(&addr).unwrap();
        abstract_socket
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        notify_to(std::ffi::OsStr::new(&format!("@{name}")), "WATCHDOG=1").unwrap();
        let n = abstract_socket.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"WATCHDOG=1");
        assert!(notify_to(dir.path().join("none").as_os_str(), "READY=1").is_err());
    }

    #[test]
    fn the_watchdog_interval_is_ours_only() {
        assert_eq!(
            interval_for(Some("2000000"), None, 7),
            Some(Duration::from_secs(2))
        );
        assert_eq!(
            interval_for(Some("2000000"), Some("7"), 7),
            Some(Duration::from_secs(2))
        );
        assert_eq!(interval_for(Some("2000000"), Some("8"), 7), None);
        assert_eq!(interval_for(Some("0"), None, 7), None);
        assert_eq!(interval_for(None, None, 7), None);
        assert_eq!(interval_for(Some("soon"), None, 7), None);
    }
}
