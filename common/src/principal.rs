//! Who a request is made by, for read-your-writes: a digest of its
//! credential (an API key or the admin token), never the credential.
//!
//! The hub reads it from a request's `Authorization`. The grant a hub
//! issues to a spoke for a client's request holds the client's principal,
//! so the spoke's lookups and reports under it count as that client's and
//! the client's next reads through any hub see what it wrote through the
//! spoke; a spoke cannot name another client's.

/// The principal of a request with this `Authorization` value.
pub fn of(authorization: &[u8]) -> String {
    use base64::Engine as _;
    let digest = ring::digest::digest(&ring::digest::SHA256, authorization);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&digest.as_ref()[..18])
}

#[cfg(test)]
mod tests {
    #[test]
    fn principals_are_stable_short_and_differ_by_credential() {
        let a = super::of(b"Bearer fk_one");
        assert_eq!(a, super::of(b"Bearer fk_one"));
        assert_ne!(a, super::of(b"Bearer fk_two"));
        assert_eq!(a.len(), 24);
        assert!(!a.contains("fk_one"));
    }
}
