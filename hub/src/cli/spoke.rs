//! `ferry-hub spoke add|allow|list|revoke` and `spoke fleet
//! add|list|revoke`: join tokens, fleet tokens, what spokes may announce,
//! and revocation, on the hub's database (the hub may be running; it closes
//! a revoked spoke's tunnel within seconds).

use crate::config::HubConfig;
use crate::tunnel::allowed::AllowedPublic;

/// Where a spoke may tell clients to reach it, as the operator says it.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct Public {
    /// A network the spoke's public addresses may lie in, such as
    /// 192.0.2.0/24 (repeat for more). Without one, steering never sends
    /// clients to the spoke.
    #[arg(long = "public-addr", value_name = "ADDR/LEN")]
    addrs: Vec<String>,
    /// A host name its probe URL may use, or *.example.com for any name
    /// below example.com (repeat for more). A URL with an address must
    /// fall in a --public-addr network instead.
    #[arg(long = "public-host", value_name = "NAME")]
    hosts: Vec<String>,
}

impl Public {
    /// The allowance, checked; `None` when neither option was given.
    fn allowance(&self) -> anyhow::Result<Option<AllowedPublic>> {
        if self.addrs.is_empty() && self.hosts.is_empty() {
            return Ok(None);
        }
        Ok(Some(AllowedPublic::parse(&self.addrs, &self.hosts)?))
    }
}

/// The allowance as `spoke list` shows it.
fn shown(a: &AllowedPublic) -> String {
    if a.is_empty() {
        return "announces nothing".into();
    }
    let addrs: Vec<String> = a.addrs.iter().map(ToString::to_string).collect();
    let mut parts = Vec::new();
    if !addrs.is_empty() {
        parts.push(addrs.join(","));
    }
    if !a.hosts.is_empty() {
        parts.push(a.hosts.join(","));
    }
    parts.join(" ")
}

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
        /// What it may announce (for an existing spoke: given, it replaces
        /// what was allowed).
        #[command(flatten)]
        public: Public,
    },
    /// Set what an existing spoke may announce for steering: the networks
    /// its public addresses lie in and the host names of its probe URL
    /// (none given: nothing). Its next tunnel is held to it.
    Allow {
        /// The spoke's name.
        name: String,
        /// What it may announce.
        #[command(flatten)]
        public: Public,
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
        /// What the spokes it enrols may announce.
        #[command(flatten)]
        public: Public,
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
            SpokeAction::Add {
                name,
                ttl_secs,
                public,
            } => {
                if let Err(p) = crate::api::check_spoke_name(&name) {
                    anyhow::bail!("{}", p.detail.unwrap_or_default());
                }
                let allowed = public.allowance()?;
                let ttl = ttl_secs
                    .unwrap_or(tunnel.join_token_ttl_secs)
                    .clamp(1, 7 * 24 * 3600);
                let (token, expires) = store
                    .add_spoke(&name, ttl as i64 * 1000, allowed.as_ref())
                    .await?;
                println!("{token}");
                eprintln!(
                    "join token for spoke '{name}', valid {ttl} s (until unix ms {expires}); start the spoke once with FERRY_JOIN_TOKEN set to it"
                );
            }
            SpokeAction::Allow { name, public } => {
                let allowed = public.allowance()?.unwrap_or_default();
                if !store.allow_spoke(&name, &allowed).await? {
                    anyhow::bail!("no spoke '{name}'");
                }
                eprintln!(
                    "'{name}' may announce: {}; its next tunnel is held to it",
                    shown(&allowed)
                );
            }
            SpokeAction::List => {
                for s in store.list_spokes().await? {
                    let state = match (s.revoked_at, s.enrolled_at) {
                        (Some(_), _) => "revoked",
                        (None, Some(_)) => "enrolled",
                        (None, None) => "waiting for enrolment",
                    };
                    println!("{}\t{state}\t{}", s.name, shown(&s.allowed_public));
                }
            }
            SpokeAction::Revoke { name } => {
                if !store.revoke_spoke(&name).await? {
                    anyhow::bail!("no spoke '{name}'");
                }
                eprintln!("revoked '{name}'; a running hub closes its tunnel within seconds");
            }
            SpokeAction::Fleet {
                action:
                    FleetAction::Add {
                        prefix,
                        ttl_secs,
                        public,
                    },
            } => {
                if let Err(p) = crate::api::check_fleet_prefix(&prefix) {
                    anyhow::bail!("{}", p.detail.unwrap_or_default());
                }
                let ttl = ttl_secs
                    .unwrap_or(crate::api::FLEET_TTL_SECS)
                    .clamp(1, crate::api::FLEET_TTL_MAX_SECS);
                let allowed = public.allowance()?.unwrap_or_default();
                let (id, token, expires) = store
                    .add_fleet(&prefix, ttl as i64 * 1000, &allowed)
                    .await?;
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
                    println!(
                        "{}\t{}-…\t{}\texpires {}\t{}",
                        f.id,
                        f.prefix,
                        f.state(now),
                        f.expires_at,
                        shown(&f.allowed_public)
                    );
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
