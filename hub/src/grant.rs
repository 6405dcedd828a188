//! Grants a spoke holds: what the hub allowed one spoke to do for one
//! client request it forwarded — read or write one path of one connection
//! of one account — and the checks every later call of that spoke is held
//! to (lookups, commits, transfer-log entries).
//!
//! A grant travels as a token the hub signs (HMAC-SHA-256 under a key
//! derived from the master key, so every hub of a store verifies every
//! other's): `fg1.<claims>.<tag>`, the claims base64url JSON. The spoke
//! keeps it opaque and sends it back in `x-ferry-grant`. Nothing is stored
//! per grant, and a spoke cannot make, widen or move one: its name, the
//! account, connection, path and operation are inside the signature.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ferry_common::content::model::{Commit, Direction, EventKind, Intent, ObjectMeta, Transfer};
use ferry_common::contract::GrantOp;

use crate::store::PendingIntent;
use ring::hmac;
use serde::{Deserialize, Serialize};

/// The tokens' prefix, which names their format.
const PREFIX: &str = "fg1.";

/// S3 passes' prefix.
const PASS_PREFIX: &str = "fp1.";

/// What a grant allows, as signed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The spoke it was issued to.
    pub spoke: String,
    /// The account whose connection it is.
    pub account: String,
    /// The connection's id.
    pub connection: String,
    /// The one path it covers.
    pub path: String,
    /// Read (GET, HEAD) or write (PUT).
    pub op: GrantOp,
    /// The client's principal (`ferry_common::principal`), for
    /// read-your-writes: a spoke cannot speak for another client.
    pub principal: String,
    /// Until when (unix milliseconds) the spoke may report under it:
    /// longer than the grant's lifetime for starting transfers, since an
    /// upload started under it may take long, and reports may wait in the
    /// spoke's queue while the hub is away.
    pub until_ms: i64,
    /// An upload grant's session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upload: Option<String>,
    /// An upload grant's lease token: the calls made under it hold the
    /// session only while that lease does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<String>,
}

/// Why a spoke's call is refused. None of these gets better by retrying
/// the same call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GrantError {
    /// No token came with the call.
    #[error("the call carries no grant")]
    Missing,
    /// The token is not one this hub's store signed.
    #[error("the grant is not valid")]
    Invalid,
    /// The token was issued to another spoke.
    #[error("the grant was issued to another spoke")]
    OtherSpoke,
    /// The token's reporting window is over.
    #[error("the grant has expired")]
    Expired,
    /// The call asks for more than the token allows.
    #[error("the grant does not cover this: {0}")]
    Outside(&'static str),
}

/// Signs and verifies grants.
pub struct GrantKey(hmac::Key);

impl std::fmt::Debug for GrantKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GrantKey(****)")
    }
}

impl GrantKey {
    /// The key of the hubs whose master key gave `key`.
    pub fn new(key: hmac::Key) -> Self {
        Self(key)
    }

    /// A signed token for `claims`.
    pub fn issue(&self, claims: &Claims) -> String {
        self.sign(PREFIX, claims)
    }

    /// The claims of `token`, if this key signed it, it was issued to
    /// `spoke` and its window is open at `now_ms`.
    pub fn verify(&self, token: &str, spoke: &str, now_ms: i64) -> Result<Claims, GrantError> {
        let claims: Claims = self.open(PREFIX, token)?;
        if claims.spoke != spoke {
            return Err(GrantError::OtherSpoke);
        }
        if now_ms > claims.until_ms {
            return Err(GrantError::Expired);
        }
        Ok(claims)
    }

    /// A signed pass for `claims`.
    pub fn issue_pass(&self, claims: &PassClaims) -> String {
        self.sign(PASS_PREFIX, claims)
    }

    /// The claims of the pass `token`, if this key signed it, it was issued
    /// to `spoke` and it has not run out at `now_ms`.
    pub fn verify_pass(
        &self,
        token: &str,
        spoke: &str,
        now_ms: i64,
    ) -> Result<PassClaims, GrantError> {
        let claims: PassClaims = self.open(PASS_PREFIX, token)?;
        if claims.spoke != spoke {
            return Err(GrantError::OtherSpoke);
        }
        if now_ms > claims.until_ms {
            return Err(GrantError::Expired);
        }
        Ok(claims)
    }

