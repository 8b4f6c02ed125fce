//! Reading a tar stream as it arrives: the subset the server writes
//! (`ustar` headers with their checksums, pax `x` records for `path`,
//! `size` and `mtime`, bodies and their padding, two zero blocks at the
//! end), bounded against a hostile sender. A pax header's records are at
//! most [`MAX_PAX`] bytes (the only bytes ever buffered beyond one header
//! block); numbers (octal or base-256) that overflow are errors, never a
//! wrap or a panic; a checksum mismatch is an error. Members of any other
//! type are reported as [`Kind::Other`] with their body skipped, so the
//! caller can say what it left out.
//!
//! Pure: no I/O. [`Reader::next`] takes the bytes available and says what
//! they hold; body bytes are handed back as slices of the input, never
//! copied.

use super::header::BLOCK;

/// Longest pax extended header (its records) read.
pub(crate) const MAX_PAX: u64 = 64 * 1024;
const BLOCK_LEN: usize = BLOCK as usize;

/// What a member is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    File,
    Directory,
    /// Anything else (symlink, hard link, device, FIFO, a global pax or
    /// GNU header...): its type flag. Its body, if any, is skipped.
    Other(u8),
}

/// One member's header, as the archive says it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Member {
    /// Its name as archived (the pax `path`, or `ustar`'s prefix and
    /// name): bytes, unchecked (a directory's may end with `/`).
    pub path: Vec<u8>,
    pub kind: Kind,
    /// The bytes of its body.
    pub size: u64,
    /// Seconds since 1970 (the pax `mtime`'s whole seconds, or `ustar`'s).
    pub mtime: i64,
}

/// What the bytes given to [`Reader::next`] held.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Event<'a> {
    /// Everything given was taken; more is needed.
    More,
    /// A member's header: its body (`size` bytes of [`Event::Data`])
    /// follows, then [`Event::MemberEnd`].
    Member(Member),
    /// Bytes of the current member's body.
    Data(&'a [u8]),
    /// The current member's body is complete.
    MemberEnd,
    /// The two zero blocks that end the archive: nothing after them is read.
    End,
}

/// Why a stream is not an archive the reader takes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum TarError {
    #[error("a header block whose checksum does not hold")]
    Checksum,
    #[error("a pax extended header of {0} bytes (at most {MAX_PAX} are read)")]
    PaxTooLong(u64),
    #[error("a malformed pax record")]
    PaxRecord,
    #[error("a pax extended header not followed by a member")]
    PaxTwice,
    #[error("a malformed {0} field")]
    Number(&'static str),
    #[error("a directory member with a body")]
    DirectoryBody,
    #[error("a single zero block inside the archive")]
    LoneZeroBlock,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Collecting a header block in `buf`.
    Header,
    /// After one zero block: the next must be zero too.
    SecondZero,
    /// Collecting a pax header's records (`len` of them, padded to `padded`).
    Pax {
        len: u64,
        padded: u64,
    },
    /// In a member's body, `left` bytes to go, then `pad`.
    Body {
        left: u64,
        pad: u64,
    },
    /// The body's padding, `left` bytes to go.
    Pad {
        left: u64,
    },
    Done,
}

/// Values of a pax extended header for the next member.
#[derive(Debug, Default, Clone)]
struct Pax {
    path: Option<Vec<u8>>,
    size: Option<u64>,
    mtime: Option<i64>,
}

/// A tar stream being read ([`Reader::next`]). Memory: one block, or one
/// pax header of at most [`MAX_PAX`] bytes.
#[derive(Debug)]
pub(crate) struct Reader {
    state: State,
    buf: Vec<u8>,
    pax: Option<Pax>,
    /// A body ended: [`Event::MemberEnd`] is due.
    end_due: bool,
    /// Bytes taken so far.
    taken: u64,
    /// Where the member being read began (its pax header's block, or its
    /// own header's), or the next one begins: [`Reader::resume_point`].
    member_start: u64,
    /// Where the member after the one whose body just ended begins, once
    /// its [`Event::MemberEnd`] is returned.
    next_start: u64,
}

impl Default for Reader {
    fn default() -> Self {
        Reader::new()
    }
}

