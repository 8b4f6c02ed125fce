//! What the clients write of a server's words: text in which nothing can
//! drive a terminal. C0 controls (but tab and newline), DEL and C1
//! controls (U+0080 to U+009F) and the bidirectional overrides and
//! isolates (U+202A to U+202E, U+2066 to U+2069) become visible escapes
//! (`\x1b`, `\x7f`, `\u{9b}`, `\u{202e}`), as do bytes that are not valid
//! UTF-8 (`\x9b`); everything
//! else, backslashes included, is written as it is. `--raw` skips this
//! and writes a server's bytes unchanged.

use std::borrow::Cow;
use std::fmt::Write;

use crate::conn::text::TextEncoding;

/// True for a character a terminal may act on: C0 but tab and newline,
/// DEL, and C1.
fn is_dangerous(c: char) -> bool {
    (c.is_control() && c != '\t' && c != '\n')
        || ('\u{80}'..='\u{9f}').contains(&c)
        || is_bidi_override(c)
}

/// The bidirectional embeddings, overrides and isolates (U+202A to U+202E,
/// U+2066 to U+2069): they reorder the text around them on a terminal that
/// lays out right-to-left text, so a server's words could show as others
/// ("Trojan Source", CVE-2021-42574). The marks (U+200E, U+200F, U+061C)
/// reorder nothing and stay.
fn is_bidi_override(c: char) -> bool {
    ('\u{202a}'..='\u{202e}').contains(&c) || ('\u{2066}'..='\u{2069}').contains(&c)
}

/// `text` with every control character a terminal would act on replaced
/// by a visible escape: `\xNN` for C0 and DEL, `\u{NN}` for C1.
pub fn escape_text(text: &str) -> Cow<'_, str> {
    if !text.chars().any(is_dangerous) {
        return Cow::Borrowed(text);
    }
    let mut escaped = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        push_char(&mut escaped, c);
    }
    Cow::Owned(escaped)
}

fn push_char(out: &mut String, c: char) {
    if !is_dangerous(c) {
        out.push(c);
    } else if (c as u32) < 0x80 {
        let _ = write!(out, "\\x{:02x}", c as u32);
    } else {
        let _ = write!(out, "\\u{{{:x}}}", c as u32);
    }
}

/// A server's `bytes` in `encoding`, decoded and escaped for a terminal.
/// In UTF-8, a byte that is not part of a valid sequence is shown as
/// `\xNN` (so a raw 0x9b, the 8-bit CSI, is visible, not replaced); GBK
/// is decoded first (what it cannot decode becomes U+FFFD), then escaped.
pub fn escape_bytes(bytes: &[u8], encoding: TextEncoding) -> String {
    match encoding {
        TextEncoding::Utf8 => {
            let mut out = String::with_capacity(bytes.len());
            for chunk in bytes.utf8_chunks() {
                for c in chunk.valid().chars() {
                    push_char(&mut out, c);
                }
                for b in chunk.invalid() {
                    let _ = write!(out, "\\x{b:02x}");
                }
            }
            out
        }
        TextEncoding::Gbk => escape_text(&encoding.decode(bytes)).into_owned(),
    }
}

/// How a client writes a server's words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Shown {
    /// Decoded and escaped ([`escape_bytes`]): the default.
    #[default]
    Escaped,
    /// The bytes unchanged, whatever they are (`--raw`).
    Raw,
}

impl Shown {
    /// `bytes` (one line or datagram, without its line ending) as written.
    pub fn render<'a>(self, bytes: &'a [u8], encoding: TextEncoding) -> Cow<'a, [u8]> {
        match self {
            Shown::Raw => Cow::Borrowed(bytes),
            Shown::Escaped => Cow::Owned(escape_bytes(bytes, encoding).into_bytes()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_become_visible_escapes_and_the_rest_stays() {
        let table: &[(&[u8], &str)] = &[
            (b"plain text", "plain text"),
            (b"tab\tand back\\slash", "tab\tand back\\slash"),
            (b"two\nlines", "two\nlines"),
            ("中文 ok".as_bytes(), "中文 ok"),
            (b"\x1b]0;owned\x07", "\\x1b]0;owned\\x07"),
            (b"\x1b]52;c;ZXZpbA==\x07", "\\x1b]52;c;ZXZpbA==\\x07"),
            (b"\x1b[2J\x1b[H", "\\x1b[2J\\x1b[H"),
            (b"cr\rover", "cr\\x0dover"),
            (b"nul\0bell\x07bs\x08", "nul\\x00bell\\x07bs\\x08"),
            (b"del\x7f", "del\\x7f"),
            (
                "c1 \u{9b}2J \u{85} \u{80} \u{9f}".as_bytes(),
                "c1 \\u{9b}2J \\u{85} \\u{80} \\u{9f}",
            ),
            (b"raw c1 \x9b2J", "raw c1 \\x9b2J"),
            (b"bad \xff\xfe utf8", "bad \\xff\\xfe utf8"),
            ("\u{a0}nbsp and é".as_bytes(), "\u{a0}nbsp and é"),
            (
                "rlo \u{202e}txt.exe lri \u{2066}x\u{2069} rlm \u{200f}".as_bytes(),
                "rlo \\u{202e}txt.exe lri \\u{2066}x\\u{2069} rlm \u{200f}",
            ),
        ];
        for (input, expected) in table {
            assert_eq!(
                escape_bytes(input, TextEncoding::Utf8),
                *expected,
                "{input:?}"
            );
        }
    }

    #[test]
    fn gbk_is_decoded_before_it_is_escaped() {
        let mut bytes = TextEncoding::Gbk.encode("你好").into_owned();
        bytes.extend_from_slice(b"\x1b[2J\x7f");
        assert_eq!(escape_bytes(&bytes, TextEncoding::Gbk), "你好\\x1b[2J\\x7f");
    }

    #[test]
    fn escape_text_borrows_clean_text_and_raw_passes_bytes_unchanged() {
        assert!(matches!(escape_text("clean"), Cow::Borrowed("clean")));
        assert_eq!(escape_text("a\u{1b}b"), "a\\x1bb");
        let hostile = b"\x1b]0;t\x07\x9b";
        assert_eq!(Shown::Raw.render(hostile, TextEncoding::Utf8), &hostile[..]);
        assert_eq!(
            Shown::Escaped.render(hostile, TextEncoding::Utf8),
            b"\\x1b]0;t\\x07\\x9b".as_slice()
        );
    }
}
