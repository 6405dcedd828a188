//! The S3 door at a spoke: object reads, writes and parts stream with the
//! provider here, as ferry's own `GET`, `PUT` and upload appends do.
//!
//! The hub holds the keys' secrets and checks signatures. For an object
//! operation the spoke sends the request's head to the hub
//! (`s3_authorize`, [`ferry_common::contract::s3`]), which checks the
//! signature, the clock and the key, and answers with what this one
//! request needs: the key's secret, with which s3s here checks it again
//! and checks the body as it streams (payload hash, `aws-chunked` chunk
//! signatures and trailers), and a pass that stands for the client on the
//! grant and upload calls, limited to the request's object (or parts).
//! The secret lives as long as the request. Everything else — listings,
//! deletes, copies, a multipart upload's creation and completion, and any
//! refusal the hub's door words — is forwarded to the hub whole.

use std::sync::Arc;

use ferry_common::body::{Body, full};
use ferry_common::content::{MetaHost, Target};
use ferry_common::contract::{GrantOp, InternalCall, PASS_SCHEME, S3AuthorizeRequest, S3Serve};
use ferry_common::s3_door::{self as door, Hosts, problem_error};
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use s3s::auth::{S3Auth, SecretKey};
use s3s::dto;
use s3s::{S3, S3Request, S3Response, S3Result, s3_error};

use crate::data_path::{DataPath, Decision, SpokeHost};
use crate::hub_client::OnBehalf;
use crate::uploads::SpokeUploads;

/// Whether `req` may be an object operation the spoke serves: a `GET`,
/// `HEAD` or `PUT` of a key in a bucket (in the host, virtual-host style,
/// or the path) that is no copy (a copy's bytes move at the provider).
/// The hub has the last word.
fn may_serve(req: &Request<Body>, hosts: &Hosts) -> bool {
    let path = req.uri().path().trim_start_matches('/');
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| req.uri().authority().map(|a| a.as_str()));
    let object = match host.and_then(|h| hosts.bucket_of(h)) {
        Some(_) => !path.is_empty(),
        None => path
            .split_once('/')
            .is_some_and(|(bucket, key)| !bucket.is_empty() && !key.is_empty()),
    };
    matches!(*req.method(), Method::GET | Method::HEAD | Method::PUT)
        && object
        && !req.headers().contains_key("x-amz-copy-source")
}

/// The head of `req` for the hub, `None` when a field is not text (no
/// signed request has such a field).
fn head_of(req: &Request<Body>) -> Option<S3AuthorizeRequest> {
    let mut headers = Vec::with_capacity(req.headers().len() + 1);
    if !req.headers().contains_key(header::HOST)
        && let Some(authority) = req.uri().authority()
    {
        // HTTP/2's `:authority` is the signed `host`.
        headers.push(("host".to_owned(), authority.to_string()));
    }
    for (name, value) in req.headers() {
        headers.push((name.as_str().to_owned(), value.to_str().ok()?.to_owned()));
    }
    Some(S3AuthorizeRequest {
        method: req.method().as_str().to_owned(),
        uri: req.uri().path_and_query()?.as_str().to_owned(),
        headers,
    })
}

/// Serves `req` here if the hub says so; gives it back to be forwarded
/// otherwise.
pub async fn serve(
    data: &Arc<DataPath>,
    hosts: &Hosts,
    req: Request<Body>,
) -> Result<Response<Body>, Request<Body>> {
    if !may_serve(&req, hosts) {
        return Err(req);
    }
    let Some(head) = head_of(&req) else {
        return Err(req);
    };
    let answer = match data
        .client()
        .call(InternalCall::S3Authorize, OnBehalf::Spoke, &head)
        .await
    {
        Ok(a) => a,
        // Without the hub no signature can be checked.
        Err(p) => return Ok(door::error_answer(&problem_error(p))),
    };
    if answer.status != StatusCode::OK {
        // The hub's door refused the signature: its words, as they are.
        let mut resp = Response::new(full(answer.body));
        *resp.status_mut() = answer.status;
        if let Some(v) = answer.headers.get(header::CONTENT_TYPE) {
            resp.headers_mut().insert(header::CONTENT_TYPE, v.clone());
        }
        data.metrics()
            .s3
            .request("none".to_owned(), answer.status.as_u16());
        return Ok(resp);
    }
    let authorized: ferry_common::contract::S3Authorized =
        match serde_json::from_slice(&answer.body) {
            Ok(a) => a,
            Err(e) => {
                tracing::error!(error = %e, "the hub's S3 authorisation is unreadable");
                return Ok(door::error_answer(&s3_error!(InternalError)));
            }
        };
    let Some(granted) = authorized.serve else {
        return Err(req);
    };
    let Ok(pass) = HeaderValue::from_str(&format!("{PASS_SCHEME} {}", granted.pass)) else {
        return Ok(door::error_answer(&s3_error!(InternalError)));
    };
    let key = OneKey {
        access_key: granted.access_key.clone(),
        secret: SecretKey::from(granted.secret.as_str()),
    };
    let mut builder = s3s::service::S3ServiceBuilder::new(SpokeS3 {
        data: data.clone(),
        granted,
        pass,
    });
    builder.set_auth(key);
    hosts.apply(&mut builder);
    let operation = door::OperationSeen::default();
    builder.set_access(operation.clone());
    let resp = door::call(&builder.build(), req).await;
    data.metrics()
        .s3
        .request(operation.name(), resp.status().as_u16());
    Ok(resp)
}

