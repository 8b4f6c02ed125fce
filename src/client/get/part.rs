//! A fetched file's state on disk: `FILE.part` (the bytes so far) and
//! `FILE.part.etag` (the validator and length of the version they are of,
//! so that `-c` resumes only that version), and the rule that none of a
//! file's paths is ever read or written through a symlink.

use std::fs;
use std::io::{self, Read, Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::http::response::ResponseHead;

/// Longest stored validator (`ETag` or date) sent back in `If-Range`.
const MAX_VALIDATOR: usize = 256;
/// What `FILE.part.etag` adds to a file's name.
pub(super) const PART_ETAG: &str = ".part.etag";
/// Longest `FILE.part.etag` read.
const MAX_STORED: u64 = 1024;

/// The first of `paths` that is a symlink or a directory, said as such.
pub(super) fn in_the_way(paths: &[&Path]) -> Option<String> {
    paths.iter().find_map(|path| {
        let meta = fs::symlink_metadata(path).ok()?;
        if meta.file_type().is_symlink() {
            Some(format!("{} is a symlink", path.display()))
        } else if meta.is_dir() {
            Some(format!("{} is a directory", path.display()))
        } else {
            None
        }
    })
}

/// `FILE.part` and `FILE.part.etag` beside `target`.
pub(super) fn part_paths(target: &Path) -> (PathBuf, PathBuf) {
    let mut part = target.as_os_str().to_owned();
    part.push(".part");
    let mut etag = part.clone();
    etag.push(".etag");
    (PathBuf::from(part), PathBuf::from(etag))
}

/// What identifies the version a `.part` holds a piece of: its validator
/// (a strong `ETag`, or else the `Last-Modified` date) and its whole
/// length, kept in `FILE.part.etag` as two lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Stored {
    pub(super) validator: String,
    pub(super) total: u64,
}

impl Stored {
    /// The validator of a response: its strong `ETag`, or else its
    /// `Last-Modified` when that is a strong validator too: at least a
    /// second before the response's `Date` (RFC 9110 §13.1.5: a file
    /// changed within that second may change again under the same date).
    pub(super) fn of(head: &ResponseHead, total: u64) -> Option<Stored> {
        let strong = head.etag.as_deref().filter(|e| e.starts_with('"'));
        let validator = strong.or(strong_date(head))?;
        plain_validator(validator).then(|| Stored {
            validator: validator.to_owned(),
            total,
        })
    }

    /// Reads `FILE.part.etag`, never through a symlink (that is an
    /// error); `None` if it is missing or not two such lines.
    pub(super) fn read(path: &Path) -> io::Result<Option<Stored>> {
        let Some(text) = read_state(path, MAX_STORED)? else {
            return Ok(None);
        };
        let mut lines = text.lines();
        let Some(validator) = lines.next().filter(|v| plain_validator(v)) else {
            return Ok(None);
        };
        Ok(lines
            .next()
            .and_then(|t| t.parse().ok())
            .map(|total| Stored {
                validator: validator.to_owned(),
                total,
            }))
    }

    /// Writes `FILE.part.etag` (mode 0644), never through a symlink.
    pub(super) fn write(&self, path: &Path) -> io::Result<()> {
        write_state(path, &format!("{}\n{}\n", self.validator, self.total))
    }

    /// True when `head` (a 206) is of the stored version.
    pub(super) fn is_version_of(&self, head: &ResponseHead) -> bool {
        let theirs = if self.validator.starts_with('"') {
            head.etag.as_deref()
        } else {
            head.last_modified.as_deref()
        };
        theirs == Some(self.validator.as_str())
    }
}

/// The `Last-Modified` of `head` when it is at least a second before its
/// `Date` (both HTTP-dates), else `None`.
fn strong_date(head: &ResponseHead) -> Option<&str> {
    let modified = head.last_modified.as_deref()?;
    let at = crate::http::date::parse(head.date.as_deref()?)?;
    let changed = crate::http::date::parse(modified)?;
    (at.duration_since(changed).ok()? >= std::time::Duration::from_secs(1)).then_some(modified)
}

