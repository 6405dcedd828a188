//! Sending webhooks, as the Standard Webhooks specification describes
//! them: each delivery is a `POST` of `{type, timestamp, data}` with the
//! headers `webhook-id` (the message id, the same on every attempt, for
//! the receiver to drop duplicates), `webhook-timestamp` (unix seconds of
//! the attempt) and `webhook-signature` (`v1,` and the base64 HMAC-SHA256
//! of `id.timestamp.body` under the endpoint's secret; two, space
//! separated, while a rotated secret still signs).
//!
//! Every hub runs [`run`]: it takes due deliveries from the outbox in the
//! store with a lease (one hub at a time sends a delivery), sends them,
//! and records each attempt with what follows: delivered on a 2xx, the
//! endpoint disabled on a 410, otherwise another attempt on the retry
//! schedule (with jitter), or at the time a `Retry-After` asks for, until
//! the schedule is over.
//!
//! An endpoint's URL is the tenant's to choose, so it is treated like a
//! provider's endpoint: unless the operator allows private addresses, a
//! name that resolves to an internal address is refused when ferry
//! connects, IP literals are checked before sending, and redirects are not
//! followed. Nothing the endpoint answers is kept or shown but its status.

pub mod metrics;

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ferry_common::provider::egress::{self, GuardedResolver, Lookup};
use ferry_common::provider::endpoint::EndpointPolicy;
use tokio_util::sync::CancellationToken;

use crate::api::AppState;
use crate::store::webhooks::{AfterAttempt, Attempt, Claimed};
use metrics::WebhookResult;

/// What the secrets begin with.
pub const SECRET_PREFIX: &str = "whsec_";

/// Random bytes in a secret (the specification asks for 24 to 64).
const SECRET_BYTES: usize = 32;

/// How the hub sends webhooks (`[webhooks]`).
#[derive(Debug, Clone)]
pub struct Settings {
    /// The delays before the second, third… attempt of a round.
    pub schedule: Vec<Duration>,
    /// How long one attempt may take, connecting included.
    pub timeout: Duration,
    /// Deliveries this hub sends at once.
    pub concurrency: usize,
    /// Whether endpoints may be internal addresses.
    pub policy: EndpointPolicy,
    /// How long delivered and failed deliveries stay in the log.
    pub log_retention: Duration,
    /// How long a rotated secret still signs.
    pub rotation_overlap: Duration,
    /// The most endpoints an account may have.
    pub max_endpoints: i64,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            schedule: DEFAULT_SCHEDULE_SECS
                .iter()
                .map(|&s| Duration::from_secs(s))
                .collect(),
            timeout: Duration::from_secs(15),
            concurrency: 16,
            policy: EndpointPolicy::PUBLIC_ONLY,
            log_retention: Duration::from_secs(30 * 86_400),
            rotation_overlap: Duration::from_secs(86_400),
            max_endpoints: 20,
        }
    }
}

/// The Standard Webhooks schedule after the first attempt: 5 s, 5 min,
/// 30 min, 2 h, 5 h, 10 h, 10 h (eight attempts over about 27 hours).
pub const DEFAULT_SCHEDULE_SECS: &[u64] = &[5, 300, 1800, 7200, 18_000, 36_000, 36_000];

/// A new secret: `whsec_` and the base64 of 32 random bytes.
pub fn new_secret() -> String {
    use ring::rand::SecureRandom as _;
    let mut bytes = [0u8; SECRET_BYTES];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .expect("the system RNG works");
    format!("{SECRET_PREFIX}{}", B64.encode(bytes))
}

/// The key a secret names (the bytes after `whsec_`, base64-decoded).
pub fn secret_key(secret: &str) -> Option<Vec<u8>> {
    B64.decode(secret.strip_prefix(SECRET_PREFIX)?).ok()
}

/// The signature of `body` sent as message `msg_id` at `timestamp` (unix
/// seconds) under `key`: `v1,` and the base64 HMAC-SHA256 of
/// `msg_id.timestamp.body`.
pub fn sign(key: &[u8], msg_id: &str, timestamp: i64, body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key);
    let mut ctx = ring::hmac::Context::with_key(&key);
    ctx.update(msg_id.as_bytes());
    ctx.update(b".");
    ctx.update(timestamp.to_string().as_bytes());
    ctx.update(b".");
    ctx.update(body);
    format!("v1,{}", B64.encode(ctx.sign().as_ref()))
}

