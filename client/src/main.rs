//! `ferry`: the command of ferry's client. Remote paths are written
//! `CONNECTION:PATH` (`photos:2026/beach.jpg`); anything else is a local
//! path (`./a:b` for a local name with a colon), `-` standard input or
//! output.
//!
//! Exit codes: 0 everything done, 1 something failed (the error is on
//! standard error, or in `--json` output), 2 the command line is wrong.

use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod tree;
use ferry_client::{Client, Error, Transferred};
use serde_json::json;

/// Writes a line to standard output; a reader that went away (`ferry ls |
/// head`) ends the command quietly instead of a panic.
macro_rules! emit {
    ($($arg:tt)*) => {
        out_line(&format!($($arg)*))?
    };
}

/// Why the command stopped writing: its reader closed standard output.
const STDOUT_CLOSED: &str = "standard output was closed";

pub(crate) fn out_line(line: &str) -> Result<(), Error> {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}").map_err(|e| {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            Error::Local(STDOUT_CLOSED.into())
        } else {
            Error::Local(format!("cannot write to standard output: {e}"))
        }
    })
}

/// Moves files through ferry, to and from the nearest spoke.
#[derive(Debug, Parser)]
#[command(
    name = "ferry",
    version,
    after_help = "Remote paths are CONNECTION:PATH. Exit codes: 0 done, 1 something failed, \
                  2 the command line is wrong. More: docs/client.md \
                  (/usr/share/doc/ferry/client.md when installed)."
)]
struct Cli {
    /// The ferry network (its hub's URL). Default: FERRY_URL, else the
    /// profile's `url`.
    #[arg(long, global = true)]
    url: Option<String>,
    /// Send every request to this node instead of probing for the
    /// nearest spoke.
    #[arg(long, global = true)]
    endpoint: Option<String>,
    /// The profile in the configuration file. Default: FERRY_PROFILE,
    /// else `default`.
    #[arg(long, global = true)]
    profile: Option<String>,
    /// One JSON object per result on standard output, errors included.
    #[arg(long, global = true)]
    json: bool,
    /// No progress bars.
    #[arg(long, short, global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Lists a folder (`CONNECTION:` for the top).
    Ls {
        /// `CONNECTION:FOLDER`
        remote: String,
        /// The folders' entries too.
        #[arg(short, long)]
        recursive: bool,
        /// Size, time and kind of each entry.
        #[arg(short, long)]
        long: bool,
    },
    /// Copies a file (or with `-r` a folder) up (local → remote), down
    /// (remote → local), or from one remote path to another.
    Cp {
        /// Source: a local file, `-`, or `CONNECTION:PATH`.
        src: String,
        /// Target: a local file or folder, `-`, or `CONNECTION:PATH`
        /// (ending in `/` for a folder).
        dst: String,
        /// Copy a folder and everything below it.
        #[arg(short, long)]
        recursive: bool,
        #[command(flatten)]
        opts: TransferOpts,
    },
    /// Makes a folder match another: copies what is missing or differs
    /// (size, or CRC64/NVME where the server knows it).
    Sync {
        /// The folder to copy from (local or `CONNECTION:PATH`).
        src: String,
        /// The folder to make match (remote if SRC is local, and the
        /// other way round).
        dst: String,
        /// Also delete what DST has and SRC does not.
        #[arg(long)]
        delete: bool,
        /// Say what would be done; change nothing.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        opts: TransferOpts,
    },
    /// Moves a file within a connection.
    Mv {
        /// `CONNECTION:PATH`
        src: String,
        /// `CONNECTION:PATH` (the same connection)
        dst: String,
        /// Replace a file at DST.
        #[arg(short, long)]
        force: bool,
    },
    /// Makes a folder (and its parents).
    Mkdir {
        /// `CONNECTION:PATH`
        remote: String,
    },
    /// Compares two folders (one local, one remote) without changing
    /// anything: exit 0 when they hold the same files, 1 when not.
    Check {
        /// One folder (local or `CONNECTION:PATH`).
        src: String,
        /// The other.
        dst: String,
    },
    /// Prints a shell's completion script for ferry (bash, zsh, fish,
    /// elvish, powershell).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Prints ferry's manual page (roff), or a command's (`ferry man cp`);
    /// with `--out DIR`, writes them all there (ferry.1, ferry-cp.1, …).
    Man {
        /// The command whose page to print.
        command: Option<String>,
        /// Writes every page into this folder instead.
        #[arg(long, value_name = "DIR", conflicts_with = "command")]
        out: Option<PathBuf>,
    },
    /// Writes or shows profiles (`~/.config/ferry/config.toml`).
    Config {
        #[command(subcommand)]
        action: ConfigAction,
    },
    /// Prints the account's activity feed, oldest first.
    Events {
        /// Start after this cursor (an earlier `next_cursor`).
        #[arg(long)]
        cursor: Option<String>,
        /// Keep waiting for new events (polls every second) until stopped.
        #[arg(short, long)]
        follow: bool,
    },
    /// Writes a remote file to standard output.
    Cat {
        /// `CONNECTION:PATH`
        remote: String,
    },
    /// Shows what the server knows of a remote file.
    Stat {
        /// `CONNECTION:PATH`
        remote: String,
    },
    /// Deletes a remote file, or with `-r` a folder and all it holds.
    Rm {
        /// `CONNECTION:PATH`
        remote: String,
        /// Delete the folder at PATH with everything in it (the server
        /// deletes it: one request, an event per file).
        #[arg(short, long)]
        recursive: bool,
    },
    /// Probes the spokes and shows each one's round trip and the one in
    /// use.
    Spokes,
}

