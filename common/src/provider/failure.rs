//! Provider failures as API problems: the error code of an OpenDAL error
//! (helped by the provider's HTTP answer when ferry saw it), and a problem
//! that names the provider, says what failed in a short, fixed sentence per
//! code and carries the provider's request id. Nothing else of the
//! provider's answer (its status line, headers or body, which OpenDAL's
//! error text carries) reaches a client: it is logged for the operator,
//! with credentials masked out ([`scrub`]).

use super::answer::{self, FailedAnswer};
use super::egress::REFUSED_MESSAGE;
use crate::problem::{ErrorCode, Problem};

/// `Retry-After` in seconds when the provider is rate limited or
/// unavailable and did not say how long to wait (or ferry did not see its
/// answer).
pub const FALLBACK_RETRY_AFTER_SECS: u64 = 1;

/// Maps a failure of `provider` (`s3`, `fs`, …, as the caller's operator
/// names it) to a problem, with the provider's answer noted in the current
/// [`answer::observed`] scope. The provider's own message is logged, not
/// returned. Rate limits and temporary failures carry `Retry-After`: the
/// provider's own when it sent one, else [`FALLBACK_RETRY_AFTER_SECS`].
pub fn problem(err: &opendal::Error, provider: &str, what: &str) -> Problem {
    problem_with(err, answer::last_failed().as_ref(), provider, what)
}

/// The problem of a provider that failed the check made before a new
/// connection is saved: a bucket or folder not found and a configuration
/// the provider (or the endpoint policy) refuses are the configuration's
/// fault; the rest maps as any failure.
pub(super) fn check_problem(
    err: &opendal::Error,
    answer: Option<&FailedAnswer>,
    provider: &str,
) -> Problem {
    match err.kind() {
        opendal::ErrorKind::NotFound | opendal::ErrorKind::ConfigInvalid => {
            log_failure(err, answer, provider, "check");
            let why = if err.kind() == opendal::ErrorKind::NotFound {
                "the bucket, container or folder does not exist"
            } else if err.message() == REFUSED_MESSAGE {
                REFUSED_MESSAGE
            } else {
                "the provider refused the configuration"
            };
            Problem::new(
                ErrorCode::InvalidProviderConfig,
                format!("{provider}: check: {why}"),
            )
            .with_provider_request_id(answer.and_then(|a| a.request_id.clone()))
        }
        _ => problem_with(err, answer, provider, "check"),
    }
}

/// Logs a provider's failure for the operator: OpenDAL's whole error (the
/// provider's answer with it), credentials masked.
fn log_failure(err: &opendal::Error, answer: Option<&FailedAnswer>, provider: &str, what: &str) {
    tracing::warn!(
        error = %scrub(&err.to_string()),
        operation = what,
        provider,
        provider.status = answer.map(|a| a.status),
        provider.request_id = answer.and_then(|a| a.request_id.as_deref()),
        "provider operation failed"
    );
}

/// What a problem with `code` says of a provider's failure: short, fixed,
/// and safe to show whatever the provider answered.
fn description(code: ErrorCode, err: &opendal::Error) -> &'static str {
    match code {
        ErrorCode::NotFound => "no such file or folder",
        ErrorCode::ProviderRejected => {
            "the provider refused the operation (credentials, permissions or quota)"
        }
        ErrorCode::ProviderRateLimited => "the provider asks to slow down",
        ErrorCode::ProviderUnavailable => "the provider could not be reached or is unavailable",
        ErrorCode::ProviderTimeout => "the provider did not answer in time",
        ErrorCode::ProviderUnsupported => "the provider does not support this operation",
        ErrorCode::ProviderFailed => "the provider failed the operation",
        ErrorCode::InvalidProviderConfig if err.message() == REFUSED_MESSAGE => REFUSED_MESSAGE,
        other => other.title(),
    }
}

