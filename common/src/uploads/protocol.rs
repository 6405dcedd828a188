//! The two resumable-upload protocols' header fields: reading them
//! strictly, and writing the answers each expects. No I/O.
//!
//! - tus 1.0.0: every request but `OPTIONS` carries `Tus-Resumable: 1.0.0`;
//!   appends are `PATCH` with `application/offset+octet-stream`.
//! - The IETF httpbis draft "Resumable Uploads for HTTP" at interop
//!   version 8: requests carry
//!   `Upload-Draft-Interop-Version: 8` or `Upload-Complete`; appends are
//!   `PATCH` with `application/partial-upload`.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use http::{HeaderMap, HeaderValue, Response, StatusCode};

use crate::body::Body;
use crate::problem::{ErrorCode, Problem};

use super::Session;

/// The tus version spoken.
pub const TUS_VERSION: &str = "1.0.0";
/// The tus extensions served.
pub const TUS_EXTENSIONS: &str = "creation,creation-with-upload,creation-defer-length,expiration,checksum,termination,concatenation";
/// The checksum algorithms tus clients may use.
pub const TUS_CHECKSUM_ALGORITHMS: &str = "sha1,sha256,crc32c";
/// The IETF draft's interop version spoken.
pub const DRAFT_INTEROP_VERSION: &str = "8";
/// A tus append's media type.
pub const TUS_APPEND_TYPE: &str = "application/offset+octet-stream";
/// A draft append's media type.
pub const DRAFT_APPEND_TYPE: &str = "application/partial-upload";
/// The longest `Upload-Metadata` kept, in bytes.
pub const MAX_METADATA_BYTES: usize = 4096;

/// Which protocol a request speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// tus 1.0.0.
    Tus,
    /// The IETF draft.
    Draft,
}

fn text<'a>(headers: &'a HeaderMap, name: &str) -> Result<Option<&'a str>, Problem> {
    headers
        .get(name)
        .map(|v| {
            v.to_str().map(str::trim).map_err(|_| {
                Problem::new(
                    ErrorCode::InvalidField,
                    format!("'{name}' is not ASCII text"),
                )
            })
        })
        .transpose()
}

/// The protocol of a request to an upload route: tus when it says
/// `Tus-Resumable` (which must be 1.0.0: else `412` with `Tus-Version`),
/// the draft when it carries the draft's fields, else a tus `412`.
pub fn protocol_of(headers: &HeaderMap) -> Result<Protocol, Problem> {
    if let Some(v) = text(headers, "tus-resumable")? {
        return if v == TUS_VERSION {
            Ok(Protocol::Tus)
        } else {
            Err(Problem::new(
                ErrorCode::UnsupportedTusVersion,
                format!("tus version '{v}' is not supported; this server speaks {TUS_VERSION}"),
            ))
        };
    }
    if headers.contains_key("upload-draft-interop-version")
        || headers.contains_key("upload-complete")
    {
        return Ok(Protocol::Draft);
    }
    Err(Problem::new(
        ErrorCode::UnsupportedTusVersion,
        "the request names no resumable-upload protocol: send 'Tus-Resumable: 1.0.0' \
         or the IETF draft's 'Upload-Draft-Interop-Version: 8'",
    ))
}

/// A non-negative decimal integer field (`Upload-Length`,
/// `Upload-Offset`): digits only, at most 2^63 − 1.
pub fn number(headers: &HeaderMap, name: &str) -> Result<Option<u64>, Problem> {
    let Some(v) = text(headers, name)? else {
        return Ok(None);
    };
    if v.is_empty() || v.len() > 19 || !v.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Problem::new(
            ErrorCode::InvalidField,
            format!("'{name}' must be a non-negative decimal integer"),
        ));
    }
    v.parse::<i64>()
        .map(|n| Some(n as u64))
        .map_err(|_| Problem::new(ErrorCode::InvalidField, format!("'{name}' is too large")))
}

