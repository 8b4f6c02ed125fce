//! The archive a directory is streamed as: POSIX tar (`ustar` headers,
//! with pax extended headers where a value does not fit), laid out so that
//! the same tree always gives the same bytes. Entries are sorted by name,
//! owners are uid and gid 0 with no names, modes are the permission bits,
//! times are the files' modification times. So from one walk of the tree,
//! before the first byte is sent, the archive's length, its entity tag and
//! the contents of any byte range are known: a `Range` request or a
//! resumed download gets the same bytes as the whole.
//!
//! Pure: no I/O. The walk that lists the entries and the sending of the
//! pieces (headers built here, file bodies read from the files, zeros)
//! are the download handler's.

mod header;
mod layout;
pub(crate) mod read;

pub(crate) use header::BLOCK;
pub(crate) use layout::{Layout, Piece};

/// One member of an archive, as the walk found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    /// The member's name: relative, `/`-separated, no `.` or `..`
    /// components, no trailing `/` (a directory's is added in its header).
    pub name: String,
    pub kind: EntryKind,
    /// The file's size in bytes (a directory's is not archived).
    pub size: u64,
    /// `st_mode`: its permission bits are archived, the file type and the
    /// set-id and sticky bits are not.
    pub mode: u32,
    /// `st_mtime` and its nanoseconds: the seconds are archived, both are
    /// in the entity tag.
    pub mtime: i64,
    pub mtime_nsec: i64,
    /// `st_dev` and `st_ino`: in the entity tag only, so that a file
    /// replaced by another of the same name, size and time changes it.
    pub dev: u64,
    pub inode: u64,
}

/// What a member is: the archive holds regular files and directories only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum EntryKind {
    File,
    Directory,
}

impl Entry {
    /// The bytes of the member's body: the file's size, none for a
    /// directory.
    pub(crate) fn body_len(&self) -> u64 {
        match self.kind {
            EntryKind::File => self.size,
            EntryKind::Directory => 0,
        }
    }
}
