//! The admin token: the operator's bearer credential for the admin API
//! (accounts, keys, spokes, the steering map), read from
//! `FERRY_ADMIN_TOKEN` at start-up.
//!
//! A token shorter than [`MIN_CHARS`] characters is refused before any
//! port is bound, so a guessable one never guards a running hub. The token
//! is kept only as an HMAC under a key made at start-up, and a presented
//! token is checked with ring's constant-time HMAC verification: neither
//! its length nor the position of its first wrong character shows in the
//! time an answer takes.

use ring::hmac;
use ring::rand::{SecureRandom as _, SystemRandom};

/// The environment variable holding the admin token.
pub const ADMIN_TOKEN_ENV: &str = "FERRY_ADMIN_TOKEN";

/// The fewest characters an admin token may have.
pub const MIN_CHARS: usize = 32;

/// The most characters an admin token may have (it travels in a header).
pub const MAX_CHARS: usize = 1024;

/// Why the admin token in the environment cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AdminTokenError {
    /// Too short to resist guessing: the operator must set a longer one
    /// (a restart does not help).
    #[error(
        "{ADMIN_TOKEN_ENV} has {chars} characters; it needs at least {MIN_CHARS} (make one with: head -c 32 /dev/urandom | base64)"
    )]
    TooShort {
        /// How many characters it has.
        chars: usize,
    },
    /// Longer than a request header should carry.
    #[error("{ADMIN_TOKEN_ENV} has {chars} characters; it may have at most {MAX_CHARS}")]
    TooLong {
        /// How many characters it has.
        chars: usize,
    },
    /// Holds a character a bearer token cannot carry (a space, a control
    /// character or one beyond ASCII).
    #[error(
        "{ADMIN_TOKEN_ENV} holds a character a bearer token cannot carry: use printable ASCII without spaces"
    )]
    BadCharacter,
    /// The system's random number generator failed.
    #[error("cannot make a key for the admin token: the system's random source failed")]
    NoRandom,
}

/// The admin token, kept as an HMAC of itself; its `Debug` shows nothing.
pub struct AdminToken {
    key: hmac::Key,
    tag: hmac::Tag,
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(****)")
    }
}

impl AdminToken {
    /// The token `value`, checked: `None` when it is empty (the admin API
    /// is then disabled), an error when it is unfit to guard the hub.
    pub fn new(value: &str) -> Result<Option<AdminToken>, AdminTokenError> {
        if value.is_empty() {
            return Ok(None);
        }
        if !value.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(AdminTokenError::BadCharacter);
        }
        let chars = value.len();
        if chars < MIN_CHARS {
            return Err(AdminTokenError::TooShort { chars });
        }
        if chars > MAX_CHARS {
            return Err(AdminTokenError::TooLong { chars });
        }
        let mut secret = [0u8; 32];
        SystemRandom::new()
            .fill(&mut secret)
            .map_err(|_| AdminTokenError::NoRandom)?;
        let key = hmac::Key::new(hmac::HMAC_SHA256, &secret);
        let tag = hmac::sign(&key, value.as_bytes());
        Ok(Some(AdminToken { key, tag }))
    }

    /// The token in [`ADMIN_TOKEN_ENV`], checked as [`AdminToken::new`]
    /// does; `None` when it is unset or empty.
    pub fn from_env() -> Result<Option<AdminToken>, AdminTokenError> {
        AdminToken::new(&std::env::var(ADMIN_TOKEN_ENV).unwrap_or_default())
    }

    /// Whether `presented` is the token, in time that depends on neither
    /// its length nor its content.
    pub fn matches(&self, presented: &str) -> bool {
        hmac::verify(&self.key, presented.as_bytes(), self.tag.as_ref()).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn short_long_and_odd_tokens_are_refused() {
        assert_eq!(AdminToken::new("").unwrap().map(|_| ()), None);
        assert_eq!(
            AdminToken::new(&GOOD[..31]).unwrap_err(),
            AdminTokenError::TooShort { chars: 31 }
        );
        assert_eq!(
            AdminToken::new("test-admin-token-0123456789").unwrap_err(),
            AdminTokenError::TooShort { chars: 27 }
        );
        assert_eq!(
            AdminToken::new(&"x".repeat(MAX_CHARS + 1)).unwrap_err(),
            AdminTokenError::TooLong {
                chars: MAX_CHARS + 1
            }
        );
        for odd in [
            "0123456789abcdef 0123456789abcdef",
            "0123456789abcdef\t0123456789abcdef",
            "0123456789abcdef0123456789abcdefé",
        ] {
            assert_eq!(
                AdminToken::new(odd).unwrap_err(),
                AdminTokenError::BadCharacter
            );
        }
        let message = AdminTokenError::TooShort { chars: 5 }.to_string();
        assert!(message.starts_with("FERRY_ADMIN_TOKEN has 5 characters; it needs at least 32"));
    }

    #[test]
    fn only_the_token_itself_matches() {
        let token = AdminToken::new(GOOD).unwrap().unwrap();
        assert!(token.matches(GOOD));
        for wrong in [
            "",
            "0",
            &GOOD[..31],
            &format!("{GOOD}0"),
            &GOOD.to_uppercase(),
        ] {
            assert!(!token.matches(wrong), "{wrong}");
        }
        assert_eq!(format!("{token:?}"), "AdminToken(****)");
    }
}
