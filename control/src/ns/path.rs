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
    /// Control characters (C0, DEL, C1) are refused everywhere: a name is
    /// printed by tools, and must not be able to forge their output or
    /// reach a terminal as an escape sequence.
    pub fn parse_with(s: &str, selectors: bool) -> Result<NsPath, NsError> {
        let bad = |why: String| NsError::InvalidPath { path: excerpt(s), why };
        if s.len() > PATH_BYTES_MAX {
            return Err(bad(format!(
                "{} bytes exceed the {PATH_BYTES_MAX}-byte limit on a path (PATH_BYTES_MAX)",
                s.len()
            )));
        }
        if !s.starts_with('/') {
            return Err(bad("not absolute".into()));
        }
        if s.contains('\0') {
            return Err(bad("contains NUL".into()));
        }
        if let Some((at, c)) = s.char_indices().find(|&(_, c)| is_control(c)) {
            return Err(bad(format!(
                "contains the control character U+{:04X} at byte {at} (names may not hold C0, DEL or C1 controls)",
                c as u32
            )));
        }
        if s == "/" {
            return Ok(NsPath::root());
        }
        let trimmed = s.strip_suffix('/').unwrap_or(s);
        let mut depth = 0;
        for component in trimmed[1..].split('/') {
            depth += 1;
            match component {
                "" => return Err(bad("empty component".into())),
                "." | ".." => return Err(bad("`.` and `..` are not allowed".into())),
                c if c.len() > NAME_BYTES_MAX => {
                    return Err(bad(format!(
                        "a component of {} bytes exceeds the {NAME_BYTES_MAX}-byte limit on a name (NAME_BYTES_MAX)",
                        c.len()
                    )))
                }
                c if c.starts_with('~') && !(selectors && (c == LOCAL || c == ANY)) => {
                    return Err(bad("names starting with `~` are reserved".into()))
                }
                _ => {}
            }
        }
        if depth > PATH_DEPTH_MAX {
            return Err(bad(format!(
                "{depth} components exceed the {PATH_DEPTH_MAX}-component limit on a path (PATH_DEPTH_MAX)"
            )));
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

/// Whether `c` is a control character: C0 (U+0000–U+001F), DEL (U+007F)
/// or C1 (U+0080–U+009F).
pub fn is_control(c: char) -> bool {
    matches!(c, '\u{0}'..='\u{1f}' | '\u{7f}'..='\u{9f}')
}

/// Characters of a bad path or name quoted in an error, at most: enough to
/// recognize it, short enough that the reason after it is never cut off
/// (an error message travels in at most 1 KiB).
const QUOTED_CHARS_MAX: usize = 64;

/// The start of `s`, for an error message.
pub(crate) fn excerpt(s: &str) -> String {
    let mut out: String = s.chars().take(QUOTED_CHARS_MAX).collect();
    if out.len() < s.len() {
        out.push('…');
    }
    out
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
        Err(NsError::InvalidRealm(excerpt(name)))
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
        let long_name = format!("/{}", "x".repeat(256));
        let deep = "/x".repeat(33);
        let long = format!("/{}", "a/".repeat(600));
        for (p, why) in [
            ("a/b", "absolute"),
            ("/a//b", "empty"),
            ("/a/../b", "`..`"),
            ("/a/./b", "`..`"),
            ("/a\0b", "NUL"),
            ("/~any", "reserved"),
            ("/~x", "reserved"),
            ("/a\nb", "control character U+000A at byte 2"),
            ("/a/\u{1b}[2J", "control character U+001B at byte 3"),
            ("/\u{7f}", "control character U+007F"),
            ("/x\u{9b}", "control character U+009B"),
            (long_name.as_str(), "256 bytes exceeds the 255-byte limit on a name"),
            (deep.as_str(), "33 components exceed the 32-component limit"),
            (long.as_str(), "1201 bytes exceed the 1024-byte limit on a path"),
        ] {
            let err = NsPath::parse(p).unwrap_err().to_string();
            assert!(err.contains(why), "{p:?}: {err}");
            assert!(
                !err.chars().any(is_control),
                "the error quotes the path escaped: {err:?}"
            );
            assert!(err.len() < 512, "{err}");
        }
        // Printable characters beyond ASCII are names like any other.
        assert!(NsPath::parse("/é/日本/\u{a0}").is_ok());
    }

    #[test]
    fn realm_names() {
        assert!(check_realm("tenant-1_a").is_ok());
        for bad in ["", "A", "a b", "a/b", "a:b", &"x".repeat(65)] {
            assert!(check_realm(bad).is_err(), "{bad}");
        }
    }
}