/// [`problem`] for a failure whose answer from the provider is `answer`.
fn problem_with(
    err: &opendal::Error,
    answer: Option<&FailedAnswer>,
    provider: &str,
    what: &str,
) -> Problem {
    let code = error_code(err, answer);
    if matches!(
        code,
        ErrorCode::ProviderUnavailable
            | ErrorCode::ProviderRejected
            | ErrorCode::ProviderFailed
            | ErrorCode::ProviderTimeout
            | ErrorCode::ProviderRateLimited
            | ErrorCode::InvalidProviderConfig
    ) {
        log_failure(err, answer, provider, what);
    }
    let detail = format!("{provider}: {what}: {}", description(code, err));
    let p = Problem::new(code, detail)
        .with_provider_request_id(answer.and_then(|a| a.request_id.clone()));
    match code {
        ErrorCode::ProviderRateLimited | ErrorCode::ProviderUnavailable => p.with_retry_after(
            answer
                .and_then(|a| a.retry_after_secs)
                .unwrap_or(FALLBACK_RETRY_AFTER_SECS),
        ),
        _ => p,
    }
}

/// The API error code for a provider error, given the provider's answer
/// when ferry saw it.
pub fn error_code(err: &opendal::Error, answer: Option<&FailedAnswer>) -> ErrorCode {
    use opendal::ErrorKind as K;
    let status = answer.map(|a| a.status);
    match err.kind() {
        K::NotFound => ErrorCode::NotFound,
        K::IsADirectory => ErrorCode::NotAFile,
        K::NotADirectory => ErrorCode::NotAFolder,
        K::AlreadyExists | K::IsSameFile => ErrorCode::AlreadyExists,
        K::ConditionNotMatch => ErrorCode::PreconditionFailed,
        K::RangeNotSatisfied => ErrorCode::RangeNotSatisfiable,
        K::Conflict => ErrorCode::AlreadyExists,
        K::Unsupported => ErrorCode::ProviderUnsupported,
        K::ConfigInvalid => ErrorCode::InvalidProviderConfig,
        K::PermissionDenied => ErrorCode::ProviderRejected,
        K::RateLimited => ErrorCode::ProviderRateLimited,
        // Some services leave HTTP statuses unclassified; the provider's
        // answer still says what happened.
        K::Unexpected if matches!(status, Some(401 | 403)) => ErrorCode::ProviderRejected,
        K::Unexpected if status == Some(429) => ErrorCode::ProviderRateLimited,
        K::Unexpected if status == Some(504) => ErrorCode::ProviderTimeout,
        // OpenDAL's timeout layer: "operation timeout reached", "io
        // operation timeout reached".
        _ if err.message().ends_with("timeout reached") => ErrorCode::ProviderTimeout,
        _ if err.is_temporary() || err.is_persistent() => {
            // Temporary, or temporary until the retries ran out.
            ErrorCode::ProviderUnavailable
        }
        _ => ErrorCode::ProviderFailed,
    }
}

