//! The calls a spoke makes to its hub for itself, and the enrolment that
//! comes before any tunnel: one typed home for what both sides send, so a
//! change on one side cannot compile while the other breaks at run time.
//!
//! The spoke's own calls travel like forwarded requests, on a tunnel
//! stream of their own, but without a client address: `POST
//! /internal/v1/<call>` with a JSON body ([`InternalCall`]). The hub
//! answers them only for requests that came through a spoke's tunnel and
//! are the spoke's own; for anyone else the routes do not exist.
//!
//! | call | body | answer |
//! |---|---|---|
//! | `grant` | [`GrantRequest`], with the client's `Authorization` | [`Grant`] |
//! | `lookup` | [`LookupRequest`], with the grant | [`LookupAnswer`] |
//! | `commit` | [`Commit`], with the grant | 204 |
//! | `transfer` | [`Transfer`], with the grant | 204 |
//! | `upload_create` | [`UploadCreateRequest`], with the client's `Authorization` | [`Session`](crate::uploads::Session) |
//! | `upload_begin` | [`UploadBeginRequest`], with the client's `Authorization` | [`UploadBegun`] |
//! | `upload_renew` | [`UploadLeaseRequest`], with the grant | 204 |
//! | `upload_release` | [`UploadLeaseRequest`], with the grant | 204 |
//! | `upload_append` | [`UploadAppendRequest`], with the grant | [`Session`](crate::uploads::Session) |
//! | `s3_authorize` | [`S3AuthorizeRequest`] | [`S3Authorized`], or S3's error |
//!
//! Where a call says "the client's `Authorization`", an S3 request's
//! pass ([`s3`]) may stand instead.
//!
//! A grant covers one path of one connection, read or write, for the one
//! spoke it was issued to; every later call for that object carries its
//! token ([`GRANT_HEADER`]) and the hub holds the call to it. The client's
//! principal (for read-your-writes through any hub) is inside the grant.
//! Versioning follows the tunnel's (see [`crate::proto`]): within one
//! protocol version, fields are added as optional and unknown ones ignored.

pub mod enrol;
pub mod grant;
pub mod s3;
pub mod upload;

pub use crate::content::model::{Commit, Intent, Transfer};
pub use enrol::{EnrolAnswer, EnrolRequest, RenewAnswer, RenewRequest, TokenKind};
pub use grant::{
    GRANT_HEADER, Grant, GrantOp, GrantRequest, IntentRef, LookupAnswer, LookupRequest,
    REPORT_ID_HEADER,
};
pub use s3::{PASS_SCHEME, S3AuthorizeRequest, S3Authorized, S3Serve};
pub use upload::{
    UploadAppendRequest, UploadBeginRequest, UploadBegun, UploadCreateRequest, UploadLeaseRequest,
};

/// Where the internal routes live.
pub const INTERNAL_PREFIX: &str = "/internal/v1/";

/// One of the spoke's own calls to its hub.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InternalCall {
    /// What the spoke needs to stream with a connection's provider.
    Grant,
    /// The metadata the hub recorded for an object.
    Lookup,
    /// An upload about to be put in place, recorded first: refused when
    /// another change to the object came first.
    Intend,
    /// An intended upload that failed at the provider: the hub settles
    /// it at once by what the provider holds.
    Abandon,
    /// A finished upload's metadata, event and transfer.
    Commit,
    /// A transfer-log entry (downloads, rejected uploads).
    Transfer,
    /// A new resumable-upload session.
    UploadCreate,
    /// The lease to append to a session.
    UploadBegin,
    /// Keeping a lease.
    UploadRenew,
    /// Giving a lease up.
    UploadRelease,
    /// A part written under a lease (and the completion).
    UploadAppend,
    /// An S3 request's signature checked from its head.
    S3Authorize,
    /// A new certificate for the spoke's new key, before its own expires.
    RenewCertificate,
    /// A connection's provider answered `429`: slow it down on every node
    /// ([`crate::content::pace`]).
    SlowDown,
}

/// `slow_down`: which connection's provider asked to slow down (it must
/// be the one the call's grant covers).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SlowDownReport {
    /// The connection's id.
    pub connection_id: String,
}

impl InternalCall {
    /// Every call.
    pub const ALL: [InternalCall; 14] = [
        Self::Grant,
        Self::Lookup,
        Self::Intend,
        Self::Abandon,
        Self::Commit,
        Self::Transfer,
        Self::UploadCreate,
        Self::UploadBegin,
        Self::UploadRenew,
        Self::UploadRelease,
        Self::UploadAppend,
        Self::S3Authorize,
        Self::RenewCertificate,
        Self::SlowDown,
    ];

    /// The call's name, the last segment of its path.
    pub fn name(self) -> &'static str {
        match self {
            Self::Grant => "grant",
            Self::Lookup => "lookup",
            Self::Intend => "intend",
            Self::Abandon => "abandon",
            Self::Commit => "commit",
            Self::Transfer => "transfer",
            Self::UploadCreate => "upload_create",
            Self::UploadBegin => "upload_begin",
            Self::UploadRenew => "upload_renew",
            Self::UploadRelease => "upload_release",
            Self::UploadAppend => "upload_append",
            Self::S3Authorize => "s3_authorize",
            Self::RenewCertificate => "renew_certificate",
            Self::SlowDown => "slow_down",
        }
    }

    /// The call's path.
    pub fn path(self) -> &'static str {
        match self {
            Self::Grant => "/internal/v1/grant",
            Self::Lookup => "/internal/v1/lookup",
            Self::Intend => "/internal/v1/intend",
            Self::Abandon => "/internal/v1/abandon",
            Self::Commit => "/internal/v1/commit",
            Self::Transfer => "/internal/v1/transfer",
            Self::UploadCreate => "/internal/v1/upload_create",
            Self::UploadBegin => "/internal/v1/upload_begin",
            Self::UploadRenew => "/internal/v1/upload_renew",
            Self::UploadRelease => "/internal/v1/upload_release",
            Self::UploadAppend => "/internal/v1/upload_append",
            Self::S3Authorize => "/internal/v1/s3_authorize",
            Self::RenewCertificate => "/internal/v1/renew_certificate",
            Self::SlowDown => "/internal/v1/slow_down",
        }
    }

    /// The call named by the part of a path after [`INTERNAL_PREFIX`].
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.name() == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_names_agree() {
        for call in InternalCall::ALL {
            assert_eq!(call.path(), format!("{INTERNAL_PREFIX}{}", call.name()));
            assert_eq!(InternalCall::parse(call.name()), Some(call));
        }
        assert_eq!(InternalCall::parse("grants"), None);
    }
}