impl Reader {
    pub(crate) fn new() -> Reader {
        Reader {
            state: State::Header,
            buf: Vec::with_capacity(BLOCK_LEN),
            pax: None,
            end_due: false,
            taken: 0,
            member_start: 0,
            next_start: 0,
        }
    }

    /// A reader of the same archive from `offset`, a member boundary
    /// (a [`Reader::resume_point`] of an earlier reader): the bytes from
    /// there are read as if from the start.
    pub(crate) fn resumed_at(offset: u64) -> Reader {
        Reader {
            taken: offset,
            member_start: offset,
            next_start: offset,
            ..Reader::new()
        }
    }

    /// The offset in the archive from which a reader resumed there
    /// ([`Reader::resumed_at`]) reads what this one has not yet reported
    /// whole: the first block of the member whose header or body is being
    /// read (a pax header's, when it has one), or of the next member once
    /// a member's body has ended (past its padding, which may not have
    /// been read yet). Every member before it was reported with its
    /// [`Event::MemberEnd`].
    pub(crate) fn resume_point(&self) -> u64 {
        self.member_start
    }

    /// Reads from `input`: how many of its bytes were taken, and what they
    /// held. Call again with the bytes after those taken until
    /// [`Event::More`] (then with more bytes) or [`Event::End`].
    pub(crate) fn next<'a>(&mut self, input: &'a [u8]) -> Result<(usize, Event<'a>), TarError> {
        let (n, event) = self.step(input)?;
        self.taken += n as u64;
        Ok((n, event))
    }

    /// [`Reader::next`], without counting the bytes taken.
    fn step<'a>(&mut self, input: &'a [u8]) -> Result<(usize, Event<'a>), TarError> {
        if self.end_due {
            self.end_due = false;
            self.member_start = self.next_start;
            return Ok((0, Event::MemberEnd));
        }
        let mut taken = 0;
        loop {
            let rest = &input[taken..];
            match self.state {
                State::Done => return Ok((taken, Event::End)),
                State::Body { left, pad } => {
                    if left == 0 {
                        self.state = State::Pad { left: pad };
                        self.member_start = self.taken + taken as u64 + pad;
                        return Ok((taken, Event::MemberEnd));
                    }
                    if rest.is_empty() {
                        return Ok((taken, Event::More));
                    }
                    let n = usize::try_from(left).map_or(rest.len(), |l| l.min(rest.len()));
                    let left = left - n as u64;
                    self.state = State::Body { left, pad };
                    if left == 0 {
                        self.state = State::Pad { left: pad };
                        self.end_due = true;
                        self.next_start = self.taken + (taken + n) as u64 + pad;
                    }
                    return Ok((taken + n, Event::Data(&rest[..n])));
                }
                State::Pad { left } => {
                    let n = usize::try_from(left).map_or(rest.len(), |l| l.min(rest.len()));
                    taken += n;
                    if left > n as u64 {
                        self.state = State::Pad {
                            left: left - n as u64,
                        };
                        return Ok((taken, Event::More));
                    }
                    self.state = State::Header;
                }
                State::Header | State::SecondZero => {
                    if self.state == State::Header && self.buf.is_empty() && self.pax.is_none() {
                        // A member (or the end) begins here.
                        self.member_start = self.taken + taken as u64;
                    }
                    let n = (BLOCK_LEN - self.buf.len()).min(rest.len());
                    self.buf.extend_from_slice(&rest[..n]);
                    taken += n;
                    if self.buf.len() < BLOCK_LEN {
                        return Ok((taken, Event::More));
                    }
                    let block = std::mem::take(&mut self.buf);
                    self.buf = Vec::with_capacity(BLOCK_LEN);
                    if block.iter().all(|&b| b == 0) {
                        if self.state == State::SecondZero {
                            self.state = State::Done;
                            return Ok((taken, Event::End));
                        }
                        if self.pax.is_some() {
                            return Err(TarError::PaxTwice);
                        }
                        self.state = State::SecondZero;
                        continue;
                    }
                    if self.state == State::SecondZero {
                        return Err(TarError::LoneZeroBlock);
                    }
                    if let Some(event) = self.header(&block)? {
                        return Ok((taken, event));
                    }
                }
                State::Pax { len, padded } => {
                    let want = usize::try_from(padded).unwrap_or(usize::MAX);
                    let n = (want - self.buf.len()).min(rest.len());
                    self.buf.extend_from_slice(&rest[..n]);
                    taken += n;
                    if self.buf.len() < want {
                        return Ok((taken, Event::More));
                    }
                    let records = std::mem::take(&mut self.buf);
                    self.buf = Vec::with_capacity(BLOCK_LEN);
                    self.pax = Some(parse_pax(&records[..len as usize])?);
                    self.state = State::Header;
                }
            }
        }
    }

    /// A complete header block that is not zero: a member (returned), or
    /// a pax header (its records are read next).
    fn header(&mut self, block: &[u8]) -> Result<Option<Event<'static>>, TarError> {
        if !checksum_holds(block) {
            return Err(TarError::Checksum);
        }
        let typeflag = block[156];
        let size = number(&block[124..136], "size")?;
        if typeflag == b'x' {
            if self.pax.is_some() {
                return Err(TarError::PaxTwice);
            }
            if size > MAX_PAX {
                return Err(TarError::PaxTooLong(size));
            }
            self.state = State::Pax {
                len: size,
                padded: size.div_ceil(BLOCK) * BLOCK,
            };
            return Ok(None);
        }
        let pax = self.pax.take().unwrap_or_default();
        let size = pax.size.unwrap_or(size);
        let mtime = match pax.mtime {
            Some(mtime) => mtime,
            None => i64::try_from(number(&block[136..148], "mtime")?)
                .map_err(|_| TarError::Number("mtime"))?,
        };
        let path = match pax.path {
            Some(path) => path,
            None => ustar_path(block),
        };
        let kind = match typeflag {
            b'0' | b'\0' | b'7' => Kind::File,
            b'5' => Kind::Directory,
            other => Kind::Other(other),
        };
        if kind == Kind::Directory && size != 0 {
            return Err(TarError::DirectoryBody);
        }
        // Links carry no body, whatever their size field says (POSIX).
        let size = if matches!(kind, Kind::Other(b'1' | b'2')) {
            0
        } else {
            size
        };
        self.state = State::Body {
            left: size,
            pad: (BLOCK - size % BLOCK) % BLOCK,
        };
        Ok(Some(Event::Member(Member {
            path,
            kind,
            size,
            mtime,
        })))
    }
}

