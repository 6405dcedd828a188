//! Feeds arbitrary request header fields and paths to every parser of
//! what a client sends: routes and queries, object paths, conditional and
//! range fields, digests and checksums, the tus and resumable-upload
//! fields, and the S3 door's checksum and metadata fields. None may panic;
//! a range it grants lies inside the object.
//!
//! The input is lines: the first is a request path (with its query), each
//! other `name: value`.
#![no_main]

use ferry_common::content::conditional::{self, RangeRequest};
use ferry_common::uploads::protocol;
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut lines = data.split(|b| *b == b'\n');
    let target = String::from_utf8_lossy(lines.next().unwrap_or_default()).into_owned();
    let mut headers = HeaderMap::new();
    for line in lines {
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(&line[..colon]),
            HeaderValue::from_bytes(line[colon + 1..].trim_ascii()),
        ) else {
            continue;
        };
        headers.append(name, value);
    }

    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let _ = ferry_hub::api::routes::Route::parse(path);
    let _ = ferry_hub::api::routes::query_pairs(Some(query));
    let _ = ferry_common::path::ObjectPath::parse(path);
    let _ = ferry_common::path::ObjectPath::parse_dir(path);

    for method in [Method::GET, Method::HEAD, Method::PUT, Method::POST] {
        let _ = conditional::evaluate(&headers, &method, Some("\"9035ffaa82b12e7b-d\""));
        let _ = conditional::evaluate(&headers, &method, None);
    }
    for len in [0u64, 1, 13, 1 << 40] {
        if let RangeRequest::Partial { start, end } = conditional::range(&headers, len, "\"e\"") {
            assert!(start <= end && end < len, "{start}-{end} outside {len}");
        }
    }
    for value in headers.values() {
        let Ok(text) = value.to_str() else { continue };
        let _ = ferry_common::checksum::parse_repr_digest(text);
        let _ = ferry_common::checksum::parse_want_digest(text);
        let _ = ferry_common::checksum::decode_crc64(text);
        let _ = protocol::parse_metadata(text);
    }
    let _ = protocol::protocol_of(&headers);
    let _ = protocol::number(&headers, "upload-offset");
    let _ = protocol::number(&headers, "upload-length");
    let _ = protocol::upload_complete(&headers);
    let _ = protocol::defer_length(&headers);
    let _ = protocol::upload_concat(&headers);
    let _ = protocol::upload_checksum(&headers);
    let _ = ferry_common::s3_door::BodyChecks::of(&headers, None);
    let _ = ferry_common::s3_door::kept_headers(&headers);
});
