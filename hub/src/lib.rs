//! The ferry hub: the HTTP API over the metadata store and the storage
//! providers, and the tunnel endpoints spokes connect to (QUIC, and TLS over
//! TCP where UDP is blocked), and the authoritative DNS server that steers
//! clients to their nearest healthy spoke.
//!
//! [`run`] serves on the [`Listeners`] it is given until a shutdown token
//! fires, so the binary and tests start it the same way; [`cli`] holds the
//! binary's command line and admin commands.

pub mod admin_token;
pub mod api;
pub mod ca;
pub mod cli;
pub mod config;
pub mod console;
pub mod dns;
pub mod grant;
pub mod indexer;
pub mod limits;
pub mod listeners;
pub mod metrics;
pub mod secrets;
pub mod steering;
pub mod store;
pub mod tunnel;
pub mod webhooks;

use std::sync::Arc;

use anyhow::Context as _;
use ferry_common::http_server::{self, Handler};
use ferry_common::provider::ProviderRegistry;
use ferry_common::tasks::NamedTasks;
use tokio_util::sync::CancellationToken;

use crate::api::{AppState, SpokeSupport};
use crate::ca::HubCa;
use crate::config::HubConfig;
use crate::dns::answer::Responder;
use crate::dns::zone::Zone;
use crate::metrics::Metrics;
use crate::secrets::MasterKey;
use crate::steering::Steering;
use crate::store::Store;

pub use crate::listeners::Listeners;

pub use crate::admin_token::ADMIN_TOKEN_ENV;

/// Checks every second (every tenth of one while it does not) that the
/// primary takes writes (uploads and deletes at this hub wait for it) and
/// that the replica answers (reads go to the primary while it does not),
/// and measures the replica's lag every five rounds, for the metrics.
async fn watch_store(state: Arc<AppState>, shutdown: CancellationToken) {
    for round in 0u64.. {
        // At once, so that a slow answer from one does not hold back the
        // others (writes wait for the primary's).
        let (_, epoch, replica) = tokio::join!(
            async {
                // Shown as soon as known: writes follow it at once.
                let up = state.store.check_primary().await;
                state.metrics.primary_up(up);
            },
            state.store.watch_epoch(),
            state.store.check_replica()
        );
        if !epoch {
            tracing::debug!(
                "the cache epoch could not be read; nothing is answered from the cache"
            );
        }
        if let Some(up) = replica {
            state.metrics.replica_up(up);
            if round % 5 == 0 {
                state
                    .metrics
                    .replica_lag(state.store.replica_lag_bytes().await);
            }
        }
        // While the primary does not take writes, it is asked ten times as
        // often, so that writes work again within a tenth of a second of
        // its return.
        let every = if state.store.writable() {
            std::time::Duration::from_secs(1)
        } else {
            std::time::Duration::from_millis(100)
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}

/// What a reload may change while the hub runs.
struct Live {
    steering: Arc<Steering>,
    state: Arc<AppState>,
    connections: http_server::ConnectionLimit,
    per_source: Arc<ferry_common::source_limit::SourceLimit>,
    dns_limits: Option<Arc<dns::limit::LimitSettings>>,
}

/// Re-reads the configuration at `path` on SIGHUP and applies what can
/// change while the hub runs: the log filter, the `[steering]` section
/// (hints, hysteresis, smoothing, sample lifetime, bounds), the limits
/// `api.max_connections`, `api.max_connections_per_source` and
/// `api.max_json_body_bytes`, and the DNS rate limit (`responses_per_sec`,
/// `burst`, `slip`). A file that does not load
/// changes nothing; everything else needs a restart.
fn reload(path: &std::path::Path, live: &Live) {
    let cfg = match ferry_common::config::load::<HubConfig>(path) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "reload: the configuration does not load; nothing changed");
            return;
        }
    };
    ferry_common::telemetry::apply_reloaded_level(&cfg.log.level);
    if !live.steering.reconfigure(&cfg.steering) {
        tracing::warn!(
            "reload: steering.v4_prefix and v6_prefix need a restart; kept as they were"
        );
    }
    live.connections.set(cfg.api.max_connections);
    live.per_source.set(cfg.api.max_connections_per_source);
    live.state
        .set_max_json_body_bytes(cfg.api.max_json_body_bytes);
    match (&live.dns_limits, &cfg.dns) {
        (Some(limits), Some(d)) => limits.set(&d.rate_limit),
        (None, Some(_)) => {
            tracing::warn!("reload: a [dns] section needs a restart to start the DNS server")
        }
        _ => {}
    }
    tracing::info!(
        hints = cfg.steering.hints.len(),
        max_connections = cfg.api.max_connections,
        max_connections_per_source = cfg.api.max_connections_per_source,
        max_json_body_bytes = cfg.api.max_json_body_bytes,
        dns_responses_per_sec = cfg
            .dns
            .as_ref()
            .map_or(0, |d| d.rate_limit.responses_per_sec),
        "reload: applied (other changes need a restart)"
    );
}