    /// `prefix`, the claims as base64url JSON, and their tag. The prefix
    /// names the kind of token and is signed with it, so one kind never
    /// passes for another.
    fn sign(&self, prefix: &str, claims: &impl Serialize) -> String {
        let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).expect("claims serialise"));
        let signed = format!("{prefix}{body}");
        let tag = hmac::sign(&self.0, signed.as_bytes());
        format!("{signed}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()))
    }

    fn open<T: for<'de> Deserialize<'de>>(
        &self,
        prefix: &str,
        token: &str,
    ) -> Result<T, GrantError> {
        let (signed, tag) = token.rsplit_once('.').ok_or(GrantError::Invalid)?;
        let tag = URL_SAFE_NO_PAD
            .decode(tag)
            .map_err(|_| GrantError::Invalid)?;
        hmac::verify(&self.0, signed.as_bytes(), &tag).map_err(|_| GrantError::Invalid)?;
        let body = signed.strip_prefix(prefix).ok_or(GrantError::Invalid)?;
        URL_SAFE_NO_PAD
            .decode(body)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or(GrantError::Invalid)
    }
}

/// What an S3 pass allows, as signed: standing for the client of one S3
/// request the hub checked, on that spoke's grant and upload calls
/// (`ferry_common::contract::s3`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PassClaims {
    /// The spoke it was issued to.
    pub spoke: String,
    /// The key's account.
    pub account: String,
    /// The access key that signed the request.
    pub access_key: String,
    /// The connection (the request's bucket).
    pub connection: String,
    /// The object; `None` for a part, which is a partial upload naming no
    /// object.
    pub path: Option<String>,
    /// Whether it may write.
    pub write: bool,
    /// For a part: the multipart upload it is a part of.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3_upload: Option<String>,
    /// Until when (unix milliseconds) it may be used.
    pub until_ms: i64,
}

impl PassClaims {
    /// Whether the pass covers `op` of `path` in `connection` (an id).
    pub fn covers_object(
        &self,
        connection: &str,
        path: &str,
        op: GrantOp,
    ) -> Result<(), GrantError> {
        if self.connection != connection || self.path.as_deref() != Some(path) {
            return Err(GrantError::Outside("another object"));
        }
        if op != GrantOp::Read && !self.write {
            return Err(GrantError::Outside("writing"));
        }
        Ok(())
    }

    /// Whether the pass covers a partial upload in `connection` (an id).
    pub fn covers_part(&self, connection: &str) -> Result<(), GrantError> {
        if self.connection != connection || self.path.is_some() || !self.write {
            return Err(GrantError::Outside("a part of another upload"));
        }
        Ok(())
    }
}

impl Claims {
    /// A lookup of `path` in `connection`.
    pub fn check_lookup(&self, connection: &str, path: &str) -> Result<(), GrantError> {
        self.check_object(connection, path)
    }

    fn check_object(&self, connection: &str, path: &str) -> Result<(), GrantError> {
        if connection != self.connection {
            return Err(GrantError::Outside("another connection"));
        }
        if path != self.path {
            return Err(GrantError::Outside("another path"));
        }
        Ok(())
    }

    /// A call about upload session `id` under lease `lease`.
    pub fn check_upload(&self, id: &str, lease: &str) -> Result<(), GrantError> {
        if self.op != GrantOp::Upload || self.upload.as_deref() != Some(id) {
            return Err(GrantError::Outside("another upload"));
        }
        if self.lease.as_deref() != Some(lease) {
            return Err(GrantError::Outside("another lease"));
        }
        Ok(())
    }

    /// A transfer-log entry by `spoke`.
    pub fn check_transfer(&self, t: &Transfer, spoke: &str) -> Result<(), GrantError> {
        if t.account_id != self.account {
            return Err(GrantError::Outside("another account"));
        }
        self.check_object(&t.connection_id, &t.path)?;
        if t.via != spoke {
            return Err(GrantError::Outside("a transfer carried by another node"));
        }
        let expected = match self.op {
            GrantOp::Read => Direction::Download,
            GrantOp::Write | GrantOp::Upload => Direction::Upload,
        };
        if t.direction != expected {
            return Err(GrantError::Outside("a transfer the other way"));
        }
        Ok(())
    }

    /// Giving up intent `p`, whose change failed at the provider: only one
    /// `spoke` recorded itself, of the object a write grant covers.
    pub fn check_abandon(&self, p: &PendingIntent, spoke: &str) -> Result<(), GrantError> {
        if p.made_by.as_deref() != Some(spoke) {
            return Err(GrantError::Outside("another node's intent"));
        }
        self.check_intended_object(&p.intent)
    }

