//! What `get -r -c` needs to resume a folder's tar stream that was cut:
//! the archive's version (its `ETag` and length), the offset of the first
//! member not yet extracted whole (a member boundary, so the rest is read
//! as an archive of its own), and what the run had counted (the folder's
//! name, members, directories, names skipped). Kept beside the output
//! directory, as `DIR` and [`RECORD_SUFFIX`] (outside the tree, so no
//! member of an archive can be it, replace it or be removed as it),
//! written only when a stream is cut and removed when the tree is
//! complete, fetched again, or fetched otherwise; read and written as a
//! regular file only, never through a symlink, and at most
//! [`MAX_RECORD`] bytes of it are read; its counts are bounded by the
//! run's caps.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::archive::MAX_MEMBERS;
use super::mirror::{MAX_DIRS, MAX_FILES};
use super::part::{read_state, write_state};

/// What the record's name adds to the output directory's.
pub(super) const RECORD_SUFFIX: &str = ".get-r.resume";
/// Longest entity tag kept (and sent back in `If-Range`).
const MAX_ETAG: usize = 256;
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

/// The record's path: beside the directory `into` (which exists),
/// `DIR.get-r.resume`; `None` for a directory without a name (`/`).
pub(super) fn record_path(into: &Path) -> Option<PathBuf> {
    let dir = fs::canonicalize(into).ok()?;
    let mut name = dir.file_name()?.to_os_string();
    name.push(RECORD_SUFFIX);
    Some(dir.with_file_name(name))
}

impl TarResume {
    /// Reads the record at `path`: `Ok(None)` when there is none, or it is
    /// not one (too long, another format, a value that does not parse); an
    /// error for a symlink or a file that cannot be read.
    pub(super) fn read(path: &Path) -> io::Result<Option<TarResume>> {
        Ok(read_state(path, MAX_RECORD)?.and_then(|t| TarResume::parse(&t)))
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
        // Counts a run could have reached: a record that says more is
        // not one (it would reset or overflow the caps).
        let fits = plain(&etag)
            && etag.len() <= MAX_ETAG
            && at <= length
            && at.is_multiple_of(512)
            && !top.is_empty()
            && !top.contains(['/', '\n'])
            && members <= MAX_MEMBERS
            && dirs <= MAX_DIRS
            && written <= MAX_FILES
            && written <= members
            && skipped <= members;
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

    /// Writes the record at `path` (mode 0644), never through a
    /// symlink; an error, and nothing written, for a record the next run
    /// would not read back (an entity tag too long, say).
    pub(super) fn write(&self, path: &Path) -> io::Result<()> {
        let text = self.text();
        if TarResume::parse(&text).as_ref() != Some(self) {
            return Err(io::Error::other("not a record that reads back"));
        }
        write_state(path, &text)
    }
}

/// Removes the record at `path`, if there is one (a symlink there is
/// removed as itself, never followed).
pub(super) fn remove_record(path: &Path) {
    let _ = fs::remove_file(path);
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
        let base = tempfile::tempdir().unwrap();
        let dir = base.path().join("photos");
        fs::create_dir(&dir).unwrap();
        let dir = dir.as_path();
        let path = record_path(dir).unwrap();
        assert_eq!(TarResume::read(&path).unwrap(), None);
        record().write(&path).unwrap();
        // Beside the tree, never in it.
        assert!(base.path().join("photos.get-r.resume").is_file());
        assert_eq!(fs::read_dir(dir).unwrap().count(), 0);
        assert_eq!(TarResume::read(&path).unwrap(), Some(record()));
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
            // Counts no run reaches: they would reset or overflow a cap.
            text.replace("members 7", &format!("members {}", usize::MAX)),
            text.replace("dirs 2", &format!("dirs {}", MAX_DIRS + 1)),
            text.replace("skipped 1", "skipped 8"),
            text.replace("written 4", "written 8"),
            "x".repeat(5000),
        ];
        for case in cases {
            fs::write(&path, &case).unwrap();
            assert_eq!(TarResume::read(&path).unwrap(), None, "{case:?}");
        }
        remove_record(&path);
        assert!(!path.exists());
        // One that would not read back is not written.
        let long = TarResume {
            etag: format!("\"tar-{}\"", "0".repeat(300)),
            ..record()
        };
        assert!(long.write(&path).is_err());
        assert!(!path.exists());
    }

    #[test]
    fn a_symlink_is_never_followed() {
        let base = tempfile::tempdir().unwrap();
        let dir = base.path().join("photos");
        fs::create_dir(&dir).unwrap();
        let elsewhere = base.path().join("elsewhere");
        fs::write(&elsewhere, record().text()).unwrap();
        let path = record_path(&dir).unwrap();
        std::os::unix::fs::symlink(&elsewhere, &path).unwrap();
        assert!(TarResume::read(&path).is_err());
        assert!(record().write(&path).is_err());
        remove_record(&path);
        assert!(elsewhere.exists(), "the link went, not its target");
    }
}
