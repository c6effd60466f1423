//! Namespace paths and realm names, validated before anything else sees them.

use super::NsError;

/// Bytes of a whole path, at most.
pub const PATH_BYTES_MAX: usize = 1024;
/// Components of a path, at most.
pub const PATH_DEPTH_MAX: usize = 32;
/// Bytes of one path component, at most.
pub const NAME_BYTES_MAX: usize = 255;
/// Bytes of a realm name, at most.
pub const REALM_BYTES_MAX: usize = 64;

/// Path elements that select among a replicated service's instances.
pub const LOCAL: &str = "~local";
/// See [`LOCAL`].
pub const ANY: &str = "~any";

/// An absolute, normalized namespace path: `/` or `/a/b` (no trailing
/// slash, no empty, `.` or `..` components, no NUL, bounded).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NsPath(String);

impl NsPath {
    /// The root directory.
    pub fn root() -> NsPath {
        NsPath("/".to_string())
    }

    /// Parses and checks a path. `~local`/`~any` are allowed only when
    /// `selectors` is true (resolve), never in names that are created.
    pub fn parse_with(s: &str, selectors: bool) -> Result<NsPath, NsError> {
        let bad = |why: &str| NsError::InvalidPath {
            path: s.chars().take(PATH_BYTES_MAX).collect(),
            why: why.to_string(),
        };
        if s.len() > PATH_BYTES_MAX {
            return Err(bad("longer than PATH_BYTES_MAX"));
        }
        if !s.starts_with('/') {
            return Err(bad("not absolute"));
        }
        if s.contains('\0') {
            return Err(bad("contains NUL"));
        }
        if s == "/" {
            return Ok(NsPath::root());
        }
        let trimmed = s.strip_suffix('/').unwrap_or(s);
        let mut depth = 0;
        for component in trimmed[1..].split('/') {
            depth += 1;
            match component {
                "" => return Err(bad("empty component")),
                "." | ".." => return Err(bad("`.` and `..` are not allowed")),
                c if c.len() > NAME_BYTES_MAX => return Err(bad("component longer than NAME_BYTES_MAX")),
                c if c.starts_with('~') && !(selectors && (c == LOCAL || c == ANY)) => {
                    return Err(bad("names starting with `~` are reserved"))
                }
                _ => {}
            }
        }
        if depth > PATH_DEPTH_MAX {
            return Err(bad("deeper than PATH_DEPTH_MAX"));
        }
        Ok(NsPath(trimmed.to_string()))
    }

    /// Parses a path naming an entry (no selectors).
    pub fn parse(s: &str) -> Result<NsPath, NsError> {
        NsPath::parse_with(s, false)
    }

    /// The path as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether this is `/`.
    pub fn is_root(&self) -> bool {
        self.0 == "/"
    }

    /// The components, in order.
    pub fn components(&self) -> impl Iterator<Item = &str> {
        self.0.split('/').filter(|c| !c.is_empty())
    }

    /// The parent directory (`None` for `/`).
    pub fn parent(&self) -> Option<NsPath> {
        if self.is_root() {
            return None;
        }
        match self.0.rfind('/') {
            Some(0) => Some(NsPath::root()),
            Some(i) => Some(NsPath(self.0[..i].to_string())),
            None => None,
        }
    }

    /// The last component (`""` for `/`).
    pub fn name(&self) -> &str {
        self.0.rsplit('/').next().unwrap_or("")
    }

    /// This path with `name` appended (`name` must be a valid component).
    pub fn join(&self, name: &str) -> Result<NsPath, NsError> {
        if self.is_root() {
            NsPath::parse(&format!("/{name}"))
        } else {
            NsPath::parse(&format!("{}/{name}", self.0))
        }
    }

    /// Whether `other` is this path or below it.
    pub fn contains(&self, other: &NsPath) -> bool {
        self.is_root() || other.0 == self.0 || other.0.starts_with(&format!("{}/", self.0))
    }
}

impl std::fmt::Display for NsPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Checks a realm name: 1–64 bytes of `a-z`, `0-9`, `-` and `_`.
pub fn check_realm(name: &str) -> Result<(), NsError> {
    let ok = !name.is_empty()
        && name.len() <= REALM_BYTES_MAX
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(NsError::InvalidRealm(name.chars().take(REALM_BYTES_MAX + 1).collect()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_paths_normalize() {
        assert_eq!(NsPath::parse("/").unwrap().as_str(), "/");
        assert_eq!(NsPath::parse("/a/b/").unwrap().as_str(), "/a/b");
        assert_eq!(NsPath::parse("/a/b").unwrap().parent().unwrap().as_str(), "/a");
        assert_eq!(NsPath::parse("/a").unwrap().parent().unwrap().as_str(), "/");
        assert_eq!(NsPath::parse("/a/b").unwrap().name(), "b");
        assert!(NsPath::parse("/a").unwrap().contains(&NsPath::parse("/a/b").unwrap()));
        assert!(!NsPath::parse("/a").unwrap().contains(&NsPath::parse("/ab").unwrap()));
        assert!(NsPath::parse_with("/svc/~any/x", true).is_ok());
    }

    #[test]
    fn bad_paths_say_why() {
        for (p, why) in [
            ("a/b", "absolute"),
            ("/a//b", "empty"),
            ("/a/../b", "`..`"),
            ("/a/./b", "`..`"),
            ("/a\0b", "NUL"),
            ("/~any", "reserved"),
            ("/~x", "reserved"),
        ] {
            let err = NsPath::parse(p).unwrap_err().to_string();
            assert!(err.contains(why), "{p}: {err}");
        }
        assert!(NsPath::parse(&format!("/{}", "x".repeat(256))).is_err());
        assert!(NsPath::parse(&"/x".repeat(33)).is_err());
        assert!(NsPath::parse(&format!("/{}", "a/".repeat(600))).is_err());
    }

    #[test]
    fn realm_names() {
        assert!(check_realm("tenant-1_a").is_ok());
        for bad in ["", "A", "a b", "a/b", "a:b", &"x".repeat(65)] {
            assert!(check_realm(bad).is_err(), "{bad}");
        }
    }
}
