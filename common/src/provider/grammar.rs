//! The grammar of the configuration members that become part of a
//! provider's URLs: bucket and container names, regions, account names and
//! root prefixes. Each is checked against what its provider accepts before
//! OpenDAL builds a URL from it, so no member can add a host, a path
//! segment, a query or a fragment to a request (`us-east-1.evil.example/#`
//! as a region, `a/../b` as a root).

/// A configuration member that breaks its grammar; no retry helps.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{field}' {rule}")]
pub struct FieldError {
    /// The configuration member.
    pub field: &'static str,
    /// What it must be.
    pub rule: &'static str,
}

/// `Ok` when `ok`, else the refusal of `field` with its `rule`.
fn holds(ok: bool, field: &'static str, rule: &'static str) -> Result<(), FieldError> {
    if ok {
        Ok(())
    } else {
        Err(FieldError { field, rule })
    }
}

/// Whether `name` is `min..=max` characters of `allowed`, starting and
/// ending with a lowercase letter or digit.
fn label_like(name: &str, min: usize, max: usize, allowed: impl Fn(u8) -> bool) -> bool {
    let b = name.as_bytes();
    let edge = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    (min..=max).contains(&b.len())
        && b.iter().all(|&c| allowed(c))
        && b.first().copied().is_some_and(edge)
        && b.last().copied().is_some_and(edge)
}

/// An S3 bucket: 3 to 63 lowercase letters, digits, `.` and `-`, starting
/// and ending with a letter or digit, no `..`.
pub fn s3_bucket(name: &str) -> Result<(), FieldError> {
    let ok = label_like(name, 3, 63, |c| {
        c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'.' || c == b'-'
    }) && !name.contains("..");
    holds(
        ok,
        "bucket",
        "must be 3 to 63 lowercase letters, digits, '.' or '-', starting and ending with a letter or digit",
    )
}

/// An S3 region: 1 to 32 lowercase letters, digits and `-`.
pub fn s3_region(name: &str) -> Result<(), FieldError> {
    let ok = label_like(name, 1, 32, |c| {
        c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-'
    });
    holds(
        ok,
        "region",
        "must be 1 to 32 lowercase letters, digits or '-' (such as 'eu-west-1')",
    )
}

/// An Azure storage account: 3 to 24 lowercase letters and digits.
pub fn azure_account(name: &str) -> Result<(), FieldError> {
    let ok = label_like(name, 3, 24, |c| {
        c.is_ascii_lowercase() || c.is_ascii_digit()
    });
    holds(
        ok,
        "account_name",
        "must be 3 to 24 lowercase letters or digits",
    )
}

/// An Azure container: 3 to 63 lowercase letters, digits and single `-`,
/// starting and ending with a letter or digit; or `$root` or `$web`.
pub fn azure_container(name: &str) -> Result<(), FieldError> {
    let ok = matches!(name, "$root" | "$web")
        || (label_like(name, 3, 63, |c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-'
        }) && !name.contains("--"));
    holds(
        ok,
        "container",
        "must be 3 to 63 lowercase letters, digits or single '-', starting and ending with a letter or digit",
    )
}

/// A Google Cloud Storage bucket: 3 to 63 lowercase letters, digits, `-`,
/// `_` and `.`, starting and ending with a letter or digit, no `..`.
pub fn gcs_bucket(name: &str) -> Result<(), FieldError> {
    let ok = label_like(name, 3, 63, |c| {
        c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'-' | b'_' | b'.')
    }) && !name.contains("..");
    holds(
        ok,
        "bucket",
        "must be 3 to 63 lowercase letters, digits, '-', '_' or '.', starting and ending with a letter or digit",
    )
}

/// An Azure shared access signature, which becomes a URL's query: its
/// `name=value&…` form, of the characters a SAS uses (letters, digits and
/// `%&=+/._:,~-`), an optional leading `?`.
pub fn sas_token(token: &str) -> Result<(), FieldError> {
    let body = token.strip_prefix('?').unwrap_or(token);
    let ok = !body.is_empty()
        && body.len() <= 4096
        && body
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"%&=+/._:,~-".contains(&c));
    holds(
        ok,
        "sas_token",
        "must be a shared access signature: 'name=value' pairs joined by '&'",
    )
}

/// A root prefix inside the bucket, container or server: at most 1024
/// bytes of `/`-separated names, none empty, `.` or `..`, with no control
/// character, `\`, `?`, `#` or `%` (an optional leading and trailing `/`
/// are allowed).
pub fn root(path: &str) -> Result<(), FieldError> {
    let inner = path.strip_prefix('/').unwrap_or(path);
    let inner = inner.strip_suffix('/').unwrap_or(inner);
    let ok = path.len() <= 1024
        && (inner.is_empty()
            || inner.split('/').all(|name| {
                !matches!(name, "" | "." | "..")
                    && !name
                        .chars()
                        .any(|c| c.is_control() || matches!(c, '\\' | '?' | '#' | '%'))
            }));
    holds(
        ok,
        "root",
        "must be '/'-separated names, none empty, '.' or '..', without control characters, '\\', '?', '#' or '%'",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_would_change_a_url_are_refused() {
        for good in ["my-bucket", "a.b.c", "abc", "b0"] {
            if good.len() >= 3 {
                s3_bucket(good).unwrap();
                gcs_bucket(good).unwrap();
            }
        }
        for bad in [
            "a/../b",
            "b#",
            "evil.example/#",
            "b?x=1",
            "UPPER",
            "-dash",
            "a..b",
            "ab",
            "b@host",
            "b:80",
            "b%2f",
            "",
        ] {
            assert!(s3_bucket(bad).is_err(), "s3 {bad}");
            assert!(gcs_bucket(bad).is_err(), "gcs {bad}");
            assert!(azure_container(bad).is_err(), "azure {bad}");
        }
        s3_region("us-east-1").unwrap();
        for bad in ["us-east-1.evil.example/#", "us-east-1/", "", "a b", "a@b"] {
            assert_eq!(s3_region(bad).unwrap_err().field, "region", "{bad}");
        }
        azure_account("devstoreaccount1").unwrap();
        for bad in ["evil.example/#", "ab", "Caps", "a-b"] {
            assert!(azure_account(bad).is_err(), "{bad}");
        }
        sas_token("?sv=2021-08-06&se=2026-01-01T00%3A00Z&sp=rw&sig=abc%2Bdef%3D").unwrap();
        for bad in ["sv=1#frag", "sv=1 x", "", "sv=1\r\nHost: x"] {
            assert!(sas_token(bad).is_err(), "{bad:?}");
        }
        azure_container("$web").unwrap();
        azure_container("my-container").unwrap();
        assert!(azure_container("a--b").is_err());
    }

    #[test]
    fn roots_are_plain_names() {
        for good in ["", "/", "/a", "a/b/", "/photos/2024/", "ünï code"] {
            root(good).unwrap();
        }
        for bad in [
            "a/../b", "..", "/./a", "a//b", "a?x", "a#f", "a%2e", "a\\b", "a\nb",
        ] {
            assert_eq!(root(bad).unwrap_err().field, "root", "{bad:?}");
        }
    }
}