/// Checks an endpoint URL a tenant gives: `http` or `https`, a host, no
/// user information or fragment (a query is kept: receivers put tokens
/// there), at most 2048 bytes, and not an internal address unless
/// `policy` allows it. Returns the URL as it will be used.
pub fn check_url(text: &str, policy: EndpointPolicy) -> Result<String, String> {
    if text.len() > 2048 {
        return Err("'url' is longer than 2048 bytes".into());
    }
    let url = url::Url::parse(text).map_err(|e| format!("'url' is not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err("'url' must start with https:// or http://".into());
    }
    if url.host().is_none()
        || !url.username().is_empty()
        || url.password().is_some()
        || url.fragment().is_some()
    {
        return Err("'url' must name a host, with no user information or fragment".into());
    }
    if !policy.allow_private && ferry_common::provider::endpoint::names_internal_host(&url) {
        return Err(
            "'url' is an internal address, which this server does not allow (webhooks.allow_private_endpoints)"
                .into(),
        );
    }
    Ok(url.to_string())
}

/// The HTTP client deliveries are sent with: names resolved through the
/// guarded resolver, no redirects followed, `timeout` for an attempt.
pub fn client(policy: EndpointPolicy, lookup: Lookup, timeout: Duration) -> reqwest::Client {
    ferry_common::tls::install_crypto_provider();
    reqwest::Client::builder()
        .connect_timeout(timeout.min(egress::CONNECT_TIMEOUT))
        .timeout(timeout)
        .tcp_nodelay(true)
        .pool_idle_timeout(Duration::from_secs(60))
        .dns_resolver(GuardedResolver::new(policy, lookup))
        .redirect(reqwest::redirect::Policy::none())
        // A proxy would resolve the names itself, past the guard.
        .no_proxy()
        .user_agent(concat!("ferry-webhooks/", env!("CARGO_PKG_VERSION")))
        .build()
        .expect("the HTTP client builds (its TLS provider is installed first)")
}

/// What one attempt came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    /// What is logged.
    pub attempt: Attempt,
    /// The delay the answer's `Retry-After` asked for.
    pub retry_after: Option<Duration>,
}