/// Masks what a provider's error text may carry of a credential: URL
/// signatures and tokens in query strings (`sig=…`, an Azure SAS;
/// `X-Amz-Signature=…`, `X-Amz-Credential=…`, `X-Amz-Security-Token=…`).
pub fn scrub(text: &str) -> String {
    const KEYS: [&str; 5] = [
        "sig=",
        "x-amz-signature=",
        "x-amz-credential=",
        "x-amz-security-token=",
        "token=",
    ];
    let lower = text.to_ascii_lowercase();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < text.len() {
        let hit = KEYS.iter().find(|k| {
            lower[i..].starts_with(*k)
                && (i == 0 || matches!(lower.as_bytes()[i - 1], b'?' | b'&' | b' ' | b'-'))
        });
        match hit {
            Some(k) => {
                out.push_str(&text[i..i + k.len()]);
                out.push_str("****");
                i += k.len();
                while i < text.len()
                    && !matches!(
                        text.as_bytes()[i],
                        b'&' | b' ' | b',' | b'"' | b'\'' | b'}' | b'\n'
                    )
                {
                    i += 1;
                }
            }
            None => {
                let ch = text[i..].chars().next().expect("inside the text");
                out.push(ch);
                i += ch.len_utf8();
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::answer::{ObservingTransport, observed};
    use opendal::{Buffer, HttpBody, HttpTransport};

    /// A provider answering every request `status` with `Retry-After`.
    #[derive(Debug)]
    struct Busy(u16, &'static str);

    impl HttpTransport for Busy {
        async fn fetch(
            &self,
            _req: http::Request<Buffer>,
        ) -> opendal::Result<http::Response<HttpBody>> {
            let body = HttpBody::new(futures_util::stream::empty(), Some(0));
            Ok(http::Response::builder()
                .status(self.0)
                .header("retry-after", self.1)
                .body(body)
                .expect("a valid response"))
        }
    }

    /// What a provider operation fails with after `transport` answered it.
    async fn answered_by(transport: Busy, err: opendal::Error, what: &str) -> Problem {
        observed(async {
            let req = http::Request::put("http://provider.invalid/b/k")
                .body(Buffer::new())
                .unwrap();
            ObservingTransport(transport).fetch(req).await.unwrap();
            problem(&err, "s3", what)
        })
        .await
    }

    #[tokio::test]
    async fn provider_errors_name_the_provider_and_carry_retry_after() {
        let slow = opendal::Error::new(opendal::ErrorKind::RateLimited, "SlowDown").set_temporary();
        let p = answered_by(Busy(429, "7"), slow, "write").await;
        assert_eq!(
            (p.status, p.code, p.retry_after),
            (429, "provider_rate_limited", Some(7))
        );
        assert!(p.detail.unwrap().starts_with("s3: write"));
        // An unclassified error takes its code from the answer's status.
        let odd = || opendal::Error::new(opendal::ErrorKind::Unexpected, "unexpected");
        let p = answered_by(Busy(429, "12"), odd(), "read").await;
        assert_eq!((p.status, p.retry_after), (429, Some(12)));
        let p = answered_by(Busy(403, "1"), odd(), "read").await;
        assert_eq!((p.status, p.code), (403, "provider_rejected"));
        let p = answered_by(Busy(504, "1"), odd(), "read").await;
        assert_eq!(p.status, 504);
        let busy = opendal::Error::new(opendal::ErrorKind::Unexpected, "503").set_persistent();
        let p = answered_by(Busy(503, "30"), busy, "read").await;
        assert_eq!((p.status, p.retry_after), (503, Some(30)));
    }

    #[test]
    fn without_an_answer_the_error_kind_decides_and_retry_after_falls_back() {
        let busy = opendal::Error::new(opendal::ErrorKind::Unexpected, "503").set_persistent();
        let p = problem(&busy, "azblob", "read");
        assert_eq!(
            (p.status, p.retry_after),
            (503, Some(FALLBACK_RETRY_AFTER_SECS))
        );
        assert!(p.detail.unwrap().starts_with("azblob: read"));
        let late = opendal::Error::new(
            opendal::ErrorKind::Unexpected,
            "io operation timeout reached",
        )
        .set_persistent();
        assert_eq!(problem(&late, "s3", "read").status, 504);
        let odd = opendal::Error::new(opendal::ErrorKind::Unexpected, "a teapot");
        assert_eq!(problem(&odd, "s3", "stat").status, 502);
        let denied = opendal::Error::new(opendal::ErrorKind::PermissionDenied, "AccessDenied");
        assert_eq!(problem(&denied, "s3", "stat").status, 403);
        let gone = opendal::Error::new(opendal::ErrorKind::NotFound, "NoSuchKey");
        let p = problem(&gone, "fs", "stat");
        assert_eq!(
            (p.status, p.detail.as_deref()),
            (404, Some("fs: stat: no such file or folder"))
        );
    }

    #[test]
    fn credentials_in_error_texts_are_masked() {
        let text = "uri: https://a.blob.core.windows.net/c/x?sv=2021&sig=SECRET%2Fabc&se=1, \
                    other: https://s3/x?X-Amz-Credential=AKIA/1&X-Amz-Signature=deadbeef done";
        let clean = scrub(text);
        assert!(
            !clean.contains("SECRET") && !clean.contains("deadbeef") && !clean.contains("AKIA"),
            "{clean}"
        );
        assert!(
            clean.contains("sig=****&se=1") && clean.ends_with(" done"),
            "{clean}"
        );
        assert_eq!(scrub("design=ok ünï"), "design=ok ünï");
    }
}
