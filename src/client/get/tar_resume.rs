//! What `get -r -c` needs to resume a folder's tar stream that was cut:
//! the archive's version (its `ETag` and length), the offset of the first
//! member not yet extracted whole (a member boundary, so the rest is read
//! as an archive of its own), and what the run had counted (the folder's
//! name, members, directories, names skipped). Kept in the output
//! directory as [`RECORD_NAME`], written only when a stream is cut and
//! removed when the tree is complete or fetched again without `-c`; read
//! and written as a regular file only, never through a symlink, and at
//! most [`MAX_RECORD`] bytes of it are read.

use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// The record's file name, in the output directory.
pub(super) const RECORD_NAME: &str = ".switchboard-get-r.resume";
/// Longest record read.
const MAX_RECORD: u64 = 4096;
/// The record's first line: its format.
const FORMAT: &str = "switchboard get -r resume 1";

/// A cut tar stream's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct TarResume {
    /// The archive's strong `ETag`, sent back in `If-Range`.
    pub etag: String,
    /// The archive's whole length.
    pub length: u64,
    /// Where the first member not extracted whole begins.
    pub at: u64,
    /// The folder's name, the archive's first member.
    pub top: String,
    /// Members read before `at` (toward the run's cap).
    pub members: usize,
    /// Directories created (toward the run's cap).
    pub dirs: usize,
    /// Members skipped with a warning: the tree is incomplete even if the
    /// rest comes whole.
    pub skipped: usize,
    /// Files written.
    pub written: usize,
}

/// The record's path in `into`.
pub(super) fn record_path(into: &Path) -> PathBuf {
    into.join(RECORD_NAME)
}

impl TarResume {
    /// Reads the record in `into`: `Ok(None)` when there is none, or it is
    /// not one (too long, another format, a value that does not parse); an
    /// error for a symlink or a file that cannot be read.
    pub(super) fn read(into: &Path) -> io::Result<Option<TarResume>> {
        let file = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(record_path(into));
        let file = match file {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        if !file.metadata()?.is_file() {
            return Err(io::Error::other("not a regular file"));
        }
        let mut text = Vec::new();
        file.take(MAX_RECORD + 1).read_to_end(&mut text)?;
        if text.len() as u64 > MAX_RECORD {
            return Ok(None);
        }
        Ok(String::from_utf8(text)
            .ok()
            .and_then(|t| TarResume::parse(&t)))
    }

    /// The record's text parsed, if it is one.
    fn parse(text: &str) -> Option<TarResume> {
        let mut lines = text.lines();
        if lines.next()? != FORMAT {
            return None;
        }
        let mut field = |key: &str| {
            lines
                .next()?
                .strip_prefix(key)?
                .strip_prefix(' ')
                .map(str::to_owned)
        };
        let etag = field("etag")?;
        let length = field("length")?.parse().ok()?;
        let at: u64 = field("at")?.parse().ok()?;
        let top = field("top")?;
        let members = field("members")?.parse().ok()?;
        let dirs = field("dirs")?.parse().ok()?;
        let skipped = field("skipped")?.parse().ok()?;
        let written = field("written")?.parse().ok()?;
        let plain = |t: &str| !t.is_empty() && t.bytes().all(|b| (b' '..=b'~').contains(&b));
        let fits = plain(&etag)
            && etag.len() <= 256
            && at <= length
            && at.is_multiple_of(512)
            && !top.is_empty()
            && !top.contains(['/', '\n']);
        fits.then_some(TarResume {
            etag,
            length,
            at,
            top,
            members,
            dirs,
            skipped,
            written,
        })
    }

    /// The record's text.
    fn text(&self) -> String {
        format!(
            "{FORMAT}\netag {}\nlength {}\nat {}\ntop {}\nmembers {}\ndirs {}\nskipped {}\n\
             written {}\n",
            self.etag,
            self.length,
            self.at,
            self.top,
            self.members,
            self.dirs,
            self.skipped,
            self.written
        )
    }

    /// Writes the record into `into` (mode 0644), never through a symlink.
    pub(super) fn write(&self, into: &Path) -> io::Result<()> {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o644)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(record_path(into))?;
        if !file.metadata()?.is_file() {
            return Err(io::Error::other("not a regular file"));
        }
        file.write_all(self.text().as_bytes())
    }
}

/// Removes the record in `into`, if there is one (a symlink there is
/// removed as itself, never followed).
pub(super) fn remove_record(into: &Path) {
    let _ = fs::remove_file(record_path(into));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> TarResume {
        TarResume {
            etag: "\"tar-0123abcd\"".into(),
            length: 10_240,
            at: 4096,
            top: "猫 photos".into(),
            members: 7,
            dirs: 2,
            skipped: 1,
            written: 4,
        }
    }

    #[test]
    fn a_record_reads_back_and_anything_else_is_none() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(TarResume::read(dir.path()).unwrap(), None);
        record().write(dir.path()).unwrap();
        assert_eq!(TarResume::read(dir.path()).unwrap(), Some(record()));
        let text = record().text();
        let cases = [
            text.replace("resume 1", "resume 2"),
            text.replace("at 4096", "at 4097"),
            text.replace("at 4096", "at 20480"),
            text.replace("top 猫 photos", "top a/b"),
            text.replace("top 猫 photos", "top "),
            text.replace("\"tar-0123abcd\"", "\"tar-\u{1b}\""),
            text.replace("members 7", "members -1"),
            text.replace("written 4\n", ""),
            "x".repeat(5000),
        ];
        for case in cases {
            fs::write(record_path(dir.path()), &case).unwrap();
            assert_eq!(TarResume::read(dir.path()).unwrap(), None, "{case:?}");
        }
        remove_record(dir.path());
        assert!(!record_path(dir.path()).exists());
    }

    #[test]
    fn a_symlink_is_never_followed() {
        let dir = tempfile::tempdir().unwrap();
        let elsewhere = dir.path().join("elsewhere");
        fs::write(&elsewhere, record().text()).unwrap();
        std::os::unix::fs::symlink(&elsewhere, record_path(dir.path())).unwrap();
        assert!(TarResume::read(dir.path()).is_err());
        assert!(record().write(dir.path()).is_err());
        remove_record(dir.path());
        assert!(elsewhere.exists(), "the link went, not its target");
    }
}
