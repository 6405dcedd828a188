//! Conditional requests (RFC 9110 §13) and single byte ranges (§14).
//!
//! Pure functions of header values and the current entity tag, so every rule
//! is unit-tested here and the handlers only act on the verdict.

use http::{HeaderMap, Method, header};

/// The verdict of a request's preconditions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Go on with the request.
    Proceed,
    /// Answer 412 Precondition Failed.
    Failed,
    /// Answer 304 Not Modified (GET and HEAD only).
    NotModified,
}

fn tags(value: &str) -> impl Iterator<Item = &str> {
    value.split(',').map(str::trim).filter(|t| !t.is_empty())
}

fn strong_eq(a: &str, b: &str) -> bool {
    !a.starts_with("W/") && !b.starts_with("W/") && a == b
}

fn weak_eq(a: &str, b: &str) -> bool {
    a.trim_start_matches("W/") == b.trim_start_matches("W/")
}

/// Whether the request has an `If-Match` or `If-None-Match` condition.
pub fn any(headers: &HeaderMap) -> bool {
    headers.contains_key(http::header::IF_MATCH)
        || headers.contains_key(http::header::IF_NONE_MATCH)
}

/// Evaluates `If-Match` and `If-None-Match` against the current entity tag
/// (`None` when nothing exists at the path).
pub fn evaluate(headers: &HeaderMap, method: &Method, current: Option<&str>) -> Verdict {
    let get = |name| {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect::<Vec<_>>()
            .join(",")
    };
    if headers.contains_key(header::IF_MATCH) {
        let value = get(header::IF_MATCH);
        let ok = match current {
            None => false,
            Some(cur) => tags(&value).any(|t| t == "*" || strong_eq(t, cur)),
        };
        if !ok {
            return Verdict::Failed;
        }
    }
    if headers.contains_key(header::IF_NONE_MATCH) {
        let value = get(header::IF_NONE_MATCH);
        let matched = match current {
            None => false,
            Some(cur) => tags(&value).any(|t| t == "*" || weak_eq(t, cur)),
        };
        if matched {
            return if *method == Method::GET || *method == Method::HEAD {
                Verdict::NotModified
            } else {
                Verdict::Failed
            };
        }
    }
    Verdict::Proceed
}

/// What part of an object to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeRequest {
    /// The whole object (no `Range`, one ferry ignores, or a failed `If-Range`).
    Full,
    /// Bytes `start..=end`.
    Partial {
        /// First byte.
        start: u64,
        /// Last byte, inclusive.
        end: u64,
    },
    /// A range outside the object: 416.
    Unsatisfiable,
}

