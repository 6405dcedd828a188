//! `ferry-hub spoke add|list|revoke` and `spoke fleet add|list|revoke`:
//! join tokens, fleet tokens and revocation, on the hub's database (the
//! hub may be running; it closes a revoked spoke's tunnel within seconds).

use crate::config::HubConfig;

/// What `ferry-hub spoke` does.
#[derive(Debug, clap::Subcommand)]
pub enum SpokeAction {
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
        /// What to do with fleet tokens.
        #[command(subcommand)]
        action: FleetAction,
    },
}

/// What `ferry-hub spoke fleet` does.
#[derive(Debug, clap::Subcommand)]
pub enum FleetAction {
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

/// Runs `action`: tokens on standard output, everything said to the
/// operator on standard error.
pub fn run(cfg: &HubConfig, action: SpokeAction) -> anyhow::Result<()> {
    let Some(tunnel) = &cfg.tunnel else {
        anyhow::bail!("the configuration has no [tunnel] section: this hub takes no spokes");
    };
    super::runtime()?.block_on(async {
        let store = cfg.open_store(1).await?;
        match action {
            SpokeAction::Add { name, ttl_secs } => {
                if let Err(p) = crate::api::check_spoke_name(&name) {
                    anyhow::bail!("{}", p.detail.unwrap_or_default());
                }
                let ttl = ttl_secs
                    .unwrap_or(tunnel.join_token_ttl_secs)
                    .clamp(1, 7 * 24 * 3600);
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
            SpokeAction::Fleet {
                action: FleetAction::Add { prefix, ttl_secs },
            } => {
                if prefix.len() > 40
                    || crate::api::check_spoke_name(&format!("{prefix}-x")).is_err()
                {
                    anyhow::bail!(
                        "the prefix must be 1 to 40 of a-z, 0-9 and '-', starting with a letter or digit"
                    );
                }
                let ttl = ttl_secs
                    .unwrap_or(90 * 24 * 3600)
                    .clamp(1, 366 * 24 * 3600);
                let (id, token, expires) = store.add_fleet(&prefix, ttl as i64 * 1000).await?;
                println!("{token}");
                eprintln!(
                    "fleet token {id} for spokes named '{prefix}-…', valid {ttl} s (until unix ms {expires}); give it to each spoke as FERRY_JOIN_TOKEN"
                );
            }
            SpokeAction::Fleet {
                action: FleetAction::List,
            } => {
                let now = crate::store::now_ms();
                for f in store.list_fleets().await? {
                    let state = match f.revoked_at {
                        Some(_) => "revoked",
                        None if f.expires_at <= now => "expired",
                        None => "active",
                    };
                    println!("{}\t{}-…\t{state}\texpires {}", f.id, f.prefix, f.expires_at);
                }
            }
            SpokeAction::Fleet {
                action: FleetAction::Revoke { id },
            } => {
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