/// What `ferry config` does.
#[derive(Debug, Subcommand)]
enum ConfigAction {
    /// Sets the profile's URL and API key; the key is read from
    /// FERRY_API_KEY or, without it, from standard input, never from the
    /// command line.
    Set {
        /// The ferry network's URL.
        #[arg(long)]
        url: String,
    },
    /// Lists the profiles: name, URL and the key's first characters.
    Show,
}

/// How files move.
#[derive(Debug, Clone, clap::Args)]
struct TransferOpts {
    /// Bytes per upload request; files up to this size go in one request.
    #[arg(long, default_value = "8MiB", value_parser = parse_size)]
    part_size: u64,
    /// Files moved at once (folders).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
    transfers: u16,
    /// Ranges one file of several parts is downloaded in at once.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=32))]
    streams: u16,
    /// Upload sessions one file of several parts is sent in at once,
    /// joined at the end; worth it only where one stream cannot fill the
    /// link (joining costs the node a copy of the file).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=32))]
    upload_streams: u16,
    /// Bytes per second that all transfers share, up and down (10MiB:
    /// 10 MiB/s); no limit by default.
    #[arg(long, value_parser = parse_size)]
    bwlimit: Option<u64>,
}

/// A path on one side of a copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Side {
    Remote { conn: String, path: String },
    Local(PathBuf),
    Std,
}

pub(crate) fn side(arg: &str) -> Side {
    if arg == "-" {
        return Side::Std;
    }
    // A colon before any slash names a connection; `./a:b` is local.
    match arg.split_once(':') {
        Some((conn, path)) if !conn.is_empty() && !conn.contains('/') => Side::Remote {
            conn: conn.to_owned(),
            path: path.trim_start_matches('/').to_owned(),
        },
        _ => Side::Local(PathBuf::from(arg)),
    }
}

fn remote(arg: &str) -> Result<(String, String), Error> {
    match side(arg) {
        Side::Remote { conn, path } => Ok((conn, path)),
        _ => Err(Error::Usage(format!(
            "'{arg}' is not a remote path: write CONNECTION:PATH"
        ))),
    }
}

fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: u64 = n.parse().map_err(|_| format!("'{s}' is not a size"))?;
    let mult = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        _ => return Err(format!("'{unit}' is not a unit: use KiB, MiB or GiB")),
    };
    let v = n * mult;
    if v == 0 {
        return Err("the size must be above 0".into());
    }
    Ok(v)
}

