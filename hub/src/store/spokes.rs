//! The spoke registry: join tokens, enrolled certificates, revocations.
//!
//! A join token (`fjt_` + 43 base64url characters) is stored hashed, lives
//! until its expiry and works once. Enrolment replaces the token with the
//! SHA-256 of the certificate the hub's CA signed; the tunnel accepts a
//! spoke only while that fingerprint is on record and not revoked.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::SecureRandom as _;
use serde::Serialize;
use sqlx::Row as _;

use ferry_common::contract::enrol::JOIN_TOKEN_PREFIX;

use super::{Store, StoreError, now_ms};
use crate::tunnel::allowed::AllowedPublic;

/// An allowance as stored: JSON, `NULL` for none.
pub(super) fn allowance_text(allowed: &AllowedPublic) -> Option<String> {
    (!allowed.is_empty()).then(|| serde_json::to_string(allowed).expect("allowances serialise"))
}

/// A stored allowance; unreadable or absent is none.
pub(super) fn allowance_of(text: Option<String>) -> AllowedPublic {
    text.and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default()
}

/// What is known of a spoke.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SpokeRow {
    /// Its name, such as `fra1`.
    pub name: String,
    /// When its certificate was signed, if it was.
    pub enrolled_at: Option<i64>,
    /// When it was revoked, if it was.
    pub revoked_at: Option<i64>,
    /// When its current join token expires, if one is outstanding.
    pub token_expires_at: Option<i64>,
    /// When it was added.
    pub created_at: i64,
    /// What it may announce for steering.
    pub allowed_public: AllowedPublic,
}

/// Why an enrolment was refused. One answer for all, on purpose: a caller
/// learns nothing about which tokens exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnrolRefusal {
    /// No outstanding token has that value (wrong, or already used).
    Unknown,
    /// The token expired.
    Expired,
    /// The spoke was revoked.
    Revoked,
    /// A fleet token was used for a name outside its prefix.
    NotInFleet,
    /// A fleet token was used for a spoke that is enrolled already.
    Taken,
}

pub(super) fn new_token(prefix: &str) -> String {
    let mut secret = [0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut secret)
        .expect("the system RNG works");
    format!("{prefix}{}", URL_SAFE_NO_PAD.encode(secret))
}

pub(super) fn sha256(data: &[u8]) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA256, data)
        .as_ref()
        .to_vec()
}

/// Checks a spoke name: 1 to 63 of `a-z 0-9 -`, starting with a letter or
/// digit (it becomes a DNS label).
pub use ferry_common::proto::valid_spoke_name;

/// What the store says of an enrolled spoke's certificates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpokeStanding {
    /// Whether the spoke was revoked.
    pub revoked: bool,
    /// The SHA-256 of its current certificate.
    pub current: Option<Vec<u8>>,
    /// The SHA-256 of the certificate its last renewal replaced, while it
    /// is still valid (the current one has opened no tunnel yet).
    pub previous: Option<Vec<u8>>,
}

impl SpokeStanding {
    /// Whether the certificate whose SHA-256 is `cert` is one of the
    /// spoke's.
    pub fn holds(&self, cert: &[u8]) -> bool {
        self.current.as_deref() == Some(cert) || self.previous.as_deref() == Some(cert)
    }
}

impl Store {
    /// Adds a spoke (or, for an existing one, issues a new join token) and
    /// returns the token, valid for `ttl_ms`. A revoked name stays revoked.
    /// `allowed`, when given, replaces what the spoke may announce.
    pub async fn add_spoke(
        &self,
        name: &str,
        ttl_ms: i64,
        allowed: Option<&AllowedPublic>,
    ) -> Result<(String, i64), StoreError> {
        let token = new_token(JOIN_TOKEN_PREFIX);
        let now = now_ms();
        let expires = now + ttl_ms;
        let mut tx = self.write_tx().await?;
        let revoked: Option<Option<i64>> =
            sqlx::query_scalar("SELECT revoked_at FROM spokes WHERE name = $1")
                .bind(name)
                .fetch_optional(&mut *tx)
                .await?;
        if matches!(revoked, Some(Some(_))) {
            return Err(StoreError::Conflict("a revoked spoke with that name"));
        }
        sqlx::query(
            "INSERT INTO spokes (name, token_hash, token_expires_at, created_at, allowed_public) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (name) DO UPDATE SET token_hash = excluded.token_hash, \
             token_expires_at = excluded.token_expires_at, \
             allowed_public = CASE WHEN $6 = 1 THEN excluded.allowed_public ELSE spokes.allowed_public END",
        )
        .bind(name)
        .bind(sha256(token.as_bytes()))
        .bind(expires)
        .bind(now)
        .bind(allowed.and_then(allowance_text))
        .bind(i64::from(allowed.is_some()))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok((token, expires))
    }

