//! The S3 door at a spoke: the hub checks an S3 request's signature from
//! its head, and the spoke streams the object's bytes itself.
//!
//! The spoke sends the head of a client's S3 object request (`GetObject`,
//! `HeadObject`, `PutObject`, `UploadPart`) to the hub (`s3_authorize`).
//! The hub checks its signature and clock, the key's limits and the
//! bucket, and answers either "forward it" (an operation the spoke does
//! not serve, a provider only the hub reaches, or a refusal the hub's own
//! door words) or what the spoke needs for this one request: the key's
//! secret, with which the spoke checks the body as it streams (the payload
//! hash, `aws-chunked` chunk signatures and trailers), and a pass. The
//! pass stands for the client on the spoke's grant and upload calls for
//! that request, as an API key does for ferry's own API: the hub holds it
//! to one connection, one object (or the partial uploads of one
//! connection, for a part) and reading or writing, for a few minutes, for
//! that spoke.

use serde::{Deserialize, Serialize};

/// The `Authorization` scheme of a pass: `FerryS3 <pass>`.
pub const PASS_SCHEME: &str = "FerryS3";

/// `s3_authorize`: the head of a client's S3 request, as it arrived.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct S3AuthorizeRequest {
    /// Its method.
    pub method: String,
    /// Its path and query, as sent.
    pub uri: String,
    /// Its header fields, in order (values as text: a signed request's
    /// are).
    pub headers: Vec<(String, String)>,
}

/// The hub's answer to an [`S3AuthorizeRequest`] whose signature holds
/// (one that does not is answered with S3's error, to give the client).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct S3Authorized {
    /// What the spoke needs to serve the request itself; `None`: forward
    /// it to the hub whole.
    #[serde(default)]
    pub serve: Option<S3Serve>,
}

/// What a spoke needs to serve one S3 request itself.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct S3Serve {
    /// The access key that signed the request.
    pub access_key: String,
    /// Its secret, to check the body as it streams; kept for this request
    /// only.
    pub secret: String,
    /// The pass for the request's grant and upload calls.
    pub pass: String,
    /// The id of the connection the bucket names.
    pub connection_id: String,
}

impl std::fmt::Debug for S3Serve {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Serve")
            .field("access_key", &self.access_key)
            .field("connection_id", &self.connection_id)
            .finish_non_exhaustive()
    }
}