/// Where the network and the key come from: the environment, else the
/// profile in `$XDG_CONFIG_HOME/ferry/config.toml` (or
/// `~/.config/ferry/config.toml`):
///
/// ```toml
/// [profiles.default]
/// url = "https://api.ferry.example.com"
/// api_key = "fry_…"
/// ```
fn settings(cli: &Cli) -> Result<(url::Url, String), Error> {
    let profile_name = profile_name(cli);
    let named = cli.profile.is_some() || std::env::var_os("FERRY_PROFILE").is_some();
    let file = config_file();
    let mut profile = toml::Table::new();
    if let Some(f) = &file
        && let Ok(text) = std::fs::read_to_string(f)
    {
        let all: toml::Table = text
            .parse()
            .map_err(|e| Error::Usage(format!("{} does not read: {e}", f.display())))?;
        if let Some(toml::Value::Table(p)) = all.get("profiles").and_then(|p| p.get(&profile_name))
        {
            profile = p.clone();
        }
    }
    if named && profile.is_empty() {
        return Err(Error::Usage(format!(
            "no profile '{profile_name}' in {}",
            file.map_or_else(
                || "the configuration file".into(),
                |f| f.display().to_string()
            )
        )));
    }
    let get = |key: &str| profile.get(key).and_then(|v| v.as_str()).map(str::to_owned);
    let url = cli
        .url
        .clone()
        .or_else(|| std::env::var("FERRY_URL").ok())
        .or_else(|| get("url"))
        .ok_or_else(|| Error::Usage("say where ferry is: --url, FERRY_URL or a profile".into()))?;
    let key = std::env::var("FERRY_API_KEY")
        .ok()
        .or_else(|| get("api_key"))
        .ok_or_else(|| Error::Usage("give an API key: FERRY_API_KEY or a profile".into()))?;
    let url =
        url::Url::parse(&url).map_err(|e| Error::Usage(format!("'{url}' is not a URL: {e}")))?;
    Ok((url, key))
}

/// The profile asked for: `--profile`, else FERRY_PROFILE, else `default`.
fn profile_name(cli: &Cli) -> String {
    cli.profile
        .clone()
        .or_else(|| std::env::var("FERRY_PROFILE").ok())
        .unwrap_or_else(|| "default".into())
}

/// `$XDG_CONFIG_HOME/ferry/config.toml`, else `~/.config/ferry/config.toml`.
fn config_file() -> Option<PathBuf> {
    std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
        .map(|d| d.join("ferry").join("config.toml"))
}

/// `ferry config`: needs neither a network nor a key.
fn config(cli: &Cli, action: &ConfigAction) -> Result<(), Error> {
    let file = config_file()
        .ok_or_else(|| Error::Usage("set HOME or XDG_CONFIG_HOME for the configuration".into()))?;
    let mut all: toml::Table = match std::fs::read_to_string(&file) {
        Ok(text) => text
            .parse()
            .map_err(|e| Error::Usage(format!("{} does not read: {e}", file.display())))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => toml::Table::new(),
        Err(e) => return Err(Error::Local(format!("cannot read {}: {e}", file.display()))),
    };
    match action {
        ConfigAction::Show => {
            let profiles = all.get("profiles").and_then(|p| p.as_table());
            for (name, p) in profiles.into_iter().flatten() {
                let get = |k: &str| p.get(k).and_then(|v| v.as_str()).unwrap_or("");
                let key = get("api_key");
                let shown = format!("{}…", key.chars().take(8).collect::<String>());
                if cli.json {
                    emit!(
                        "{}",
                        json!({ "profile": name, "url": get("url"), "api_key": shown })
                    );
                } else {
                    emit!("{name:<12} {:<40} {shown}", get("url"));
                }
            }
            Ok(())
        }
        ConfigAction::Set { url } => {
            url::Url::parse(url).map_err(|e| Error::Usage(format!("'{url}' is not a URL: {e}")))?;
            let key = match std::env::var("FERRY_API_KEY") {
                Ok(k) => k,
                Err(_) => {
                    if std::io::stdin().is_terminal() {
                        eprint!("API key: ");
                    }
                    let mut line = String::new();
                    std::io::stdin()
                        .read_line(&mut line)
                        .map_err(|e| Error::Local(format!("cannot read the key: {e}")))?;
                    line.trim().to_owned()
                }
            };
            if key.is_empty() {
                return Err(Error::Usage(
                    "no API key: set FERRY_API_KEY or type it".into(),
                ));
            }
            let name = profile_name(cli);
            let profiles = all
                .entry("profiles")
                .or_insert_with(|| toml::Value::Table(toml::Table::new()))
                .as_table_mut()
                .ok_or_else(|| {
                    Error::Usage(format!("{}: 'profiles' is not a table", file.display()))
                })?;
            let mut p = toml::Table::new();
            p.insert("url".into(), toml::Value::String(url.clone()));
            p.insert("api_key".into(), toml::Value::String(key));
            profiles.insert(name.clone(), toml::Value::Table(p));
            let text = toml::to_string(&all).map_err(|e| Error::Local(e.to_string()))?;
            write_private(&file, &text)?;
            if !cli.quiet {
                eprintln!("ferry: profile '{name}' written to {}", file.display());
            }
            Ok(())
        }
    }
}

