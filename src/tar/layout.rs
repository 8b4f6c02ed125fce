//! Where each member of an archive starts, the archive's length and
//! entity tag, and the pieces (header bytes, file body, zeros) that make up
//! any byte range of it.

use sha2::{Digest, Sha256};

use super::Entry;
use super::header::{self, BLOCK};

/// The end of an archive: two zero blocks.
const TRAILER: u64 = 2 * BLOCK;

/// An archive's layout: its members in order, where each starts, and the
/// archive's length. Memory: one [`Entry`] and 12 bytes a member.
#[derive(Debug)]
pub(crate) struct Layout {
    members: Vec<Member>,
    len: u64,
    /// Of every member: computed with the layout (off the async workers,
    /// where the walk runs), not per request.
    etag: String,
    newest_mtime: Option<(i64, i64)>,
}

#[derive(Debug)]
struct Member {
    entry: Entry,
    /// The archive offset of the member's first header byte.
    start: u64,
    /// The bytes of its header blocks (pax and `ustar`).
    header_len: u32,
}

impl Member {
    fn body_len(&self) -> u64 {
        self.entry.body_len()
    }

    /// The zeros after the body, up to the next block.
    fn pad_len(&self) -> u64 {
        (BLOCK - self.body_len() % BLOCK) % BLOCK
    }

    fn end(&self) -> u64 {
        self.start + u64::from(self.header_len) + self.body_len() + self.pad_len()
    }
}

/// One contiguous piece of an archive's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Piece {
    /// `len` bytes of member `member`'s header blocks ([`Layout::header`]),
    /// from byte `skip`.
    Header {
        member: usize,
        skip: usize,
        len: usize,
    },
    /// `len` bytes of member `member`'s file, from byte `offset`.
    Body {
        member: usize,
        offset: u64,
        len: u64,
    },
    /// `len` zero bytes: a body's padding, or the archive's end.
    Zeros(u64),
}

impl Layout {
    /// The layout of an archive of `entries`, sorted here by name (bytes).
    pub(crate) fn new(mut entries: Vec<Entry>) -> Layout {
        entries.sort_unstable_by(|a, b| a.name.as_bytes().cmp(b.name.as_bytes()));
        let mut scratch = Vec::new();
        let mut start = 0;
        let members: Vec<Member> = entries
            .into_iter()
            .map(|entry| {
                scratch.clear();
                let header_len = header::write(&entry, &mut scratch);
                let member = Member {
                    entry,
                    start,
                    // Headers are a few blocks: a name is at most PATH_MAX.
                    header_len: u32::try_from(header_len).unwrap_or(u32::MAX),
                };
                start = member.end();
                member
            })
            .collect();
        let etag = etag(&members);
        let newest_mtime = members
            .iter()
            .map(|m| (m.entry.mtime, m.entry.mtime_nsec))
            .max();
        Layout {
            members,
            len: start + TRAILER,
            etag,
            newest_mtime,
        }
    }

    /// The archive's length in bytes.
    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    /// The members' entries, in archive order.
    pub(crate) fn entries(&self) -> impl ExactSizeIterator<Item = &Entry> {
        self.members.iter().map(|m| &m.entry)
    }

    /// Member `member`'s entry.
    pub(crate) fn entry(&self, member: usize) -> &Entry {
        &self.members[member].entry
    }

    /// Appends member `member`'s header blocks to `out`.
    pub(crate) fn header(&self, member: usize, out: &mut Vec<u8>) {
        header::write(&self.members[member].entry, out);
    }

    /// A strong entity tag of the archive's bytes: a digest of every
    /// member's name, type, size, mode, modification time (to the
    /// nanosecond), device and inode, quoted.
    pub(crate) fn etag(&self) -> String {
        self.etag.clone()
    }

    /// The newest modification time among the members (seconds and
    /// nanoseconds), `None` for an empty archive.
    pub(crate) fn newest_mtime(&self) -> Option<(i64, i64)> {
        self.newest_mtime
    }

    /// The pieces of the `len` bytes from byte `first` (clipped to the
    /// archive's end), in order.
    pub(crate) fn pieces(&self, first: u64, len: u64) -> Pieces<'_> {
        let member = self
            .members
            .partition_point(|m| m.start <= first)
            .saturating_sub(1);
        Pieces {
            layout: self,
            pos: first.min(self.len),
            end: first.saturating_add(len).min(self.len),
            member,
        }
    }
}

