//! The ferry spoke: serves ferry's API near clients and carries requests to
//! its hub through a QUIC tunnel with mutual TLS.
//!
//! [`run`] serves on the [`Listeners`] it is given until a shutdown token
//! fires; [`cli`] holds the binary's command line.

pub mod cli;
pub mod config;
pub mod data_path;
pub mod front;
pub mod hub_client;
pub mod identity;
pub mod journal;
pub mod metrics;
pub mod renew;
pub mod reports;
pub mod s3;
pub mod steering;
pub mod tunnel;
pub mod uploads;

use std::sync::Arc;

use anyhow::Context as _;
use ferry_common::http_server::{self, Handler};
use ferry_common::sockets::{SocketError, SocketSource};
use ferry_common::tasks::NamedTasks;
use tokio_util::sync::CancellationToken;

use crate::config::SpokeConfig;
use crate::data_path::DataPath;
use crate::front::Front;
use crate::hub_client::HubClient;
use crate::identity::Identity;
use crate::metrics::Metrics;
use crate::reports::Reports;
use crate::tunnel::TunnelHandle;

/// How long queued completion reports may take to reach the hub once the
/// last request has finished, before the spoke exits anyway.
const REPORT_FLUSH: std::time::Duration = std::time::Duration::from_secs(5);

/// The sockets the spoke serves on, opened before [`run`] starts: bound
/// from the configuration, or those a service manager passed as `api` and
/// `metrics`.
#[derive(Debug)]
pub struct Listeners {
    /// The HTTP API (`api.listen`; passed as `api`).
    pub api: std::net::TcpListener,
    /// The operator listener (`metrics.listen`; passed as `metrics`).
    pub metrics: std::net::TcpListener,
}

impl Listeners {
    /// The names of the sockets a service manager may pass, with the
    /// section that configures each.
    pub const NAMES: [(&'static str, &'static str); 2] =
        [("api", "[api]"), ("metrics", "[metrics]")];

    /// Opens the listeners `cfg` calls for from `sockets`.
    pub fn open(cfg: &SpokeConfig, sockets: &mut SocketSource) -> Result<Listeners, SocketError> {
        Ok(Listeners {
            api: sockets.tcp_listener("api", "api.listen", cfg.api.listen)?,
            metrics: sockets.tcp_listener("metrics", "metrics.listen", cfg.metrics.listen)?,
        })
    }
}

/// Re-reads the configuration at `path` on SIGHUP and applies what can
/// change while the spoke runs: the log filter, `api.max_connections` and
/// `api.max_connections_per_source`. A file that does not load changes
/// nothing; everything else needs a restart.
fn reload(path: &std::path::Path, limits: &http_server::Limits) {
    let cfg = match ferry_common::config::load::<SpokeConfig>(path) {
        Ok(cfg) => cfg,
        Err(e) => {
            tracing::error!(error = %e, "reload: the configuration does not load; nothing changed");
            return;
        }
    };
    ferry_common::telemetry::apply_reloaded_level(&cfg.log.level);
    limits.connections.set(cfg.api.max_connections);
    limits.per_source.set(cfg.api.max_connections_per_source);
    tracing::info!(
        max_connections = cfg.api.max_connections,
        max_connections_per_source = cfg.api.max_connections_per_source,
        "reload: applied (other changes need a restart)"
    );
}