    /// An intent for the object of a write (or upload) grant.
    fn check_intended_object(&self, i: &Intent) -> Result<(), GrantError> {
        if !matches!(self.op, GrantOp::Write | GrantOp::Upload) {
            return Err(GrantError::Outside("an intent under a read grant"));
        }
        self.check_object(&i.connection_id, &i.path)
    }

    /// An intent recorded for `spoke`: the upload a write grant covers,
    /// about to be put in place — its path, the content the change
    /// records, and the change its commit will make
    /// ([`Claims::check_commit`]); nothing removed, no other path.
    pub fn check_intent(
        &self,
        i: &Intent,
        spoke: &str,
        recorded: Option<&ObjectMeta>,
    ) -> Result<(), GrantError> {
        self.check_intended_object(i)?;
        let Some(m) = &i.change.upsert else {
            return Err(GrantError::Outside("an intent without its upload"));
        };
        if i.also_absent.is_some()
            || i.source.is_some()
            || i.change.event.is_none()
            || i.change.intent.is_some()
            || i.expect != Some((m.size as u64, m.crc64nvme))
        {
            return Err(GrantError::Outside("an intent other than the upload's"));
        }
        self.check_commit(&i.change, spoke, recorded)
    }

    /// A commit by `spoke`, where `recorded` is what the store holds for
    /// the granted path now. A write grant commits its path's upload (its
    /// metadata, a created or updated event, its transfer); a read grant
    /// only records a digest computed while serving, for content the
    /// store's row (if any) already describes.
    pub fn check_commit(
        &self,
        c: &Commit,
        spoke: &str,
        recorded: Option<&ObjectMeta>,
    ) -> Result<(), GrantError> {
        if !c.remove.is_empty() {
            return Err(GrantError::Outside("removing rows"));
        }
        if let Some(m) = &c.upsert {
            self.check_object(&m.connection_id, &m.path)?;
        }
        if let Some(t) = &c.transfer {
            self.check_transfer(t, spoke)?;
        }
        match self.op {
            GrantOp::Write | GrantOp::Upload => {
                if let Some(e) = &c.event {
                    if e.account_id != self.account {
                        return Err(GrantError::Outside("another account"));
                    }
                    self.check_object(&e.connection_id, &e.path)?;
                    if !matches!(e.kind, EventKind::Created | EventKind::Updated)
                        || e.from_path.is_some()
                    {
                        return Err(GrantError::Outside("an event other than the upload's"));
                    }
                }
            }
            GrantOp::Read => {
                if c.event.is_some() {
                    return Err(GrantError::Outside("an event under a read grant"));
                }
                if c.intent.is_some() {
                    return Err(GrantError::Outside("an intent under a read grant"));
                }
                if let (Some(new), Some(old)) = (&c.upsert, recorded)
                    && (new.size, new.crc64nvme) != (old.size, old.crc64nvme)
                {
                    return Err(GrantError::Outside("changed content under a read grant"));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_common::content::model::{EventRecord, Origin, TransferStatus};

    fn key() -> GrantKey {
        GrantKey::new(hmac::Key::new(hmac::HMAC_SHA256, b"test key"))
    }

    fn claims(op: GrantOp) -> Claims {
        Claims {
            spoke: "fra1".into(),
            account: "acc_1".into(),
            connection: "con_1".into(),
            path: "a/b.txt".into(),
            op,
            principal: "p".into(),
            until_ms: 2_000,
            upload: None,
            lease: None,
        }
    }

    fn transfer(direction: Direction) -> Transfer {
        Transfer {
            status: TransferStatus::Complete,
            ..Transfer::start("acc_1", "con_1", "a/b.txt", direction, "fra1")
        }
    }

    fn meta(size: i64) -> ObjectMeta {
        ObjectMeta {
            generation: 0,
            connection_id: "con_1".into(),
            path: "a/b.txt".into(),
            size,
            crc64nvme: 7,
            sha256: None,
            content_type: None,
            etag: "\"x\"".into(),
            provider_modified_ms: None,
            updated_at: 1,
            headers: Vec::new(),
        }
    }

    fn event(account: &str, kind: EventKind) -> EventRecord {
        EventRecord {
            account_id: account.into(),
            connection_id: "con_1".into(),
            kind,
            path: "a/b.txt".into(),
            from_path: None,
            size: Some(1),
            at: 1,
            origin: Origin::Ferry,
        }
    }

    #[test]
    fn tokens_verify_for_their_spoke_within_their_window_only() {
        let token = key().issue(&claims(GrantOp::Read));
        assert_eq!(
            key().verify(&token, "fra1", 1_000),
            Ok(claims(GrantOp::Read))
        );
        assert_eq!(
            key().verify(&token, "ams1", 1_000),
            Err(GrantError::OtherSpoke)
        );
        assert_eq!(
            key().verify(&token, "fra1", 2_001),
            Err(GrantError::Expired)
        );
        let other = GrantKey::new(hmac::Key::new(hmac::HMAC_SHA256, b"another hub's store"));
        assert_eq!(
            other.verify(&token, "fra1", 1_000),
            Err(GrantError::Invalid)
        );
        // A spoke that edits its claims (another path) breaks the tag.
        let (body, tag) = token.trim_start_matches(PREFIX).split_once('.').unwrap();
        let mut forged = claims(GrantOp::Write);
        forged.path = "someone/else".into();
        let forged_body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&forged).unwrap());
        assert_ne!(body, forged_body);
        let forged_token = format!("{PREFIX}{forged_body}.{tag}");
        assert_eq!(
            key().verify(&forged_token, "fra1", 1_000),
            Err(GrantError::Invalid)
        );
        for junk in ["", "fg1.", "fg1..", "x.y", "fg1.e30.AAAA"] {
            assert_eq!(
                key().verify(junk, "fra1", 1_000),
                Err(GrantError::Invalid),
                "{junk}"
            );
        }
    }

    #[test]
    fn passes_cover_their_one_object_or_parts_and_are_never_grants() {
        let pass = PassClaims {
            spoke: "fra1".into(),
            account: "acc_1".into(),
            access_key: "FRYAAAAAAAAAAAAAAAAA".into(),
            connection: "con_1".into(),
            path: Some("a/b.txt".into()),
            write: false,
            s3_upload: None,
            until_ms: 2_000,
        };
        let token = key().issue_pass(&pass);
        assert_eq!(key().verify_pass(&token, "fra1", 1_000), Ok(pass.clone()));
        assert_eq!(
            key().verify_pass(&token, "ams1", 1_000),
            Err(GrantError::OtherSpoke)
        );
        assert_eq!(
            key().verify_pass(&token, "fra1", 2_001),
            Err(GrantError::Expired)
        );
        // The two kinds of token never stand for each other.
        assert_eq!(
            key().verify(&token, "fra1", 1_000),
            Err(GrantError::Invalid)
        );
        let grant = key().issue(&claims(GrantOp::Read));
        assert_eq!(
            key().verify_pass(&grant, "fra1", 1_000),
            Err(GrantError::Invalid)
        );
        assert_eq!(
            pass.covers_object("con_1", "a/b.txt", GrantOp::Read),
            Ok(())
        );
        assert!(
            pass.covers_object("con_1", "a/b.txt", GrantOp::Write)
                .is_err()
        );
        assert!(
            pass.covers_object("con_1", "a/c.txt", GrantOp::Read)
                .is_err()
        );
        assert!(
            pass.covers_object("con_2", "a/b.txt", GrantOp::Read)
                .is_err()
        );
        assert!(pass.covers_part("con_1").is_err());
        let part = PassClaims {
            path: None,
            write: true,
            ..pass
        };
        assert_eq!(part.covers_part("con_1"), Ok(()));
        assert!(part.covers_part("con_2").is_err());
        assert!(
            part.covers_object("con_1", "a/b.txt", GrantOp::Write)
                .is_err()
        );
    }

    #[test]
    fn a_write_grant_commits_its_upload_and_nothing_else() {
        let c = claims(GrantOp::Write);
        let upload = Commit {
            upsert: Some(meta(1)),
            event: Some(event("acc_1", EventKind::Created)),
            transfer: Some(transfer(Direction::Upload)),
            remove: vec![],
            folder: None,
            intent: None,
        };
        assert_eq!(c.check_commit(&upload, "fra1", None), Ok(()));
        let mut other_account = upload.clone();
        other_account.event = Some(event("acc_2", EventKind::Created));
        assert!(c.check_commit(&other_account, "fra1", None).is_err());
        let mut deleting = upload.clone();
        deleting.event = Some(event("acc_1", EventKind::Deleted));
        assert!(c.check_commit(&deleting, "fra1", None).is_err());
        let mut elsewhere = upload.clone();
        elsewhere.upsert.as_mut().unwrap().path = "other.txt".into();
        assert!(c.check_commit(&elsewhere, "fra1", None).is_err());
        let mut removing = upload.clone();
        removing.remove = vec![("con_1".into(), "x".into())];
        assert!(c.check_commit(&removing, "fra1", None).is_err());
        assert!(
            c.check_commit(&upload, "ams1", None).is_err(),
            "carried by another node"
        );
        assert!(
            c.check_transfer(&transfer(Direction::Download), "fra1")
                .is_err()
        );
    }

    #[test]
    fn a_write_grant_intends_its_upload_and_nothing_else() {
        let upload = Intent {
            connection_id: "con_1".into(),
            path: "a/b.txt".into(),
            expect: Some((1, 7)),
            also_absent: None,
            replaces: 0,
            source: None,
            conditional: false,
            change: Commit {
                upsert: Some(meta(1)),
                event: Some(event("acc_1", EventKind::Created)),
                ..Commit::default()
            },
        };
        let c = claims(GrantOp::Write);
        assert_eq!(c.check_intent(&upload, "fra1", None), Ok(()));
        assert!(
            claims(GrantOp::Read)
                .check_intent(&upload, "fra1", None)
                .is_err()
        );
        let mut elsewhere = upload.clone();
        elsewhere.path = "other.txt".into();
        assert!(c.check_intent(&elsewhere, "fra1", None).is_err());
        let mut other_content = upload.clone();
        other_content.expect = Some((2, 7));
        assert!(c.check_intent(&other_content, "fra1", None).is_err());
        let mut nothing_there = upload.clone();
        nothing_there.expect = None;
        assert!(c.check_intent(&nothing_there, "fra1", None).is_err());
        let mut moving = upload.clone();
        moving.also_absent = Some("a/c.txt".into());
        assert!(c.check_intent(&moving, "fra1", None).is_err());
        let mut copying = upload.clone();
        copying.source = Some(("a/c.txt".into(), 0));
        assert!(c.check_intent(&copying, "fra1", None).is_err());
        let mut removing = upload.clone();
        removing.change.upsert = None;
        removing.change.remove = vec![("con_1".into(), "a/b.txt".into())];
        assert!(c.check_intent(&removing, "fra1", None).is_err());
        let mut other_account = upload.clone();
        other_account.change.event = Some(event("acc_2", EventKind::Created));
        assert!(c.check_intent(&other_account, "fra1", None).is_err());
        // An intent is given up only by the spoke that recorded it, for
        // the object of a write grant.
        let mut recorded = crate::store::PendingIntent {
            id: "int_1".into(),
            intent: upload.clone(),
            created_at: 1,
            made_by: Some("fra1".into()),
            drop_at: None,
        };
        assert_eq!(c.check_abandon(&recorded, "fra1"), Ok(()));
        assert!(c.check_abandon(&recorded, "ams1").is_err());
        assert!(
            claims(GrantOp::Read)
                .check_abandon(&recorded, "fra1")
                .is_err()
        );
        recorded.made_by = None;
        assert!(c.check_abandon(&recorded, "fra1").is_err(), "a hub's own");
        recorded.made_by = Some("fra1".into());
        recorded.intent.path = "other.txt".into();
        assert!(c.check_abandon(&recorded, "fra1").is_err());
        // A read grant's commit (a digest) settles no intent.
        let digest = Commit {
            upsert: Some(meta(1)),
            intent: Some("int_x".into()),
            ..Commit::default()
        };
        assert!(
            claims(GrantOp::Read)
                .check_commit(&digest, "fra1", Some(&meta(1)))
                .is_err()
        );
    }

    #[test]
    fn a_read_grant_only_adds_a_digest_to_what_is_recorded() {
        let c = claims(GrantOp::Read);
        let digest = Commit {
            upsert: Some(meta(1)),
            ..Commit::default()
        };
        assert_eq!(c.check_commit(&digest, "fra1", Some(&meta(1))), Ok(()));
        assert_eq!(c.check_commit(&digest, "fra1", None), Ok(()));
        assert!(c.check_commit(&digest, "fra1", Some(&meta(2))).is_err());
        let with_event = Commit {
            event: Some(event("acc_1", EventKind::Updated)),
            ..digest.clone()
        };
        assert!(c.check_commit(&with_event, "fra1", Some(&meta(1))).is_err());
        assert_eq!(
            c.check_transfer(&transfer(Direction::Download), "fra1"),
            Ok(())
        );
        assert!(c.check_lookup("con_1", "a/b.txt").is_ok());
        assert!(c.check_lookup("con_2", "a/b.txt").is_err());
        assert!(c.check_lookup("con_1", "a/c.txt").is_err());
    }
}