/// The draft's `Upload-Complete` (a structured boolean, `?1` or `?0`).
pub fn upload_complete(headers: &HeaderMap) -> Result<Option<bool>, Problem> {
    match text(headers, "upload-complete")? {
        None => Ok(None),
        Some("?1") => Ok(Some(true)),
        Some("?0") => Ok(Some(false)),
        Some(_) => Err(Problem::new(
            ErrorCode::InvalidField,
            "'Upload-Complete' must be ?1 or ?0",
        )),
    }
}

/// tus's `Upload-Defer-Length`, which may only be `1`.
pub fn defer_length(headers: &HeaderMap) -> Result<bool, Problem> {
    match text(headers, "upload-defer-length")? {
        None => Ok(false),
        Some("1") => Ok(true),
        Some(_) => Err(Problem::new(
            ErrorCode::InvalidField,
            "'Upload-Defer-Length' must be 1",
        )),
    }
}

/// One pair of `Upload-Metadata`: a key and its value, if it has one.
pub type MetadataPair = (String, Option<Vec<u8>>);

/// Reads tus's `Upload-Metadata`: comma-separated pairs of a key (no
/// spaces or commas, unique) and, after one space, its value in base64.
pub fn parse_metadata(value: &str) -> Result<Vec<MetadataPair>, Problem> {
    let bad = |why: &str| {
        Problem::new(
            ErrorCode::InvalidField,
            format!("'Upload-Metadata' is malformed: {why}"),
        )
    };
    if value.len() > MAX_METADATA_BYTES {
        return Err(bad("longer than 4096 bytes"));
    }
    let mut pairs: Vec<MetadataPair> = Vec::new();
    if value.trim().is_empty() {
        return Ok(pairs);
    }
    for item in value.split(',') {
        let item = item.trim();
        let mut words = item.split(' ');
        let key = words.next().unwrap_or_default();
        if key.is_empty() || !key.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(bad("a key is empty or not printable ASCII"));
        }
        let val = match words.next() {
            None => None,
            Some(v) => Some(
                STANDARD
                    .decode(v)
                    .map_err(|_| bad("a value is not base64"))?,
            ),
        };
        if words.next().is_some() {
            return Err(bad("a pair has more than a key and a value"));
        }
        if pairs.iter().any(|(k, _)| k == key) {
            return Err(bad("a key appears twice"));
        }
        pairs.push((key.to_owned(), val));
    }
    Ok(pairs)
}

/// The pairs written back in tus's form.
pub fn format_metadata(pairs: &[MetadataPair]) -> String {
    pairs
        .iter()
        .map(|(k, v)| match v {
            Some(v) => format!("{k} {}", STANDARD.encode(v)),
            None => k.clone(),
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// The UTF-8 value of the first of `keys` that `pairs` holds.
pub fn metadata_value<'a>(pairs: &'a [MetadataPair], keys: &[&str]) -> Option<&'a str> {
    keys.iter().find_map(|key| {
        pairs
            .iter()
            .find(|(k, _)| k == key)
            .and_then(|(_, v)| v.as_deref())
            .and_then(|v| std::str::from_utf8(v).ok())
    })
}

/// tus's `Upload-Concat`: `partial`, or `final;` and the URLs of the
/// partial uploads to join (absolute or paths; the last segment after
/// `/v1/uploads/` is the id), in the stored form of
/// [`super::Session::concat`].
pub fn upload_concat(headers: &HeaderMap) -> Result<Option<String>, Problem> {
    let Some(v) = text(headers, "upload-concat")? else {
        return Ok(None);
    };
    if v == super::CONCAT_PARTIAL {
        return Ok(Some(v.to_owned()));
    }
    let bad = || {
        Problem::new(
            ErrorCode::InvalidField,
            "'Upload-Concat' must be 'partial' or 'final;' and the partial uploads' URLs",
        )
    };
    let urls = v.strip_prefix("final;").ok_or_else(bad)?;
    let ids: Vec<&str> = urls
        .split(' ')
        .filter(|u| !u.is_empty())
        .map(|u| {
            let (_, id) = u.rsplit_once("/v1/uploads/").ok_or_else(bad)?;
            let ok = !id.is_empty()
                && id.len() <= 64
                && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
            if ok { Ok(id) } else { Err(bad()) }
        })
        .collect::<Result<_, _>>()?;
    if ids.is_empty() || ids.len() > 1000 {
        return Err(bad());
    }
    Ok(Some(format!("final;{}", ids.join(" "))))
}

/// A checksum algorithm a tus chunk may carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkAlgorithm {
    /// SHA-1, which tus requires servers to support.
    Sha1,
    /// SHA-256.
    Sha256,
    /// CRC-32C (Castagnoli), four bytes big-endian.
    Crc32c,
}