/// Writes `text` to `file` readable by its owner only, whole or not at
/// all, making its folder first.
fn write_private(file: &Path, text: &str) -> Result<(), Error> {
    let dir = file.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)
        .map_err(|e| Error::Local(format!("cannot write {}: {e}", dir.display())))?;
    ferry_common::private_file::write(file, text.as_bytes())
        .map_err(|(p, e)| Error::Local(format!("cannot write {}: {e}", p.display())))
}

/// A progress bar on standard error when it is a terminal.
pub(crate) struct Bar(Option<indicatif::ProgressBar>);

/// Where the bars of a folder copy are drawn together: one for the whole,
/// one for each file under way. Nothing when no bar shows.
pub(crate) struct Bars(Option<indicatif::MultiProgress>);

impl Bars {
    pub(crate) fn new(cli: &Cli) -> Self {
        Self(Bar::shown(cli).then(indicatif::MultiProgress::new))
    }

    /// A bar among the others, labelled `what`.
    pub(crate) fn bar(&self, what: &str) -> Bar {
        match &self.0 {
            Some(m) => Bar(Some(m.add(Bar::styled(what)))),
            None => Bar(None),
        }
    }
}

impl Bar {
    fn shown(cli: &Cli) -> bool {
        !(cli.quiet || cli.json || !std::io::stderr().is_terminal())
    }

    pub(crate) fn new(cli: &Cli, what: &str) -> Self {
        if !Self::shown(cli) {
            return Self(None);
        }
        Self(Some(Self::styled(what)))
    }

    fn styled(what: &str) -> indicatif::ProgressBar {
        let bar = indicatif::ProgressBar::new(0);
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{msg} {bar:30} {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}",
        ) {
            bar.set_style(style);
        }
        bar.set_message(what.to_owned());
        bar
    }

    pub(crate) fn done(&self) {
        if let Some(b) = &self.0 {
            b.finish_and_clear();
        }
    }
}

impl ferry_client::Progress for Bar {
    fn update(&self, done: u64, total: u64) {
        if let Some(b) = &self.0 {
            b.set_length(total);
            b.set_position(done);
        }
    }
}

fn transferred_json(
    what: &str,
    from: &str,
    to: &str,
    t: &Transferred,
    via: &str,
) -> serde_json::Value {
    json!({
        "op": what, "from": from, "to": to, "size": t.size, "moved": t.moved, "streams": t.streams,
        "resumed_from": t.resumed_from, "crc64nvme": t.crc64nvme,
        "failovers": t.failovers, "via": via,
    })
}