/// What the tunnel CA's key is sealed for in the store.
pub const TUNNEL_CA_CONTEXT: &str = "tunnel-ca";

/// The tunnel CA. With SQLite, files in the state directory; with
/// PostgreSQL, the one all hubs of the database share, kept in it with its
/// key sealed under the master key (made by the first hub, from its own
/// files if it had a CA before).
async fn tunnel_ca(cfg: &HubConfig, store: &Store, key: &MasterKey) -> anyhow::Result<HubCa> {
    let dir = cfg.state_dir.join("tunnel-ca");
    if store.backend() == store::Dialect::Sqlite {
        return Ok(HubCa::load_or_create(&dir)?);
    }
    if store.tunnel_ca().await?.is_none() {
        let (cert, key_pem) = match HubCa::read_files(&dir)? {
            Some(pair) => pair,
            None => HubCa::generate()?,
        };
        store
            .offer_tunnel_ca(&cert, &key.seal(key_pem.as_bytes(), TUNNEL_CA_CONTEXT))
            .await?;
    }
    let (cert, sealed) = store
        .tunnel_ca()
        .await?
        .context("the shared tunnel CA is missing")?;
    let key_pem = key
        .open(&sealed, TUNNEL_CA_CONTEXT)
        .context("the shared tunnel CA does not open with this hub's master key")?;
    let key_pem = String::from_utf8(key_pem).context("the shared tunnel CA key is damaged")?;
    tracing::info!("using the tunnel CA shared through the metadata store");
    Ok(HubCa::from_pem(&cert, &key_pem)?)
}

