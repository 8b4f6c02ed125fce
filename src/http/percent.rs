//! Percent-encoding of request paths (RFC 3986 §2.1), strictly: every `%`
//! must be followed by two hexadecimal digits, and the decoded bytes must
//! be UTF-8 without NUL. What is not, is refused (400), never guessed at.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode, utf8_percent_encode};

/// Why a path does not decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum DecodeError {
    /// A `%` not followed by two hexadecimal digits (`%+a`, `%1`, `%zz`).
    #[error("bad percent escape")]
    BadEscape,
    /// The decoded bytes hold a NUL.
    #[error("NUL in the path")]
    Nul,
    /// The decoded bytes are not UTF-8.
    #[error("path is not UTF-8")]
    NotUtf8,
}

/// Decodes `%XX` escapes of `text`.
pub(crate) fn decode(text: &str) -> Result<String, DecodeError> {
    let bytes = text.as_bytes();
    // The crate leaves a bad escape as it is; here it is an error.
    for (at, _) in bytes.iter().enumerate().filter(|(_, b)| **b == b'%') {
        let hex = bytes.get(at + 1..at + 3).ok_or(DecodeError::BadEscape)?;
        if !hex.iter().all(u8::is_ascii_hexdigit) {
            return Err(DecodeError::BadEscape);
        }
    }
    let decoded: Vec<u8> = percent_decode(bytes).collect();
    if decoded.contains(&0) {
        return Err(DecodeError::Nul);
    }
    String::from_utf8(decoded).map_err(|_| DecodeError::NotUtf8)
}

/// What a path keeps unescaped: letters, digits, `-._~` and `/`.
const PATH_KEEPS: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'/');

/// Escapes `path` for a URL: everything but letters, digits, `-._~` and `/`.
pub(crate) fn encode_path(path: &str) -> String {
    utf8_percent_encode(path, PATH_KEEPS).to_string()
}

/// The `Location` of the directory `name` (a decoded path below the
/// root, without its leading `/`) with its trailing slash: `/` and its
/// components, escaped, each followed by `/`. Empty components and `.`
/// are left out, so it never starts with `//` (another host's address, an
/// open redirect) and a query is not carried over.
pub(crate) fn directory_location(name: &str) -> String {
    let mut location = String::with_capacity(name.len() + 2);
    location.push('/');
    for part in name.split('/').filter(|p| !p.is_empty() && *p != ".") {
        location.push_str(&encode_path(part));
        location.push('/');
    }
    location
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoding_is_strict() {
        let cases: &[(&str, Result<&str, DecodeError>)] = &[
            ("plain", Ok("plain")),
            ("a%20b", Ok("a b")),
            ("%C3%A9t%c3%a9", Ok("été")),
            ("100%25", Ok("100%")),
            ("", Ok("")),
            ("%+a", Err(DecodeError::BadEscape)),
            ("%-1", Err(DecodeError::BadEscape)),
            ("%1", Err(DecodeError::BadEscape)),
            ("%", Err(DecodeError::BadEscape)),
            ("a%zz", Err(DecodeError::BadEscape)),
            ("%%41", Err(DecodeError::BadEscape)),
            ("% 1", Err(DecodeError::BadEscape)),
            ("%00", Err(DecodeError::Nul)),
            ("%ff", Err(DecodeError::NotUtf8)),
            ("%C3", Err(DecodeError::NotUtf8)),
        ];
        for (text, expected) in cases {
            assert_eq!(
                decode(text).as_deref().map_err(|e| *e),
                *expected,
                "{text:?}"
            );
        }
    }

    #[test]
    fn a_directory_location_has_one_leading_slash_and_a_trailing_one() {
        let cases = [
            ("docs", "/docs/"),
            ("docs/nested", "/docs/nested/"),
            ("/evil.example", "/evil.example/"),
            ("//evil.example", "/evil.example/"),
            ("./a//b/.", "/a/b/"),
            ("a b/é", "/a%20b/%C3%A9/"),
            ("50%?x#y", "/50%25%3Fx%23y/"),
            ("", "/"),
        ];
        for (name, location) in cases {
            assert_eq!(directory_location(name), location, "{name:?}");
            assert!(!directory_location(name).starts_with("//"));
        }
    }

    #[test]
    fn encoding_round_trips_through_decoding() {
        let cases = [
            ("a b/c", "a%20b/c"),
            ("we ird<&>\".txt", "we%20ird%3C%26%3E%22.txt"),
            ("été", "%C3%A9t%C3%A9"),
            ("-._~/", "-._~/"),
            ("%", "%25"),
        ];
        for (path, encoded) in cases {
            assert_eq!(encode_path(path), encoded);
            assert_eq!(decode(encoded).as_deref(), Ok(path));
        }
    }
}