/// tus's `Upload-Checksum`: `<algorithm> <base64 digest>`. An algorithm
/// this server does not know is `400`.
pub fn upload_checksum(headers: &HeaderMap) -> Result<Option<(ChunkAlgorithm, Vec<u8>)>, Problem> {
    let Some(v) = text(headers, "upload-checksum")? else {
        return Ok(None);
    };
    let (alg, digest) = v.split_once(' ').ok_or_else(|| {
        Problem::new(
            ErrorCode::InvalidDigest,
            "'Upload-Checksum' must be '<algorithm> <base64 digest>'",
        )
    })?;
    let (alg, len) = match alg {
        "sha1" => (ChunkAlgorithm::Sha1, 20),
        "sha256" => (ChunkAlgorithm::Sha256, 32),
        "crc32c" => (ChunkAlgorithm::Crc32c, 4),
        other => {
            return Err(Problem::new(
                ErrorCode::InvalidDigest,
                format!(
                    "checksum algorithm '{other}' is not supported; use one of {TUS_CHECKSUM_ALGORITHMS}"
                ),
            ));
        }
    };
    let digest = STANDARD
        .decode(digest.trim())
        .ok()
        .filter(|d| d.len() == len)
        .ok_or_else(|| {
            Problem::new(
                ErrorCode::InvalidDigest,
                format!(
                    "the '{}' digest must be the base64 of {len} bytes",
                    alg_name(alg)
                ),
            )
        })?;
    Ok(Some((alg, digest)))
}

fn alg_name(alg: ChunkAlgorithm) -> &'static str {
    match alg {
        ChunkAlgorithm::Sha1 => "sha1",
        ChunkAlgorithm::Sha256 => "sha256",
        ChunkAlgorithm::Crc32c => "crc32c",
    }
}

/// A chunk's checksum computed as its bytes stream.
pub enum ChunkHasher {
    /// SHA-1 or SHA-256.
    Digest(ring::digest::Context),
    /// CRC-32C.
    Crc(crc_fast::Digest),
}

impl std::fmt::Debug for ChunkHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ChunkHasher")
    }
}

impl ChunkHasher {
    /// A hasher for `alg`.
    pub fn new(alg: ChunkAlgorithm) -> Self {
        match alg {
            ChunkAlgorithm::Sha1 => Self::Digest(ring::digest::Context::new(
                &ring::digest::SHA1_FOR_LEGACY_USE_ONLY,
            )),
            ChunkAlgorithm::Sha256 => {
                Self::Digest(ring::digest::Context::new(&ring::digest::SHA256))
            }
            ChunkAlgorithm::Crc32c => {
                Self::Crc(crc_fast::Digest::new(crc_fast::CrcAlgorithm::Crc32Iscsi))
            }
        }
    }

    /// Takes more bytes.
    pub fn update(&mut self, data: &[u8]) {
        match self {
            Self::Digest(c) => c.update(data),
            Self::Crc(c) => c.update(data),
        }
    }

    /// The digest of everything taken.
    pub fn finish(self) -> Vec<u8> {
        match self {
            Self::Digest(c) => c.finish().as_ref().to_vec(),
            Self::Crc(c) => (c.finalize() as u32).to_be_bytes().to_vec(),
        }
    }
}

fn set(headers: &mut HeaderMap, name: &'static str, value: impl Into<String>) {
    if let Ok(v) = HeaderValue::from_str(&value.into()) {
        headers.insert(name, v);
    }
}

