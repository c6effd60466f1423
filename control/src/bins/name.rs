//! Binary names: `NAME[@VERSION]`.
//!
//! NAME is 1 to [`NAME_BYTES_MAX`] bytes of `a-z 0-9 . _ -`, starting with a
//! letter or digit; VERSION is 1 to [`VERSION_BYTES_MAX`] bytes of
//! `A-Z a-z 0-9 . _ -`, starting with a letter or digit, and is
//! [`VERSION_DEFAULT`] when left out. Neither can be `.` or `..` nor hold a
//! `/`, so each is one safe path segment in the store and in logs.

use super::limits::{NAME_BYTES_MAX, VERSION_BYTES_MAX, VERSION_DEFAULT};
use super::BinError;
use std::fmt;
use std::str::FromStr;

/// A valid binary name with its version.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BinName {
    name: String,
    version: String,
}

impl BinName {
    /// Parses `NAME[@VERSION]`.
    pub fn parse(text: &str) -> Result<BinName, BinError> {
        let invalid = |why: String| BinError::InvalidName { name: shown(text), why };
        let (name, version) = match text.split_once('@') {
            Some((name, version)) => (name, version),
            None => (text, VERSION_DEFAULT),
        };
        check_part(name, "name", NAME_BYTES_MAX, |c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'.' | b'_' | b'-')
        })
        .map_err(invalid)?;
        check_part(version, "version", VERSION_BYTES_MAX, |c| {
            c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-')
        })
        .map_err(invalid)?;
        Ok(BinName {
            name: name.to_owned(),
            version: version.to_owned(),
        })
    }

    /// The name, without the version.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The version (`latest` if none was given).
    pub fn version(&self) -> &str {
        &self.version
    }
}

/// Checks one part; says what is wrong in words.
fn check_part(part: &str, what: &str, bytes_max: usize, allowed: impl Fn(u8) -> bool) -> Result<(), String> {
    let bytes = part.as_bytes();
    if bytes.is_empty() {
        return Err(format!("the {what} is empty"));
    }
    if bytes.len() > bytes_max {
        return Err(format!(
            "the {what} has {} bytes, at most {bytes_max} are allowed",
            bytes.len()
        ));
    }
    if !bytes[0].is_ascii_alphanumeric() {
        return Err(format!("the {what} must start with a letter or digit"));
    }
    if let Some(&c) = bytes.iter().find(|&&c| !allowed(c)) {
        let allowed_text = if what == "name" {
            "a-z 0-9 . _ -"
        } else {
            "A-Z a-z 0-9 . _ -"
        };
        return Err(format!(
            "the {what} holds {:?}; a {what} may hold only {allowed_text}",
            char::from(c).escape_default().to_string()
        ));
    }
    Ok(())
}

/// The text as given, cut so that an error message stays short.
fn shown(text: &str) -> String {
    const SHOWN_BYTES_MAX: usize = NAME_BYTES_MAX + 1 + VERSION_BYTES_MAX;
    if text.len() <= SHOWN_BYTES_MAX {
        return text.to_owned();
    }
    let mut end = SHOWN_BYTES_MAX;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

impl fmt::Display for BinName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.name, self.version)
    }
}

impl FromStr for BinName {
    type Err = BinError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        BinName::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_and_versions() {
        let n = BinName::parse("hello").unwrap();
        assert_eq!((n.name(), n.version()), ("hello", "latest"));
        assert_eq!(n.to_string(), "hello@latest");
        let n = BinName::parse("kv-server_2.bin@v1.2.3-RC1").unwrap();
        assert_eq!((n.name(), n.version()), ("kv-server_2.bin", "v1.2.3-RC1"));
        assert_eq!(BinName::parse(&n.to_string()).unwrap(), n);
    }

    #[test]
    fn refuses_bad_names() {
        for bad in [
            "", "@v1", "a@", ".", "..", "../x", "a/b", "A", "Hello", "-x", ".x", "a@.", "a@..", "a@b@c", "a b", "a\0",
            "ü", "a@v/1", "a@-1",
        ] {
            let e = BinName::parse(bad).unwrap_err();
            assert!(matches!(e, BinError::InvalidName { .. }), "{bad:?}: {e}");
        }
        let long = "a".repeat(NAME_BYTES_MAX + 1);
        let e = BinName::parse(&long).unwrap_err().to_string();
        assert!(e.contains("65 bytes") && e.contains("at most 64"), "{e}");
        assert!(BinName::parse(&"a".repeat(NAME_BYTES_MAX)).is_ok());
        assert!(BinName::parse(&format!("a@{}", "1".repeat(VERSION_BYTES_MAX))).is_ok());
        assert!(BinName::parse(&format!("a@{}", "1".repeat(VERSION_BYTES_MAX + 1))).is_err());
        let e = BinName::parse("bad name").unwrap_err().to_string();
        assert!(e.contains("\"bad name\"") && e.contains("may hold only"), "{e}");
    }
}
