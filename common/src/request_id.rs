//! Request ids: every request a hub or spoke answers has one, returned to
//! the client in `x-request-id` and carried through the tunnel, so that
//! one request can be followed across a spoke's log and its hub's. A
//! request that arrives with a well-formed id (from a client, a proxy, or
//! a spoke) keeps it.

use std::sync::Arc;

/// The header.
pub const HEADER: &str = "x-request-id";

tokio::task_local! {
    static CURRENT: Arc<str>;
}

/// Whether `id` is one ferry passes on: 1 to 64 characters of letters,
/// digits, `-`, `_`, `.` and `:`.
pub fn valid(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

/// A new id: 16 random hex digits.
pub fn new_id() -> String {
    use ring::rand::SecureRandom as _;
    let mut bytes = [0u8; 8];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .expect("the system's random source works");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The id for a request with these headers: the one it carries, when
/// valid, else a new one.
pub fn for_request(headers: &http::HeaderMap) -> String {
    headers
        .get(HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|id| valid(id))
        .map_or_else(new_id, str::to_owned)
}

/// Runs `fut` as the request `id` (see [`current`]).
pub async fn scope<F: std::future::Future>(id: Arc<str>, fut: F) -> F::Output {
    CURRENT.scope(id, fut).await
}

/// The id of the request being served, if any.
pub fn current() -> Option<Arc<str>> {
    CURRENT.try_with(Arc::clone).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_kept_when_well_formed_and_made_otherwise() {
        let mut h = http::HeaderMap::new();
        let made = for_request(&h);
        assert_eq!(made.len(), 16);
        assert!(valid(&made));
        assert_ne!(made, for_request(&h));
        h.insert(HEADER, "abc-123_X.y:z".parse().unwrap());
        assert_eq!(for_request(&h), "abc-123_X.y:z");
        for bad in ["", "has space", "semi;colon", &"x".repeat(65), "ünï"] {
            assert!(!valid(bad), "{bad}");
        }
        h.insert(HEADER, "with space".parse().unwrap());
        assert_ne!(for_request(&h), "with space");
    }
}
