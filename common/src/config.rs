//! Loading and validating the daemons' TOML configuration files.
//!
//! Every error names the file, the key path (`api.tls.cert_file`) and the
//! reason, so an operator can fix a bad file without reading source code.
//! Parsing is strict (`deny_unknown_fields` on every section) and reports
//! every unknown key and wrongly typed value, not only the first; a second,
//! semantic pass collects *all* problems at once through [`Problems`].

use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde_path_to_error::Segment;
use toml::de::DeValue;

/// One thing wrong with a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    /// Dotted key path, such as `api.tls.cert_file`; empty for the whole file.
    pub key: String,
    /// Line number in the file (1-based) when the parser knows it.
    pub line: Option<usize>,
    /// What is wrong, in a sentence fragment.
    pub reason: String,
}

/// Everything wrong with one configuration file.
#[derive(Debug, thiserror::Error)]
pub struct ConfigError {
    /// The file that was read.
    pub file: PathBuf,
    /// The problems found, at least one.
    pub problems: Vec<ConfigProblem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{}", self.file.display())?;
            if let Some(line) = p.line {
                write!(f, ":{line}")?;
            }
            if p.key.is_empty() {
                write!(f, ": {}", p.reason)?;
            } else {
                write!(f, ": {}: {}", p.key, p.reason)?;
            }
        }
        Ok(())
    }
}

/// Collects semantic problems found after parsing, so all are reported at once.
#[derive(Debug, Default)]
pub struct Problems(Vec<ConfigProblem>);

impl Problems {
    /// Records that `key` is wrong because of `reason`.
    pub fn add(&mut self, key: impl Into<String>, reason: impl Into<String>) {
        self.0.push(ConfigProblem {
            key: key.into(),
            line: None,
            reason: reason.into(),
        });
    }

    /// Turns the collected problems into an error for `file`, if there are any.
    pub fn into_result(self, file: &Path) -> Result<(), ConfigError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(ConfigError {
                file: file.to_owned(),
                problems: self.0,
            })
        }
    }
}

/// A configuration that can check its own values after parsing.
pub trait Validate {
    /// Adds every problem with the parsed values to `problems`.
    fn validate(&self, problems: &mut Problems);
}

/// Reads, parses and validates the TOML file at `path`.
pub fn load<T: DeserializeOwned + Validate>(path: &Path) -> Result<T, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: path.to_owned(),
        problems: vec![ConfigProblem {
            key: String::new(),
            line: None,
            reason: format!("cannot read the file: {e}"),
        }],
    })?;
    parse_str(&text, path)
}

/// How many parse problems one reading reports at most: each costs one
/// more parse of the file.
const MAX_PARSE_PROBLEMS: usize = 64;

/// Parses and validates `text` as if it had been read from `path`. Every
/// unknown key and every value of the wrong type is reported, not just the
/// first: each is taken out and the rest parsed again. The values' own
/// checks run on what remains, for keys not reported already.
pub fn parse_str<T: DeserializeOwned + Validate>(
    text: &str,
    path: &Path,
) -> Result<T, ConfigError> {
    // In the file's order; what no line is known of last.
    let error = |mut problems: Vec<ConfigProblem>| {
        problems.sort_by_key(|p| p.line.unwrap_or(usize::MAX));
        ConfigError {
            file: path.to_owned(),
            problems,
        }
    };
    let root = toml::de::DeTable::parse(text).map_err(|e| {
        error(vec![ConfigProblem {
            key: String::new(),
            line: line_of(text, e.span()),
            reason: e.message().to_owned(),
        }])
    })?;
    let span = root.span();
    let mut root = DeValue::Table(root.into_inner());
    let mut problems: Vec<ConfigProblem> = Vec::new();
    loop {
        let DeValue::Table(table) = &root else {
            unreachable!("the root stays a table")
        };
        let de = toml::de::Deserializer::from(toml::Spanned::new(span.clone(), table.clone()));
        let e = match serde_path_to_error::deserialize::<_, T>(de) {
            Ok(value) => {
                let mut own = Problems::default();
                value.validate(&mut own);
                let reported = |key: &str| {
                    problems.iter().any(|p| {
                        key == p.key
                            || key
                                .strip_prefix(p.key.as_str())
                                .is_some_and(|r| r.starts_with('.'))
                    })
                };
                let own: Vec<ConfigProblem> =
                    own.0.into_iter().filter(|p| !reported(&p.key)).collect();
                problems.extend(own);
                return match problems.is_empty() {
                    true => Ok(value),
                    false => Err(error(problems)),
                };
            }
            Err(e) => e,
        };
        let segments: Vec<Segment> = e.path().iter().cloned().collect();
        let key = e.path().to_string();
        let inner = e.into_inner();
        let mut key = if key == "." { String::new() } else { key };
        // serde names a missing field in the message, not the path: move it.
        let missing = inner
            .message()
            .strip_prefix("missing field `")
            .and_then(|m| m.split('`').next());
        if let Some(field) = missing {
            key = if key.is_empty() {
                field.to_owned()
            } else {
                format!("{key}.{field}")
            };
        }
        // A key taken out for its wrong type is missing next time: said once.
        if !problems.iter().any(|p| p.key == key) {
            problems.push(ConfigProblem {
                key,
                line: line_of(text, inner.span()),
                reason: inner.message().to_owned(),
            });
        }
        if missing.is_some()
            || problems.len() >= MAX_PARSE_PROBLEMS
            || !take_out(&mut root, &segments)
        {
            return Err(error(problems));
        }
    }
}

