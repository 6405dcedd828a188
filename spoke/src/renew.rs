//! Renewing the spoke's certificate before it expires: at two thirds of
//! its lifetime the spoke makes a new key and asks the hub, through its
//! tunnel, to sign it (`renew_certificate`). The new certificate and key
//! are kept in the state directory and presented by every tunnel opened
//! after; tunnels open go on with the old one, which the hub takes until it
//! expires. A renewal that fails is tried again, more often as the expiry
//! nears.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use ferry_common::contract::{InternalCall, RenewAnswer, RenewRequest};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_util::sync::CancellationToken;

use crate::hub_client::{HubClient, OnBehalf};
use crate::identity::{ClientCert, new_key, save_renewed};
use crate::metrics::Metrics;

/// The longest wait between two tries of a renewal that failed.
const MOST_BETWEEN_TRIES: Duration = Duration::from_secs(300);

/// Seconds since the Unix epoch.
fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// When a certificate valid from `from` to `until` is renewed: two thirds
/// of the way.
pub fn renew_at(from: i64, until: i64) -> i64 {
    from + (until - from) * 2 / 3
}

/// How long to wait before trying a failed renewal again, `left` seconds
/// before the certificate expires: a tenth of that, from a second to
/// [`MOST_BETWEEN_TRIES`].
fn retry_after(left: i64) -> Duration {
    Duration::from_secs((left / 10).max(1) as u64).min(MOST_BETWEEN_TRIES)
}

/// Keeps spoke `name`'s certificate (`client`, kept in `dir`) renewed
/// through `hub` until `stop`.
pub async fn keep_renewed(
    name: String,
    dir: std::path::PathBuf,
    client: Arc<ClientCert>,
    hub: HubClient,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) {
    let mut failed = false;
    loop {
        let Some((from, until)) = client.validity() else {
            tracing::warn!(
                "cannot read this spoke's certificate's validity: it will not be renewed"
            );
            return;
        };
        let now = now_secs();
        let wait = match failed {
            false => Duration::from_secs(renew_at(from, until).saturating_sub(now).max(0) as u64),
            true => retry_after(until - now),
        };
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
        match renew(&name, &dir, &client, &hub).await {
            Ok(not_after) => {
                failed = false;
                metrics.certificate_expires(not_after);
                tracing::info!(not_after, "renewed this spoke's certificate");
            }
            Err(e) => {
                failed = true;
                let left = until - now_secs();
                tracing::warn!(error = %format!("{e:#}"), expires_in_secs = left, "could not renew this spoke's certificate; trying again");
            }
        }
    }
}

/// One renewal: a new key, signed by the hub, kept and presented from now
/// on. Returns when the new certificate expires.
async fn renew(
    name: &str,
    dir: &Path,
    client: &ClientCert,
    hub: &HubClient,
) -> anyhow::Result<i64> {
    let (signer, key_pem) = new_key()?;
    let request = RenewRequest::signed(name, &signer);
    let answer = hub
        .call(InternalCall::RenewCertificate, OnBehalf::Spoke, &request)
        .await
        .map_err(|p| anyhow::anyhow!("{p}"))?;
    if answer.status != http::StatusCode::OK {
        let problem: serde_json::Value = serde_json::from_slice(&answer.body).unwrap_or_default();
        bail!(
            "the hub refused ({} {}): {}",
            answer.status.as_u16(),
            problem["code"].as_str().unwrap_or("?"),
            problem["detail"].as_str().unwrap_or("no detail")
        );
    }
    let answer: RenewAnswer =
        serde_json::from_slice(&answer.body).context("the hub's answer is unreadable")?;
    let certs = CertificateDer::pem_slice_iter(answer.certificate.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .context("the hub's certificate is not PEM")?;
    let not_after = certs
        .first()
        .and_then(|c| ferry_common::cert_time::not_after(c))
        .context("the hub's certificate has no validity")?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).context("the new key")?;
    // Kept before it is used: a spoke that stops now starts with it.
    save_renewed(dir, &answer.certificate, &key_pem)?;
    client.replace(certs, key)?;
    Ok(not_after)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_comes_at_two_thirds_and_retries_quicken_near_the_end() {
        assert_eq!(renew_at(0, 300), 200);
        assert_eq!(renew_at(1_000, 1_030), 1_020);
        assert_eq!(retry_after(86_400 * 30), MOST_BETWEEN_TRIES);
        assert_eq!(retry_after(100), Duration::from_secs(10));
        assert_eq!(retry_after(5), Duration::from_secs(1));
        assert_eq!(retry_after(-5), Duration::from_secs(1));
    }
}