async fn run(cli: &Cli) -> Result<(), Error> {
    match &cli.command {
        Command::Config { action } => return config(cli, action),
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            let mut out = Vec::new();
            clap_complete::generate(*shell, &mut cmd, "ferry", &mut out);
            return out_line(String::from_utf8_lossy(&out).trim_end());
        }
        Command::Man { command, out } => return man(command.as_deref(), out.as_deref()),
        _ => {}
    }
    let (url, key) = settings(cli)?;
    let mut client = Client::new(url, key)?;
    if let Some(e) = &cli.endpoint {
        let e =
            url::Url::parse(e).map_err(|err| Error::Usage(format!("'{e}' is not a URL: {err}")))?;
        client = client.with_endpoint(e);
    }
    if let Command::Cp { opts, .. } | Command::Sync { opts, .. } = &cli.command {
        client = client
            .with_streams(usize::from(opts.streams))
            .with_upload_streams(usize::from(opts.upload_streams));
        if let Some(rate) = opts.bwlimit {
            client = client.with_bwlimit(rate);
        }
    }
    let probe = matches!(
        cli.command,
        Command::Cp { .. } | Command::Sync { .. } | Command::Cat { .. } | Command::Spokes
    );
    if probe {
        // The nearest spoke carries the bytes; without spokes, the hub.
        let probes = client.choose_endpoint().await?;
        if let Command::Spokes = cli.command {
            let using = client.current();
            for p in &probes {
                let used = p.spoke == using.name;
                if cli.json {
                    emit!(
                        "{}",
                        json!({ "spoke": p.spoke, "url": p.base.as_str(), "rtt_ms": p.rtt.as_ref().ok(),
                                "error": p.rtt.as_ref().err(), "in_use": used })
                    );
                } else {
                    let rtt = match &p.rtt {
                        Ok(ms) => format!("{ms:.2} ms"),
                        Err(e) => format!("unreachable ({e})"),
                    };
                    emit!(
                        "{}{:<12} {:<40} {rtt}",
                        if used { "* " } else { "  " },
                        p.spoke,
                        p.base
                    );
                }
            }
            if probes.is_empty() && !cli.json {
                emit!("no spokes: requests go to the hub");
            }
            return Ok(());
        }
    }
    match &cli.command {
        Command::Spokes => Ok(()),
        Command::Ls {
            remote: r,
            recursive,
            long,
        } => {
            let (conn, path) = remote(r)?;
            let entries = client.walk(&conn, &path, *recursive).await?;
            for e in entries {
                if cli.json {
                    emit!(
                        "{}",
                        json!({ "path": e.path, "type": e.kind, "size": e.size, "modified_at": e.modified_at, "etag": e.etag })
                    );
                } else if *long {
                    let size = e.size.map_or_else(|| "-".into(), |s| s.to_string());
                    let kind = if e.is_folder() { "folder" } else { "file" };
                    emit!(
                        "{kind:<6} {size:>14} {:>14} {}",
                        e.modified_at.unwrap_or(0),
                        show(&e.path, e.is_folder())
                    );
                } else {
                    emit!("{}", show(&e.path, e.is_folder()));
                }
            }
            Ok(())
        }
        Command::Stat { remote: r } => {
            let (conn, path) = remote(r)?;
            let s = client.stat(&conn, &path).await?.ok_or_else(|| Error::Api {
                status: 404,
                code: "not_found".into(),
                detail: format!("no file at '{r}'"),
            })?;
            if cli.json {
                emit!(
                    "{}",
                    json!({ "path": path, "size": s.size, "etag": s.etag, "content_type": s.content_type,
                            "crc64nvme": s.crc64nvme, "last_modified": s.modified })
                );
            } else {
                emit!(
                    "path          {path}\nsize          {}\netag          {}\ncontent type  {}\ncrc64nvme     {}\nlast modified {}",
                    s.size,
                    s.etag.unwrap_or_default(),
                    s.content_type.unwrap_or_default(),
                    s.crc64nvme.unwrap_or_default(),
                    s.modified.unwrap_or_default()
                );
            }
            Ok(())
        }
        Command::Rm {
            remote: r,
            recursive,
        } => {
            let (conn, path) = remote(r)?;
            let files = match recursive {
                true => Some(client.delete_folder(&conn, &path).await?),
                false => {
                    client.delete(&conn, &path).await?;
                    None
                }
            };
            if cli.json {
                emit!(
                    "{}",
                    json!({ "op": "rm", "path": r, "deleted_files": files })
                );
            }
            Ok(())
        }
        Command::Cat { remote: r } => {
            let (conn, path) = remote(r)?;
            cat(&client, &conn, &path).await
        }
        Command::Cp {
            src,
            dst,
            recursive: false,
            opts,
        } => copy(cli, &client, src, dst, opts.part_size).await,
        Command::Cp {
            src,
            dst,
            recursive: true,
            opts,
        } => tree::run(cli, &client, src, dst, tree::Mode::Copy, opts).await,
        Command::Sync {
            src,
            dst,
            delete,
            dry_run,
            opts,
        } => {
            let mode = tree::Mode::Sync {
                delete: *delete,
                dry_run: *dry_run,
            };
            tree::run(cli, &client, src, dst, mode, opts).await
        }
        Command::Check { src, dst } => tree::check(cli, &client, src, dst).await,
        Command::Config { .. } | Command::Completions { .. } | Command::Man { .. } => Ok(()),
        Command::Mv { src, dst, force } => {
            let (conn, from) = remote(src)?;
            let (conn_to, to) = remote(dst)?;
            if conn != conn_to {
                return Err(Error::Usage(
                    "mv moves within one connection: download and upload between two".into(),
                ));
            }
            client.copy_within(&conn, &from, &to, *force, true).await?;
            if cli.json {
                emit!("{}", json!({ "op": "mv", "from": src, "to": dst }));
            }
            Ok(())
        }
        Command::Mkdir { remote: r } => {
            let (conn, path) = remote(r)?;
            client.mkdir(&conn, &path).await?;
            if cli.json {
                emit!("{}", json!({ "op": "mkdir", "path": r }));
            }
            Ok(())
        }
        Command::Events { cursor, follow } => {
            let mut cursor = cursor.clone();
            loop {
                let page = client.events(cursor.as_deref(), 1000).await?;
                for e in &page.events {
                    if cli.json {
                        emit!("{e}");
                    } else {
                        emit!(
                            "{:>8} {:<8} {:<8} {}{}",
                            e["id"],
                            e["type"].as_str().unwrap_or("?"),
                            e["origin"].as_str().unwrap_or("ferry"),
                            e["path"].as_str().unwrap_or(""),
                            e["from"]
                                .as_str()
                                .map(|f| format!(" (from {f})"))
                                .unwrap_or_default()
                        );
                    }
                }
                cursor = Some(page.next_cursor.clone());
                if page.has_more {
                    continue;
                }
                if !follow {
                    if !cli.json && !cli.quiet {
                        eprintln!("next cursor: {}", page.next_cursor);
                    }
                    return Ok(());
                }
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
        }
    }
}

