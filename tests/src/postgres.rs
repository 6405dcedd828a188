//! PostgreSQL clusters for tests: a primary and streaming replicas made with
//! Debian's server binaries (`initdb`, `pg_basebackup -R`), in temporary
//! folders, on loopback ports, run as the `postgres` user when the tests
//! run as root (`initdb` refuses root).
//!
//! PostgreSQL cannot be told to take any free port and say which (its
//! port also names its socket file), so a new server starts on a random
//! candidate port and moves to another when that one is in use.

use std::hash::{BuildHasher as _, Hasher as _};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// The database and user every cluster has.
pub const DATABASE: &str = "ferry";

/// How many candidate ports a new server tries before the test gives up.
const PORT_ATTEMPTS: usize = 10;

/// A random port in 20000–31999: below Linux's ephemeral range (from
/// 32768), where the ports of outgoing connections and of servers bound to
/// port 0 are taken, so only another test's candidate can be in the way.
fn candidate_port() -> u16 {
    let random = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    20_000 + u16::try_from(random % 12_000).expect("below 12000")
}

/// How one `pg_ctl start` went.
enum StartOutcome {
    /// The server takes connections.
    Ready,
    /// Another process holds the port: another port may do.
    AddressInUse,
    /// Anything else (with what `pg_ctl` and the server said).
    Failed(String),
}

/// The folder of Debian's PostgreSQL server binaries (the newest version
/// installed), or `None` when there is none.
pub fn bin_dir() -> Option<PathBuf> {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join("initdb").exists())
        .collect();
    versions.sort();
    versions.pop()
}

fn as_owner(bin: &Path, tool: &str) -> Command {
    let path = bin.join(tool);
    let root = std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    if root {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(path);
        c
    } else {
        Command::new(path)
    }
}

fn run(mut cmd: Command, what: &str) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// One PostgreSQL server, stopped (immediately) when dropped.
#[derive(Debug)]
pub struct Postgres {
    bin: PathBuf,
    _dir: tempfile::TempDir,
    data: PathBuf,
    /// Its port on 127.0.0.1.
    pub port: u16,
    running: bool,
}

impl Postgres {
    /// A new primary with the database `ferry`, open to replication from
    /// loopback.
    pub fn primary() -> Postgres {
        let mut pg = Self::initialised();
        pg.start_on_a_free_port();
        let mut create = pg.client("createdb");
        create.arg(DATABASE);
        run(create, "createdb");
        pg
    }

    /// A new cluster configured as a primary, not started.
    fn initialised() -> Postgres {
        let bin = bin_dir().expect("PostgreSQL's server is installed (postgresql)");
        let dir = Self::owned_dir();
        let data = dir.path().join("data");
        let mut init = as_owner(&bin, "initdb");
        init.arg("-D")
            .arg(&data)
            .args(["-U", DATABASE, "--auth=trust", "--no-sync", "-E", "UTF8"]);
        run(init, "initdb");
        let pg = Postgres {
            bin,
            _dir: dir,
            data,
            port: 0,
            running: false,
        };
        pg.configure(&[
            "wal_level = replica",
            "max_wal_senders = 8",
            "hot_standby = on",
            "fsync = off",
        ]);
        std::fs::write(
            pg.data.join("pg_hba.conf"),
            "local all all trust\nhost all all 127.0.0.1/32 trust\nhost replication all 127.0.0.1/32 trust\n",
        )
        .unwrap();
        pg
    }

    /// A streaming replica of this server (`pg_basebackup -R`), replaying
    /// `apply_delay` behind it.
    pub fn replica(&self, apply_delay: Option<Duration>) -> Postgres {
        let dir = Self::owned_dir();
        let data = dir.path().join("data");
        let mut backup = self.client("pg_basebackup");
        backup
            .args([
                "-R", "-X", "stream",
                // Take a checkpoint now instead of waiting for the next one.
                "-c", "fast",
            ])
            .arg("-D")
            .arg(&data);
        run(backup, "pg_basebackup");
        let mut pg = Postgres {
            bin: self.bin.clone(),
            _dir: dir,
            data,
            port: 0,
            running: false,
        };
        if let Some(d) = apply_delay {
            pg.configure(&[&format!("recovery_min_apply_delay = '{}ms'", d.as_millis())]);
        }
        pg.start_on_a_free_port();
        pg
    }

