//! What the hubs of one store share: the tunnel CA (its key sealed under
//! the master key) and where each hub takes tunnels.

use super::{Store, StoreError, now_ms};

/// A hub of the store as it last announced itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubRow {
    /// Its id.
    pub id: String,
    /// Where it takes QUIC tunnels.
    pub tunnel_addr: String,
    /// Where it takes TLS-over-TCP tunnels.
    pub tunnel_tcp_addr: String,
    /// When it last said it is up (Unix ms).
    pub last_seen: i64,
}

impl Store {
    /// The hubs' shared tunnel CA: its certificate (PEM) and its private
    /// key, sealed under the master key; `None` before a hub made it.
    pub async fn tunnel_ca(&self) -> Result<Option<(String, Vec<u8>)>, StoreError> {
        let row = sqlx::query_as::<_, (String, Vec<u8>)>(
            "SELECT cert_pem, key_sealed FROM tunnel_ca WHERE id = 1",
        )
        .fetch_optional(&self.pool)
        .await?;
        Ok(row)
    }

    /// Stores the tunnel CA unless another hub stored one first; the CA
    /// stored is what [`Store::tunnel_ca`] returns afterwards.
    pub async fn offer_tunnel_ca(
        &self,
        cert_pem: &str,
        key_sealed: &[u8],
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO tunnel_ca (id, cert_pem, key_sealed, created_at) VALUES (1, $1, $2, $3) \
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(cert_pem)
        .bind(key_sealed)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}

impl Store {
    /// Records that hub `id` is up and takes tunnels at these addresses,
    /// and forgets hubs not heard from in a day and any other id at the
    /// same tunnel address (this hub before a restart: one address is one
    /// hub, and spokes should not look for the old one).
    pub async fn announce_hub(&self, id: &str, quic: &str, tcp: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM hubs WHERE last_seen < $1 OR (tunnel_addr = $2 AND id <> $3)")
            .bind(now_ms() - 86_400_000)
            .bind(quic)
            .bind(id)
            .execute(&self.pool)
            .await?;
        sqlx::query(
            "INSERT INTO hubs (id, tunnel_addr, tunnel_tcp_addr, last_seen) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (id) DO UPDATE SET tunnel_addr = excluded.tunnel_addr, \
             tunnel_tcp_addr = excluded.tunnel_tcp_addr, last_seen = excluded.last_seen",
        )
        .bind(id)
        .bind(quic)
        .bind(tcp)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The hubs seen in the last `within_ms`, by id.
    pub async fn live_hubs(&self, within_ms: i64) -> Result<Vec<HubRow>, StoreError> {
        let rows = sqlx::query_as::<_, (String, String, String, i64)>(
            "SELECT id, tunnel_addr, tunnel_tcp_addr, last_seen FROM hubs WHERE last_seen > $1 \
             ORDER BY id",
        )
        .bind(now_ms() - within_ms)
        .fetch_all(self.read_pool().await)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(id, tunnel_addr, tunnel_tcp_addr, last_seen)| HubRow {
                id,
                tunnel_addr,
                tunnel_tcp_addr,
                last_seen,
            })
            .collect())
    }
}