/// The strong entity tag of an archive of `members` ([`Layout::etag`]).
fn etag(members: &[Member]) -> String {
    let mut digest = Sha256::new();
    digest.update(b"switchboard tar 1\0");
    for member in members {
        let e = &member.entry;
        digest.update((e.name.len() as u64).to_le_bytes());
        digest.update(e.name.as_bytes());
        digest.update([e.kind as u8]);
        digest.update(e.body_len().to_le_bytes());
        digest.update((e.mode & 0o777).to_le_bytes());
        digest.update(e.mtime.to_le_bytes());
        digest.update(e.mtime_nsec.to_le_bytes());
        digest.update(e.dev.to_le_bytes());
        digest.update(e.inode.to_le_bytes());
    }
    let hash = digest.finalize();
    let mut tag = String::with_capacity(2 + 4 + 32);
    tag.push_str("\"tar-");
    for byte in &hash[..16] {
        tag.push_str(&format!("{byte:02x}"));
    }
    tag.push('"');
    tag
}

/// The pieces of a byte range of an archive ([`Layout::pieces`]).
#[derive(Debug)]
pub(crate) struct Pieces<'a> {
    layout: &'a Layout,
    pos: u64,
    end: u64,
    member: usize,
}

impl Iterator for Pieces<'_> {
    type Item = Piece;

    fn next(&mut self) -> Option<Piece> {
        if self.pos >= self.end {
            return None;
        }
        let remaining = self.end - self.pos;
        let members = &self.layout.members;
        while self.member < members.len() && self.pos >= members[self.member].end() {
            self.member += 1;
        }
        let (piece, len) = match members.get(self.member) {
            None => (Piece::Zeros(remaining), remaining),
            Some(m) => {
                let into = self.pos - m.start;
                let header_len = u64::from(m.header_len);
                if into < header_len {
                    let len = (header_len - into).min(remaining);
                    let piece = Piece::Header {
                        member: self.member,
                        // Both below `header_len`, a u32.
                        skip: into as usize,
                        len: len as usize,
                    };
                    (piece, len)
                } else if into - header_len < m.body_len() {
                    let offset = into - header_len;
                    let len = (m.body_len() - offset).min(remaining);
                    let piece = Piece::Body {
                        member: self.member,
                        offset,
                        len,
                    };
                    (piece, len)
                } else {
                    let into_pad = into - header_len - m.body_len();
                    let len = (m.pad_len() - into_pad).min(remaining);
                    (Piece::Zeros(len), len)
                }
            }
        };
        self.pos += len;
        Some(piece)
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use proptest::prelude::*;

    use super::*;
    use crate::tar::EntryKind;

    fn file(name: &str, size: u64) -> Entry {
        Entry {
            name: name.into(),
            kind: EntryKind::File,
            size,
            mode: 0o100_640,
            mtime: 1_700_000_000,
            mtime_nsec: 5,
            dev: 7,
            inode: 9,
        }
    }

    fn dir(name: &str) -> Entry {
        Entry {
            kind: EntryKind::Directory,
            size: 4096,
            mode: 0o40_755,
            ..file(name, 0)
        }
    }

    /// A file's deterministic contents: byte `i` of member `member`.
    fn body_byte(member: usize, i: u64) -> u8 {
        (i as u8).wrapping_mul(31).wrapping_add(member as u8)
    }

    /// The bytes of `len` bytes from `first`, built from the pieces.
    fn render(layout: &Layout, first: u64, len: u64) -> Vec<u8> {
        let mut out = Vec::new();
        for piece in layout.pieces(first, len) {
            match piece {
                Piece::Header { member, skip, len } => {
                    let mut header = Vec::new();
                    layout.header(member, &mut header);
                    out.extend_from_slice(&header[skip..skip + len]);
                }
                Piece::Body {
                    member,
                    offset,
                    len,
                } => out.extend((offset..offset + len).map(|i| body_byte(member, i))),
                Piece::Zeros(len) => out.resize(out.len() + len as usize, 0),
            }
        }
        out
    }

    #[test]
    fn members_are_sorted_and_each_starts_on_a_block() {
        let layout = Layout::new(vec![file("d/b", 1), dir("d"), file("d/a", 513)]);
        let names: Vec<_> = layout.entries().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["d", "d/a", "d/b"]);
        // d: 512; d/a: 512 + 1024; d/b: 512 + 512; the end: 1024.
        assert_eq!(layout.len(), 512 + 1536 + 1024 + 1024);
        assert_eq!(layout.members[2].start, 2048);
    }

    #[test]
    fn an_empty_archive_is_its_two_zero_blocks() {
        let layout = Layout::new(Vec::new());
        assert_eq!(layout.len(), 1024);
        assert_eq!(render(&layout, 0, 1024), vec![0; 1024]);
        assert_eq!(layout.newest_mtime(), None);
    }

    #[test]
    fn the_entity_tag_changes_with_what_the_bytes_depend_on() {
        let base = vec![dir("d"), file("d/a", 10)];
        let tag = Layout::new(base.clone()).etag();
        assert_eq!(Layout::new(base.clone()).etag(), tag);
        assert!(tag.starts_with("\"tar-") && tag.ends_with('"') && tag.len() == 38);
        let changes: [fn(&mut Entry); 6] = [
            |e| e.size += 1,
            |e| e.mtime += 1,
            |e| e.mtime_nsec += 1,
            |e| e.inode += 1,
            |e| e.mode ^= 0o100,
            |e| e.name.push('x'),
        ];
        for change in changes {
            let mut entries = base.clone();
            change(&mut entries[1]);
            assert_ne!(Layout::new(entries).etag(), tag);
        }
    }

    #[test]
    fn a_nine_gib_file_is_sized_by_a_pax_record() {
        let layout = Layout::new(vec![file("sparse", 9 << 30)]);
        assert_eq!(layout.len(), 512 * 3 + (9 << 30) + 1024);
        let head = render(&layout, 0, 1536);
        let mut archive = ::tar::Archive::new(&head[..]);
        let mut entries = archive.entries().unwrap();
        let entry = entries.next().unwrap().unwrap();
        assert_eq!(entry.header().entry_size().unwrap(), 0);
        assert_eq!(entry.size(), 9 << 30);
    }

    fn entry_strategy() -> impl Strategy<Value = Vec<Entry>> {
        let name = prop_oneof![
            "[a-z]{1,8}(/[a-z]{1,8}){0,3}",
            "[a-zé照]{1,40}(/[a-z]{60,120}){0,2}",
        ];
        let one = (
            name,
            any::<bool>(),
            0u64..3000,
            0u32..0o7777,
            -5i64..1 << 34,
        );
        prop::collection::vec(one, 0..12).prop_map(|raw| {
            let mut seen = std::collections::HashSet::new();
            raw.into_iter()
                .filter(|(name, ..)| seen.insert(name.clone()))
                .map(|(name, is_dir, size, mode, mtime)| Entry {
                    name,
                    kind: if is_dir {
                        EntryKind::Directory
                    } else {
                        EntryKind::File
                    },
                    size: if is_dir { 0 } else { size },
                    mode,
                    mtime,
                    mtime_nsec: 0,
                    dev: 1,
                    inode: 2,
                })
                .collect()
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// The length computed ahead is the bytes the pieces make, and
        /// another reader (the `tar` crate) reads back the same members.
        #[test]
        fn the_archive_is_as_long_as_computed_and_reads_back(entries in entry_strategy()) {
            let layout = Layout::new(entries.clone());
            let bytes = render(&layout, 0, layout.len());
            prop_assert_eq!(bytes.len() as u64, layout.len());
            let mut archive = ::tar::Archive::new(&bytes[..]);
            let mut read = Vec::new();
            for (member, got) in archive.entries().unwrap().enumerate() {
                let mut got = got.unwrap();
                let expected = layout.entry(member);
                let path = got.path().unwrap().to_string_lossy().into_owned();
                let header = got.header();
                let kind = if header.entry_type().is_dir() {
                    EntryKind::Directory
                } else {
                    EntryKind::File
                };
                prop_assert_eq!(kind, expected.kind);
                let name = match kind {
                    EntryKind::Directory => path.strip_suffix('/').unwrap_or(&path).to_string(),
                    EntryKind::File => path,
                };
                prop_assert_eq!(&name, &expected.name);
                prop_assert_eq!(header.mode().unwrap(), expected.mode & 0o777);
                prop_assert_eq!(header.uid().unwrap(), 0);
                prop_assert_eq!(header.gid().unwrap(), 0);
                let header_mtime = got.header().mtime().unwrap() as i64;
                let mtime = got
                    .pax_extensions()
                    .unwrap()
                    .into_iter()
                    .flatten()
                    .find(|e| e.as_ref().is_ok_and(|e| e.key() == Ok("mtime")))
                    .map(|e| e.unwrap().value().unwrap().parse::<i64>().unwrap())
                    .unwrap_or(header_mtime);
                prop_assert_eq!(mtime, expected.mtime);
                let mut body = Vec::new();
                got.read_to_end(&mut body).unwrap();
                let want: Vec<u8> = (0..expected.body_len()).map(|i| body_byte(member, i)).collect();
                prop_assert_eq!(body, want);
                read.push(name);
            }
            prop_assert_eq!(read.len(), entries.len());
        }

        /// Any byte range is the same slice of the whole archive.
        #[test]
        fn a_range_is_the_slice_of_the_whole(
            entries in entry_strategy(),
            first in 0u64..20_000,
            len in 0u64..20_000,
        ) {
            let layout = Layout::new(entries);
            let whole = render(&layout, 0, layout.len());
            let first = first.min(layout.len());
            let end = first.saturating_add(len).min(layout.len());
            prop_assert_eq!(render(&layout, first, len), &whole[first as usize..end as usize]);
        }
    }
}
