//! Small pieces every handler uses: JSON bodies in and out, and paging
//! parameters.

use ferry_common::body::{Body, full};
use ferry_common::problem::{ErrorCode, Problem};
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::BodyExt as _;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::routes::query_pairs;

/// How much of an over-long JSON body is read and dropped before answering
/// 413, so ordinary clients can read the answer.
const DRAIN_LIMIT: usize = 4 * 1024 * 1024;

/// Reads a JSON body of at most `limit` bytes.
pub async fn read_json<T: DeserializeOwned>(
    req: Request<Body>,
    limit: usize,
) -> Result<T, Problem> {
    if let Some(ct) = req.headers().get(header::CONTENT_TYPE) {
        let ct = ct.to_str().unwrap_or_default();
        let essence = ct.split(';').next().unwrap_or_default().trim();
        if !essence.eq_ignore_ascii_case("application/json") {
            return Err(Problem::new(
                ErrorCode::UnsupportedMediaType,
                format!("send 'Content-Type: application/json', not '{ct}'"),
            ));
        }
    }
    let too_large = || {
        Problem::new(
            ErrorCode::BodyTooLarge,
            format!("JSON bodies are limited to {limit} bytes"),
        )
    };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|len| len > DRAIN_LIMIT.max(limit) as u64) {
        // Too large to be worth reading: answer now and let the connection close.
        return Err(too_large());
    }
    let mut body = req.into_body();
    let mut bytes = Vec::new();
    let mut seen = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| {
            Problem::new(
                ErrorCode::UploadIncomplete,
                "the request body could not be read",
            )
        })?;
        if let Ok(data) = frame.into_data() {
            seen += data.len();
            if seen > limit {
                // Read (and drop) a little more, so a client still sending
                // sees the 413 rather than a broken connection.
                if seen > DRAIN_LIMIT.max(limit) {
                    return Err(too_large());
                }
                continue;
            }
            bytes.extend_from_slice(&data);
        }
    }
    if seen > limit {
        return Err(too_large());
    }
    let invalid = |e: serde_json::Error| Problem::new(ErrorCode::InvalidJson, e.to_string());
    // Every body is an object: serde would also read a struct from an
    // array of its members in order, which no client means.
    let value: serde_json::Value = serde_json::from_slice(&bytes).map_err(invalid)?;
    if !value.is_object() {
        return Err(Problem::new(
            ErrorCode::InvalidJson,
            "the body must be a JSON object",
        ));
    }
    serde_json::from_value(value).map_err(invalid)
}

/// A JSON response.
pub fn json<T: Serialize>(status: StatusCode, value: &T) -> Response<Body> {
    let body = serde_json::to_vec(value).expect("API responses serialise");
    let mut resp = Response::new(full(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// A response with no body.
pub fn no_content() -> Response<Body> {
    let mut resp = Response::new(ferry_common::body::empty());
    *resp.status_mut() = StatusCode::NO_CONTENT;
    resp
}

/// The `limit` and `cursor` query parameters of a paged listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paging {
    /// Entries per page.
    pub limit: usize,
    /// Where the previous page ended.
    pub cursor: Option<String>,
}

/// Reads `limit` (1..=max, default `default`) and `cursor`; any other
/// parameter is an error, so typos are not silently ignored.
pub fn paging(req: &Request<Body>, default: usize, max: usize) -> Result<Paging, Problem> {
    paging_with(req, default, max, &[]).map(|(p, _)| p)
}

/// [`paging`], also taking the parameters named in `extra` (each once),
/// returned with their values.
pub fn paging_with(
    req: &Request<Body>,
    default: usize,
    max: usize,
    extra: &[&str],
) -> Result<(Paging, Vec<(String, String)>), Problem> {
    let mut taken = Vec::new();
    let pairs = query_pairs(req.uri().query()).map_err(|_| {
        Problem::new(
            ErrorCode::InvalidQuery,
            "the query is not valid percent-encoded UTF-8",
        )
    })?;
    let mut paging = Paging {
        limit: default,
        cursor: None,
    };
    for (k, v) in pairs {
        match k.as_str() {
            "limit" => {
                paging.limit = v
                    .parse()
                    .ok()
                    .filter(|n| (1..=max).contains(n))
                    .ok_or_else(|| {
                        Problem::new(
                            ErrorCode::InvalidQuery,
                            format!("'limit' must be a whole number from 1 to {max}"),
                        )
                    })?;
            }
            "cursor" if !v.is_empty() => paging.cursor = Some(v),
            "cursor" => {}
            other if extra.contains(&other) => {
                if taken.iter().any(|(k, _): &(String, String)| k == other) {
                    return Err(Problem::new(
                        ErrorCode::InvalidQuery,
                        format!("'{other}' is given twice"),
                    ));
                }
                taken.push((k.clone(), v));
            }
            other => {
                return Err(Problem::new(
                    ErrorCode::InvalidQuery,
                    format!("unknown query parameter '{other}'"),
                ));
            }
        }
    }
    Ok((paging, taken))
}

/// A whole, non-negative number of seconds in a request body's member
/// `field`, written as an integer or with a zero fraction (`900.0` is the
/// integer 900 in JSON Schema, so clients generated from the spec may send
/// it); beyond `u64` it saturates. Present, it must be a number: `null` is
/// not one.
pub(super) fn whole_seconds<'de, D: serde::Deserializer<'de>>(
    d: D,
    field: &str,
) -> Result<Option<u64>, D::Error> {
    use serde::Deserialize as _;
    use serde::de::Error as _;
    let n = serde_json::Number::deserialize(d)?;
    if let Some(whole) = n.as_u64() {
        return Ok(Some(whole));
    }
    match n.as_f64() {
        Some(f) if f >= 0.0 && f.fract() == 0.0 => Ok(Some(f as u64)),
        _ => Err(D::Error::custom(format!(
            "'{field}' must be a whole number of seconds from 0, not {n}"
        ))),
    }
}