/// Reads a single `Range: bytes=…` against an object of `len` bytes.
/// Several ranges and other units are ignored (the whole object is sent),
/// as RFC 9110 allows.
pub fn range(headers: &HeaderMap, len: u64, etag: &str) -> RangeRequest {
    let Some(value) = headers.get(header::RANGE).and_then(|v| v.to_str().ok()) else {
        return RangeRequest::Full;
    };
    if let Some(if_range) = headers.get(header::IF_RANGE) {
        // Only entity tags are honoured; a date (or a mismatch) means "send it all".
        if !if_range.to_str().is_ok_and(|t| strong_eq(t.trim(), etag)) {
            return RangeRequest::Full;
        }
    }
    let Some(spec) = value.trim().strip_prefix("bytes=") else {
        return RangeRequest::Full;
    };
    if spec.contains(',') {
        return RangeRequest::Full;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return RangeRequest::Full;
    };
    let parse = |s: &str| s.trim().parse::<u64>().ok();
    match (first.trim().is_empty(), last.trim().is_empty()) {
        // bytes=-N: the last N bytes.
        (true, false) => match parse(last) {
            Some(0) => RangeRequest::Unsatisfiable,
            Some(_) if len == 0 => RangeRequest::Unsatisfiable,
            Some(n) => RangeRequest::Partial {
                start: len.saturating_sub(n),
                end: len - 1,
            },
            None => RangeRequest::Full,
        },
        // bytes=A-: from A to the end.
        (false, true) => match parse(first) {
            Some(a) if a < len => RangeRequest::Partial {
                start: a,
                end: len - 1,
            },
            Some(_) => RangeRequest::Unsatisfiable,
            None => RangeRequest::Full,
        },
        // bytes=A-B.
        (false, false) => match (parse(first), parse(last)) {
            (Some(a), Some(b)) if a <= b => {
                if a < len {
                    RangeRequest::Partial {
                        start: a,
                        end: b.min(len - 1),
                    }
                } else {
                    RangeRequest::Unsatisfiable
                }
            }
            _ => RangeRequest::Full,
        },
        (true, true) => RangeRequest::Full,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(k.clone(), HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn if_match_needs_a_strong_match_or_a_star_on_something() {
        let h = headers(&[(header::IF_MATCH, "\"a\", \"b\"")]);
        assert_eq!(evaluate(&h, &Method::PUT, Some("\"b\"")), Verdict::Proceed);
        assert_eq!(evaluate(&h, &Method::PUT, Some("\"c\"")), Verdict::Failed);
        assert_eq!(evaluate(&h, &Method::PUT, None), Verdict::Failed);
        let star = headers(&[(header::IF_MATCH, "*")]);
        assert_eq!(evaluate(&star, &Method::PUT, None), Verdict::Failed);
        assert_eq!(
            evaluate(&star, &Method::PUT, Some("\"x\"")),
            Verdict::Proceed
        );
        let weak = headers(&[(header::IF_MATCH, "W/\"b\"")]);
        assert_eq!(
            evaluate(&weak, &Method::PUT, Some("\"b\"")),
            Verdict::Failed
        );
    }

    #[test]
    fn if_none_match_gives_304_to_reads_and_412_to_writes() {
        let h = headers(&[(header::IF_NONE_MATCH, "W/\"a\"")]);
        assert_eq!(
            evaluate(&h, &Method::GET, Some("\"a\"")),
            Verdict::NotModified
        );
        assert_eq!(
            evaluate(&h, &Method::HEAD, Some("\"a\"")),
            Verdict::NotModified
        );
        assert_eq!(evaluate(&h, &Method::GET, Some("\"b\"")), Verdict::Proceed);
        let star = headers(&[(header::IF_NONE_MATCH, "*")]);
        assert_eq!(
            evaluate(&star, &Method::PUT, Some("\"a\"")),
            Verdict::Failed
        );
        assert_eq!(evaluate(&star, &Method::PUT, None), Verdict::Proceed);
    }

    #[test]
    fn single_ranges() {
        let r = |v: &str, len| range(&headers(&[(header::RANGE, v)]), len, "\"e\"");
        assert_eq!(
            r("bytes=0-9", 100),
            RangeRequest::Partial { start: 0, end: 9 }
        );
        assert_eq!(
            r("bytes=90-200", 100),
            RangeRequest::Partial { start: 90, end: 99 }
        );
        assert_eq!(
            r("bytes=95-", 100),
            RangeRequest::Partial { start: 95, end: 99 }
        );
        assert_eq!(
            r("bytes=-10", 100),
            RangeRequest::Partial { start: 90, end: 99 }
        );
        assert_eq!(
            r("bytes=-200", 100),
            RangeRequest::Partial { start: 0, end: 99 }
        );
        assert_eq!(r("bytes=100-", 100), RangeRequest::Unsatisfiable);
        assert_eq!(r("bytes=100-101", 100), RangeRequest::Unsatisfiable);
        assert_eq!(r("bytes=-0", 100), RangeRequest::Unsatisfiable);
        assert_eq!(r("bytes=0-0", 0), RangeRequest::Unsatisfiable);
        assert_eq!(r("bytes=-5", 0), RangeRequest::Unsatisfiable);
        assert_eq!(r("bytes=5-1", 100), RangeRequest::Full);
        assert_eq!(r("bytes=0-1,5-6", 100), RangeRequest::Full);
        assert_eq!(r("items=0-1", 100), RangeRequest::Full);
        assert_eq!(r("bytes=x-1", 100), RangeRequest::Full);
    }

    #[test]
    fn if_range_with_another_tag_sends_everything() {
        let h = headers(&[(header::RANGE, "bytes=0-1"), (header::IF_RANGE, "\"old\"")]);
        assert_eq!(range(&h, 10, "\"new\""), RangeRequest::Full);
        let h = headers(&[(header::RANGE, "bytes=0-1"), (header::IF_RANGE, "\"new\"")]);
        assert_eq!(
            range(&h, 10, "\"new\""),
            RangeRequest::Partial { start: 0, end: 1 }
        );
    }
}
