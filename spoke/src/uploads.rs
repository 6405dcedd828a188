//! Resumable uploads at a spoke: appends (and creations that carry a first
//! chunk) stream to the provider here, under a lease and grant the hub
//! gives for the session; the hub records each part. Status, termination
//! and `OPTIONS` carry no bytes and go to the hub.

use std::sync::{Arc, Mutex};

use ferry_common::content::{MetaHost, Target};
use ferry_common::contract::{
    InternalCall, UploadAppendRequest, UploadBeginRequest, UploadBegun, UploadCreateRequest,
    UploadLeaseRequest,
};
use ferry_common::problem::{ErrorCode, Problem};
use ferry_common::provider::native::Multipart;
use ferry_common::uploads::{Ending, Lease, NewUpload, Part, Session, UploadHost};
use futures_util::future::BoxFuture;
use http::{HeaderValue, StatusCode};
use serde::de::DeserializeOwned;

use crate::data_path::{DataPath, Granted, SpokeHost};
use crate::hub_client::{CallAnswer, OnBehalf};

/// The sessions host for one client request at a spoke.
#[derive(Debug)]
pub struct SpokeUploads {
    data: Arc<DataPath>,
    authorization: HeaderValue,
    /// The grant of the lease taken for this request, once it is.
    token: Mutex<Option<Arc<str>>>,
}

impl SpokeUploads {
    /// `upload_append`: records `parts` under the lease, with the
    /// object's commit when the upload is complete; `keep` keeps the lease
    /// for more parts of the same append.
    async fn record(
        &self,
        lease: &Lease,
        parts: Vec<Part>,
        complete: Option<ferry_common::content::model::Commit>,
        keep: bool,
    ) -> Result<Session, Problem> {
        let token = self.token()?;
        let request = UploadAppendRequest {
            id: lease.session.id.clone(),
            lease: lease.token.clone(),
            parts,
            complete,
            keep,
        };
        let answer = self
            .data
            .client()
            .call(
                InternalCall::UploadAppend,
                OnBehalf::Grant(&token),
                &request,
            )
            .await?;
        read(answer)
    }

    /// A host for the client whose `Authorization` is `authorization`.
    pub fn new(data: Arc<DataPath>, authorization: HeaderValue) -> Self {
        Self {
            data,
            authorization,
            token: Mutex::default(),
        }
    }

    fn token(&self) -> Result<Arc<str>, Problem> {
        self.token
            .lock()
            .expect("poisoned")
            .clone()
            .ok_or_else(|| Problem::new(ErrorCode::Internal, "no lease was taken"))
    }
}

/// The hub's answer read as `T`, or its refusal as a problem.
pub(crate) fn read<T: DeserializeOwned>(answer: CallAnswer) -> Result<T, Problem> {
    if answer.status != StatusCode::OK {
        return Err(Problem::from_answer(answer.status, &answer.body));
    }
    serde_json::from_slice(&answer.body).map_err(|e| {
        Problem::new(
            ErrorCode::Internal,
            format!("the hub's answer is unreadable: {e}"),
        )
    })
}

fn no_content(answer: CallAnswer) -> Result<(), Problem> {
    if answer.status.is_success() {
        Ok(())
    } else {
        Err(Problem::from_answer(answer.status, &answer.body))
    }
}

impl UploadHost for SpokeUploads {
    fn create<'a>(
        &'a self,
        connection: &'a str,
        new: NewUpload,
    ) -> BoxFuture<'a, Result<Session, Problem>> {
        Box::pin(async move {
            let request = UploadCreateRequest {
                connection: connection.to_owned(),
                upload: new,
            };
            let answer = self
                .data
                .client()
                .call(
                    InternalCall::UploadCreate,
                    OnBehalf::Client(&self.authorization),
                    &request,
                )
                .await?;
            read(answer)
        })
    }

    fn begin<'a>(
        &'a self,
        id: &'a str,
        offset: u64,
        length: Option<u64>,
    ) -> BoxFuture<'a, Result<Option<(Lease, Target)>, Problem>> {
        Box::pin(async move {
            let request = UploadBeginRequest {
                id: id.to_owned(),
                offset,
                length,
            };
            let answer = self
                .data
                .client()
                .call(
                    InternalCall::UploadBegin,
                    OnBehalf::Client(&self.authorization),
                    &request,
                )
                .await?;
            let begun: UploadBegun = read(answer)?;
            let Some(lease) = begun.lease else {
                return Ok(None);
            };
            *self.token.lock().expect("poisoned") = Some(Arc::from(begun.grant.token.as_str()));
            match self.data.operator(&begun.grant) {
                Ok(op) => Ok(Some((
                    lease,
                    Target {
                        account_id: begun.grant.account_id.clone(),
                        connection_id: begun.grant.connection_id.clone(),
                        op,
                        multipart: Multipart::of(
                            &begun.grant.provider,
                            &begun.grant.config,
                            begun.grant.endpoint_policy(),
                        )
                        .map(Arc::new),
                        throttle: self.data.throttle(&begun.grant),
                        pacing: Some(self.data.pacing().clone()),
                    },
                ))),
                Err(p) => {
                    self.release(&lease).await;
                    Err(p)
                }
            }
        })
    }

    fn renew<'a>(&'a self, lease: &'a Lease) -> BoxFuture<'a, Result<(), Problem>> {
        Box::pin(async move {
            let token = self.token()?;
            let request = UploadLeaseRequest {
                id: lease.session.id.clone(),
                lease: lease.token.clone(),
            };
            let answer = self
                .data
                .client()
                .call(InternalCall::UploadRenew, OnBehalf::Grant(&token), &request)
                .await?;
            no_content(answer)
        })
    }

    fn append<'a>(
        &'a self,
        lease: &'a Lease,
        parts: Vec<Part>,
        ending: Ending,
    ) -> BoxFuture<'a, Result<Session, Problem>> {
        let complete = match ending {
            Ending::More => None,
            Ending::Complete(c) => Some(*c),
        };
        Box::pin(self.record(lease, parts, complete, false))
    }

    fn checkpoint<'a>(
        &'a self,
        lease: &'a Lease,
        parts: Vec<Part>,
    ) -> BoxFuture<'a, Result<(), Problem>> {
        Box::pin(async move { self.record(lease, parts, None, true).await.map(|_| ()) })
    }

    fn release<'a>(&'a self, lease: &'a Lease) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let Ok(token) = self.token() else { return };
            let request = UploadLeaseRequest {
                id: lease.session.id.clone(),
                lease: lease.token.clone(),
            };
            let answer = self
                .data
                .client()
                .call(
                    InternalCall::UploadRelease,
                    OnBehalf::Grant(&token),
                    &request,
                )
                .await;
            if let Err(p) = answer.and_then(no_content) {
                tracing::info!(upload.id = %lease.session.id, problem = %p, "could not release an upload's lease; it runs out by itself");
            }
        })
    }

    fn meta(&self) -> Arc<dyn MetaHost> {
        let token = self
            .token
            .lock()
            .expect("poisoned")
            .clone()
            .unwrap_or_else(|| Arc::from(""));
        Arc::new(SpokeHost::new(self.data.clone(), Granted::new(token)))
    }
}
