//! Fleet tokens: one token enrols any number of new spokes named
//! `<prefix>-…` (an auto-scaling group's instances) until it expires or is
//! revoked; never a spoke that is enrolled or revoked already.

use serde::Serialize;
use sqlx::Row as _;

use ferry_common::contract::enrol::FLEET_TOKEN_PREFIX;

use super::spokes::{EnrolRefusal, allowance_of, allowance_text, new_token, sha256};
use super::{Store, StoreError, now_ms};
use crate::tunnel::allowed::AllowedPublic;

/// A fleet enrolment token's record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FleetRow {
    /// Its id (`flt_…`), for listing and revoking.
    pub id: String,
    /// Spokes it enrols are named `<prefix>-…`.
    pub prefix: String,
    /// When it stops working.
    pub expires_at: i64,
    /// When it was revoked, if it was.
    pub revoked_at: Option<i64>,
    /// When it was made.
    pub created_at: i64,
    /// What the spokes it enrols may announce.
    pub allowed_public: AllowedPublic,
}

impl FleetRow {
    /// `active`, `expired` or `revoked`, at `now` (Unix ms).
    pub fn state(&self, now: i64) -> &'static str {
        match self.revoked_at {
            Some(_) => "revoked",
            None if self.expires_at <= now => "expired",
            None => "active",
        }
    }
}

impl Store {
    /// Makes a fleet token for spokes named `<prefix>-…` that may announce
    /// what `allowed` allows, valid for `ttl_ms`: (its id, the token, when
    /// it expires).
    pub async fn add_fleet(
        &self,
        prefix: &str,
        ttl_ms: i64,
        allowed: &AllowedPublic,
    ) -> Result<(String, String, i64), StoreError> {
        self.refuse_if_down()?;
        let token = new_token(FLEET_TOKEN_PREFIX);
        let id = super::new_id("flt");
        let now = now_ms();
        let mut tx = self.write_tx().await?;
        sqlx::query(
            "INSERT INTO spoke_fleets (id, prefix, token_hash, expires_at, created_at, allowed_public) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&id)
        .bind(prefix)
        .bind(sha256(token.as_bytes()))
        .bind(now + ttl_ms)
        .bind(now)
        .bind(allowance_text(allowed))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok((id, token, now + ttl_ms))
    }

    /// Every fleet token's record.
    pub async fn list_fleets(&self) -> Result<Vec<FleetRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, prefix, expires_at, revoked_at, created_at, allowed_public FROM spoke_fleets ORDER BY created_at, id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(FleetRow {
                    id: r.try_get("id")?,
                    prefix: r.try_get("prefix")?,
                    expires_at: r.try_get("expires_at")?,
                    revoked_at: r.try_get("revoked_at")?,
                    created_at: r.try_get("created_at")?,
                    allowed_public: allowance_of(r.try_get("allowed_public")?),
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(StoreError::from)
    }

    /// Revokes a fleet token (spokes it enrolled stay enrolled); false if
    /// there is none with that id.
    pub async fn revoke_fleet(&self, id: &str) -> Result<bool, StoreError> {
        self.refuse_if_down()?;
        let mut tx = self.write_tx().await?;
        let done = sqlx::query(
            "UPDATE spoke_fleets SET revoked_at = COALESCE(revoked_at, $1) WHERE id = $2",
        )
        .bind(now_ms())
        .bind(id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    }

    /// Whether the fleet token may enrol a new spoke called `name`
    /// (checked again when the enrolment is recorded).
    pub async fn check_fleet_token(
        &self,
        token: &str,
        name: &str,
    ) -> Result<Result<(), EnrolRefusal>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        fleet_allows(&mut conn, token, name).await
    }

    /// Records a spoke enrolled with a fleet token: the spoke is added
    /// with the signed certificate's fingerprint, in one transaction with
    /// the checks.
    pub async fn enrol_with_fleet(
        &self,
        token: &str,
        name: &str,
        cert_der: &[u8],
    ) -> Result<Result<(), EnrolRefusal>, StoreError> {
        self.refuse_if_down()?;
        let mut tx = self.write_tx().await?;
        if let Err(why) = fleet_allows(&mut tx, token, name).await? {
            return Ok(Err(why));
        }
        let now = now_ms();
        // The row's own condition makes two enrolments of one new name
        // serialise on its unique key: the second waits for the first,
        // then finds the name enrolled and changes nothing.
        let done = sqlx::query(
            "INSERT INTO spokes (name, cert_sha256, enrolled_at, created_at, allowed_public) \
             VALUES ($1, $2, $3, $3, (SELECT allowed_public FROM spoke_fleets WHERE token_hash = $4)) \
             ON CONFLICT (name) DO UPDATE SET token_hash = NULL, token_expires_at = NULL, \
             cert_sha256 = excluded.cert_sha256, prev_cert_sha256 = NULL, cert_seen = 0, enrolled_at = excluded.enrolled_at, \
             allowed_public = excluded.allowed_public \
             WHERE spokes.enrolled_at IS NULL AND spokes.revoked_at IS NULL",
        )
        .bind(name)
        .bind(sha256(cert_der))
        .bind(now)
        .bind(sha256(token.as_bytes()))
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() != 1 {
            return Ok(Err(EnrolRefusal::Taken));
        }
        tx.commit().await?;
        Ok(Ok(()))
    }
}

/// The checks a fleet enrolment passes: the token is known, not revoked,
/// not expired, the name is `<prefix>-…`, and no spoke of that name is
/// enrolled or revoked (a fleet token adds spokes; it never takes one
/// over).
async fn fleet_allows(
    conn: &mut sqlx::AnyConnection,
    token: &str,
    name: &str,
) -> Result<Result<(), EnrolRefusal>, StoreError> {
    let row = sqlx::query(
        "SELECT prefix, expires_at, revoked_at FROM spoke_fleets WHERE token_hash = $1",
    )
    .bind(sha256(token.as_bytes()))
    .fetch_optional(&mut *conn)
    .await?;
    let Some(row) = row else {
        return Ok(Err(EnrolRefusal::Unknown));
    };
    let prefix: String = row.try_get("prefix")?;
    let expires: i64 = row.try_get("expires_at")?;
    let revoked: Option<i64> = row.try_get("revoked_at")?;
    if revoked.is_some() {
        return Ok(Err(EnrolRefusal::Unknown));
    }
    if expires <= now_ms() {
        return Ok(Err(EnrolRefusal::Expired));
    }
    let suffix = name
        .strip_prefix(prefix.as_str())
        .and_then(|rest| rest.strip_prefix('-'));
    if suffix.is_none_or(str::is_empty) {
        return Ok(Err(EnrolRefusal::NotInFleet));
    }
    let spoke = sqlx::query("SELECT enrolled_at, revoked_at FROM spokes WHERE name = $1")
        .bind(name)
        .fetch_optional(&mut *conn)
        .await?;
    if let Some(spoke) = spoke {
        if spoke.try_get::<Option<i64>, _>("revoked_at")?.is_some() {
            return Ok(Err(EnrolRefusal::Revoked));
        }
        if spoke.try_get::<Option<i64>, _>("enrolled_at")?.is_some() {
            return Ok(Err(EnrolRefusal::Taken));
        }
    }
    Ok(Ok(()))
}
