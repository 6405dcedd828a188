//! Validation of object paths given by clients.
//!
//! A path names an object inside one connection: relative, `/`-separated,
//! with no empty, `.` or `..` segment, no control character and bounded
//! lengths. Validation happens once, at the edge of the API; everything past
//! it handles [`ObjectPath`] values that are known to be safe to hand to a
//! provider.

use std::fmt;

/// Longest accepted path, in bytes.
pub const MAX_PATH_BYTES: usize = 1024;
/// Longest accepted segment, in bytes (the common file-system limit).
pub const MAX_SEGMENT_BYTES: usize = 255;
/// Folder at the top of every connection where ferry stages uploads before
/// they become visible; clients can neither read nor write inside it.
pub const STAGING_DIR: &str = ".ferry-partial";

/// Why a path was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// The path is empty where an object is required.
    #[error("the path is empty")]
    Empty,
    /// The path starts with `/`.
    #[error("the path must be relative (it starts with '/')")]
    Absolute,
    /// The path is longer than [`MAX_PATH_BYTES`].
    #[error("the path is longer than {MAX_PATH_BYTES} bytes")]
    TooLong,
    /// A segment is longer than [`MAX_SEGMENT_BYTES`].
    #[error("a path segment is longer than {MAX_SEGMENT_BYTES} bytes")]
    SegmentTooLong,
    /// A segment is empty (`a//b`) or the path ends with `/`.
    #[error("the path has an empty segment")]
    EmptySegment,
    /// A segment is `.` or `..`.
    #[error("the path has a '.' or '..' segment")]
    DotSegment,
    /// The path holds NUL, another control character or a backslash.
    #[error("the path has a control character or a backslash")]
    BadCharacter,
    /// The path is inside ferry's staging folder.
    #[error("the path is inside the reserved folder '{STAGING_DIR}'")]
    Reserved,
}

/// A validated, relative object path such as `photos/2026/cat.jpg`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectPath(String);

impl ObjectPath {
    /// Validates the path of an object (a file or a folder, never the root).
    pub fn parse(raw: &str) -> Result<Self, PathError> {
        if raw.is_empty() {
            return Err(PathError::Empty);
        }
        Self::check(raw)?;
        Ok(Self(raw.to_owned()))
    }

    /// Validates a folder path; the empty string (the connection's root) and
    /// one trailing `/` are accepted.
    pub fn parse_dir(raw: &str) -> Result<Option<Self>, PathError> {
        let trimmed = raw.strip_suffix('/').unwrap_or(raw);
        if trimmed.is_empty() {
            if raw.is_empty() {
                return Ok(None);
            }
            return Err(PathError::Absolute);
        }
        Self::parse(trimmed).map(Some)
    }

    fn check(raw: &str) -> Result<(), PathError> {
        if raw.starts_with('/') {
            return Err(PathError::Absolute);
        }
        if raw.len() > MAX_PATH_BYTES {
            return Err(PathError::TooLong);
        }
        if raw.chars().any(|c| c.is_control() || c == '\\') {
            return Err(PathError::BadCharacter);
        }
        for (i, segment) in raw.split('/').enumerate() {
            match segment {
                "" => return Err(PathError::EmptySegment),
                "." | ".." => return Err(PathError::DotSegment),
                s if s.len() > MAX_SEGMENT_BYTES => return Err(PathError::SegmentTooLong),
                STAGING_DIR if i == 0 => return Err(PathError::Reserved),
                _ => {}
            }
        }
        Ok(())
    }

    /// The path as given, without a leading or trailing `/`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The same path with a trailing `/`, as providers name folders.
    pub fn as_dir(&self) -> String {
        format!("{}/", self.0)
    }

    /// The last segment.
    pub fn name(&self) -> &str {
        self.0.rsplit('/').next().unwrap_or(&self.0)
    }
}

impl fmt::Debug for ObjectPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for ObjectPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_paths() {
        for ok in [
            "a",
            "a/b/c.txt",
            "with space/ünïcode",
            ".hidden",
            "a/.ferry-partial",
        ] {
            assert_eq!(ObjectPath::parse(ok).unwrap().as_str(), ok);
        }
        assert_eq!(ObjectPath::parse("a/b/c.txt").unwrap().name(), "c.txt");
    }

    #[test]
    fn refuses_unsafe_paths() {
        let cases = [
            ("", PathError::Empty),
            ("/etc/passwd", PathError::Absolute),
            ("../etc/passwd", PathError::DotSegment),
            ("a/../../b", PathError::DotSegment),
            ("a/./b", PathError::DotSegment),
            ("a//b", PathError::EmptySegment),
            ("a/", PathError::EmptySegment),
            ("a\0b", PathError::BadCharacter),
            ("a\nb", PathError::BadCharacter),
            ("a\\..\\b", PathError::BadCharacter),
            (".ferry-partial/x", PathError::Reserved),
        ];
        for (raw, want) in cases {
            assert_eq!(ObjectPath::parse(raw).unwrap_err(), want, "{raw:?}");
        }
        let long_segment = "x".repeat(MAX_SEGMENT_BYTES + 1);
        assert_eq!(
            ObjectPath::parse(&long_segment).unwrap_err(),
            PathError::SegmentTooLong
        );
        let long_path = vec!["abcdefgh"; 200].join("/");
        assert_eq!(
            ObjectPath::parse(&long_path).unwrap_err(),
            PathError::TooLong
        );
    }

    #[test]
    fn folders_may_be_the_root_or_end_in_a_slash() {
        assert_eq!(ObjectPath::parse_dir("").unwrap(), None);
        assert_eq!(
            ObjectPath::parse_dir("a/b/").unwrap().unwrap().as_str(),
            "a/b"
        );
        assert_eq!(ObjectPath::parse_dir("/").unwrap_err(), PathError::Absolute);
        assert_eq!(
            ObjectPath::parse_dir("a//").unwrap_err(),
            PathError::EmptySegment
        );
    }
}