    /// Finds the spoke a join token belongs to, without using it.
    pub async fn check_join_token(
        &self,
        token: &str,
    ) -> Result<Result<String, EnrolRefusal>, StoreError> {
        let row = sqlx::query(
            "SELECT name, token_expires_at, revoked_at FROM spokes WHERE token_hash = $1",
        )
        .bind(sha256(token.as_bytes()))
        // A token is used once, soon after it is made: ask the primary.
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else {
            return Ok(Err(EnrolRefusal::Unknown));
        };
        let expires: Option<i64> = row.try_get("token_expires_at")?;
        let revoked: Option<i64> = row.try_get("revoked_at")?;
        if revoked.is_some() {
            return Ok(Err(EnrolRefusal::Revoked));
        }
        if expires.is_none_or(|e| e <= now_ms()) {
            return Ok(Err(EnrolRefusal::Expired));
        }
        Ok(Ok(row.try_get("name")?))
    }

    /// Uses a join token: records the signed certificate's fingerprint and
    /// forgets the token. Fails if the token was used meanwhile.
    pub async fn complete_enrolment(
        &self,
        token: &str,
        cert_der: &[u8],
    ) -> Result<bool, StoreError> {
        self.refuse_if_down()?;
        let done = sqlx::query(
            "UPDATE spokes SET token_hash = NULL, token_expires_at = NULL, cert_sha256 = $1, \
             prev_cert_sha256 = NULL, cert_seen = 0, enrolled_at = $2 \
             WHERE token_hash = $3 AND revoked_at IS NULL AND token_expires_at > $2",
        )
        .bind(sha256(cert_der))
        .bind(now_ms())
        .bind(sha256(token.as_bytes()))
        .execute(&self.pool)
        .await?;
        self.note_write().await;
        Ok(done.rows_affected() == 1)
    }

    /// The name of the enrolled, unrevoked spoke holding this
    /// certificate (its current one, or the one its last renewal replaced
    /// while the current one has not opened a tunnel yet), and what it may
    /// announce. The current certificate opening a tunnel is noted: from
    /// then on the one before no longer opens any.
    pub async fn spoke_for_certificate(
        &self,
        cert_der: &[u8],
    ) -> Result<Option<(String, AllowedPublic)>, StoreError> {
        let hash = sha256(cert_der);
        let lookup = |pool| {
            sqlx::query_as::<_, (String, Option<String>, i64)>(
                "SELECT name, allowed_public, \
                 CASE WHEN cert_sha256 = $1 AND cert_seen = 0 THEN 1 ELSE 0 END FROM spokes \
                 WHERE (cert_sha256 = $1 OR (prev_cert_sha256 = $1 AND cert_seen = 0)) \
                 AND revoked_at IS NULL",
            )
            .bind(&hash)
            .fetch_optional(pool)
        };
        // A spoke enrolled through another hub may not be on the replica yet.
        let found = match lookup(self.read_pool().await).await? {
            Some(row) => Some(row),
            None if self.has_replica() => lookup(&self.pool).await?,
            None => None,
        };
        let Some((name, allowed, first_use)) = found else {
            return Ok(None);
        };
        // Best effort: a store that takes no writes now only keeps the
        // certificate before valid a little longer.
        if first_use == 1 && self.refuse_if_down().is_ok() {
            let marked =
                sqlx::query("UPDATE spokes SET cert_seen = 1 WHERE name = $1 AND cert_sha256 = $2")
                    .bind(&name)
                    .bind(&hash)
                    .execute(&self.pool)
                    .await;
            match marked {
                Ok(_) => self.note_write().await,
                Err(e) => {
                    tracing::debug!(spoke.id = %name, error = %e, "could not note a certificate's first tunnel")
                }
            }
        }
        Ok(Some((name, allowance_of(allowed))))
    }

    /// Records spoke `name`'s renewed certificate `cert_der`, renewed while
    /// it held the certificate whose SHA-256 is `held`; that one stays
    /// valid beside the new one until the new one opens a tunnel (or it
    /// expires), so a spoke that stops before it has kept the new one
    /// still connects. False when the spoke is unknown or revoked, or
    /// `held` is not its current certificate nor the one before while the
    /// current one has opened no tunnel (so a key a renewal replaced
    /// cannot renew once the spoke uses the new one).
    pub async fn renew_spoke_certificate(
        &self,
        name: &str,
        held: &[u8],
        cert_der: &[u8],
    ) -> Result<bool, StoreError> {
        self.refuse_if_down()?;
        let done = sqlx::query(
            "UPDATE spokes SET prev_cert_sha256 = $1, cert_sha256 = $2, cert_seen = 0 \
             WHERE name = $3 AND revoked_at IS NULL \
             AND (cert_sha256 = $1 OR (prev_cert_sha256 = $1 AND cert_seen = 0))",
        )
        .bind(held)
        .bind(sha256(cert_der))
        .bind(name)
        .execute(&self.pool)
        .await?;
        self.note_write().await;
        Ok(done.rows_affected() == 1)
    }

