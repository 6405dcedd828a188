//! Errors on the HTTP API as `application/problem+json` (RFC 9457).
//!
//! Every error a client can see has a stable, machine-readable `code`; the
//! list lives in [`ErrorCode`] and in `docs/api.md`. Internal errors map to
//! a [`Problem`] in one place each, never ad hoc in handlers.

use http::{HeaderValue, Response, StatusCode, header};
use serde::Serialize;

use crate::body::{Body, full};

/// The media type of problem details.
pub const PROBLEM_JSON: &str = "application/problem+json";

macro_rules! error_codes {
    ($($(#[$doc:meta])* $variant:ident => ($status:ident, $code:literal, $title:literal),)*) => {
        /// The stable error codes of the API.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ErrorCode {
            $($(#[$doc])* $variant,)*
        }

        impl ErrorCode {
            /// Every code, for documentation tests.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant,)*];

            /// The code as it appears in the `code` member.
            pub fn as_str(self) -> &'static str {
                match self { $(ErrorCode::$variant => $code,)* }
            }

            /// The HTTP status that goes with the code.
            pub fn status(self) -> StatusCode {
                match self { $(ErrorCode::$variant => StatusCode::$status,)* }
            }

            /// A short, fixed summary of the problem.
            pub fn title(self) -> &'static str {
                match self { $(ErrorCode::$variant => $title,)* }
            }
        }
    };
}

error_codes! {
    /// The request's JSON body is not valid JSON or lacks a required member.
    InvalidJson => (BAD_REQUEST, "invalid_json", "The request body is not valid JSON of the expected shape"),
    /// A member of the request has a value outside what is accepted.
    InvalidField => (BAD_REQUEST, "invalid_field", "A request field has an invalid value"),
    /// A query parameter is malformed.
    InvalidQuery => (BAD_REQUEST, "invalid_query", "A query parameter is invalid"),
    /// An object path is unsafe or malformed.
    InvalidPath => (BAD_REQUEST, "invalid_path", "The object path is not acceptable"),
    /// A pagination cursor was not made by this server.
    InvalidCursor => (BAD_REQUEST, "invalid_cursor", "The cursor is not valid"),
    CursorExpired => (GONE, "cursor_expired", "Events after this cursor are no longer kept"),
    /// A `Repr-Digest`, `Want-Repr-Digest` or checksum field is malformed.
    InvalidDigest => (BAD_REQUEST, "invalid_digest", "A digest or checksum field is malformed"),
    /// The uploaded bytes do not match the digest or checksum the client sent.
    DigestMismatch => (BAD_REQUEST, "digest_mismatch", "The content does not match the digest sent with it"),
    /// The upload ended before its body was complete.
    UploadIncomplete => (BAD_REQUEST, "upload_incomplete", "The upload body ended early or could not be read"),
    /// The JSON body is larger than the configured limit.
    BodyTooLarge => (PAYLOAD_TOO_LARGE, "body_too_large", "The request body is larger than allowed"),
    /// The request's `Content-Type` is not the one the route accepts.
    UnsupportedMediaType => (UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type", "The request body has an unsupported media type"),
    /// The request's URI is longer than a spoke carries to its hub.
    UriTooLong => (URI_TOO_LONG, "uri_too_long", "The request URI is too long"),
    /// The request's header fields are more or longer than a spoke carries
    /// to its hub.
    HeadersTooLarge => (REQUEST_HEADER_FIELDS_TOO_LARGE, "headers_too_large", "The request header fields are too large"),
    /// No or wrong credentials.
    Unauthorized => (UNAUTHORIZED, "unauthorized", "Missing or invalid credentials"),
    /// Too many wrong credentials came from this client's address; retry
    /// after `Retry-After`.
    TooManyAttempts => (TOO_MANY_REQUESTS, "too_many_attempts", "Too many wrong credentials from this address"),
    /// The admin API is disabled because no admin token is configured.
    AdminDisabled => (FORBIDDEN, "admin_disabled", "The admin API is disabled on this server"),
    /// The route does not exist.
    RouteNotFound => (NOT_FOUND, "route_not_found", "No such route"),
    /// The route exists but not with this method.
    MethodNotAllowed => (METHOD_NOT_ALLOWED, "method_not_allowed", "The method is not allowed on this route"),
    /// No such account.
    AccountNotFound => (NOT_FOUND, "account_not_found", "No such account"),
    /// No such API key.
    KeyNotFound => (NOT_FOUND, "key_not_found", "No such API key"),
    /// No such webhook endpoint for this account.
    WebhookNotFound => (NOT_FOUND, "webhook_not_found", "No such webhook endpoint"),
    /// No such delivery for this webhook endpoint.
    DeliveryNotFound => (NOT_FOUND, "delivery_not_found", "No such webhook delivery"),
    /// The account has as many webhook endpoints as it may.
    WebhookLimit => (CONFLICT, "webhook_limit", "The account has as many webhook endpoints as it may"),
    /// The account stores as many bytes as its quota allows, or the upload
    /// would take it past them.
    StorageQuotaExceeded => (INSUFFICIENT_STORAGE, "storage_quota_exceeded", "The account's storage quota is used up"),
    /// The account downloaded its month's egress quota; `Retry-After`
    /// says when the next month begins.
    EgressQuotaExceeded => (TOO_MANY_REQUESTS, "egress_quota_exceeded", "The account's monthly egress quota is used up"),
    /// The account sends more requests per second than it may; retry
    /// after `Retry-After`.
    RateLimited => (TOO_MANY_REQUESTS, "rate_limited", "Too many requests for this account"),
    /// No such connection for this account.
    ConnectionNotFound => (NOT_FOUND, "connection_not_found", "No such connection"),
    /// No such file or folder.
    NotFound => (NOT_FOUND, "not_found", "No such file or folder"),
    /// The path names a folder where a file is needed.
    NotAFile => (CONFLICT, "not_a_file", "The path names a folder, not a file"),
    /// The path names a file where a folder is needed.
    NotAFolder => (CONFLICT, "not_a_folder", "The path names a file, not a folder"),
    /// A folder to delete without `recursive=true` is not empty.
    FolderNotEmpty => (CONFLICT, "folder_not_empty", "The folder is not empty"),
    /// Another change to the object was recorded, or is being made, since
    /// this one began: one writer wins, the other is told.
    WriteConflict => (CONFLICT, "write_conflict", "Another change to the object came first"),
    /// Something already exists with that name or at that path.
    AlreadyExists => (CONFLICT, "already_exists", "It already exists"),
    /// `If-Match` or `If-None-Match` failed.
    PreconditionFailed => (PRECONDITION_FAILED, "precondition_failed", "A precondition in the request failed"),
    /// The `Range` lies outside the object.
    RangeNotSatisfiable => (RANGE_NOT_SATISFIABLE, "range_not_satisfiable", "The requested range is outside the object"),
    /// The provider named in a connection is unknown or not enabled here.
    UnknownProvider => (UNPROCESSABLE_ENTITY, "unknown_provider", "The provider is unknown or not enabled"),
    /// The provider configuration is invalid or not allowed.
    InvalidProviderConfig => (UNPROCESSABLE_ENTITY, "invalid_provider_config", "The provider configuration is not valid"),
    /// Another account's connection already uses that storage location.
    LocationInUse => (CONFLICT, "location_in_use", "The storage location is not available to this account"),
    /// A join token is wrong, already used, expired, or its spoke revoked.
    InvalidJoinToken => (UNAUTHORIZED, "invalid_join_token", "The join token is not valid"),
    /// No spoke has that name.
    SpokeNotFound => (NOT_FOUND, "spoke_not_found", "No such spoke"),
    /// No fleet token has that id.
    FleetNotFound => (NOT_FOUND, "fleet_not_found", "No such fleet token"),
    /// The hub takes no spokes (it has no `[tunnel]` section).
    TunnelDisabled => (CONFLICT, "tunnel_disabled", "This hub does not accept spokes"),
    /// A spoke's call is not covered by a grant the hub issued to it.
    GrantRefused => (FORBIDDEN, "grant_refused", "The spoke's call is not covered by its grant"),
    /// The spoke cannot reach its hub; a retry may help.
    HubUnreachable => (SERVICE_UNAVAILABLE, "hub_unreachable", "The hub cannot be reached from this node"),
    ReportJournalFull => (SERVICE_UNAVAILABLE, "report_journal_full", "This spoke holds as many completion reports for the hub as it may"),
    /// The provider refused the operation (permissions, quota, bad credentials).
    ProviderRejected => (FORBIDDEN, "provider_rejected", "The storage provider refused the operation"),
    /// The provider asks ferry to slow down; retry after `Retry-After`.
    ProviderRateLimited => (TOO_MANY_REQUESTS, "provider_rate_limited", "The storage provider asks to slow down"),
    /// The provider could not be reached or is overloaded; a retry may help.
    ProviderUnavailable => (SERVICE_UNAVAILABLE, "provider_unavailable", "The storage provider could not be reached or is unavailable"),
    /// The provider answered with an error ferry cannot map; a retry is unlikely to help.
    ProviderFailed => (BAD_GATEWAY, "provider_failed", "The storage provider failed the operation"),
    /// The provider did not answer in time.
    ProviderTimeout => (GATEWAY_TIMEOUT, "provider_timeout", "The storage provider did not answer in time"),
    /// The provider does not support the operation.
    ProviderUnsupported => (NOT_IMPLEMENTED, "provider_unsupported", "The storage provider does not support this operation"),
    /// No upload session with that id for this account (or it was
    /// terminated).
    UploadNotFound => (NOT_FOUND, "upload_not_found", "No such upload"),
    /// The upload session expired; its bytes were discarded.
    UploadExpired => (GONE, "upload_expired", "The upload has expired"),
    /// A resumable upload's `Upload-Offset` is not the offset the server
    /// holds; `expected-offset` says which it is.
    MismatchingUploadOffset => (CONFLICT, "mismatching_upload_offset", "The upload offset does not match the server's"),
    /// Another request is appending to the upload now; retry shortly.
    UploadLocked => (LOCKED, "upload_locked", "Another request is writing to this upload"),
    /// A chunk would take an upload past its length or the size limit.
    UploadTooLarge => (PAYLOAD_TOO_LARGE, "upload_too_large", "The upload is larger than its declared length or the limit"),
    /// A chunk does not match the `Upload-Checksum` sent with it; it was
    /// discarded (tus answers `460`).
    ChecksumMismatch => (BAD_REQUEST, "checksum_mismatch", "The chunk does not match its checksum"),
    /// A final upload (tus concatenation) takes no bytes of its own.
    UploadIsFinal => (FORBIDDEN, "upload_is_final", "A final upload takes no bytes of its own"),
    /// The request's `Tus-Resumable` names a protocol version this server
    /// does not speak.
    UnsupportedTusVersion => (PRECONDITION_FAILED, "unsupported_tus_version", "The tus protocol version is not supported"),
    /// The metadata store failed; a retry may help.
    StoreUnavailable => (SERVICE_UNAVAILABLE, "store_unavailable", "The metadata store is unavailable"),
    /// The server is shutting down.
    ShuttingDown => (SERVICE_UNAVAILABLE, "shutting_down", "The server is shutting down"),
    /// A bug or an unexpected condition on the server.
    Internal => (INTERNAL_SERVER_ERROR, "internal", "Internal server error"),
}

/// The members only some problems have.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Extra {
    /// The storage provider's id for the request that failed, when the
    /// provider sent one: what an operator quotes to the provider's
    /// support. Nothing else of a provider's answer reaches a client.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider_request_id: Option<String>,
    /// `mismatching_upload_offset`: the offset the server holds (the IETF
    /// draft's member).
    #[serde(rename = "expected-offset", skip_serializing_if = "Option::is_none")]
    pub expected_offset: Option<u64>,
    /// `mismatching_upload_offset`: the offset the request gave.
    #[serde(rename = "provided-offset", skip_serializing_if = "Option::is_none")]
    pub provided_offset: Option<u64>,
}

/// A problem detail, ready to become a response.
#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    /// A URI naming the problem type: `urn:ferry:problem:<code>`.
    #[serde(rename = "type")]
    pub type_uri: String,
    /// The fixed summary of the code.
    pub title: &'static str,
    /// The HTTP status.
    pub status: u16,
    /// The stable machine-readable code.
    pub code: &'static str,
    /// What went wrong with this request, for a person.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// The members only some problems have (boxed: the problem stays
    /// small enough to return by value).
    #[serde(flatten)]
    pub extra: Option<Box<Extra>>,
    #[serde(skip)]
    code_enum: Option<ErrorCode>,
    /// Seconds the client should wait before retrying (`Retry-After`).
    #[serde(skip)]
    pub retry_after: Option<u64>,
}

