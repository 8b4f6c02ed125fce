//! Entity tags (RFC 9110 §8.8.3): the strong tag of a file version, and
//! the comparisons of `If-Match` (strong), `If-None-Match` (weak) and
//! `If-Range` (strong) against it.

use std::time::SystemTime;

use super::date;

/// What identifies a version of a file: a strong `ETag` from its device,
/// inode, size and modification time, and that time as its
/// `Last-Modified` date (`None`: no `Last-Modified`, and date conditions
/// cannot hold or are ignored).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Validators {
    pub etag: String,
    /// The modification time's second, never later than now's (RFC 9110
    /// §8.8.2.1): what `Last-Modified` says and what every date
    /// condition compares with.
    pub modified: Option<SystemTime>,
    /// `modified` is a strong validator (§8.8.2.2): the file changed at
    /// least a second ago. Only then may an `If-Range` date match.
    pub modified_is_strong: bool,
}

impl Validators {
    /// The validators at `now` of a file from its metadata's numbers
    /// (`st_dev`, `st_ino`, `st_size`, `st_mtime` and its nanoseconds).
    pub(crate) fn of(
        dev: u64,
        ino: u64,
        size: u64,
        mtime: i64,
        mtime_nsec: i64,
        now: SystemTime,
    ) -> Validators {
        let mtime_ns = i128::from(mtime) * 1_000_000_000 + i128::from(mtime_nsec);
        Validators {
            etag: format!("\"{dev:x}-{ino:x}-{size:x}-{mtime_ns:x}\""),
            modified: date::last_modified(mtime, now),
            modified_is_strong: date::is_strong(mtime, mtime_nsec, now),
        }
    }

    /// The validators at `now` of a representation with a strong tag of
    /// its own, whose newest part changed at `mtime` (seconds and
    /// nanoseconds; `None`: no `Last-Modified`).
    pub(crate) fn tagged(etag: String, mtime: Option<(i64, i64)>, now: SystemTime) -> Validators {
        Validators {
            etag,
            modified: mtime.and_then(|(secs, _)| date::last_modified(secs, now)),
            modified_is_strong: mtime.is_some_and(|(secs, nsec)| date::is_strong(secs, nsec, now)),
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
/// matches) with `ours` (`None`: a representation without a tag, which
/// only `*` matches). A malformed list matches nothing.
pub(crate) fn matches_strongly(list: &str, ours: Option<&str>) -> bool {
    tags(list).is_some_and(|tags| {
        tags.iter().any(|tag| match tag {
            Tag::Any => true,
            Tag::Tag { weak, opaque } => !weak && Some(*opaque) == ours,
        })
    })
}

/// `If-None-Match`: `*`, or one of the tags compared weakly with `ours`
/// (`None`: a representation without a tag, which only `*` matches). A
/// malformed list matches nothing.
pub(crate) fn matches_weakly(list: &str, ours: Option<&str>) -> bool {
    let ours = ours.map(|ours| ours.strip_prefix("W/").unwrap_or(ours));
    tags(list).is_some_and(|tags| {
        tags.iter().any(|tag| match tag {
            Tag::Any => true,
            Tag::Tag { opaque, .. } => Some(*opaque) == ours,
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
            assert_eq!(
                matches_strongly(list, Some(OURS)),
                strong,
                "strong {list:?}"
            );
            assert_eq!(matches_weakly(list, Some(OURS)), weak, "weak {list:?}");
            // Without a tag of ours (a listing), only `*` matches.
            let any = list.trim() == "*";
            assert_eq!(matches_strongly(list, None), any, "untagged {list:?}");
            assert_eq!(matches_weakly(list, None), any, "untagged {list:?}");
        }
    }

    #[test]
    fn validators_of_a_file() {
        use std::time::{Duration, UNIX_EPOCH};
        // 2023-11-14T22:13:20.5Z
        let now = UNIX_EPOCH + Duration::from_millis(1_700_000_000_500);
        let v = Validators::of(0x801, 0x1234, 12, 784_111_777, 5, now);
        assert_eq!(v.etag, "\"801-1234-c-ae1b981bc490a05\"");
        assert_eq!(
            v.last_modified().as_deref(),
            Some("Sun, 06 Nov 1994 08:49:37 GMT")
        );
        assert!(v.modified_is_strong);
        let far = Validators::of(1, 2, 3, 253_402_300_800, 0, now);
        assert_eq!((far.modified, far.last_modified()), (None, None));
        let before = Validators::of(1, 2, 3, -1, 0, now);
        assert_eq!((before.modified, before.last_modified()), (None, None));
        assert!(before.etag.starts_with("\"1-2-3-"), "{}", before.etag);
        // Dated in the future (year 3000): dated now, never strong; the
        // tag keeps the file's own time.
        let future = Validators::of(1, 2, 3, 32_503_680_000, 0, now);
        assert_eq!(
            future.last_modified().as_deref(),
            Some("Tue, 14 Nov 2023 22:13:20 GMT")
        );
        assert!(!future.modified_is_strong);
        assert_eq!(future.etag, "\"1-2-3-1c31444bf84f80000\"");
        // Changed within the last second: its date, but weak.
        let fresh = Validators::of(1, 2, 3, 1_700_000_000, 0, now);
        assert_eq!(fresh.modified, future.modified);
        assert!(!fresh.modified_is_strong);
    }
}
