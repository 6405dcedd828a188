//! `ferry-hub migrate-store --from FILE`: a SQLite hub's metadata and
//! tunnel CA copied into this configuration's PostgreSQL store, which must
//! be empty, so its spokes and clients carry on against hubs on
//! PostgreSQL.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context as _;

use crate::ca::HubCa;
use crate::config::{HubConfig, StoreBackend};
use crate::secrets::MasterKey;
use crate::store::CopyOutcome;

/// How often the copy says how far it got within one table.
const PROGRESS_EVERY: Duration = Duration::from_secs(2);

/// Copies the metadata of the SQLite hub configured in `from` into
/// `cfg`'s PostgreSQL store, with its tunnel CA; copies nothing unless
/// everything can be.
pub fn run(cfg: &HubConfig, from: &Path) -> anyhow::Result<()> {
    let old = ferry_common::config::load::<HubConfig>(from).map_err(|e| anyhow::anyhow!("{e}"))?;
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
    let ca = HubCa::read_files(&old.state_dir.join("tunnel-ca"))?;
    super::runtime()?.block_on(async {
        let source = old.open_store(1).await?;
        for (id, sealed) in source.sealed_connections().await? {
            key.open(&sealed, &id).with_context(|| {
                format!("connection {id} does not open with this master key: use the SQLite hub's key; nothing was copied")
            })?;
        }
        let target = cfg.open_store(2).await?;
        let sealed_ca = ca
            .as_ref()
            .map(|(cert, key_pem)| (cert.as_str(), key.seal(key_pem.as_bytes(), crate::TUNNEL_CA_CONTEXT)));
        eprintln!("copying {} into PostgreSQL", db.display());
        let mut last = (String::new(), Instant::now());
        let outcome = source
            .copy_into(
                &target,
                sealed_ca.as_ref().map(|(c, k)| (*c, k.as_slice())),
                |table, rows| {
                    if table != last.0 || last.1.elapsed() >= PROGRESS_EVERY {
                        eprintln!("  {table}: {rows} rows…");
                        last = (table.to_owned(), Instant::now());
                    }
                },
            )
            .await;
        let result = match outcome {
            Ok(CopyOutcome::Copied(counts)) => {
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
            Ok(CopyOutcome::TargetNotEmpty(table)) => Err(anyhow::anyhow!(
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