/// A validator fit to send back in `If-Range`: printable ASCII, bounded.
fn plain_validator(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= MAX_VALIDATOR
        && text.bytes().all(|b| (b' '..=b'~').contains(&b))
}

/// Reads a small file of `get`'s own state (`FILE.part.etag`, the record
/// of a cut tar stream): `Ok(None)` when it is missing, longer than
/// `max` bytes or not UTF-8; an error for a symlink (never followed), a
/// FIFO or anything else that is not a regular file (never waited on).
pub(super) fn read_state(path: &Path, max: u64) -> io::Result<Option<String>> {
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path);
    let file = match file {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    if !file.metadata()?.is_file() {
        return Err(io::Error::other("not a regular file"));
    }
    let mut text = Vec::new();
    file.take(max + 1).read_to_end(&mut text)?;
    if text.len() as u64 > max {
        return Ok(None);
    }
    Ok(String::from_utf8(text).ok())
}

/// Writes a small file of `get`'s own state (mode 0644), never through a
/// symlink and never into anything but a regular file.
pub(super) fn write_state(path: &Path, text: &str) -> io::Result<()> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o644)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)?;
    if !file.metadata()?.is_file() {
        return Err(io::Error::other("not a regular file"));
    }
    file.write_all(text.as_bytes())
}

/// Opens the `.part` for writing at `start` (truncated there); never
/// through a symlink.
pub(super) fn open_part(part: &Path, start: u64) -> io::Result<fs::File> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(start == 0)
        .custom_flags(libc::O_NOFOLLOW)
        .open(part)?;
    file.set_len(start)?;
    file.seek(io::SeekFrom::Start(start))?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head_with(etag: Option<&str>, modified: Option<&str>) -> ResponseHead {
        ResponseHead {
            status: 200,
            reason: "OK".into(),
            content_length: Some(10),
            content_range: None,
            unsatisfied_total: None,
            etag: etag.map(str::to_owned),
            last_modified: modified.map(str::to_owned),
            date: Some("Sun, 06 Dec 2026 08:00:00 GMT".to_owned()),
            chunked: false,
            location: None,
            content_type: None,
            vary: Vec::new(),
        }
    }

    #[test]
    fn the_stored_validator_is_a_strong_etag_or_else_the_date() {
        let date = "Sun, 06 Dec 2026 07:00:00 GMT";
        let strong = Stored::of(&head_with(Some("\"v1\""), Some(date)), 10).unwrap();
        assert_eq!(strong.validator, "\"v1\"");
        assert!(strong.is_version_of(&head_with(Some("\"v1\""), None)));
        assert!(!strong.is_version_of(&head_with(Some("\"v2\""), Some(date))));
        assert!(!strong.is_version_of(&head_with(None, Some(date))));
        let by_date = Stored::of(&head_with(Some("W/\"weak\""), Some(date)), 10).unwrap();
        assert_eq!(by_date.validator, date);
        assert!(by_date.is_version_of(&head_with(None, Some(date))));
        assert_eq!(Stored::of(&head_with(None, None), 10), None);
        // A date less than a second before the response's is weak: not kept.
        let fresh = "Sun, 06 Dec 2026 08:00:00 GMT";
        assert_eq!(Stored::of(&head_with(None, Some(fresh)), 10), None);
        let mut undated = head_with(None, Some(date));
        undated.date = None;
        assert_eq!(Stored::of(&undated, 10), None);
        assert_eq!(
            Stored::of(&head_with(Some("\"a\r\nX: y\""), None), 10),
            None
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.part.etag");
        strong.write(&path).unwrap();
        assert_eq!(Stored::read(&path).unwrap(), Some(strong.clone()));
        fs::write(&path, "\"only a validator\"").unwrap();
        assert_eq!(Stored::read(&path).unwrap(), None);
        // Never through a symlink: neither read nor written.
        let victim = dir.path().join("victim");
        fs::write(&victim, "\"secret\"\n42\n").unwrap();
        let link = dir.path().join("l.part.etag");
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        assert!(Stored::read(&link).is_err());
        assert!(strong.write(&link).is_err());
        assert_eq!(fs::read(&victim).unwrap(), b"\"secret\"\n42\n");
    }
}
