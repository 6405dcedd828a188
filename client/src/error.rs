//! What can go wrong, as types: the API's problems (`application/problem+json`)
//! keep their status and code, so a caller can tell "no such file" from
//! "wrong key".

/// An error of the client.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The API answered with a problem.
    #[error("{detail} ({status} {code})")]
    Api {
        /// The HTTP status.
        status: u16,
        /// ferry's error code (`not_found`, `unauthorized`…).
        code: String,
        /// What the API said.
        detail: String,
    },
    /// No endpoint could be reached, or the connection broke.
    #[error("cannot reach ferry: {0}")]
    Transport(String),
    /// A local file could not be read or written.
    #[error("{0}")]
    Local(String),
    /// The local file system is full (or the user's quota reached).
    #[error("{0}")]
    NoSpace(String),
    /// What arrived is not what the server has.
    #[error("{0}")]
    Checksum(String),
    /// The call itself is wrong (a bad URL, a bad argument).
    #[error("{0}")]
    Usage(String),
    /// Stopped by the user (Ctrl-C) before it was done.
    #[error("interrupted; run the same command again to resume")]
    Interrupted,
}

impl Error {
    /// Reads a failed answer into an error: its problem when it is one.
    pub(crate) async fn from_response(resp: reqwest::Response) -> Self {
        let status = resp.status().as_u16();
        let body = resp.bytes().await.unwrap_or_default();
        #[derive(serde::Deserialize)]
        struct Problem {
            code: Option<String>,
            detail: Option<String>,
            title: Option<String>,
        }
        match serde_json::from_slice::<Problem>(&body) {
            Ok(p) => Self::Api {
                status,
                code: p.code.unwrap_or_else(|| "unknown".into()),
                detail: p.detail.or(p.title).unwrap_or_else(|| "no detail".into()),
            },
            Err(_) => Self::Api {
                status,
                code: "unknown".into(),
                detail: format!("the server answered {status}"),
            },
        }
    }

    /// The API's error code, if the API answered.
    pub fn code(&self) -> Option<&str> {
        match self {
            Self::Api { code, .. } => Some(code),
            _ => None,
        }
    }
}