/// Adds what every answer of `protocol` carries.
pub fn decorate(protocol: Protocol, headers: &mut HeaderMap) {
    match protocol {
        Protocol::Tus => set(headers, "tus-resumable", TUS_VERSION),
        Protocol::Draft => set(
            headers,
            "upload-draft-interop-version",
            DRAFT_INTEROP_VERSION,
        ),
    }
}

/// The HTTP date of a unix time in milliseconds.
fn http_date(ms: i64) -> Option<String> {
    opendal::raw::Timestamp::from_millisecond(ms)
        .ok()
        .map(|t| t.format_http_date())
}

/// The fields that describe `session` in `protocol`'s words: its offset,
/// its length (or tus's deferral), expiry, metadata; the draft's
/// completeness and limits.
pub fn describe(protocol: Protocol, session: &Session, headers: &mut HeaderMap) {
    decorate(protocol, headers);
    set(headers, "upload-offset", session.offset.to_string());
    match (protocol, session.length) {
        (_, Some(n)) => set(headers, "upload-length", n.to_string()),
        (Protocol::Tus, None) => set(headers, "upload-defer-length", "1"),
        (Protocol::Draft, None) => {}
    }
    if let Some(d) = http_date(session.expires_at) {
        set(headers, "upload-expires", d);
    }
    match protocol {
        Protocol::Tus => {
            if !session.metadata.is_empty() {
                set(headers, "upload-metadata", session.metadata.clone());
            }
            if session.is_partial() {
                set(headers, "upload-concat", super::CONCAT_PARTIAL);
            } else if let Some(ids) = session.joins() {
                let urls: Vec<String> = ids.iter().map(|id| super::serve::location(id)).collect();
                set(
                    headers,
                    "upload-concat",
                    format!("final;{}", urls.join(" ")),
                );
            }
        }
        Protocol::Draft => {
            let complete = session.status == super::Status::Complete;
            set(
                headers,
                "upload-complete",
                if complete { "?1" } else { "?0" },
            );
            set(
                headers,
                "upload-limit",
                format!("max-size={}", session.max_size),
            );
        }
    }
    headers.insert(
        http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-store"),
    );
}

/// `OPTIONS` on an upload route: what tus clients ask before they start.
pub fn options(max_size: u64) -> Response<Body> {
    let mut resp = Response::new(crate::body::empty());
    *resp.status_mut() = StatusCode::NO_CONTENT;
    let h = resp.headers_mut();
    set(h, "tus-resumable", TUS_VERSION);
    set(h, "tus-version", TUS_VERSION);
    set(h, "tus-extension", TUS_EXTENSIONS);
    set(h, "tus-max-size", max_size.to_string());
    set(h, "tus-checksum-algorithm", TUS_CHECKSUM_ALGORITHMS);
    set(h, "upload-limit", format!("max-size={max_size}"));
    resp
}

