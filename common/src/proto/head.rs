//! The heads of HTTP messages carried through the tunnel, and their
//! conversion to and from `http`'s types: the spoke turns a client's
//! request into a [`RequestHead`] and the hub turns it back; the hub's
//! answer travels as a [`ResponseHead`]. Header fields that describe one
//! connection (RFC 9110 §7.6.1) never cross, and neither do fields whose
//! value is not visible ASCII.

use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use serde::{Deserialize, Serialize};

/// The head of a forwarded HTTP request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestHead {
    /// The method.
    pub method: String,
    /// Path and query.
    pub uri: String,
    /// Header fields, in order.
    pub headers: Vec<(String, String)>,
    /// The client's address as the spoke saw it; absent on the spoke's own
    /// calls.
    pub client_addr: Option<String>,
}

/// The head of the answer to a forwarded request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResponseHead {
    /// The status code.
    pub status: u16,
    /// Header fields, in order.
    pub headers: Vec<(String, String)>,
}

/// Why a head cannot become an `http` message. The peer sent something
/// that is not HTTP; retrying the same head cannot help.
#[derive(Debug, thiserror::Error)]
pub enum HeadError {
    /// The method, URI or a header field does not parse.
    #[error("the request head is not valid HTTP: {0}")]
    Request(#[from] http::Error),
    /// The status is not a status code.
    #[error("{0} is not a status code")]
    Status(u16),
    /// A header value holds a character no byte gives, or a control
    /// character.
    #[error("a header value is not a header value")]
    HeaderValue,
}

/// Why a request head cannot cross the tunnel: the client sent more than
/// a frame carries. Not retryable as it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TooLarge {
    /// The URI is longer than [`super::frame::MAX_URI`].
    #[error("the URI is longer than {} bytes", super::frame::MAX_URI)]
    Uri,
    /// The header fields are too many or too long for one frame.
    #[error("the header fields are too many or too long")]
    Headers,
}

/// Header fields that describe one connection, not the message: never
/// forwarded (RFC 9110 §7.6.1).
pub fn hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "transfer-encoding"
            | "te"
            | "trailer"
            | "upgrade"
    )
}

/// A header value as text that crosses: each byte one character, so bytes
/// above 0x7F (obs-text, RFC 9110 §5.5) arrive as they were sent.
fn value_text(v: &HeaderValue) -> String {
    v.as_bytes().iter().map(|&b| char::from(b)).collect()
}

/// The header value `text` stands for (see [`value_text`]); `None` for a
/// character no byte gives.
fn value_of(text: &str) -> Option<HeaderValue> {
    let bytes: Option<Vec<u8>> = text.chars().map(|c| u8::try_from(c).ok()).collect();
    HeaderValue::from_bytes(&bytes?).ok()
}

/// The fields of `headers` that may cross, as text pairs.
fn fields(headers: &HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .filter(|(k, _)| !hop_by_hop(k))
        .map(|(k, v)| (k.as_str().to_owned(), value_text(v)))
        .collect()
}

/// Adds the well-formed, end-to-end fields of `pairs` to `headers`, and
/// drops the others.
fn extend(headers: &mut HeaderMap, pairs: Vec<(String, String)>) {
    for (k, v) in pairs {
        if let (Ok(k), Some(v)) = (HeaderName::try_from(k), value_of(&v))
            && !hop_by_hop(&k)
        {
            headers.append(k, v);
        }
    }
}

impl RequestHead {
    /// The head of a request with these `parts`, for a client at
    /// `client_addr` (`None`: the spoke's own call).
    pub fn from_parts(parts: &http::request::Parts, client_addr: Option<String>) -> Self {
        Self {
            method: parts.method.as_str().to_owned(),
            uri: parts
                .uri
                .path_and_query()
                .map_or("/", |pq| pq.as_str())
                .to_owned(),
            headers: fields(&parts.headers),
            client_addr,
        }
    }

    /// Whether this head fits in a frame of `max_frame` bytes within the
    /// bounds the receiving decoder checks.
    pub fn fits(&self, max_frame: usize) -> Result<(), TooLarge> {
        if self.uri.len() > super::frame::MAX_URI {
            return Err(TooLarge::Uri);
        }
        let each_fits = self.headers.iter().all(|(k, v)| {
            k.len() <= super::frame::MAX_HEADER_NAME && v.len() <= super::frame::MAX_HEADER_VALUE
        });
        let whole = serde_json::to_vec(self).map_or(usize::MAX, |b| b.len());
        if self.headers.len() > super::frame::MAX_HEADERS || !each_fits || whole > max_frame {
            return Err(TooLarge::Headers);
        }
        Ok(())
    }