/// The checksum field (octal, at 148) equals the sum of the block's bytes
/// with that field counted as eight spaces.
fn checksum_holds(block: &[u8]) -> bool {
    let sum: u64 = block
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            if (148..156).contains(&i) {
                u64::from(b' ')
            } else {
                u64::from(b)
            }
        })
        .sum();
    octal(&block[148..156]) == Some(sum)
}

/// `ustar`'s name: `prefix/name` when the prefix is set (magic `ustar`),
/// each field up to its first NUL.
fn ustar_path(block: &[u8]) -> Vec<u8> {
    let field = |bytes: &[u8]| {
        let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
        bytes[..end].to_vec()
    };
    let name = field(&block[..100]);
    if &block[257..262] != b"ustar" {
        return name;
    }
    let mut path = field(&block[345..500]);
    if path.is_empty() {
        return name;
    }
    path.push(b'/');
    path.extend_from_slice(&name);
    path
}

/// A numeric field: base-256 (first byte 0x80, a positive number), or
/// octal digits between optional leading spaces and a NUL or space end.
fn number(field: &[u8], what: &'static str) -> Result<u64, TarError> {
    if field.first() == Some(&0x80) {
        let mut value: u64 = 0;
        for &b in &field[1..] {
            value = value
                .checked_mul(256)
                .and_then(|v| v.checked_add(u64::from(b)))
                .ok_or(TarError::Number(what))?;
        }
        return Ok(value);
    }
    octal(field).ok_or(TarError::Number(what))
}

/// Octal digits, leading spaces or NULs allowed, ended by a NUL or a
/// space (or the field's end); `None` if malformed or over `u64`.
fn octal(field: &[u8]) -> Option<u64> {
    let start = field.iter().position(|&b| b != b' ' && b != 0)?;
    let digits = &field[start..];
    let end = digits
        .iter()
        .position(|&b| b == 0 || b == b' ')
        .unwrap_or(digits.len());
    if end == 0 || digits[end..].iter().any(|&b| b != 0 && b != b' ') {
        return None;
    }
    digits[..end].iter().try_fold(0u64, |value, &b| {
        if !(b'0'..=b'7').contains(&b) {
            return None;
        }
        value.checked_mul(8)?.checked_add(u64::from(b - b'0'))
    })
}

