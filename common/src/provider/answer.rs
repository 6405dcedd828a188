//! What ferry saw of a provider's HTTP answers, for the operation that
//! failed.
//!
//! OpenDAL keeps the provider's answer (its status, `Retry-After`, the
//! provider's request id) only inside its error's text, which has no getter
//! for it. ferry installs OpenDAL's HTTP transport itself, so it wraps that
//! transport ([`ObservingTransport`]) and notes each answer where it
//! arrives, in a scope that ferry's content and listing code sets around a
//! provider operation ([`observed`]). The scope is a tokio task-local:
//! OpenDAL's requests run in the task that awaits the operation, and the
//! work OpenDAL spawns (the parts of a multipart upload) goes through
//! [`ScopedExecutor`], which carries the scope into the spawned task.
//!
//! What it does not cover, and what happens then:
//! - a provider call made outside any [`observed`] scope (work OpenDAL or
//!   ferry spawns some other way, a download body's later reads, which
//!   already stream to the client): nothing is noted, and a problem gets
//!   the fallback — no status beyond OpenDAL's error kind, `Retry-After: 1`
//!   for rate limits and temporary failures;
//! - requests running at once in one scope (an upload's parts): the latest
//!   answer wins, which may belong to another part than the one whose error
//!   is reported. A success clears what an earlier failure noted, so a
//!   failure retried successfully does not colour a later error.

use std::future::Future;
use std::sync::{Arc, Mutex};

use http::{HeaderMap, Request, Response, StatusCode};
use opendal::raw::BoxedStaticFuture;
use opendal::{Buffer, HttpBody, HttpTransport};

/// The headers in which providers name a request for their support:
/// S3 (and most S3-compatibles), Azure, Google Cloud Storage.
const REQUEST_ID_HEADERS: [&str; 3] = [
    "x-amz-request-id",
    "x-ms-request-id",
    "x-guploader-uploadid",
];

/// The longest `Retry-After` passed on to clients, in seconds.
const RETRY_AFTER_MAX_SECS: u64 = 3600;

/// A provider's answer to a request that did not succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedAnswer {
    /// The HTTP status (4xx or 5xx).
    pub status: u16,
    /// The provider's `Retry-After` in seconds (from 1 to an hour), when it
    /// gave one as a number of seconds; an HTTP date is not read.
    pub retry_after_secs: Option<u64>,
    /// The provider's id for the request, when it sent one
    /// (`x-amz-request-id`, `x-ms-request-id`, `x-guploader-uploadid`):
    /// what an operator quotes to the provider's support.
    pub request_id: Option<String>,
}

impl FailedAnswer {
    /// The failed answer in `status` and `headers`; `None` for a success
    /// (or a redirect, which the HTTP client follows).
    pub fn of(status: StatusCode, headers: &HeaderMap) -> Option<FailedAnswer> {
        if !(status.is_client_error() || status.is_server_error()) {
            return None;
        }
        let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        Some(FailedAnswer {
            status: status.as_u16(),
            retry_after_secs: text("retry-after")
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(|s| s.clamp(1, RETRY_AFTER_MAX_SECS)),
            request_id: REQUEST_ID_HEADERS
                .iter()
                .find_map(|name| text(name))
                .filter(|id| plausible_request_id(id))
                .map(str::to_owned),
        })
    }
}

/// Whether a provider's request id can be shown to a client: 1 to 200 of
/// the characters providers use in them (letters, digits, `+/=._:-`).
fn plausible_request_id(id: &str) -> bool {
    (1..=200).contains(&id.len())
        && id
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"+/=._:-".contains(&c))
}

/// The latest answer noted in one scope, if it failed.
#[derive(Debug, Clone, Default)]
struct Notes(Arc<Mutex<Option<FailedAnswer>>>);

tokio::task_local! {
    static NOTES: Notes;
}

/// Runs `operation` (one provider operation, or a request's several) with
/// the provider's answers noted, so that [`last_failed`] inside it tells
/// what the provider answered. The operation is boxed: it is typically a
/// whole request's handler, and the futures awaiting it stay small.
pub fn observed<F: Future>(operation: F) -> impl Future<Output = F::Output> {
    NOTES.scope(Notes::default(), Box::pin(operation))
}

/// The provider's latest answer in the current [`observed`] scope, when it
/// was a failure; `None` outside a scope or when the latest succeeded.
pub fn last_failed() -> Option<FailedAnswer> {
    NOTES
        .try_with(|notes| notes.0.lock().expect("never poisoned").clone())
        .ok()
        .flatten()
}

/// Notes an answer in the current scope, if there is one.
pub(crate) fn note(answer: Option<FailedAnswer>) {
    let _ = NOTES.try_with(|notes| *notes.0.lock().expect("never poisoned") = answer);
}