    /// The request this head describes, with `body`. Unlike a response's,
    /// a request's fields must all be valid: a spoke sends only what it
    /// parsed from a client.
    pub fn into_request<B>(self, body: B) -> Result<Request<B>, HeadError> {
        let mut req = Request::builder()
            .method(Method::from_bytes(self.method.as_bytes()).map_err(http::Error::from)?)
            .uri(self.uri.as_str())
            .body(body)?;
        for (k, v) in self.headers {
            let name = HeaderName::try_from(k).map_err(http::Error::from)?;
            let value = value_of(&v).ok_or(HeadError::HeaderValue)?;
            req.headers_mut().append(name, value);
        }
        Ok(req)
    }
}

impl ResponseHead {
    /// The head of a response with these `parts`.
    pub fn from_parts(parts: &http::response::Parts) -> Self {
        Self {
            status: parts.status.as_u16(),
            headers: fields(&parts.headers),
        }
    }

    /// The response this head describes, with `body`.
    pub fn into_response<B>(self, body: B) -> Result<Response<B>, HeadError> {
        let mut resp = Response::new(body);
        *resp.status_mut() =
            StatusCode::from_u16(self.status).map_err(|_| HeadError::Status(self.status))?;
        extend(resp.headers_mut(), self.headers);
        Ok(resp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_crosses_without_its_connection_fields() {
        let req = Request::put("/v1/connections/c/files/a%20b?x=1")
            .header("authorization", "Bearer fry_x")
            .header("connection", "keep-alive")
            .header("transfer-encoding", "chunked")
            .header("x-two", "1")
            .header("x-two", "2")
            .body(())
            .unwrap();
        let (parts, ()) = req.into_parts();
        let head = RequestHead::from_parts(&parts, Some("192.0.2.7:5000".into()));
        assert_eq!(head.method, "PUT");
        assert_eq!(head.uri, "/v1/connections/c/files/a%20b?x=1");
        assert_eq!(
            head.headers,
            vec![
                ("authorization".into(), "Bearer fry_x".into()),
                ("x-two".into(), "1".into()),
                ("x-two".into(), "2".into()),
            ]
        );
        let back = head.clone().into_request(()).unwrap();
        assert_eq!(back.method(), Method::PUT);
        assert_eq!(back.uri(), "/v1/connections/c/files/a%20b?x=1");
        assert_eq!(back.headers().get_all("x-two").iter().count(), 2);
        assert!(back.headers().get("connection").is_none());
    }

    #[test]
    fn values_beyond_ascii_cross_byte_for_byte() {
        let mut req = Request::get("/").body(()).unwrap();
        let odd = HeaderValue::from_bytes(b"caf\xe9 \xff").unwrap();
        req.headers_mut().insert("content-type", odd.clone());
        let (parts, ()) = req.into_parts();
        let head = RequestHead::from_parts(&parts, None);
        let json = serde_json::to_vec(&head).unwrap();
        let back: RequestHead = serde_json::from_slice(&json).unwrap();
        let req = back.into_request(()).unwrap();
        assert_eq!(req.headers().get("content-type"), Some(&odd));
    }

    #[test]
    fn heads_too_large_for_a_frame_are_told_apart() {
        let head = |uri: String, value: String| RequestHead {
            method: "GET".into(),
            uri,
            headers: vec![("x-big".into(), value)],
            client_addr: None,
        };
        assert_eq!(head("/".into(), "v".into()).fits(1 << 20), Ok(()));
        assert_eq!(
            head(format!("/{}", "a".repeat(70_000)), "v".into()).fits(1 << 20),
            Err(TooLarge::Uri)
        );
        assert_eq!(
            head("/".into(), "v".repeat(70_000)).fits(1 << 20),
            Err(TooLarge::Headers)
        );
        assert_eq!(
            head("/".into(), "v".repeat(40_000)).fits(16_384),
            Err(TooLarge::Headers)
        );
    }

    #[test]
    fn bad_heads_are_errors_and_bad_fields_are_dropped() {
        let head = RequestHead {
            method: "G ET".into(),
            uri: "/".into(),
            headers: vec![],
            client_addr: None,
        };
        assert!(head.into_request(()).is_err());
        let head = RequestHead {
            method: "GET".into(),
            uri: "not a uri".into(),
            headers: vec![],
            client_addr: None,
        };
        assert!(head.into_request(()).is_err());
        let head = RequestHead {
            method: "GET".into(),
            uri: "/".into(),
            headers: vec![("bad name".into(), "x".into())],
            client_addr: None,
        };
        assert!(head.into_request(()).is_err());
        let resp = ResponseHead {
            status: 200,
            headers: vec![
                ("bad name".into(), "x".into()),
                ("upgrade".into(), "h2c".into()),
                ("etag".into(), "\"1\"".into()),
            ],
        }
        .into_response(())
        .unwrap();
        assert_eq!(resp.headers().len(), 1);
        assert!(matches!(
            ResponseHead {
                status: 42,
                headers: vec![]
            }
            .into_response(()),
            Err(HeadError::Status(42))
        ));
    }
}