/// The manual page of ferry, or of one of its commands (`ferry-cp`).
fn man_page(command: Option<&str>) -> Result<Vec<u8>, Error> {
    let ferry = <Cli as clap::CommandFactory>::command();
    let cmd = match command {
        None => ferry,
        Some(name) => ferry
            .find_subcommand(name)
            .cloned()
            .ok_or_else(|| Error::Usage(format!("ferry has no command '{name}'")))?
            .display_name(format!("ferry-{name}"))
            .bin_name(format!("ferry {name}")),
    };
    let mut page = Vec::new();
    clap_mangen::Man::new(cmd)
        .render(&mut page)
        .map_err(|e| Error::Local(e.to_string()))?;
    Ok(page)
}

/// `ferry man`: prints a page, or writes every page into `out`.
fn man(command: Option<&str>, out: Option<&Path>) -> Result<(), Error> {
    let Some(dir) = out else {
        return out_line(String::from_utf8_lossy(&man_page(command)?).trim_end());
    };
    let ferry = <Cli as clap::CommandFactory>::command();
    let names: Vec<String> = ferry
        .get_subcommands()
        .map(|c| c.get_name().to_owned())
        .filter(|n| n != "help")
        .collect();
    let write = |file: String, page: Vec<u8>| {
        let path = dir.join(file);
        std::fs::write(&path, page)
            .map_err(|e| Error::Local(format!("cannot write {}: {e}", path.display())))
    };
    write("ferry.1".into(), man_page(None)?)?;
    for name in names {
        write(format!("ferry-{name}.1"), man_page(Some(&name))?)?;
    }
    Ok(())
}

fn show(path: &str, folder: bool) -> String {
    if folder {
        format!("{path}/")
    } else {
        path.to_owned()
    }
}

/// Downloads to a temporary file, checks it, then writes it out.
async fn cat(client: &Client, conn: &str, path: &str) -> Result<(), Error> {
    let dir = tempfile::tempdir().map_err(|e| Error::Local(format!("no temporary folder: {e}")))?;
    let target = dir.path().join("cat");
    client.download(conn, path, &target, &|_, _| {}).await?;
    let mut f = std::fs::File::open(&target).map_err(|e| Error::Local(e.to_string()))?;
    std::io::copy(&mut f, &mut std::io::stdout().lock()).map_err(|e| {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            Error::Local(STDOUT_CLOSED.into())
        } else {
            Error::Local(format!("cannot write to standard output: {e}"))
        }
    })?;
    Ok(())
}