/// The one key a request the hub checked was signed with.
struct OneKey {
    access_key: String,
    secret: SecretKey,
}

#[async_trait::async_trait]
impl S3Auth for OneKey {
    async fn get_secret_key(&self, access_key: &str) -> S3Result<SecretKey> {
        if access_key == self.access_key {
            Ok(self.secret.clone())
        } else {
            Err(s3_error!(InvalidAccessKeyId))
        }
    }
}

/// One S3 request's object, served here.
struct SpokeS3 {
    data: Arc<DataPath>,
    granted: S3Serve,
    /// `FerryS3 <pass>`, the client's credential on the spoke's calls.
    pass: HeaderValue,
}

impl SpokeS3 {
    /// The target and content host of `object`, under a grant the pass
    /// gets from the hub.
    async fn object(&self, object: &str, op: GrantOp) -> S3Result<(Target, Arc<dyn MetaHost>)> {
        let decision = self
            .data
            .decide(&self.pass, &self.granted.connection_id, object, op)
            .await;
        match decision {
            Decision::Serve(target, granted) => Ok((
                *target,
                Arc::new(SpokeHost::new(self.data.clone(), granted)),
            )),
            Decision::Forward => Err(s3_error!(
                ServiceUnavailable,
                "this node cannot reach the provider"
            )),
            Decision::Answer(resp) => Err(problem_error(door::answer_problem(resp).await)),
        }
    }
}

#[async_trait::async_trait]
impl S3 for SpokeS3 {
    async fn head_object(
        &self,
        req: S3Request<dto::HeadObjectInput>,
    ) -> S3Result<S3Response<dto::HeadObjectOutput>> {
        let (target, host) = self.object(&req.input.key, GrantOp::Read).await?;
        door::head_object(host, &target, &req.input.key, &req.headers).await
    }

    async fn get_object(
        &self,
        req: S3Request<dto::GetObjectInput>,
    ) -> S3Result<S3Response<dto::GetObjectOutput>> {
        let (target, host) = self.object(&req.input.key, GrantOp::Read).await?;
        door::get_object(host, &target, &req).await
    }

    async fn put_object(
        &self,
        req: S3Request<dto::PutObjectInput>,
    ) -> S3Result<S3Response<dto::PutObjectOutput>> {
        let (target, host) = self.object(&req.input.key, GrantOp::Write).await?;
        door::put_object(host, &target, req).await
    }

    async fn upload_part(
        &self,
        req: S3Request<dto::UploadPartInput>,
    ) -> S3Result<S3Response<dto::UploadPartOutput>> {
        let host = Arc::new(SpokeUploads::new(self.data.clone(), self.pass.clone()));
        door::upload_part(host, &self.granted.connection_id, req).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(method: Method, uri: &str, copy: bool) -> Request<Body> {
        let mut b = Request::builder().method(method).uri(uri);
        if copy {
            b = b.header("x-amz-copy-source", "/b/a");
        }
        b.body(ferry_common::body::empty()).unwrap()
    }

    #[test]
    fn only_object_reads_writes_and_parts_are_candidates() {
        let none = Hosts::default();
        assert!(may_serve(&request(Method::GET, "/b/a.txt", false), &none));
        assert!(may_serve(
            &request(Method::HEAD, "/b/a/b.txt", false),
            &none
        ));
        assert!(may_serve(
            &request(Method::PUT, "/b/a.txt?partNumber=1&uploadId=x", false),
            &none
        ));
        assert!(!may_serve(&request(Method::PUT, "/b/a.txt", true), &none));
        assert!(!may_serve(&request(Method::GET, "/b", false), &none));
        assert!(!may_serve(&request(Method::GET, "/b/", false), &none));
        assert!(!may_serve(&request(Method::GET, "/", false), &none));
        assert!(!may_serve(
            &request(Method::DELETE, "/b/a.txt", false),
            &none
        ));
        assert!(!may_serve(
            &request(Method::POST, "/b/a.txt?uploads", false),
            &none
        ));
        // Virtual-host style: the bucket is in the host, the key the path.
        let hosts = Hosts::new(&["s3.test".into()]);
        let mut vhost = request(Method::GET, "/a.txt", false);
        vhost
            .headers_mut()
            .insert(header::HOST, HeaderValue::from_static("b.s3.test:8443"));
        assert!(may_serve(&vhost, &hosts));
        assert!(!may_serve(&vhost, &none));
        *vhost.uri_mut() = "/".parse().unwrap();
        assert!(!may_serve(&vhost, &hosts));
    }
}