/// Runs the hub on `listeners` until `shutdown` fires, then drains, joins
/// every task it started and fails if one of them panicked.
pub async fn run(
    cfg: HubConfig,
    listeners: Listeners,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(&cfg.state_dir).with_context(|| {
        format!(
            "cannot create the state directory {}",
            cfg.state_dir.display()
        )
    })?;
    let master_key = MasterKey::load(&cfg.secrets)?;
    ferry_common::provider::remote::install_http_client();
    let store = cfg.open_store(cfg.store.pool_size).await?;
    let admin_token = crate::admin_token::AdminToken::from_env()?;
    if admin_token.is_none() {
        tracing::warn!(
            "{ADMIN_TOKEN_ENV} is not set: the admin API (accounts and keys) is disabled"
        );
    }
    let mut tasks = NamedTasks::new();
    let tls = cfg.api.tls_acceptor(&shutdown, &mut tasks)?;
    let providers = ProviderRegistry::new(cfg.provider_policy());
    let metrics = Metrics::new();
    let heartbeat = cfg.tunnel.as_ref().map_or(1, |t| t.heartbeat_interval_secs);
    // New with each start: a hub restarted at another address is another
    // hub to its spokes.
    let hub_id = crate::store::new_id("hub");
    let mut steering = Steering::new(
        &cfg.steering,
        cfg.steering.stale_after(heartbeat),
        metrics.steering.clone(),
    );
    let shared_store = store.backend() == store::Dialect::Postgres;
    if shared_store {
        steering = steering.with_exchange();
    }
    let steering = Arc::new(steering);
    let listener = tokio::net::TcpListener::from_std(listeners.api)
        .context("cannot use the API's listener")?;
    let api_addr = listener
        .local_addr()
        .context("the listener has no address")?;
    let metrics_listener = tokio::net::TcpListener::from_std(listeners.metrics)
        .context("cannot use the metrics listener")?;
    let dns = match (listeners.dns, &cfg.dns) {
        (Some(sockets), Some(d)) => {
            tracing::info!(addr = %sockets.local_addr()?, zone = %d.zone, "DNS listening");
            Some((sockets, d.clone()))
        }
        _ => None,
    };
    let mut state = AppState::new(
        store.clone(),
        providers,
        master_key,
        admin_token,
        metrics,
        cfg.api.max_json_body_bytes,
        steering.clone(),
    );
    state.s3_hosts = ferry_common::s3_door::Hosts::new(&cfg.api.s3_domains);
    let mut endpoint = None;
    let mut tcp_tunnel = None;
    if let (Some(t), Some(sockets)) = (&cfg.tunnel, listeners.tunnel) {
        let ca = Arc::new(tunnel_ca(&cfg, &store, &state.master_key).await?);
        if let Some(at) = ferry_common::cert_time::not_after_pem(ca.cert_pem()) {
            state.metrics.tunnel_ca_expires(at);
        }
        let tls = tunnel::server_tls(t, &ca)?;
        let ep = tunnel::quic_endpoint(
            t,
            tls.clone(),
            sockets.quic,
            ca.stateless_reset_key(),
            ca.connection_id_key(),
        )
        .context("cannot open the tunnel endpoint")?;
        tracing::info!(addr = %ep.local_addr()?, server_name = %t.server_name, "tunnel listening");
        let tcp = tokio::net::TcpListener::from_std(sockets.tcp)
            .context("cannot use the TCP tunnel listener")?;
        tracing::info!(addr = %tcp.local_addr()?, "tunnel TCP listening");
        let quic_public = t.public_addr.unwrap_or(ep.local_addr()?);
        let tcp_public = t
            .public_tcp_addr
            .or(t.public_addr)
            .unwrap_or(tcp.local_addr()?);
        let me =
            (!quic_public.ip().is_unspecified() && !tcp_public.ip().is_unspecified()).then(|| {
                ferry_common::proto::HubAddrs {
                    id: hub_id.clone(),
                    tunnel_addr: quic_public,
                    tunnel_tcp_addr: tcp_public,
                }
            });
        if me.is_none() {
            tracing::warn!(
                "tunnel.public_addr is not set and the tunnel listens on an unspecified address: other hubs' spokes will not learn this hub"
            );
        }
        tcp_tunnel = Some((tcp, Arc::new(tls)));
        state.spokes = Some(SpokeSupport {
            ca,
            registry: Arc::new(tunnel::Registry::default()),
            server_name: t.server_name.clone(),
            token_ttl_secs: t.join_token_ttl_secs,
            grant_ttl_secs: t.grant_ttl_secs,
            report_window_secs: t.report_window_secs,
            spoke_cert_lifetime: std::time::Duration::from_secs(t.spoke_cert_lifetime_secs),
            hubs: Arc::new(tunnel::HubList::new(hub_id.clone(), me)),
        });
        endpoint = Some((ep, t.clone()));
    }
    state.uploads = api::UploadSettings::from(&cfg.uploads);
    state.webhooks = cfg.webhooks.settings();
    state.limits = limits::AccountLimits::new(cfg.limits);
    let state = Arc::new(state);
    // Tunnels and DNS outlive the HTTP listener's drain, so requests spokes
    // forward get the same grace as direct ones and clients are still
    // steered to spokes meanwhile; they stop once it is over.
    let tunnel_stop = CancellationToken::new();
    tasks.spawn(
        "steering",
        steering.clone().run(
            state.spokes.as_ref().map(|s| s.registry.clone()),
            tunnel_stop.clone(),
        ),
    );
    state
        .metrics
        .replicas(usize::from(state.store.has_replica()));
    tasks.spawn(
        "upload sweep",
        api::sweep_uploads(
            state.clone(),
            std::time::Duration::from_secs(cfg.uploads.sweep_interval_secs),
            tunnel_stop.clone(),
        ),
    );
    tasks.spawn(
        "intents",
        api::intents::settle(state.clone(), tunnel_stop.clone()),
    );
    tasks.spawn(
        "event retention",
        api::retain_events(state.clone(), cfg.events.retention(), tunnel_stop.clone()),
    );
    tasks.spawn(
        "usage",
        api::usage::flush(state.clone(), tunnel_stop.clone()),
    );
    if cfg.webhooks.send {
        tasks.spawn(
            "webhooks",
            webhooks::run(
                state.clone(),
                cfg.webhooks.settings(),
                hub_id.clone(),
                tunnel_stop.clone(),
            ),
        );
    }
    tasks.spawn("transfer log", {
        let (state, stop) = (state.clone(), tunnel_stop.clone());
        async move { state.transfer_log.run(state.store.clone(), stop).await }
    });
    if cfg.index.enabled {
        tasks.spawn(
            "indexer",
            indexer::run(
                state.clone(),
                cfg.index.settings(),
                hub_id.clone(),
                tunnel_stop.clone(),
            ),
        );
    }
    tasks.spawn(
        "store watch",
        watch_store(state.clone(), tunnel_stop.clone()),
    );
    if shared_store {
        tasks.spawn(
            "steering exchange",
            steering::exchange::run(
                steering.clone(),
                store.clone(),
                state.spokes.as_ref().map(|s| s.registry.clone()),
                hub_id.clone(),
                tunnel_stop.clone(),
            ),
        );
    }
    let mut dns_limits = None;
    if let Some((sockets, d)) = dns {
        let hub_addrs = if d.hub_addrs.is_empty() {
            if api_addr.ip().is_unspecified() {
                anyhow::bail!(
                    "dns.hub_addrs is required: the API's socket listens on {api_addr}, which is no address to answer with"
                );
            }
            vec![api_addr.ip()]
        } else {
            d.hub_addrs.clone()
        };
        let serial = u32::try_from(jiff::Timestamp::now().as_second()).unwrap_or(1);
        let zone = Zone::new(
            &d.zone,
            &d.nameservers,
            d.hostmaster.as_deref(),
            d.ttl_secs,
            &hub_addrs,
            serial,
        )
        .map_err(|e| anyhow::anyhow!("dns.zone: {e}"))?;
        let responder = Responder::new(
            zone,
            steering.clone(),
            state.metrics.dns.clone(),
            state.metrics.steering.answers("hub"),
        );
        let limits = dns::limit::LimitSettings::new(&d.rate_limit);
        dns_limits = Some(limits.clone());
        let thread = dns::spawn(sockets, Arc::new(responder), d, limits, tunnel_stop.clone())?;
        tasks.join_thread("dns", thread);
    }
    if let (Some((ep, t)), Some(support)) = (endpoint, state.spokes.clone()) {
        if let Some((listener, tls)) = tcp_tunnel {
            tasks.spawn(
                "tunnel TCP accept",
                tunnel::serve_tcp(
                    listener,
                    tls,
                    state.clone(),
                    support.registry.clone(),
                    t.clone(),
                    tunnel_stop.clone(),
                ),
            );
        }
        tasks.spawn(
            "tunnel QUIC accept",
            tunnel::serve_quic(
                ep,
                state.clone(),
                support.registry.clone(),
                t,
                tunnel_stop.clone(),
            ),
        );
        tasks.spawn(
            "hub list",
            support.hubs.clone().keep_current(
                state.clone(),
                support.registry.clone(),
                tunnel_stop.clone(),
            ),
        );
        tasks.spawn(
            "revocation sweep",
            tunnel::sweep_revoked(
                state.clone(),
                support.registry,
                std::time::Duration::from_secs(2),
                tunnel_stop.clone(),
            ),
        );
    }
    let handler: Handler = {
        let state = state.clone();
        Arc::new(move |req| Box::pin(api::handle(state.clone(), req)))
    };
    tracing::info!(addr = %api_addr, tls = tls.is_some(), store = %store.backend(), "HTTP API listening");
    tracing::info!(addr = %metrics_listener.local_addr()?, "metrics listening");
    // Metrics stay readable while the API drains; they stop with the
    // tunnels.
    let answers = ferry_common::operator_listener::Answers {
        metrics: {
            let state = state.clone();
            Arc::new(move || {
                state.metrics.pacing.observe(&state.pacing);
                state.metrics.encode()
            })
        },
        health: handler.clone(),
    };
    tasks.spawn(
        "metrics listener",
        ferry_common::operator_listener::serve(metrics_listener, answers, tunnel_stop.clone()),
    );
    // Every listener is bound and the store open: tell systemd.
    ferry_common::systemd::ready();
    ferry_common::systemd::spawn_watchdog(tunnel_stop.clone(), &mut tasks);
    let limits = cfg.api.limits(state.metrics.connections_refused());
    if let Some(path) = cfg.path.clone() {
        let live = Live {
            steering: steering.clone(),
            state: state.clone(),
            connections: limits.connections.clone(),
            per_source: limits.per_source.clone(),
            dns_limits,
        };
        ferry_common::systemd::on_sighup(tunnel_stop.clone(), &mut tasks, move || {
            reload(&path, &live)
        });
    }
    http_server::serve(listener, tls, limits, handler, shutdown).await;
    tunnel_stop.cancel();
    let joined = tasks.join_all().await;
    store.close().await;
    joined?;
    tracing::info!("stopped");
    Ok(())
}