async fn copy(
    cli: &Cli,
    client: &Client,
    src: &str,
    dst: &str,
    part_size: u64,
) -> Result<(), Error> {
    let via = client.current().name;
    match (side(src), side(dst)) {
        (Side::Remote { conn, path }, Side::Std) => cat(client, &conn, &path).await,
        (Side::Remote { conn, path }, Side::Local(mut target)) => {
            if target.is_dir() || dst.ends_with('/') {
                let name = path.rsplit('/').next().unwrap_or(&path);
                target = target.join(name);
            }
            let bar = Bar::new(cli, &path);
            let t = client.download(&conn, &path, &target, &bar).await;
            bar.done();
            let t = t?;
            if cli.json {
                emit!(
                    "{}",
                    transferred_json("download", src, &target.display().to_string(), &t, &via)
                );
            }
            Ok(())
        }
        (Side::Local(source), Side::Remote { conn, path }) => {
            upload(cli, client, &source, &conn, &path, dst, part_size, &via).await
        }
        (Side::Std, Side::Remote { conn, path }) => {
            // Standard input is kept in a temporary file, so that an upload
            // can resume after a failure.
            let mut tmp = tempfile::NamedTempFile::new()
                .map_err(|e| Error::Local(format!("no temporary file: {e}")))?;
            std::io::copy(&mut std::io::stdin().lock(), &mut tmp)
                .map_err(|e| Error::Local(format!("cannot read standard input: {e}")))?;
            let source = tmp.path().to_owned();
            upload(cli, client, &source, &conn, &path, dst, part_size, &via).await
        }
        (
            Side::Remote { conn, path },
            Side::Remote {
                conn: conn_to,
                path: mut to,
            },
        ) => {
            if to.is_empty() || to.ends_with('/') {
                to.push_str(path.rsplit('/').next().unwrap_or(&path));
            }
            if conn == conn_to {
                // Within a connection the provider copies (or the hub
                // streams, for a provider without a copy of its own).
                client.copy_within(&conn, &path, &to, true, false).await?;
                if cli.json {
                    emit!("{}", json!({ "op": "copy", "from": src, "to": dst }));
                }
                return Ok(());
            }
            // Between connections the bytes come here and go back: down to
            // a temporary file (checked), then up.
            let dir = tempfile::tempdir()
                .map_err(|e| Error::Local(format!("no temporary folder: {e}")))?;
            let tmp = dir.path().join("copy");
            let bar = Bar::new(cli, &path);
            let t = client.download(&conn, &path, &tmp, &bar).await;
            bar.done();
            t?;
            upload(cli, client, &tmp, &conn_to, &to, dst, part_size, &via).await
        }
        _ => Err(Error::Usage(
            "one side of a copy must be remote (CONNECTION:PATH)".into(),
        )),
    }
}

#[allow(clippy::too_many_arguments)]
async fn upload(
    cli: &Cli,
    client: &Client,
    source: &Path,
    conn: &str,
    path: &str,
    dst: &str,
    part_size: u64,
    via: &str,
) -> Result<(), Error> {
    let mut path = path.to_owned();
    if path.is_empty() || path.ends_with('/') {
        let name = source
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .ok_or_else(|| Error::Usage("name the remote file: CONNECTION:PATH".into()))?;
        path.push_str(&name);
    }
    let bar = Bar::new(cli, &path);
    let t = client.upload(source, conn, &path, part_size, &bar).await;
    bar.done();
    let t = t?;
    if cli.json {
        emit!(
            "{}",
            transferred_json("upload", &source.display().to_string(), dst, &t, via)
        );
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ferry: cannot start: {e}");
            return ExitCode::from(1);
        }
    };
    // Ctrl-C stops the command where it is: a download notes how far it
    // got, an upload's sessions are kept at the server; the same command
    // run again resumes.
    let interruptible = async {
        tokio::select! {
            done = run(&cli) => done,
            _ = tokio::signal::ctrl_c() => Err(Error::Interrupted),
        }
    };
    match rt.block_on(interruptible) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Error::Local(why)) if why == STDOUT_CLOSED => ExitCode::SUCCESS,
        Err(e) => {
            if cli.json {
                let _ = out_line(&json!({ "error": e.to_string(), "code": e.code() }).to_string());
            }
            eprintln!("ferry: {e}");
            ExitCode::from(match e {
                Error::Usage(_) => 2,
                // As a shell reports a command SIGINT stopped.
                Error::Interrupted => 130,
                _ => 1,
            })
        }
    }
}