    fn owned_dir() -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("a temporary folder");
        // The server runs as `postgres` when we are root: give it the folder.
        let _ = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(dir.path())
            .status();
        dir
    }

    /// Puts `lines` before the existing `pg_hba.conf` rules (the first
    /// matching rule wins); the server reads them at its next reload or
    /// start.
    fn hba_first(&self, lines: &str) {
        let hba = self.data.join("pg_hba.conf");
        let rest = std::fs::read_to_string(&hba).unwrap();
        std::fs::write(&hba, format!("{lines}{rest}")).unwrap();
    }

    fn configure(&self, lines: &[&str]) {
        use std::io::Write as _;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(self.data.join("postgresql.conf"))
            .unwrap();
        for l in lines {
            writeln!(f, "{l}").unwrap();
        }
    }

    /// Starts a new server on a candidate port, and on another while the
    /// one tried is in use (at most [`PORT_ATTEMPTS`]).
    fn start_on_a_free_port(&mut self) {
        for _ in 0..PORT_ATTEMPTS {
            self.port = candidate_port();
            match self.try_start() {
                StartOutcome::Ready => return,
                StartOutcome::AddressInUse => continue,
                StartOutcome::Failed(why) => panic!("PostgreSQL did not start: {why}"),
            }
        }
        panic!(
            "PostgreSQL found {PORT_ATTEMPTS} candidate ports in use:\n{}",
            self.log()
        );
    }

    /// Starts the server again on its port and waits until it takes
    /// connections.
    pub fn start(&mut self) {
        match self.try_start() {
            StartOutcome::Ready => {}
            StartOutcome::AddressInUse => panic!(
                "PostgreSQL's port {} was taken while it was stopped:\n{}",
                self.port,
                self.log()
            ),
            StartOutcome::Failed(why) => panic!("PostgreSQL did not start again: {why}"),
        }
    }

    /// Runs `pg_ctl start -w` on `self.port`: it returns once the server
    /// takes connections, or fails when the server exits.
    fn try_start(&mut self) -> StartOutcome {
        let sockets = self.data.parent().unwrap().to_owned();
        let log_before = self.log().len();
        let mut ctl = as_owner(&self.bin, "pg_ctl");
        ctl.arg("-D")
            .arg(&self.data)
            .arg("-l")
            .arg(sockets.join("server.log"))
            .arg("-o")
            .arg(format!(
                "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories={}",
                self.port,
                sockets.display()
            ))
            .args(["-w", "-t", "60", "start"]);
        let out = ctl.output().expect("pg_ctl runs");
        if out.status.success() {
            self.running = true;
            return StartOutcome::Ready;
        }
        let log = self.log();
        let this_start = log.get(log_before..).unwrap_or(&log);
        if this_start.contains("Address already in use") {
            return StartOutcome::AddressInUse;
        }
        StartOutcome::Failed(format!(
            "{}{}\n{this_start}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }

    /// Stops the server at once, as a crash would (`-m immediate`).
    pub fn stop(&mut self) {
        if !self.running {
            return;
        }
        let mut ctl = as_owner(&self.bin, "pg_ctl");
        ctl.arg("-D")
            .arg(&self.data)
            .args(["-m", "immediate", "-w", "stop"]);
        let _ = ctl.output();
        self.running = false;
    }

    /// Runs one SQL statement on its `ferry` database, as the superuser.
    pub fn sql(&self, statement: &str) {
        run(self.psql(statement), "psql");
    }

    /// Runs one query on its `ferry` database, as the superuser, and
    /// returns its result unaligned (`psql -At`: a row a line, columns
    /// separated by `|`).
    pub fn query(&self, statement: &str) -> String {
        let mut psql = self.psql(statement);
        psql.arg("-At");
        let out = psql.output().expect("psql runs");
        assert!(
            out.status.success(),
            "psql failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    fn psql(&self, statement: &str) -> Command {
        let mut psql = self.client("psql");
        psql.args(["-d", DATABASE, "-v", "ON_ERROR_STOP=1", "-c", statement]);
        psql
    }

    /// A client `tool` (psql, createdb, pg_basebackup) connecting to this
    /// server over loopback as the superuser.
    fn client(&self, tool: &str) -> Command {
        let mut client = as_owner(&self.bin, tool);
        client.args([
            "-h",
            "127.0.0.1",
            "-p",
            &self.port.to_string(),
            "-U",
            DATABASE,
        ]);
        client
    }

    /// Makes the role `user` with `password`, owning a database of its
    /// own name that it may reach from loopback only with that password
    /// (SCRAM); returns ferry's URL for it (without the password).
    pub fn add_password_user(&mut self, user: &str, password: &str) -> String {
        self.sql(&format!(
            "CREATE ROLE {user} LOGIN PASSWORD '{}'",
            password.replace('\'', "''")
        ));
        self.sql(&format!("CREATE DATABASE {user} OWNER {user}"));
        self.hba_first(&format!("host {user} {user} 127.0.0.1/32 scram-sha-256\n"));
        let mut ctl = as_owner(&self.bin, "pg_ctl");
        ctl.arg("-D").arg(&self.data).arg("reload");
        run(ctl, "pg_ctl reload");
        format!("postgres://{user}@127.0.0.1:{}/{user}", self.port)
    }

    /// Turns TLS on with a new self-signed certificate for 127.0.0.1 and
    /// makes `user`'s database refuse connections without it; returns the
    /// certificate (PEM), for `sslrootcert`. Restarts the server.
    pub fn require_tls_for(&mut self, user: &str) -> std::path::PathBuf {
        let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()])
            .expect("a certificate");
        let (crt, key) = (self.data.join("server.crt"), self.data.join("server.key"));
        std::fs::write(&crt, cert.cert.pem()).unwrap();
        std::fs::write(&key, cert.signing_key.serialize_pem()).unwrap();
        let ca = self.data.parent().unwrap().join("root.pem");
        std::fs::write(&ca, cert.cert.pem()).unwrap();
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        let _ = Command::new("chown")
            .args(["postgres:postgres"])
            .arg(&crt)
            .arg(&key)
            .status();
        self.configure(&["ssl = on"]);
        self.hba_first(&format!(
            "hostssl {user} {user} 127.0.0.1/32 scram-sha-256\nhostnossl {user} all 127.0.0.1/32 reject\n"
        ));
        self.stop();
        self.start();
        ca
    }

    /// Promotes this replica to a primary of its own (`pg_ctl promote`).
    pub fn promote(&self) {
        let mut ctl = as_owner(&self.bin, "pg_ctl");
        ctl.arg("-D").arg(&self.data).args(["-w", "promote"]);
        run(ctl, "pg_ctl promote");
    }

    /// Its URL for ferry (`store.primary_url` or `store.replica_url`).
    pub fn url(&self) -> String {
        format!("postgres://{DATABASE}@127.0.0.1:{}/{DATABASE}", self.port)
    }

    /// The server's log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.data.parent().unwrap().join("server.log")).unwrap_or_default()
    }

    /// The `[store]` section of a hub on this primary, reading `replica`.
    pub fn store_toml(&self, replica: Option<&Postgres>) -> String {
        let mut s = format!(
            "[store]\nbackend = \"postgres\"\nprimary_url = \"{}\"\n",
            self.url()
        );
        if let Some(r) = replica {
            s.push_str(&format!("replica_url = \"{}\"\n", r.url()));
        }
        s
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_port_in_use_is_told_apart_from_other_failures() {
        let mut pg = Postgres::initialised();
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        pg.port = taken.local_addr().unwrap().port();
        assert!(matches!(pg.try_start(), StartOutcome::AddressInUse));
        drop(taken);
        assert!(matches!(pg.try_start(), StartOutcome::Ready));
        assert!(std::net::TcpStream::connect(("127.0.0.1", pg.port)).is_ok());
    }
}
