//! `ferry-hub rekey --new-key-file FILE`: every connection's configuration
//! and S3 key's secret (and, on PostgreSQL, the shared tunnel CA's key)
//! opened with the configured master key and sealed again with a new one,
//! in one transaction.

use std::path::Path;

use anyhow::Context as _;

use crate::config::HubConfig;
use crate::secrets::MasterKey;

/// Opens every sealed secret with the configured master key and seals it
/// again with the one in `new_key_file`; changes nothing unless all open.
pub fn run(cfg: &HubConfig, new_key_file: &Path) -> anyhow::Result<()> {
    let old = MasterKey::load(&cfg.secrets).context("the current master key")?;
    let text = std::fs::read_to_string(new_key_file)
        .with_context(|| format!("cannot read {}", new_key_file.display()))?;
    let new = MasterKey::parse(&text, &new_key_file.display().to_string())?;
    super::runtime()?.block_on(async {
        let store = cfg.open_store(1).await?;
        let ca_context = crate::TUNNEL_CA_CONTEXT;
        let result = store
            .reseal_secrets(ca_context, |context, sealed| {
                let plain = old.open(sealed, context).with_context(|| {
                    if context == ca_context {
                        "the shared tunnel CA does not open with the current key".to_owned()
                    } else if context.starts_with("FRY") {
                        format!("S3 key {context} does not open with the current key")
                    } else if context.starts_with("webhook endpoint ") {
                        format!("{context} does not open with the current key")
                    } else {
                        format!("connection {context} does not open with the current key")
                    }
                })?;
                Ok::<_, anyhow::Error>(new.seal(&plain, context))
            })
            .await;
        store.close().await;
        let done = result??;
        let ca = if done.tunnel_ca { " and the shared tunnel CA" } else { "" };
        eprintln!(
            "re-encrypted {} connection(s), {} S3 key(s), {} webhook endpoint(s){ca}; start the hubs with the new master key (the old one no longer opens them)",
            done.connections, done.s3_keys, done.webhook_endpoints
        );
        Ok(())
    })
}