    /// Sets what spoke `name` may announce; false if there is no such
    /// spoke. Its next tunnel is held to it.
    pub async fn allow_spoke(
        &self,
        name: &str,
        allowed: &AllowedPublic,
    ) -> Result<bool, StoreError> {
        self.refuse_if_down()?;
        let done = sqlx::query("UPDATE spokes SET allowed_public = $1 WHERE name = $2")
            .bind(allowance_text(allowed))
            .bind(name)
            .execute(&self.pool)
            .await?;
        self.note_write().await;
        Ok(done.rows_affected() == 1)
    }

    /// Every spoke, by name.
    pub async fn list_spokes(&self) -> Result<Vec<SpokeRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT name, enrolled_at, revoked_at, token_expires_at, created_at, allowed_public FROM spokes ORDER BY name",
        )
        .fetch_all(self.read_pool().await)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(SpokeRow {
                    name: r.try_get("name")?,
                    enrolled_at: r.try_get("enrolled_at")?,
                    revoked_at: r.try_get("revoked_at")?,
                    token_expires_at: r.try_get("token_expires_at")?,
                    created_at: r.try_get("created_at")?,
                    allowed_public: allowance_of(r.try_get("allowed_public")?),
                })
            })
            .collect()
    }

    /// Revokes a spoke: its certificate and any outstanding token stop
    /// working. False if there is no such spoke.
    pub async fn revoke_spoke(&self, name: &str) -> Result<bool, StoreError> {
        self.refuse_if_down()?;
        let done = sqlx::query(
            "UPDATE spokes SET revoked_at = COALESCE(revoked_at, $1), token_hash = NULL, token_expires_at = NULL WHERE name = $2",
        )
        .bind(now_ms())
        .bind(name)
        .execute(&self.pool)
        .await?;
        self.note_write().await;
        Ok(done.rows_affected() == 1)
    }

    /// Whether the spoke is revoked (or unknown).
    pub async fn spoke_revoked(&self, name: &str) -> Result<bool, StoreError> {
        Ok(self
            .spoke_certificate(name, None)
            .await?
            .is_none_or(|s| s.revoked))
    }

    /// Spoke `name`'s standing: revoked or not, and the SHA-256 of its
    /// certificates; `None` when there is no such spoke. Given `expected`,
    /// an answer from the replica that holds it as neither certificate is
    /// asked again of the primary (a spoke enrolled again or renewed
    /// through another hub may not be on the replica yet).
    pub async fn spoke_certificate(
        &self,
        name: &str,
        expected: Option<&[u8]>,
    ) -> Result<Option<SpokeStanding>, StoreError> {
        type Row = (Option<i64>, Option<Vec<u8>>, Option<Vec<u8>>);
        let lookup = |pool| {
            sqlx::query_as::<_, Row>(
                "SELECT revoked_at, cert_sha256, \
                 CASE WHEN cert_seen = 0 THEN prev_cert_sha256 END FROM spokes WHERE name = $1",
            )
            .bind(name)
            .fetch_optional(pool)
        };
        let standing = |row: Option<Row>| {
            row.map(|(revoked, current, previous)| SpokeStanding {
                revoked: revoked.is_some(),
                current,
                previous,
            })
        };
        let as_read = standing(lookup(self.read_pool().await).await?);
        let settled = as_read
            .as_ref()
            .is_some_and(|s| expected.is_none_or(|e| s.holds(e)));
        // Only the primary can say a spoke does not exist, or holds
        // another certificate now.
        if settled || !self.has_replica() {
            return Ok(as_read);
        }
        Ok(standing(lookup(&self.pool).await?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::store;

    #[tokio::test]
    async fn tokens_work_once_and_expire() {
        let (store, _dir) = store().await;
        let allowed = AllowedPublic::parse(&["192.0.2.0/24".into()], &[]).unwrap();
        let (token, _) = store
            .add_spoke("fra1", 60_000, Some(&allowed))
            .await
            .unwrap();
        assert!(token.starts_with("fjt_"));
        assert_eq!(
            store.check_join_token(&token).await.unwrap(),
            Ok("fra1".to_owned())
        );
        assert!(store.complete_enrolment(&token, b"cert").await.unwrap());
        assert_eq!(
            store.check_join_token(&token).await.unwrap(),
            Err(EnrolRefusal::Unknown)
        );
        assert!(
            !store.complete_enrolment(&token, b"cert2").await.unwrap(),
            "reuse fails"
        );
        assert_eq!(
            store.spoke_for_certificate(b"cert").await.unwrap(),
            Some(("fra1".to_owned(), allowed.clone()))
        );
        // A new token without an allowance keeps it; `allow` replaces it.
        store.add_spoke("fra1", 60_000, None).await.unwrap();
        assert_eq!(
            store.list_spokes().await.unwrap()[0].allowed_public,
            allowed
        );
        assert!(
            store
                .allow_spoke("fra1", &AllowedPublic::default())
                .await
                .unwrap()
        );
        assert!(
            store.list_spokes().await.unwrap()[0]
                .allowed_public
                .is_empty()
        );
        assert!(!store.allow_spoke("nobody", &allowed).await.unwrap());

        let (old, _) = store.add_spoke("ams1", -1, None).await.unwrap();
        assert_eq!(
            store.check_join_token(&old).await.unwrap(),
            Err(EnrolRefusal::Expired)
        );
        assert!(!store.complete_enrolment(&old, b"x").await.unwrap());

        assert!(store.revoke_spoke("fra1").await.unwrap());
        assert_eq!(store.spoke_for_certificate(b"cert").await.unwrap(), None);
        assert!(store.spoke_revoked("fra1").await.unwrap());
        assert!(matches!(
            store.add_spoke("fra1", 1000, None).await,
            Err(StoreError::Conflict(_))
        ));
        assert!(!store.revoke_spoke("nope").await.unwrap());
        assert_eq!(store.list_spokes().await.unwrap().len(), 2);
    }

    #[tokio::test]
    async fn a_renewal_keeps_the_certificate_it_replaced_until_the_new_one_is_used() {
        let (store, _dir) = store().await;
        let (token, _) = store.add_spoke("fra1", 60_000, None).await.unwrap();
        assert!(store.complete_enrolment(&token, b"one").await.unwrap());
        let name = |cert: &'static [u8]| {
            let store = store.clone();
            async move {
                store
                    .spoke_for_certificate(cert)
                    .await
                    .unwrap()
                    .map(|(n, _)| n)
            }
        };
        let renew = |held: &'static [u8], new: &'static [u8]| {
            let store = store.clone();
            async move {
                store
                    .renew_spoke_certificate("fra1", &sha256(held), new)
                    .await
                    .unwrap()
            }
        };
        let standing = async || {
            store
                .spoke_certificate("fra1", None)
                .await
                .unwrap()
                .unwrap()
        };
        // Renewed while holding the first: both are the spoke's until the
        // second opens a tunnel.
        assert!(renew(b"one", b"two").await);
        let s = standing().await;
        assert!(s.holds(&sha256(b"one")) && s.holds(&sha256(b"two")));
        assert_eq!(name(b"one").await.as_deref(), Some("fra1"));
        // Renewed again while still holding the first (the second was never
        // kept, never used): the first stays, the second goes.
        assert!(renew(b"one", b"three").await);
        assert_eq!(name(b"two").await, None);
        // The third opens a tunnel: from then on the first neither opens
        // tunnels nor renews (a key a renewal replaced cannot take over).
        assert_eq!(name(b"three").await.as_deref(), Some("fra1"));
        assert_eq!(name(b"one").await, None);
        assert!(!standing().await.holds(&sha256(b"one")));
        assert!(!renew(b"one", b"evil").await);
        assert_eq!(name(b"three").await.as_deref(), Some("fra1"));
        // Renewed holding neither, or for a spoke that does not exist: refused.
        assert!(!renew(b"two", b"four").await);
        assert!(
            !store
                .renew_spoke_certificate("nobody", &sha256(b"three"), b"four")
                .await
                .unwrap()
        );
        // Enrolled again: only the new certificate.
        assert!(renew(b"three", b"four").await);
        let (token, _) = store.add_spoke("fra1", 60_000, None).await.unwrap();
        assert!(store.complete_enrolment(&token, b"five").await.unwrap());
        assert_eq!(name(b"three").await, None);
        assert_eq!(name(b"four").await, None);
        // Revoked: nothing more.
        store.revoke_spoke("fra1").await.unwrap();
        assert!(!renew(b"five", b"six").await);
        assert_eq!(name(b"five").await, None);
    }

    #[test]
    fn spoke_names_are_dns_labels() {
        assert!(valid_spoke_name("fra1"));
        assert!(valid_spoke_name("us-east-2"));
        for bad in [
            "",
            "Fra1",
            "a_b",
            "-a",
            "a-",
            &"a".repeat(64),
            "enrol",
            "probe-targets",
            "api",
            "hub",
        ] {
            assert!(!valid_spoke_name(bad), "{bad}");
        }
    }
}