/// Spawns `work` in the scope of the operation that spawns it, as
/// [`ScopedExecutor`] does OpenDAL's background work: a provider answer it
/// notes is the operation's.
pub fn spawn_observed<F>(work: F) -> tokio::task::JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    match NOTES.try_with(Notes::clone) {
        Ok(notes) => tokio::spawn(NOTES.scope(notes, work)),
        Err(_) => tokio::spawn(work),
    }
}

/// An HTTP transport that notes each answer of the transport it wraps in
/// the caller's [`observed`] scope.
#[derive(Debug)]
pub struct ObservingTransport<T>(pub T);

impl<T: HttpTransport> HttpTransport for ObservingTransport<T> {
    async fn fetch(&self, req: Request<Buffer>) -> opendal::Result<Response<HttpBody>> {
        let resp = self.0.fetch(req).await?;
        note(FailedAnswer::of(resp.status(), resp.headers()));
        Ok(resp)
    }
}

/// OpenDAL's executor for work it runs in the background (the parts of a
/// multipart upload): spawned on tokio, as OpenDAL's own executor does,
/// inside the [`observed`] scope of the task that started it.
#[derive(Debug, Clone, Copy, Default)]
pub struct ScopedExecutor;

impl opendal::Execute for ScopedExecutor {
    fn execute(&self, work: BoxedStaticFuture<()>) {
        match NOTES.try_with(Notes::clone) {
            Ok(notes) => drop(tokio::spawn(NOTES.scope(notes, work))),
            Err(_) => drop(tokio::spawn(work)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opendal::Execute as _;

    /// A provider that answers every request with `status` and `headers`.
    #[derive(Debug)]
    struct Canned(u16, Vec<(&'static str, &'static str)>);

    impl HttpTransport for Canned {
        async fn fetch(&self, _req: Request<Buffer>) -> opendal::Result<Response<HttpBody>> {
            let mut resp = Response::builder().status(self.0);
            for (k, v) in &self.1 {
                resp = resp.header(*k, *v);
            }
            let body = HttpBody::new(futures_util::stream::empty(), Some(0));
            Ok(resp.body(body).expect("a valid response"))
        }
    }

    fn request() -> Request<Buffer> {
        Request::get("http://provider.invalid/x")
            .body(Buffer::new())
            .unwrap()
    }

    #[tokio::test]
    async fn failed_answers_are_noted_in_their_scope_only() {
        let slow = ObservingTransport(Canned(
            429,
            vec![("retry-after", "7"), ("x-amz-request-id", "REQ1")],
        ));
        let fine = ObservingTransport(Canned(200, vec![]));
        let noted = observed(async {
            assert_eq!(last_failed(), None);
            slow.fetch(request()).await.unwrap();
            last_failed()
        })
        .await;
        assert_eq!(
            noted,
            Some(FailedAnswer {
                status: 429,
                retry_after_secs: Some(7),
                request_id: Some("REQ1".into()),
            })
        );
        // Outside a scope nothing is noted; a later success clears.
        slow.fetch(request()).await.unwrap();
        assert_eq!(last_failed(), None);
        let after_success = observed(async {
            slow.fetch(request()).await.unwrap();
            fine.fetch(request()).await.unwrap();
            last_failed()
        })
        .await;
        assert_eq!(after_success, None);
    }

    #[tokio::test]
    async fn work_spawned_by_the_executor_notes_in_the_spawners_scope() {
        let noted = observed(async {
            let (done, finished) = tokio::sync::oneshot::channel();
            ScopedExecutor.execute(Box::pin(async move {
                let busy = ObservingTransport(Canned(503, vec![("retry-after", "99999")]));
                busy.fetch(request()).await.unwrap();
                let _ = done.send(());
            }));
            finished.await.unwrap();
            last_failed()
        })
        .await
        .unwrap();
        assert_eq!((noted.status, noted.retry_after_secs), (503, Some(3600)));
    }

    #[test]
    fn answers_read_only_what_they_can_trust() {
        let mut headers = HeaderMap::new();
        assert_eq!(FailedAnswer::of(StatusCode::OK, &headers), None);
        assert_eq!(FailedAnswer::of(StatusCode::FOUND, &headers), None);
        headers.insert(
            "retry-after",
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap(),
        );
        headers.insert("x-ms-request-id", "abc".parse().unwrap());
        let a = FailedAnswer::of(StatusCode::SERVICE_UNAVAILABLE, &headers).unwrap();
        assert_eq!(
            (a.status, a.retry_after_secs, a.request_id.as_deref()),
            (503, None, Some("abc"))
        );
        // An id that is not shaped like one is not passed on.
        headers.insert("x-ms-request-id", "<b>hi</b> there".parse().unwrap());
        let a = FailedAnswer::of(StatusCode::SERVICE_UNAVAILABLE, &headers).unwrap();
        assert_eq!(a.request_id, None);
    }
}
