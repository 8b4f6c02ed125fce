//! Text encodings spoken on the wire: UTF-8 (the default) and GBK (the
//! seed tutorial's Windows peers). Decoding never fails: bytes that do not
//! decode are replaced with U+FFFD.

use std::borrow::Cow;
use std::fmt::Write as _;

use serde::Deserialize;

/// The character encoding a listener uses for the text it reads and writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
pub enum TextEncoding {
    /// UTF-8; invalid sequences decode to U+FFFD.
    #[default]
    #[serde(rename = "utf-8", alias = "utf8")]
    Utf8,
    /// GBK (as sent by Chinese-locale Windows peers); undecodable bytes become U+FFFD.
    #[serde(rename = "gbk")]
    Gbk,
}

impl TextEncoding {
    /// The name used in the configuration file.
    pub fn name(self) -> &'static str {
        match self {
            TextEncoding::Utf8 => "utf-8",
            TextEncoding::Gbk => "gbk",
        }
    }

    /// Decodes bytes from the wire into text, replacing what does not decode.
    pub fn decode(self, bytes: &[u8]) -> Cow<'_, str> {
        match self {
            TextEncoding::Utf8 => String::from_utf8_lossy(bytes),
            TextEncoding::Gbk => encoding_rs::GBK.decode_without_bom_handling(bytes).0,
        }
    }

    /// Encodes text for the wire. Characters GBK cannot represent are written
    /// as HTML numeric character references (encoding_rs' documented behaviour).
    pub fn encode(self, text: &str) -> Cow<'_, [u8]> {
        match self {
            TextEncoding::Utf8 => Cow::Borrowed(text.as_bytes()),
            TextEncoding::Gbk => encoding_rs::GBK.encode(text).0,
        }
    }
}

/// The most bytes of a client- or config-supplied string that a log line
/// or an error message quotes.
pub(crate) const QUOTE_MAX_BYTES: usize = 256;

/// `text` as a log field or error quote: escaped like `{:?}` without the
/// quotes (control characters visible), at most about `max` bytes, and if
/// cut, a marker saying how much was left out. The work is bounded by `max`
/// too, whatever the length of `text`.
pub(crate) fn quote(text: &str, max: usize) -> String {
    let mut out = String::with_capacity(max.min(text.len()) + 16);
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        if out.len() >= max {
            let _ = write!(out, "...[{} more bytes]", rest.len());
            return out;
        }
        out.extend(c.escape_debug());
        rest = &rest[c.len_utf8()..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_are_escaped_bounded_and_say_what_was_cut() {
        assert_eq!(quote("plain", 256), "plain");
        assert_eq!(quote("a\u{1}b\n", 256), "a\\u{1}b\\n");
        let long = "\u{1}".repeat(65_536);
        let quoted = quote(&long, 256);
        assert!(quoted.len() < 256 + 40, "{} bytes", quoted.len());
        assert!(quoted.ends_with("more bytes]"), "{quoted}");
        let cut = quote(&"é".repeat(1000), 10);
        assert_eq!(cut, "ééééé...[1990 more bytes]");
    }

    #[test]
    fn gbk_round_trip() {
        let bytes = TextEncoding::Gbk.encode("你好, hello");
        assert_eq!(&*bytes, b"\xc4\xe3\xba\xc3, hello");
        assert_eq!(TextEncoding::Gbk.decode(&bytes), "你好, hello");
    }

    #[test]
    fn invalid_bytes_are_replaced_not_fatal() {
        assert_eq!(TextEncoding::Utf8.decode(b"a\xffb"), "a\u{fffd}b");
        assert_eq!(TextEncoding::Gbk.decode(b"a\xff"), "a\u{fffd}");
    }
}