/// A pax header's records, `"<length> <key>=<value>\n"` each: `path`,
/// `size` and `mtime` are kept, other keys are ignored.
fn parse_pax(mut records: &[u8]) -> Result<Pax, TarError> {
    let mut pax = Pax::default();
    while !records.is_empty() {
        let space = records
            .iter()
            .take(20)
            .position(|&b| b == b' ')
            .ok_or(TarError::PaxRecord)?;
        let length: usize = std::str::from_utf8(&records[..space])
            .ok()
            .filter(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|d| d.parse().ok())
            .ok_or(TarError::PaxRecord)?;
        if length <= space + 1 || length > records.len() || records[length - 1] != b'\n' {
            return Err(TarError::PaxRecord);
        }
        let record = &records[space + 1..length - 1];
        let eq = record
            .iter()
            .position(|&b| b == b'=')
            .ok_or(TarError::PaxRecord)?;
        let (key, value) = (&record[..eq], &record[eq + 1..]);
        match key {
            b"path" => pax.path = Some(value.to_vec()),
            b"size" => pax.size = Some(decimal(value).ok_or(TarError::Number("pax size"))?),
            b"mtime" => pax.mtime = Some(pax_time(value).ok_or(TarError::Number("pax mtime"))?),
            _ => {}
        }
        records = &records[length..];
    }
    Ok(pax)
}

/// Decimal digits, at least one, within `u64`.
fn decimal(value: &[u8]) -> Option<u64> {
    if value.is_empty() {
        return None;
    }
    value.iter().try_fold(0u64, |v, &b| {
        if !b.is_ascii_digit() {
            return None;
        }
        v.checked_mul(10)?.checked_add(u64::from(b - b'0'))
    })
}

/// A pax time, `[-]SECONDS[.FRACTION]`: its whole seconds (a negative
/// time with a fraction is rounded down, as its value is).
fn pax_time(value: &[u8]) -> Option<i64> {
    let (negative, value) = match value.strip_prefix(b"-") {
        Some(rest) => (true, rest),
        None => (false, value),
    };
    let (whole, fraction) = match value.iter().position(|&b| b == b'.') {
        Some(dot) => (&value[..dot], Some(&value[dot + 1..])),
        None => (value, None),
    };
    let seconds = i64::try_from(decimal(whole)?).ok()?;
    let fraction_nonzero = match fraction {
        Some(f) => {
            if f.is_empty() || !f.iter().all(u8::is_ascii_digit) {
                return None;
            }
            f.iter().any(|&b| b != b'0')
        }
        None => false,
    };
    if negative {
        seconds
            .checked_neg()?
            .checked_sub(i64::from(fraction_nonzero))
    } else {
        Some(seconds)
    }
}

#[cfg(test)]
mod tests {
    use super::super::header;
    use super::super::{Entry, EntryKind};
    use super::*;

    fn entry(name: &str, kind: EntryKind, size: u64, mtime: i64) -> Entry {
        Entry {
            name: name.into(),
            kind,
            size,
            mode: 0o644,
            mtime,
            mtime_nsec: 0,
            dev: 0,
            inode: 0,
        }
    }

    /// Every event of `bytes`, fed `step` bytes at a time; data joined.
    fn read_all(bytes: &[u8], step: usize) -> Result<Vec<(Member, Vec<u8>)>, TarError> {
        let mut reader = Reader::new();
        let mut members: Vec<(Member, Vec<u8>)> = Vec::new();
        let mut pos = 0;
        let mut window = 0;
        loop {
            let end = (pos + window).min(bytes.len());
            let (n, event) = reader.next(&bytes[pos..end])?;
            pos += n;
            match event {
                Event::More => {
                    if end == bytes.len() {
                        return Err(TarError::PaxRecord);
                    }
                    window = step;
                }
                Event::Member(m) => members.push((m, Vec::new())),
                Event::Data(d) => members.last_mut().unwrap().1.extend_from_slice(d),
                Event::MemberEnd => {
                    let (m, data) = members.last().unwrap();
                    assert_eq!(data.len() as u64, m.size);
                }
                Event::End => return Ok(members),
            }
        }
    }

