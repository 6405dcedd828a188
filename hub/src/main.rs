//! `ferry-hub`: parse the command line, load the configuration, start
//! logging, bind the listener and run the hub until a signal arrives.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use ferry_common::config;
use ferry_hub::config::HubConfig;

/// The ferry hub: the HTTP API, the metadata store, the tunnel endpoint.
#[derive(Debug, Parser)]
#[command(name = "ferry-hub", version)]
struct Cli {
    /// The configuration file.
    #[arg(long, value_name = "FILE", global = true)]
    config: Option<PathBuf>,
    /// Check this configuration file, print every problem, and exit
    /// (0 when it is valid, 2 when not), without binding any port.
    #[arg(long, value_name = "FILE", conflicts_with = "config")]
    check_config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Manage spokes (works on the hub's database; the hub may be running).
    Spoke {
        #[command(subcommand)]
        action: SpokeAction,
    },
    /// Re-encrypt every connection's configuration under a new master key,
    /// in one transaction. Stop the hubs first, then start them with the
    /// new key.
    Rekey {
        /// The file holding the new key (32 bytes, base64 or hex).
        #[arg(long, value_name = "FILE")]
        new_key_file: PathBuf,
    },
    /// Copy a SQLite hub's metadata (accounts, keys, connections, files,
    /// events, spokes and the tunnel CA) into the PostgreSQL store of this
    /// configuration, which must be empty. Stop the SQLite hub first; use
    /// the same master key.
    MigrateStore {
        /// The SQLite hub's configuration file (for its database and its
        /// tunnel CA).
        #[arg(long, value_name = "FILE")]
        from: PathBuf,
    },
}

#[derive(Debug, clap::Subcommand)]
enum SpokeAction {
    /// Make a one-time join token for the spoke NAME (a new or a lost one).
    Add {
        /// The spoke's name: a-z, 0-9 and '-'.
        name: String,
        /// How long the token stays valid (default tunnel.join_token_ttl_secs).
        #[arg(long)]
        ttl_secs: Option<u64>,
    },
    /// List spokes.
    List,
    /// Revoke a spoke: its tunnel closes and it cannot come back.
    Revoke {
        /// The spoke's name.
        name: String,
    },
    /// Fleet tokens: one token that enrols any number of new spokes named
    /// PREFIX-… (an auto-scaling group's instances), until it expires or
    /// is revoked.
    Fleet {
        #[command(subcommand)]
        action: FleetAction,
    },
}

#[derive(Debug, clap::Subcommand)]
enum FleetAction {
    /// Make a fleet token for spokes named PREFIX-… (printed on standard output).
    Add {
        /// The names' prefix: a-z, 0-9 and '-', at most 40 characters.
        prefix: String,
        /// How long the token works, in seconds (default 90 days, at most 366 days).
        #[arg(long)]
        ttl_secs: Option<u64>,
    },
    /// List fleet tokens.
    List,
    /// Revoke a fleet token by its id (the spokes it enrolled stay).
    Revoke {
        /// The token's id (flt_…), from `fleet list`.
        id: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(path) = cli.check_config {
        return match config::load::<HubConfig>(&path) {
            Ok(_) => {
                println!("{}: ok", path.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::from(2)
            }
        };
    }
    let Some(path) = cli.config else {
        eprintln!("ferry-hub: --config FILE is required (or --check-config FILE); see --help");
        return ExitCode::from(2);
    };
    let mut cfg = match config::load::<HubConfig>(&path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    cfg.path = Some(path.clone());
    let done = match cli.command {
        Some(Command::Spoke { action }) => Some(spoke_command(&cfg, action)),
        Some(Command::Rekey { new_key_file }) => Some(rekey(&cfg, &new_key_file)),
        Some(Command::MigrateStore { from }) => Some(migrate_store(&cfg, &from)),
        None => None,
    };
    if let Some(result) = done {
        return match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("ferry-hub: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    ferry_common::telemetry::init(&cfg.log);
    ferry_common::tls::install_crypto_provider();
    match serve(cfg) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("ferry-hub failed: {e:#}");
            eprintln!("ferry-hub: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn spoke_command(cfg: &HubConfig, action: SpokeAction) -> anyhow::Result<()> {
    let Some(tunnel) = &cfg.tunnel else {
        anyhow::bail!("the configuration has no [tunnel] section: this hub takes no spokes");
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let store = cfg.open_store(1).await?;
        match action {
            SpokeAction::Add { name, ttl_secs } => {
                if let Err(p) = ferry_hub::api::check_spoke_name(&name) {
                    anyhow::bail!("{}", p.detail.unwrap_or_default());
                }
                let ttl = ttl_secs.unwrap_or(tunnel.join_token_ttl_secs).clamp(1, 7 * 24 * 3600);
                let (token, expires) = store.add_spoke(&name, ttl as i64 * 1000).await?;
                println!("{token}");
                eprintln!(
                    "join token for spoke '{name}', valid {ttl} s (until unix ms {expires}); start the spoke once with FERRY_JOIN_TOKEN set to it"
                );
            }
            SpokeAction::List => {
                for s in store.list_spokes().await? {
                    let state = match (s.revoked_at, s.enrolled_at) {
                        (Some(_), _) => "revoked",
                        (None, Some(_)) => "enrolled",
                        (None, None) => "waiting for enrolment",
                    };
                    println!("{}\t{state}", s.name);
                }
            }
            SpokeAction::Revoke { name } => {
                if !store.revoke_spoke(&name).await? {
                    anyhow::bail!("no spoke '{name}'");
                }
                eprintln!("revoked '{name}'; a running hub closes its tunnel within seconds");
            }
            SpokeAction::Fleet { action: FleetAction::Add { prefix, ttl_secs } } => {
                if prefix.len() > 40 || ferry_hub::api::check_spoke_name(&format!("{prefix}-x")).is_err() {
                    anyhow::bail!("the prefix must be 1 to 40 of a-z, 0-9 and '-', starting with a letter or digit");
                }
                let ttl = ttl_secs.unwrap_or(90 * 24 * 3600).clamp(1, 366 * 24 * 3600);
                let (id, token, expires) = store.add_fleet(&prefix, ttl as i64 * 1000).await?;
                println!("{token}");
                eprintln!(
                    "fleet token {id} for spokes named '{prefix}-…', valid {ttl} s (until unix ms {expires}); give it to each spoke as FERRY_JOIN_TOKEN"
                );
            }
            SpokeAction::Fleet { action: FleetAction::List } => {
                let now = ferry_hub::store::now_ms();
                for f in store.list_fleets().await? {
                    let state = match f.revoked_at {
                        Some(_) => "revoked",
                        None if f.expires_at <= now => "expired",
                        None => "active",
                    };
                    println!("{}\t{}-…\t{state}\texpires {}", f.id, f.prefix, f.expires_at);
                }
            }
            SpokeAction::Fleet { action: FleetAction::Revoke { id } } => {
                if !store.revoke_fleet(&id).await? {
                    anyhow::bail!("no fleet token '{id}'");
                }
                eprintln!("revoked fleet token '{id}'; the spokes it enrolled stay enrolled");
            }
        }
        store.close().await;
        Ok(())
    })
}

/// Opens every connection's configuration with the configured master key
/// and seals it again with the one in `new_key_file`.
fn rekey(cfg: &HubConfig, new_key_file: &std::path::Path) -> anyhow::Result<()> {
    use anyhow::Context as _;
    use ferry_hub::secrets::MasterKey;
    let old = MasterKey::load(&cfg.secrets).context("the current master key")?;
    let text = std::fs::read_to_string(new_key_file)
        .with_context(|| format!("cannot read {}", new_key_file.display()))?;
    let new = MasterKey::parse(&text, &new_key_file.display().to_string())?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let store = cfg.open_store(1).await?;
        let ca_context = ferry_hub::TUNNEL_CA_CONTEXT;
        let result = store
            .reseal_secrets(ca_context, |context, sealed| {
                let plain = old.open(sealed, context).with_context(|| {
                    if context == ca_context {
                        "the shared tunnel CA does not open with the current key".to_owned()
                    } else {
                        format!("connection {context} does not open with the current key")
                    }
                })?;
                Ok::<_, anyhow::Error>(new.seal(&plain, context))
            })
            .await;
        store.close().await;
        let (count, ca) = result??;
        let ca = if ca { " and the shared tunnel CA" } else { "" };
        eprintln!(
            "re-encrypted {count} connection(s){ca}; start the hubs with the new master key (the old one no longer opens them)"
        );
        Ok(())
    })
}

/// Copies the metadata of the SQLite hub configured in `from` into this
/// configuration's PostgreSQL store, with its tunnel CA, so that its
/// spokes and clients carry on against the hubs on PostgreSQL.
fn migrate_store(cfg: &HubConfig, from: &std::path::Path) -> anyhow::Result<()> {
    use anyhow::Context as _;
    use ferry_hub::config::StoreBackend;
    use ferry_hub::secrets::MasterKey;
    let old = config::load::<HubConfig>(from).map_err(|e| anyhow::anyhow!("{e}"))?;
    if old.store.backend != StoreBackend::Sqlite {
        anyhow::bail!(
            "{}: the hub to migrate from must use store.backend = \"sqlite\"",
            from.display()
        );
    }
    if cfg.store.backend != StoreBackend::Postgres {
        anyhow::bail!("the configuration to migrate into must use store.backend = \"postgres\"");
    }
    let db = old.sqlite_path();
    if !db.exists() {
        anyhow::bail!(
            "{} does not exist: is {} the right configuration?",
            db.display(),
            from.display()
        );
    }
    let key = MasterKey::load(&cfg.secrets).context("the master key")?;
    let ca = ferry_hub::ca::HubCa::read_files(&old.state_dir.join("tunnel-ca"))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let source = old.open_store(1).await?;
        for (id, sealed) in source.sealed_connections().await? {
            key.open(&sealed, &id).with_context(|| {
                format!("connection {id} does not open with this master key: use the SQLite hub's key; nothing was copied")
            })?;
        }
        let target = cfg.open_store(2).await?;
        let sealed_ca = ca
            .as_ref()
            .map(|(cert, key_pem)| (cert.as_str(), key.seal(key_pem.as_bytes(), ferry_hub::TUNNEL_CA_CONTEXT)));
        eprintln!("copying {} into PostgreSQL", db.display());
        let mut last = (String::new(), std::time::Instant::now());
        let outcome = source
            .copy_into(
                &target,
                sealed_ca.as_ref().map(|(c, k)| (*c, k.as_slice())),
                |table, rows| {
                    if table != last.0 || last.1.elapsed() >= std::time::Duration::from_secs(2) {
                        eprintln!("  {table}: {rows} rows…");
                        last = (table.to_owned(), std::time::Instant::now());
                    }
                },
            )
            .await;
        let result = match outcome {
            Ok(ferry_hub::store::CopyOutcome::Copied(counts)) => {
                for (table, rows) in counts {
                    eprintln!("  {table}: {rows} rows");
                }
                if ca.is_some() {
                    eprintln!("the tunnel CA is in the store: enrolled spokes keep their certificates");
                } else {
                    eprintln!(
                        "no tunnel CA in {}: the first hub on PostgreSQL makes one, and spokes enrol again",
                        old.state_dir.display()
                    );
                }
                Ok(())
            }
            Ok(ferry_hub::store::CopyOutcome::TargetNotEmpty(table)) => Err(anyhow::anyhow!(
                "the PostgreSQL store already holds {table}: migrate into an empty database; nothing was copied"
            )),
            Err(e) => Err(anyhow::Error::new(e).context("the copy failed; nothing was copied")),
        };
        source.close().await;
        target.close().await;
        result?;
        eprintln!("done: start the hubs with this configuration and the same master key");
        Ok(())
    })
}

fn serve(cfg: HubConfig) -> anyhow::Result<()> {
    ferry_common::http_server::run_daemon(cfg.api.listen, |listener, shutdown| {
        ferry_hub::run(cfg, listener, shutdown)
    })
    .map_err(|e| anyhow::anyhow!(e))
}