/// A problem in `protocol`'s words: tus answers a checksum mismatch with
/// `460` and an unsupported version with `Tus-Version`; both protocols'
/// answers carry their version field, and a `409` the offset the server
/// holds.
pub fn problem(protocol: Option<Protocol>, p: Problem) -> Response<Body> {
    let code = p.error_code();
    let expected = p.expected_offset();
    let mut p = p;
    if code == ErrorCode::ChecksumMismatch && protocol == Some(Protocol::Tus) {
        p.status = 460;
    }
    let mut resp = p.into_response();
    let h = resp.headers_mut();
    match protocol {
        Some(pr) => decorate(pr, h),
        None => set(h, "tus-resumable", TUS_VERSION),
    }
    if code == ErrorCode::UnsupportedTusVersion {
        set(h, "tus-version", TUS_VERSION);
    }
    if let Some(offset) = expected {
        set(h, "upload-offset", offset.to_string());
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn the_protocol_is_named_by_the_request() {
        assert_eq!(
            protocol_of(&headers(&[("tus-resumable", "1.0.0")])).unwrap(),
            Protocol::Tus
        );
        assert_eq!(
            protocol_of(&headers(&[("upload-complete", "?1")])).unwrap(),
            Protocol::Draft
        );
        let p = protocol_of(&headers(&[("tus-resumable", "0.2.2")])).unwrap_err();
        assert_eq!(p.status, 412);
        let resp = problem(None, p);
        assert_eq!(resp.headers()["tus-version"], "1.0.0");
        assert_eq!(protocol_of(&HeaderMap::new()).unwrap_err().status, 412);
    }

    #[test]
    fn lengths_are_plain_non_negative_integers() {
        let ok = headers(&[("upload-length", "1048576")]);
        assert_eq!(number(&ok, "upload-length").unwrap(), Some(1_048_576));
        for bad in [
            "-1",
            "1e6",
            "",
            " ",
            "0x10",
            "99999999999999999999",
            "1.0",
            "+5",
        ] {
            let h = headers(&[("upload-length", Box::leak(bad.to_owned().into_boxed_str()))]);
            assert!(number(&h, "upload-length").is_err(), "{bad:?} accepted");
        }
        assert_eq!(number(&HeaderMap::new(), "upload-length").unwrap(), None);
    }

    #[test]
    fn metadata_round_trips_and_refuses_malformed_pairs() {
        let pairs = parse_metadata("filename d29ybGRfZG9taW5hdGlvbl9wbGFuLnBkZg==,is_confidential")
            .unwrap();
        assert_eq!(
            metadata_value(&pairs, &["filename"]),
            Some("world_domination_plan.pdf")
        );
        assert_eq!(pairs[1], ("is_confidential".to_owned(), None));
        assert_eq!(
            format_metadata(&pairs),
            "filename d29ybGRfZG9taW5hdGlvbl9wbGFuLnBkZg==,is_confidential"
        );
        for bad in ["a !!!", "a YQ== b", "a YQ==,a Yg==", ",a", "a\u{7f} YQ=="] {
            assert!(parse_metadata(bad).is_err(), "{bad:?} accepted");
        }
        assert!(parse_metadata(&"k YQ==,".repeat(1000)).is_err());
        assert!(parse_metadata("").unwrap().is_empty());
    }

    #[test]
    fn chunk_checksums_are_read_and_computed() {
        let h = headers(&[("upload-checksum", "sha1 Kq5sNclPz7QV2+lfQIuc6R7oRu0=")]);
        let (alg, want) = upload_checksum(&h).unwrap().unwrap();
        let mut hasher = ChunkHasher::new(alg);
        hasher.update(b"hello ");
        hasher.update(b"world");
        assert_eq!(hasher.finish(), want);
        let crc = headers(&[("upload-checksum", "crc32c yZRlqg==")]);
        let (alg, want) = upload_checksum(&crc).unwrap().unwrap();
        let mut hasher = ChunkHasher::new(alg);
        hasher.update(b"hello world");
        assert_eq!(hasher.finish(), want);
        for bad in ["md5 AAAA", "sha1", "sha1 !!", "sha256 AAAA"] {
            let h = headers(&[(
                "upload-checksum",
                Box::leak(bad.to_owned().into_boxed_str()),
            )]);
            assert_eq!(upload_checksum(&h).unwrap_err().status, 400, "{bad}");
        }
    }

    #[test]
    fn upload_complete_is_a_structured_boolean() {
        assert_eq!(
            upload_complete(&headers(&[("upload-complete", "?1")])).unwrap(),
            Some(true)
        );
        assert_eq!(
            upload_complete(&headers(&[("upload-complete", "?0")])).unwrap(),
            Some(false)
        );
        assert!(upload_complete(&headers(&[("upload-complete", "true")])).is_err());
    }

    #[test]
    fn a_tus_checksum_mismatch_is_460_with_the_version() {
        let resp = problem(
            Some(Protocol::Tus),
            Problem::new(ErrorCode::ChecksumMismatch, "no"),
        );
        assert_eq!(resp.status().as_u16(), 460);
        assert_eq!(resp.headers()["tus-resumable"], "1.0.0");
        let resp = problem(Some(Protocol::Draft), Problem::offset_mismatch(5, 7));
        assert_eq!(resp.status(), StatusCode::CONFLICT);
        assert_eq!(resp.headers()["upload-offset"], "5");
    }
}