    fn archive(entries: &[(Entry, Vec<u8>)]) -> Vec<u8> {
        let mut out = Vec::new();
        for (e, body) in entries {
            header::write(e, &mut out);
            out.extend_from_slice(body);
            out.resize(out.len().div_ceil(512) * 512, 0);
        }
        out.resize(out.len() + 1024, 0);
        out
    }

    /// The members of `bytes` read by a reader resumed at `offset`.
    fn read_from(bytes: &[u8], offset: u64) -> Vec<(Member, Vec<u8>)> {
        let mut reader = Reader::resumed_at(offset);
        let mut members: Vec<(Member, Vec<u8>)> = Vec::new();
        let mut pos = offset as usize;
        loop {
            let (n, event) = reader.next(&bytes[pos..]).unwrap();
            pos += n;
            match event {
                Event::More => panic!("the archive ended early"),
                Event::Member(m) => members.push((m, Vec::new())),
                Event::Data(d) => members.last_mut().unwrap().1.extend_from_slice(d),
                Event::MemberEnd => {}
                Event::End => return members,
            }
        }
    }

    #[test]
    fn a_reader_resumed_at_its_resume_point_reads_the_members_not_yet_whole() {
        let long = format!("top/{}", "n".repeat(150));
        let entries = vec![
            (entry("top", EntryKind::Directory, 0, 1), vec![]),
            (entry("top/a", EntryKind::File, 0, 1), vec![]),
            (entry("top/b", EntryKind::File, 700, 1), vec![3u8; 700]),
            (entry(&long, EntryKind::File, 1024, 1), vec![4u8; 1024]),
            (entry("top/é", EntryKind::File, 5, -7), vec![5u8; 5]),
        ];
        let bytes = archive(&entries);
        let whole = read_all(&bytes, 512).unwrap();
        for step in [1, 7, 511, 512, 513, 4096] {
            // Cut after every `step` bytes: what a resumed reader reads
            // from the resume point, after the members completed before
            // the cut, is the whole archive's members.
            let mut cut = 0;
            while cut <= bytes.len() {
                let mut reader = Reader::new();
                let mut done: Vec<Member> = Vec::new();
                let mut current: Option<Member> = None;
                let mut pos = 0;
                while pos < cut {
                    let (n, event) = reader.next(&bytes[pos..cut]).unwrap();
                    pos += n;
                    match event {
                        Event::More | Event::End => break,
                        Event::Member(m) => current = Some(m),
                        Event::Data(_) => {}
                        Event::MemberEnd => done.extend(current.take()),
                    }
                }
                let point = reader.resume_point();
                assert_eq!(point % 512, 0, "a block boundary");
                // Past the cut by a body's padding at most, which is
                // never needed.
                assert!(
                    point <= (cut as u64).div_ceil(512) * 512,
                    "{point} past the cut {cut}"
                );
                let rest = read_from(&bytes, point);
                let names: Vec<_> = done
                    .iter()
                    .map(|m| m.path.clone())
                    .chain(rest.iter().map(|(m, _)| m.path.clone()))
                    .collect();
                let expected: Vec<_> = whole.iter().map(|(m, _)| m.path.clone()).collect();
                assert_eq!(names, expected, "cut at {cut}, resumed at {point}");
                cut += step;
            }
        }
    }

    #[test]
    fn the_server_s_members_read_back_at_any_feed_size() {
        let long = format!("top/{}/{}", "d".repeat(150), "f".repeat(120));
        let entries = vec![
            (entry("top", EntryKind::Directory, 0, 5), vec![]),
            (entry("top/a", EntryKind::File, 3, 7), b"abc".to_vec()),
            (entry("top/empty", EntryKind::File, 0, 7), vec![]),
            (entry(&long, EntryKind::File, 600, 1), vec![9; 600]),
            (entry("top/猫.txt", EntryKind::File, 512, -5), vec![1; 512]),
        ];
        let bytes = archive(&entries);
        for step in [1, 7, 511, 512, 513, 100_000] {
            let got = read_all(&bytes, step).unwrap();
            assert_eq!(got.len(), entries.len());
            for ((m, data), (e, body)) in got.iter().zip(&entries) {
                let mut name = e.name.clone().into_bytes();
                if e.kind == EntryKind::Directory {
                    name.push(b'/');
                }
                assert_eq!(m.path, name);
                assert_eq!(m.mtime, e.mtime);
                assert_eq!(&m.size, &(body.len() as u64));
                assert_eq!(data, body);
            }
        }
    }