/// Sends `c` to `url`, signed with each of `keys`.
pub async fn send(
    client: &reqwest::Client,
    policy: EndpointPolicy,
    url: &str,
    keys: &[Vec<u8>],
    c: &Claimed,
) -> Sent {
    let at = crate::store::now_ms();
    let started = Instant::now();
    let timestamp = at / 1000;
    let done = |status: Option<i64>, error: Option<&str>, retry_after| Sent {
        attempt: Attempt {
            attempt: c.attempts + 1,
            at,
            status,
            error: error.map(str::to_owned),
            latency_ms: started.elapsed().as_millis() as i64,
        },
        retry_after,
    };
    if !policy.allow_private
        && let Ok(u) = url::Url::parse(url)
        && egress::refuse_internal_literal(&u).is_err()
    {
        return done(None, Some("refused"), None);
    }
    let signatures = keys
        .iter()
        .map(|k| sign(k, &c.msg_id, timestamp, c.payload.as_bytes()))
        .collect::<Vec<_>>()
        .join(" ");
    let answer = client
        .post(url)
        .header(http::header::CONTENT_TYPE, "application/json")
        .header("webhook-id", &c.msg_id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signatures)
        .body(c.payload.clone())
        .send()
        .await;
    match answer {
        Ok(resp) => {
            let status = resp.status();
            let retry_after = resp
                .headers()
                .get(http::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(retry_after);
            // The body is not read beyond what the connection needs: it is
            // never kept or shown.
            drop(resp);
            done(Some(i64::from(status.as_u16())), None, retry_after)
        }
        Err(e) => {
            let why = if e.is_timeout() {
                "timeout"
            } else if egress::is_refusal(&e) {
                "refused"
            } else if e.is_connect() {
                "connect"
            } else {
                "request"
            };
            done(None, Some(why), None)
        }
    }
}

/// The delay a `Retry-After` value asks for: seconds, or an HTTP date.
fn retry_after(text: &str) -> Option<Duration> {
    let text = text.trim();
    if let Ok(secs) = text.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = jiff::fmt::rfc2822::DateTimeParser::new()
        .parse_timestamp(text)
        .ok()?;
    let ms = at.as_millisecond() - crate::store::now_ms();
    Some(Duration::from_millis(ms.max(0) as u64))
}

/// The longest a `Retry-After` may push an attempt back.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(86_400);

/// What follows an attempt that was the `in_round`th of its round and was
/// answered `status` (none: no answer), with `retry_after` asked for;
/// `jitter` is in [0, 1).
pub fn after_attempt(
    schedule: &[Duration],
    in_round: i64,
    status: Option<i64>,
    retry_after: Option<Duration>,
    now_ms: i64,
    jitter: f64,
) -> AfterAttempt {
    match status {
        Some(200..=299) => return AfterAttempt::Delivered,
        Some(410) => return AfterAttempt::Gone,
        _ => {}
    }
    let Some(base) = usize::try_from(in_round - 1)
        .ok()
        .and_then(|i| schedule.get(i))
    else {
        return AfterAttempt::Failed;
    };
    let delay = match retry_after {
        Some(d) => d.clamp(Duration::from_secs(1), MAX_RETRY_AFTER),
        // ±20 %, so that deliveries failed together spread out.
        None => base.mul_f64(0.8 + 0.4 * jitter),
    };
    AfterAttempt::Retry(now_ms + delay.as_millis() as i64)
}

/// A number in [0, 1) from the system's random source.
fn jitter() -> f64 {
    use ring::rand::SecureRandom as _;
    let mut b = [0u8; 4];
    ring::rand::SystemRandom::new()
        .fill(&mut b)
        .expect("the system RNG works");
    f64::from(u32::from_le_bytes(b)) / (f64::from(u32::MAX) + 1.0)
}

/// How often the outbox is looked at when nothing wakes the sender.
const POLL: Duration = Duration::from_secs(1);

/// How often the outbox's depth is measured and old deliveries removed.
const HOUSEKEEPING: Duration = Duration::from_secs(5);

/// What a lease adds to twice an attempt's timeout: a hub that stopped
/// mid-attempt holds its delivery this much longer at most.
const LEASE_MARGIN: Duration = Duration::from_secs(5);

/// Deliveries removed in one statement at most.
const PURGE_BATCH: i64 = 5_000;

/// Sends due deliveries until `stop`, as `holder` (this hub's id).
pub async fn run(
    state: Arc<AppState>,
    settings: Settings,
    holder: String,
    stop: CancellationToken,
) {
    let settings = Arc::new(settings);
    let client = client(settings.policy, egress::system_lookup(), settings.timeout);
    let metrics = state.metrics.webhooks.clone();
    let nudge = state.store.outbox_nudge();
    let mut sending = tokio::task::JoinSet::new();
    let mut housekeeping = tokio::time::interval(HOUSEKEEPING);
    housekeeping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let free = settings.concurrency.saturating_sub(sending.len());
        if free > 0 {
            let now = crate::store::now_ms();
            // The lease outlasts an attempt, so that no other hub takes a
            // delivery this one is still sending.
            let until = now + (settings.timeout * 2 + LEASE_MARGIN).as_millis() as i64;
            match state
                .store
                .claim_deliveries(&holder, now, until, free as i64)
                .await
            {
                Ok(claimed) => {
                    for c in claimed {
                        sending.spawn(deliver(
                            state.clone(),
                            settings.clone(),
                            client.clone(),
                            holder.clone(),
                            c,
                        ));
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot take webhook deliveries"),
            }
        }
        tokio::select! {
            () = stop.cancelled() => break,
            () = nudge.notified() => {}
            _ = sending.join_next(), if !sending.is_empty() => {}
            () = tokio::time::sleep(POLL) => {}
            _ = housekeeping.tick() => {
                match state.store.outbox_depth().await {
                    Ok(d) => metrics.outbox(d, crate::store::now_ms()),
                    Err(e) => tracing::debug!(error = %e, "cannot measure the webhook outbox"),
                }
                let before = crate::store::now_ms() - settings.log_retention.as_millis() as i64;
                if let Err(e) = state.store.purge_deliveries(before, PURGE_BATCH).await {
                    tracing::debug!(error = %e, "cannot remove old webhook deliveries");
                }
            }
        }
    }
    // Attempts under way are cut short; their leases lapse and another
    // hub (or this one, restarted) sends them again.
    sending.shutdown().await;
}

/// Makes one attempt of `c` and records it.
async fn deliver(
    state: Arc<AppState>,
    settings: Arc<Settings>,
    client: reqwest::Client,
    holder: String,
    c: Claimed,
) {
    let metrics = &state.metrics.webhooks;
    let target = match state.store.webhook_target(&c.endpoint_id).await {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read a webhook endpoint");
            return;
        }
    };
    let Some(target) = target.filter(|t| !t.disabled) else {
        let nothing = unsent(&c, "endpoint_disabled");
        return finish(&state, &holder, &c, &nothing, AfterAttempt::Dropped).await;
    };
    let context = endpoint_context(&c.endpoint_id);
    let mut keys = Vec::with_capacity(2);
    for sealed in std::iter::once(&target.secret_sealed).chain(target.old_secret_sealed.iter()) {
        match state.master_key.open(sealed, &context) {
            Ok(secret) => keys.extend(secret_key(&String::from_utf8_lossy(&secret))),
            Err(e) => {
                // Not with this master key: nothing can be signed. The
                // delivery fails (and the endpoint with it) rather than
                // coming back for ever.
                tracing::error!(endpoint.id = %c.endpoint_id, error = %e, "cannot open a webhook secret");
                let failed = unsent(&c, "secret");
                return finish(&state, &holder, &c, &failed, AfterAttempt::Failed).await;
            }
        }
    }
    let sent = send(&client, settings.policy, &target.url, &keys, &c).await;
    let after = after_attempt(
        &settings.schedule,
        c.in_round + 1,
        sent.attempt.status,
        sent.retry_after,
        crate::store::now_ms(),
        jitter(),
    );
    metrics.latency(Duration::from_millis(sent.attempt.latency_ms as u64));
    match after {
        AfterAttempt::Delivered => tracing::debug!(
            endpoint.id = %c.endpoint_id, msg.id = %c.msg_id, ms = sent.attempt.latency_ms,
            "delivered a webhook"
        ),
        AfterAttempt::Gone => tracing::info!(
            endpoint.id = %c.endpoint_id, msg.id = %c.msg_id,
            "a webhook endpoint answered 410 Gone: disabled it"
        ),
        _ => tracing::debug!(
            endpoint.id = %c.endpoint_id, msg.id = %c.msg_id,
            status = ?sent.attempt.status, error = ?sent.attempt.error,
            "a webhook attempt failed"
        ),
    }
    finish(&state, &holder, &c, &sent.attempt, after).await;
}

/// An attempt of `c` that sent nothing, for `error`.
fn unsent(c: &Claimed, error: &str) -> Attempt {
    Attempt {
        attempt: c.attempts + 1,
        at: crate::store::now_ms(),
        status: None,
        error: Some(error.to_owned()),
        latency_ms: 0,
    }
}

/// Counts attempt `a` of `c` by what follows from it, and records both.
async fn finish(state: &AppState, holder: &str, c: &Claimed, a: &Attempt, after: AfterAttempt) {
    state.metrics.webhooks.result(match after {
        AfterAttempt::Delivered => WebhookResult::delivered,
        AfterAttempt::Retry(_) => WebhookResult::retrying,
        AfterAttempt::Failed => WebhookResult::failed,
        AfterAttempt::Gone => WebhookResult::endpoint_gone,
        AfterAttempt::Dropped => WebhookResult::dropped,
    });
    if let Err(e) = state.store.finish_attempt(holder, c, a, after).await {
        // The lease lapses and the delivery is sent again: the receiver
        // drops the duplicate by its webhook-id.
        tracing::warn!(error = %e, "cannot record a webhook attempt");
    }
}

/// What an endpoint's secrets are sealed with (bound to its id).
pub fn endpoint_context(endpoint_id: &str) -> String {
    format!("webhook endpoint {endpoint_id}")
}

#[cfg(test)]
mod tests;
