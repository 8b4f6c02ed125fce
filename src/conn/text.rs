//! Text encodings spoken on the wire: UTF-8 (the default) and GBK (the
//! seed tutorial's Windows peers). Decoding never fails: bytes that do not
//! decode are replaced with U+FFFD.

use std::borrow::Cow;

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

#[cfg(test)]
mod tests {
    use super::*;

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
