//! Entity tags (RFC 9110 §8.8.3): the strong tag of a file version, and
//! the comparisons of `If-Match` (strong), `If-None-Match` (weak) and
//! `If-Range` (strong) against it.

use std::time::SystemTime;

use super::date;

/// What identifies a version of a file: a strong `ETag` from its device,
/// inode, size and modification time, and that time when it is an
/// HTTP-date (`None`: no `Last-Modified`, and date conditions cannot hold
/// or are ignored).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Validators {
    pub etag: String,
    pub modified: Option<SystemTime>,
}

impl Validators {
    /// The validators of a file from its metadata's numbers (`st_dev`,
    /// `st_ino`, `st_size`, `st_mtime` and its nanoseconds).
    pub(crate) fn of(dev: u64, ino: u64, size: u64, mtime: i64, mtime_nsec: i64) -> Validators {
        let mtime_ns = i128::from(mtime) * 1_000_000_000 + i128::from(mtime_nsec);
        Validators {
            etag: format!("\"{dev:x}-{ino:x}-{size:x}-{mtime_ns:x}\""),
            modified: date::from_unix_seconds(mtime),
        }
    }

    /// The `Last-Modified` value, when there is one.
    pub(crate) fn last_modified(&self) -> Option<String> {
        self.modified.and_then(date::format)
    }
}

/// One member of an entity-tag list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tag<'a> {
    /// `*`: any current representation.
    Any,
    /// A tag with its quotes, and whether it is weak (`W/`).
    Tag { weak: bool, opaque: &'a str },
}

/// Parses `#entity-tag` or `*`; `None` when the list is malformed.
fn tags(list: &str) -> Option<Vec<Tag<'_>>> {
    let list = list.trim();
    if list == "*" {
        return Some(vec![Tag::Any]);
    }
    let mut out = Vec::new();
    let mut rest = list;
    loop {
        rest = rest.trim_start_matches([' ', '\t', ',']);
        if rest.is_empty() {
            return (!out.is_empty()).then_some(out);
        }
        let (weak, quoted) = match rest.strip_prefix("W/") {
            Some(quoted) => (true, quoted),
            None => (false, rest),
        };
        let inner = quoted.strip_prefix('"')?;
        let end = inner.find('"')?;
        let opaque = &quoted[..end + 2];
        // etagc: visible ASCII but `"`, and obs-text.
        if !inner[..end]
            .bytes()
            .all(|b| b == 0x21 || (0x23..=0x7e).contains(&b) || b >= 0x80)
        {
            return None;
        }
        out.push(Tag::Tag { weak, opaque });
        rest = quoted[end + 2..].trim_start_matches([' ', '\t']);
        if !(rest.is_empty() || rest.starts_with(',')) {
            return None;
        }
    }
}

/// `If-Match`: `*`, or one of the tags compared strongly (a weak tag never
/// matches). A malformed list matches nothing.
pub(crate) fn matches_strongly(list: &str, ours: &str) -> bool {
    tags(list).is_some_and(|tags| {
        tags.iter().any(|tag| match tag {
            Tag::Any => true,
            Tag::Tag { weak, opaque } => !weak && *opaque == ours,
        })
    })
}

/// `If-None-Match`: `*`, or one of the tags compared weakly. A malformed
/// list matches nothing.
pub(crate) fn matches_weakly(list: &str, ours: &str) -> bool {
    let ours = ours.strip_prefix("W/").unwrap_or(ours);
    tags(list).is_some_and(|tags| {
        tags.iter().any(|tag| match tag {
            Tag::Any => true,
            Tag::Tag { opaque, .. } => *opaque == ours,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const OURS: &str = "\"1-2-3-4\"";

    #[test]
    fn lists_compare_strongly_and_weakly() {
        // (list, strong match, weak match)
        let cases = [
            ("\"1-2-3-4\"", true, true),
            ("W/\"1-2-3-4\"", false, true),
            ("*", true, true),
            (" \"x\" , \"1-2-3-4\" ", true, true),
            ("\"x\", W/\"1-2-3-4\"", false, true),
            ("\"x\"", false, false),
            ("\"1-2-3-4", false, false),
            ("1-2-3-4", false, false),
            ("\"a,b\", \"1-2-3-4\"", true, true),
            // `"x, "` is one tag; what follows is garbage: nothing matches.
            ("\"x, \"1-2-3-4\"", false, false),
            ("\"1-2-3-4\" junk", false, false),
            ("*, \"x\"", false, false),
            ("", false, false),
            (",,", false, false),
        ];
        for (list, strong, weak) in cases {
            assert_eq!(matches_strongly(list, OURS), strong, "strong {list:?}");
            assert_eq!(matches_weakly(list, OURS), weak, "weak {list:?}");
        }
    }

    #[test]
    fn validators_of_a_file() {
        let v = Validators::of(0x801, 0x1234, 12, 784_111_777, 5);
        assert_eq!(v.etag, "\"801-1234-c-ae1b981bc490a05\"");
        assert_eq!(
            v.last_modified().as_deref(),
            Some("Sun, 06 Nov 1994 08:49:37 GMT")
        );
        let far = Validators::of(1, 2, 3, 253_402_300_800, 0);
        assert_eq!((far.modified, far.last_modified()), (None, None));
        let before = Validators::of(1, 2, 3, -1, 0);
        assert_eq!((before.modified, before.last_modified()), (None, None));
        assert!(before.etag.starts_with("\"1-2-3-"), "{}", before.etag);
    }
}