/// Runs the spoke on `listeners` until `shutdown` fires, then drains: the
/// hub is told, new connections are refused, requests in flight finish
/// (within the grace period) with the tunnel still up, queued reports are
/// delivered, and only then does the tunnel close. Every task it started
/// is joined; one that panicked or failed makes it fail.
pub async fn run(
    cfg: SpokeConfig,
    listeners: Listeners,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let cfg = Arc::new(cfg);
    let identity = Identity::load_or_enrol(&cfg).await?;
    ferry_common::provider::remote::install_http_client();
    let metrics = Arc::new(Metrics::new());
    match identity.client.validity() {
        Some((_, at)) => metrics.certificate_expires(at),
        None => tracing::warn!("cannot read when this spoke's certificate expires"),
    }
    let handle = TunnelHandle::default();
    let mut tasks = NamedTasks::new();
    let tls = cfg.api.tls_acceptor(&shutdown, &mut tasks)?;
    let hub = HubClient {
        tunnel: handle,
        max_frame: cfg.tunnel.max_frame_bytes,
    };
    let reports = Reports::open(
        hub.clone(),
        metrics.clone(),
        &cfg.state_dir,
        cfg.tunnel.report_journal_max_bytes,
    )
    .map_err(|e| {
        anyhow::anyhow!(
            "cannot open the report journal in {}: {e}",
            cfg.state_dir.display()
        )
    })?;
    metrics.journal_limit(cfg.tunnel.report_journal_max_bytes);
    let data = DataPath::new(hub.clone(), cfg.name.clone(), metrics.clone(), reports);
    let tunnel_stop = CancellationToken::new();
    let on_notice = {
        let data = data.clone();
        Arc::new(move |n: &ferry_common::proto::Notice| data.on_notice(n))
    };
    let listener = tokio::net::TcpListener::from_std(listeners.api)
        .context("cannot use the API's listener")?;
    let addr = listener
        .local_addr()
        .context("the listener has no address")?;
    let announce = cfg.steering_announce(addr);
    if announce.is_none() {
        tracing::warn!(
            %addr,
            "steering.public_addrs is empty and the API listens on an unspecified address: the hub's DNS will not send clients here"
        );
    }
    let client_rtts = Arc::new(steering::ClientRtts::default());
    let (learned, learned_rx) = tokio::sync::mpsc::unbounded_channel();
    let shared = tunnel::Shared {
        metrics: metrics.clone(),
        draining: shutdown.clone(),
        shutdown: tunnel_stop.clone(),
        on_notice,
        announce,
        client_rtts: client_rtts.clone(),
        learned,
    };
    let client_cert = identity.client.clone();
    tasks.spawn_fallible(
        "tunnels",
        tunnel::hold(
            cfg.clone(),
            identity,
            hub.tunnel.clone(),
            shared,
            learned_rx,
        ),
    );
    tasks.spawn(
        "certificate renewal",
        renew::keep_renewed(
            cfg.name.clone(),
            cfg.state_dir.clone(),
            client_cert,
            hub.clone(),
            metrics.clone(),
            tunnel_stop.clone(),
        ),
    );
    tasks.spawn(
        "report delivery",
        data.reports.clone().deliver(tunnel_stop.clone()),
    );
    // Ready for systemd once a first tunnel is up (the listener is bound
    // already): a spoke without a hub serves almost nothing.
    {
        let handle = hub.tunnel.clone();
        let stop = tunnel_stop.clone();
        tasks.spawn("readiness", async move {
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = handle.wait_up() => ferry_common::systemd::ready(),
            }
        });
    }
    ferry_common::systemd::spawn_watchdog(tunnel_stop.clone(), &mut tasks);
    let mut limits = cfg.api.limits(metrics.connections_refused());
    if let Some(path) = cfg.path.clone() {
        let live = limits.clone();
        ferry_common::systemd::on_sighup(tunnel_stop.clone(), &mut tasks, move || {
            reload(&path, &live)
        });
    }
    let front = Arc::new(Front {
        hub,
        data: data.clone(),
        metrics,
        s3_hosts: ferry_common::s3_door::Hosts::new(&cfg.api.s3_domains),
    });
    let handler: Handler = {
        let front = front.clone();
        Arc::new(move |req| Box::pin(front::handle(front.clone(), req)))
    };
    tracing::info!(%addr, tls = tls.is_some(), spoke.id = %cfg.name, "HTTP API listening");
    let metrics_listener = tokio::net::TcpListener::from_std(listeners.metrics)
        .context("cannot use the metrics listener")?;
    tracing::info!(addr = %metrics_listener.local_addr()?, "metrics listening");
    // Metrics stay readable while the API drains; they stop with the
    // tunnel.
    let answers = ferry_common::operator_listener::Answers {
        metrics: Arc::new(move || {
            front.metrics.pacing.observe(front.data.pacing());
            front.metrics.encode()
        }),
        health: handler.clone(),
    };
    tasks.spawn(
        "metrics listener",
        ferry_common::operator_listener::serve(metrics_listener, answers, tunnel_stop.clone()),
    );
    if cfg.steering.observe_client_rtt {
        limits.rtt_sink = Some(http_server::RttSink(Arc::new(move |client, rtt| {
            client_rtts.record(client, rtt)
        })));
    }
    http_server::serve(listener, tls, limits, handler, shutdown).await;
    data.reports.flush(REPORT_FLUSH).await;
    tunnel_stop.cancel();
    tasks.join_all().await?;
    tracing::info!("stopped");
    Ok(())
}
