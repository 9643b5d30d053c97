//! A path relative to a copy's root, validated once at the edge.
//!
//! Every path that reaches a target, the manifest or a report is a `RelPath`: no leading `/`,
//! no `.` or `..` components, no empty components, no NUL, newline or carriage return, and
//! never inside redundo's own `.redundo/` folder. A crafted manifest therefore cannot name a
//! file outside the roots, and a name that would make a `b3sum`-style line ambiguous cannot
//! get in.

use std::fmt;
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The folder in every copy's root where redundo keeps its own state.
pub const STATE_DIR: &str = ".redundo";

#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RelPath(String);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RelPathError {
    #[error("path is empty")]
    Empty,
    #[error("path {0:?} is absolute")]
    Absolute(String),
    #[error("path {0:?} has an empty, '.' or '..' component")]
    BadComponent(String),
    #[error("path {0:?} contains a NUL, newline or carriage return")]
    BadCharacter(String),
    #[error("path {0:?} is not valid UTF-8")]
    NotUtf8(String),
    #[error("path {0:?} is inside redundo's own {STATE_DIR}/ folder")]
    Reserved(String),
}

impl RelPath {
    /// Parses a `/`-separated relative path.
    pub fn new(raw: &str) -> Result<RelPath, RelPathError> {
        if raw.is_empty() {
            return Err(RelPathError::Empty);
        }
        if raw.starts_with('/') {
            return Err(RelPathError::Absolute(raw.to_string()));
        }
        if raw.contains(['\0', '\n', '\r']) {
            return Err(RelPathError::BadCharacter(raw.to_string()));
        }
        for part in raw.split('/') {
            if part.is_empty() || part == "." || part == ".." {
                return Err(RelPathError::BadComponent(raw.to_string()));
            }
        }
        if raw.split('/').next() == Some(STATE_DIR) {
            return Err(RelPathError::Reserved(raw.to_string()));
        }
        Ok(RelPath(raw.to_string()))
    }

    /// Turns a path found under `root` by a directory walk into a `RelPath`.
    pub fn from_walk(root: &Path, found: &Path) -> Result<RelPath, RelPathError> {
        let relative = found
            .strip_prefix(root)
            .map_err(|_| RelPathError::Absolute(found.display().to_string()))?;
        let mut parts = Vec::new();
        for component in relative.components() {
            match component {
                Component::Normal(part) => match part.to_str() {
                    Some(text) => parts.push(text),
                    None => return Err(RelPathError::NotUtf8(found.display().to_string())),
                },
                _ => return Err(RelPathError::BadComponent(found.display().to_string())),
            }
        }
        RelPath::new(&parts.join("/"))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The path of this file below `root`.
    pub fn under(&self, root: &Path) -> PathBuf {
        let mut path = root.to_path_buf();
        path.extend(self.0.split('/'));
        path
    }

    /// The last component.
    pub fn file_name(&self) -> &str {
        self.0.rsplit('/').next().unwrap_or(&self.0)
    }

    /// Whether this path equals `prefix` or lies below it.
    pub fn starts_with(&self, prefix: &str) -> bool {
        let prefix = prefix.trim_end_matches('/');
        self.0 == prefix || (self.0.starts_with(prefix) && self.0[prefix.len()..].starts_with('/'))
    }
}

/// Maps keyed by path can be asked with a `&str` (the derived order is the string's).
impl std::borrow::Borrow<str> for RelPath {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl Serialize for RelPath {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for RelPath {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        RelPath::new(&raw).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_nested_and_unicode_paths() {
        for ok in ["a", "a/b/c.bin", "with space/ünïcødé ✓.txt", ".hidden/x"] {
            assert_eq!(RelPath::new(ok).unwrap().as_str(), ok);
        }
    }

    #[test]
    fn rejects_paths_that_could_escape_or_confuse() {
        let cases = [
            ("", RelPathError::Empty),
            ("/etc/passwd", RelPathError::Absolute("/etc/passwd".into())),
            ("../x", RelPathError::BadComponent("../x".into())),
            ("a/../../x", RelPathError::BadComponent("a/../../x".into())),
            ("a//b", RelPathError::BadComponent("a//b".into())),
            ("a/./b", RelPathError::BadComponent("a/./b".into())),
            ("a/", RelPathError::BadComponent("a/".into())),
            ("a\nb", RelPathError::BadCharacter("a\nb".into())),
            ("a\0b", RelPathError::BadCharacter("a\0b".into())),
            (".redundo/manifest", RelPathError::Reserved(".redundo/manifest".into())),
        ];
        for (raw, expected) in cases {
            assert_eq!(RelPath::new(raw), Err(expected), "{raw:?}");
        }
    }

    #[test]
    fn prefix_match_respects_component_boundaries() {
        let path = RelPath::new("models/v1/weights.bin").unwrap();
        assert!(path.starts_with("models"));
        assert!(path.starts_with("models/v1/"));
        assert!(!path.starts_with("mod"));
        assert!(!path.starts_with("models/v"));
    }

    #[test]
    fn from_walk_joins_components_with_slashes() {
        let root = Path::new("/data");
        let found = Path::new("/data/a/b c/d.bin");
        assert_eq!(RelPath::from_walk(root, found).unwrap().as_str(), "a/b c/d.bin");
    }
}