/// Removes the value at `path` below `value`; false when there is none
/// that can be taken out (an array's element, a path through a scalar).
fn take_out(value: &mut DeValue<'_>, path: &[Segment]) -> bool {
    match (path, value) {
        ([Segment::Map { key }], DeValue::Table(t)) => t.remove(key.as_str()).is_some(),
        ([Segment::Map { key }, rest @ ..], DeValue::Table(t)) => t
            .get_mut(key.as_str())
            .is_some_and(|v| take_out(v.get_mut(), rest)),
        ([Segment::Seq { index }, rest @ ..], DeValue::Array(a)) if !rest.is_empty() => a
            .get_mut(*index)
            .is_some_and(|v| take_out(v.get_mut(), rest)),
        ([Segment::Enum { .. }, rest @ ..], v) => take_out(v, rest),
        _ => false,
    }
}

fn line_of(text: &str, span: Option<std::ops::Range<usize>>) -> Option<usize> {
    let start = span?.start.min(text.len());
    Some(
        text.as_bytes()[..start]
            .iter()
            .filter(|b| **b == b'\n')
            .count()
            + 1,
    )
}

/// Adds a problem when `path` is not absolute.
pub fn check_absolute(problems: &mut Problems, key: &str, path: &std::path::Path) {
    if !path.is_absolute() {
        problems.add(
            key,
            format!("must be an absolute path, not '{}'", path.display()),
        );
    }
}

/// A secret string (token, key) whose `Debug` output never shows the value.
#[derive(Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself; call only where it is used, never to log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(****)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Outer {
        inner: Inner,
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Inner {
        port: u16,
    }

    impl Validate for Outer {
        fn validate(&self, problems: &mut Problems) {
            if self.inner.port == 0 {
                problems.add("inner.port", "must not be 0");
            }
        }
    }

    fn parse(text: &str) -> Result<Outer, ConfigError> {
        parse_str(text, Path::new("x.toml"))
    }

    #[test]
    fn unknown_key_names_its_path_and_line() {
        let err = parse("[inner]\nport = 1\nprot = 2\n").unwrap_err();
        let p = &err.problems[0];
        assert_eq!(p.key, "inner.prot");
        assert_eq!(p.line, Some(3));
        assert!(p.reason.contains("unknown field"), "{}", p.reason);
        assert!(
            err.to_string()
                .starts_with("x.toml:3: inner.prot: unknown field")
        );
    }

    #[test]
    fn every_unknown_key_and_wrong_type_is_reported_with_its_line() {
        let err = parse("[inner]\nprot = 2\nport = 0\nextra = true\n[outer]\nx = 1\n").unwrap_err();
        let seen: Vec<(&str, Option<usize>)> = err
            .problems
            .iter()
            .map(|p| (p.key.as_str(), p.line))
            .collect();
        assert_eq!(
            seen,
            [
                ("inner.prot", Some(2)),
                ("inner.extra", Some(4)),
                ("outer", Some(5)),
                // The values' own checks run on what is left.
                ("inner.port", None),
            ],
            "{err}"
        );
        // A value of the wrong type is said once, not again as missing.
        let err = parse("[inner]\nport = \"eighty\"\nprot = 1\n").unwrap_err();
        let keys: Vec<&str> = err.problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(keys, ["inner.port", "inner.prot"], "{err}");
    }

    #[test]
    fn wrong_type_names_its_path() {
        let err = parse("[inner]\nport = \"eighty\"\n").unwrap_err();
        assert_eq!(err.problems[0].key, "inner.port");
    }

    #[test]
    fn a_missing_field_is_named_in_the_key() {
        let err = parse("[inner]\n").unwrap_err();
        assert_eq!(err.problems[0].key, "inner.port");
    }

    #[test]
    fn syntax_error_has_a_line() {
        let err = parse("[inner]\nport = = 1\n").unwrap_err();
        assert_eq!(err.problems[0].line, Some(2));
    }

    #[test]
    fn validation_runs_after_parsing() {
        let err = parse("[inner]\nport = 0\n").unwrap_err();
        assert_eq!(err.to_string(), "x.toml: inner.port: must not be 0");
    }

    #[test]
    fn secrets_do_not_print() {
        assert_eq!(format!("{:?}", Secret::new("hunter2")), "Secret(****)");
    }
}