impl Problem {
    /// A problem with `code` and a detail for this occurrence.
    pub fn new(code: ErrorCode, detail: impl Into<String>) -> Self {
        Self {
            type_uri: format!("urn:ferry:problem:{}", code.as_str()),
            title: code.title(),
            status: code.status().as_u16(),
            code: code.as_str(),
            detail: Some(detail.into()),
            extra: None,
            code_enum: Some(code),
            retry_after: None,
        }
    }

    /// The same problem, telling the client to retry after `secs` seconds.
    pub fn with_retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs);
        self
    }

    /// The same problem, naming the provider's id for the request that
    /// failed.
    pub fn with_provider_request_id(mut self, id: Option<String>) -> Self {
        if let Some(id) = id {
            self.extra.get_or_insert_default().provider_request_id = Some(id);
        }
        self
    }

    /// `405 method_not_allowed` for a route that answers `GET` and `HEAD`
    /// only, with its `Allow` field.
    pub fn get_or_head_only() -> Response<Body> {
        let mut resp =
            Problem::new(ErrorCode::MethodNotAllowed, "allowed: GET, HEAD").into_response();
        resp.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        resp
    }

    /// `409 mismatching_upload_offset` for a request that gave `provided`
    /// where the server holds `expected`; its type is the one the IETF
    /// resumable-upload draft registers.
    pub fn offset_mismatch(expected: u64, provided: u64) -> Self {
        let mut p = Self::new(
            ErrorCode::MismatchingUploadOffset,
            format!("the upload is at offset {expected}, not {provided}"),
        );
        p.type_uri =
            "https://iana.org/assignments/http-problem-types#mismatching-upload-offset".into();
        let extra = p.extra.get_or_insert_default();
        extra.expected_offset = Some(expected);
        extra.provided_offset = Some(provided);
        p
    }

    /// The problem another node answered with (`status`, `body`), as this
    /// node would have made it: a spoke passing the hub's refusal on in
    /// its own protocol's words. A body that is not a problem of a known
    /// code becomes an `internal` problem with the status kept.
    pub fn from_answer(status: StatusCode, body: &[u8]) -> Self {
        #[derive(serde::Deserialize)]
        struct Seen {
            code: String,
            detail: Option<String>,
            #[serde(rename = "expected-offset")]
            expected_offset: Option<u64>,
            #[serde(rename = "provided-offset")]
            provided_offset: Option<u64>,
        }
        let seen: Option<Seen> = serde_json::from_slice(body).ok();
        let code = seen
            .as_ref()
            .and_then(|s| ErrorCode::ALL.iter().find(|c| c.as_str() == s.code));
        match (seen, code) {
            (Some(seen), Some(&code)) => {
                let mut p = match (seen.expected_offset, seen.provided_offset) {
                    (Some(e), Some(p)) if code == ErrorCode::MismatchingUploadOffset => {
                        Self::offset_mismatch(e, p)
                    }
                    _ => Self::new(code, ""),
                };
                p.detail = seen.detail;
                p.status = status.as_u16();
                p
            }
            _ => {
                let mut p = Self::new(
                    ErrorCode::Internal,
                    format!("the hub answered {status} without a problem this node knows"),
                );
                p.status = status.as_u16();
                p
            }
        }
    }

    /// The offset a `mismatching_upload_offset` problem says the server
    /// holds.
    pub fn expected_offset(&self) -> Option<u64> {
        self.extra.as_ref().and_then(|e| e.expected_offset)
    }

    /// The problem's code.
    pub fn error_code(&self) -> ErrorCode {
        self.code_enum.unwrap_or(ErrorCode::Internal)
    }

    /// The HTTP response carrying this problem.
    pub fn into_response(self) -> Response<Body> {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let json = serde_json::to_vec(&self).unwrap_or_else(|_| b"{}".to_vec());
        let mut resp = Response::new(full(json));
        *resp.status_mut() = status;
        resp.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Some(secs) = self.retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        resp
    }
}

impl From<ErrorCode> for Problem {
    fn from(code: ErrorCode) -> Self {
        let mut p = Problem::new(code, "");
        p.detail = None;
        p
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.code, self.status)?;
        if let Some(d) = &self.detail {
            write!(f, ": {d}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Problem {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_snake_case_and_errors() {
        let mut seen = std::collections::HashSet::new();
        for code in ErrorCode::ALL {
            assert!(seen.insert(code.as_str()), "duplicate {}", code.as_str());
            assert!(
                code.as_str()
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c == '_')
            );
            assert!(code.status().is_client_error() || code.status().is_server_error());
        }
    }

    #[test]
    fn problem_serialises_as_rfc9457() {
        let p = Problem::new(ErrorCode::NotFound, "no such file: a.txt");
        let v = serde_json::to_value(&p).unwrap();
        assert_eq!(v["type"], "urn:ferry:problem:not_found");
        assert_eq!(v["status"], 404);
        assert_eq!(v["code"], "not_found");
        assert_eq!(v["detail"], "no such file: a.txt");
        let resp = p.into_response();
        assert_eq!(resp.headers()[header::CONTENT_TYPE], PROBLEM_JSON);
    }
}
