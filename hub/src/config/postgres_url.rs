//! PostgreSQL URLs in `[store]`: what a URL must hold (a user and a host)
//! and must not (the password, which comes from the environment or a file),
//! and putting the password in when connecting.

/// Why `store.primary_url` or `store.replica_url` is refused. Each is a
/// mistake in the configuration; no retry helps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PostgresUrlError {
    /// The scheme is neither `postgres://` nor `postgresql://`.
    #[error("must start with postgres:// or postgresql://")]
    Scheme,
    /// No `USER@` before the host.
    #[error("must name a user: postgres://USER@HOST:PORT/DATABASE")]
    NoUser,
    /// `USER:PASSWORD@`: the password would sit in the file and the logs.
    #[error("must not hold the password: put it in store.password_env or store.password_file")]
    Password,
    /// The user or the host is empty.
    #[error("must name a user and a host")]
    Empty,
}

/// Checks a PostgreSQL URL: the scheme, a user, a host, and no password.
pub fn check_postgres_url(url: &str) -> Result<(), PostgresUrlError> {
    let rest = url
        .strip_prefix("postgres://")
        .or_else(|| url.strip_prefix("postgresql://"))
        .ok_or(PostgresUrlError::Scheme)?;
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    let Some((user, host)) = authority.rsplit_once('@') else {
        return Err(PostgresUrlError::NoUser);
    };
    if user.contains(':') {
        return Err(PostgresUrlError::Password);
    }
    if user.is_empty() || host.is_empty() {
        return Err(PostgresUrlError::Empty);
    }
    Ok(())
}

/// `url` with `password` in it (percent-encoded).
pub fn with_password(url: &str, password: Option<&str>) -> String {
    let Some(pw) = password else {
        return url.to_owned();
    };
    let encoded = percent_encoding::utf8_percent_encode(pw, percent_encoding::NON_ALPHANUMERIC);
    match url.split_once("://") {
        Some((scheme, rest)) => match rest.split_once('@') {
            Some((user, host)) => format!("{scheme}://{user}:{encoded}@{host}"),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_a_user_and_a_host_but_no_password() {
        check_postgres_url("postgres://ferry@db.example.com:5432/ferry").unwrap();
        check_postgres_url("postgresql://ferry@db/ferry?sslmode=require").unwrap();
        for (url, why) in [
            ("mysql://ferry@db/ferry", PostgresUrlError::Scheme),
            ("postgres://db.example.com/ferry", PostgresUrlError::NoUser),
            (
                "postgres://ferry:secret@db/ferry",
                PostgresUrlError::Password,
            ),
            ("postgres://@db/ferry", PostgresUrlError::Empty),
            ("postgres://ferry@/ferry", PostgresUrlError::Empty),
        ] {
            assert_eq!(check_postgres_url(url), Err(why), "{url}");
        }
    }

    #[test]
    fn the_password_goes_in_percent_encoded() {
        assert_eq!(
            with_password("postgres://ferry@db/ferry", Some("p@ss word")),
            "postgres://ferry:p%40ss%20word@db/ferry"
        );
        assert_eq!(
            with_password("postgres://ferry@db/ferry", None),
            "postgres://ferry@db/ferry"
        );
    }
}