    #[test]
    fn a_huge_size_comes_from_pax_without_the_body_being_needed() {
        let mut out = Vec::new();
        header::write(&entry("big", EntryKind::File, 9 << 30, 0), &mut out);
        let mut reader = Reader::new();
        let (n, event) = reader.next(&out).unwrap();
        assert_eq!(n, out.len());
        match event {
            Event::Member(m) => assert_eq!(m.size, 9 << 30),
            other => panic!("{other:?}"),
        }
    }

    fn block_with(edit: impl Fn(&mut [u8])) -> Vec<u8> {
        let mut out = Vec::new();
        header::write(&entry("x", EntryKind::File, 1, 0), &mut out);
        edit(&mut out[..512]);
        out[148..156].fill(b' ');
        let sum: u32 = out[..512].iter().map(|&b| u32::from(b)).sum();
        let text = format!("{sum:06o}\0 ");
        out[148..156].copy_from_slice(text.as_bytes());
        out
    }

    #[test]
    fn hostile_headers_are_errors_never_panics() {
        let mut bad_sum = block_with(|_| {});
        bad_sum[0] = b'y';
        let cases: Vec<(Vec<u8>, TarError)> = vec![
            (bad_sum, TarError::Checksum),
            (
                block_with(|b| {
                    b[156] = b'x';
                    b[124..136].copy_from_slice(b"77777777777\0");
                }),
                TarError::PaxTooLong(0o777_7777_7777),
            ),
            (
                block_with(|b| b[124..136].copy_from_slice(b"9\0\0\0\0\0\0\0\0\0\0\0")),
                TarError::Number("size"),
            ),
            (
                block_with(|b| {
                    b[124] = 0x80;
                    b[125..136].fill(0xff);
                }),
                TarError::Number("size"),
            ),
            (
                block_with(|b| {
                    b[156] = b'5';
                }),
                TarError::DirectoryBody,
            ),
        ];
        for (bytes, want) in cases {
            assert_eq!(Reader::new().next(&bytes).map(|_| ()), Err(want));
        }
        // A base-256 size that fits is read.
        let big = block_with(|b| {
            b[124] = 0x80;
            b[125..136].fill(0);
            b[135] = 2;
        });
        match Reader::new().next(&big).unwrap().1 {
            Event::Member(m) => assert_eq!(m.size, 2),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn pax_records_are_checked() {
        assert_eq!(parse_pax(b"9 path=x\n").unwrap().path, Some(b"x".to_vec()));
        assert_eq!(parse_pax(b"14 mtime=-1.5\n").unwrap().mtime, Some(-2));
        assert_eq!(parse_pax(b"12 mtime=42\n").unwrap().mtime, Some(42));
        for bad in [
            &b"9 path=x"[..],
            b"99 path=x\n",
            b"3 x\n",
            b"x path=x\n",
            b"8 pathx\n",
            b"30 size=99999999999999999999\n",
            b"11 size=-1\n\n",
            b"99999999999999999999999 a=b\n",
        ] {
            assert!(
                parse_pax(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn a_symlink_is_reported_with_no_body() {
        let bytes = block_with(|b| b[156] = b'2');
        match Reader::new().next(&bytes).unwrap().1 {
            Event::Member(m) => {
                assert_eq!(m.kind, Kind::Other(b'2'));
                assert_eq!(m.size, 0);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_lone_zero_block_and_a_pax_header_twice_are_errors() {
        let mut bytes = vec![0u8; 512];
        bytes.extend(block_with(|_| {}));
        let mut reader = Reader::new();
        assert_eq!(
            reader.next(&bytes).map(|_| ()),
            Err(TarError::LoneZeroBlock)
        );
        let mut twice = Vec::new();
        header::write(&entry(&"p".repeat(300), EntryKind::File, 0, 0), &mut twice);
        let pax_only = twice[..1024].to_vec();
        let mut bytes = pax_only.clone();
        bytes.extend(pax_only);
        assert_eq!(
            Reader::new().next(&bytes).map(|_| ()),
            Err(TarError::PaxTwice)
        );
    }
}
