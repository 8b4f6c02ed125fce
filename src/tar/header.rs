//! The header blocks of one archive member: a POSIX `ustar` header
//! (512 bytes), preceded by a pax extended header (`x`, its records padded
//! to 512) when a value does not fit `ustar`'s fields: a name longer than
//! its 100 + 155 bytes or not ASCII, a size or a modification time beyond
//! eleven octal digits (8 GiB), a negative modification time.

use super::{Entry, EntryKind};

/// The tar block size: every header and every body padding is a multiple.
pub(crate) const BLOCK: u64 = 512;

/// The largest value of a 12-byte numeric field (eleven octal digits).
const MAX_OCTAL_11: u64 = 0o777_7777_7777;

/// The name of every pax extended header (its `ustar` name field; readers
/// that know pax use its records, the others extract a file of that name,
/// as they would from GNU tar's or Python's archives).
const PAX_HEADER_NAME: &[u8] = b"././@PaxHeader";

/// Appends an entry's header blocks to `out`, and returns how many bytes
/// they took (a multiple of [`BLOCK`]).
pub(super) fn write(entry: &Entry, out: &mut Vec<u8>) -> usize {
    let start = out.len();
    let name = member_name(entry);
    let split = ustar_split(&name);
    let mut records = Vec::new();
    if split.is_none() {
        record(&mut records, "path", &name);
    }
    let size = entry.body_len();
    if size > MAX_OCTAL_11 {
        record(&mut records, "size", size.to_string().as_bytes());
    }
    let mtime_fits = u64::try_from(entry.mtime).is_ok_and(|m| m <= MAX_OCTAL_11);
    if !mtime_fits {
        record(&mut records, "mtime", entry.mtime.to_string().as_bytes());
    }
    if !records.is_empty() {
        let pax = Ustar {
            prefix: b"",
            name: PAX_HEADER_NAME,
            mode: 0o644,
            size: records.len() as u64,
            mtime: 0,
            typeflag: b'x',
        };
        pax.write(out);
        out.extend_from_slice(&records);
        pad(out);
    }
    let fallback;
    let (prefix, short) = match split {
        Some((prefix, short)) => (prefix, short),
        None => {
            fallback = fallback_name(&name);
            (&b""[..], fallback.as_slice())
        }
    };
    Ustar {
        prefix,
        name: short,
        mode: entry.mode & 0o777,
        size: if size > MAX_OCTAL_11 { 0 } else { size },
        mtime: if mtime_fits {
            entry.mtime.unsigned_abs()
        } else {
            0
        },
        typeflag: match entry.kind {
            EntryKind::File => b'0',
            EntryKind::Directory => b'5',
        },
    }
    .write(out);
    out.len() - start
}

/// The member's name as archived: a directory's ends with `/`.
fn member_name(entry: &Entry) -> Vec<u8> {
    let mut name = entry.name.as_bytes().to_vec();
    if entry.kind == EntryKind::Directory {
        name.push(b'/');
    }
    name
}

/// Where `ustar` can hold `name`: all of it in the 100-byte name field, or
/// split at a `/` into a prefix of at most 155 bytes and a name of at most
/// 100. `None` when it cannot, or when the name is not ASCII (a pax `path`
/// record carries it as UTF-8, which every pax reader decodes the same).
fn ustar_split(name: &[u8]) -> Option<(&[u8], &[u8])> {
    if !name.is_ascii() || name.contains(&0) {
        return None;
    }
    if name.len() <= 100 {
        return Some((b"", name));
    }
    // The split `/` is dropped; the name after it must not be empty (a
    // directory's trailing `/` is not a place to split).
    let earliest = name.len().saturating_sub(101);
    (earliest..name.len().saturating_sub(1).min(156))
        .find(|&i| name[i] == b'/' && i <= 155 && name.len() - i - 1 <= 100)
        .map(|i| (&name[..i], &name[i + 1..]))
}

/// The `ustar` name field under a pax `path` record, for readers that
/// ignore pax (never used by those that do): the name's first 100 bytes,
/// so the member stays under the archive's top directory. A last
/// component cut to `.`, `..` or nothing is made `_`s: never a name that
/// leads up, or a file that reads as a directory. (The last 100 bytes, cut
/// anywhere, could begin `../` or leave the top directory.)
fn fallback_name(name: &[u8]) -> Vec<u8> {
    let mut short = name[..name.len().min(100)].to_vec();
    let last = short.iter().rposition(|&b| b == b'/').map_or(0, |i| i + 1);
    match &short[last..] {
        b"." | b".." => short[last..].fill(b'_'),
        b"" if short.len() < name.len() => {
            if let Some(slash) = short.last_mut() {
                *slash = b'_';
            }
        }
        _ => {}
    }
    short
}

/// Appends one pax record, `"<length> <key>=<value>\n"`, where the length
/// counts the whole record, its own digits included.
fn record(out: &mut Vec<u8>, key: &str, value: &[u8]) {
    let rest = 1 + key.len() + 1 + value.len() + 1;
    let mut length = rest + 1;
    while length != rest + decimal_digits(length) {
        length = rest + decimal_digits(length);
    }
    out.extend_from_slice(length.to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(key.as_bytes());
    out.push(b'=');
    out.extend_from_slice(value);
    out.push(b'\n');
}

fn decimal_digits(mut n: usize) -> usize {
    let mut digits = 1;
    while n >= 10 {
        n /= 10;
        digits += 1;
    }
    digits
}

/// Zeros up to the next block boundary.
fn pad(out: &mut Vec<u8>) {
    let rem = out.len() % BLOCK as usize;
    if rem != 0 {
        out.resize(out.len() + BLOCK as usize - rem, 0);
    }
}

/// The fields of one `ustar` header block that vary; the rest are fixed
/// (uid and gid 0, no user or group names, no link name, no device).
struct Ustar<'a> {
    prefix: &'a [u8],
    name: &'a [u8],
    mode: u32,
    size: u64,
    mtime: u64,
    typeflag: u8,
}

impl Ustar<'_> {
    fn write(&self, out: &mut Vec<u8>) {
        let mut block = [0u8; BLOCK as usize];
        block[..self.name.len()].copy_from_slice(self.name);
        octal(&mut block[100..108], u64::from(self.mode));
        octal(&mut block[108..116], 0);
        octal(&mut block[116..124], 0);
        octal(&mut block[124..136], self.size);
        octal(&mut block[136..148], self.mtime);
        block[156] = self.typeflag;
        block[257..263].copy_from_slice(b"ustar\0");
        block[263..265].copy_from_slice(b"00");
        block[345..345 + self.prefix.len()].copy_from_slice(self.prefix);
        // The checksum is the sum of the block's bytes with its own field
        // read as eight spaces; written as six octal digits, NUL, space.
        block[148..156].fill(b' ');
        let sum: u32 = block.iter().map(|&b| u32::from(b)).sum();
        octal(&mut block[148..155], u64::from(sum));
        block[155] = b' ';
        out.extend_from_slice(&block);
    }
}

/// Writes `value` as zero-padded octal digits filling all but the field's
/// last byte, which stays NUL. Callers keep values within the field (the
/// pax records carry those that are not).
fn octal(field: &mut [u8], mut value: u64) {
    let digits = field.len() - 1;
    for place in (0..digits).rev() {
        field[place] = b'0' + (value & 7) as u8;
        value >>= 3;
    }
    field[digits] = 0;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, kind: EntryKind, size: u64, mtime: i64) -> Entry {
        Entry {
            name: name.into(),
            kind,
            size,
            mode: 0o100_644,
            mtime,
            mtime_nsec: 0,
            dev: 1,
            inode: 2,
        }
    }

    fn field(block: &[u8], range: std::ops::Range<usize>) -> &str {
        let bytes = &block[range];
        let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
        std::str::from_utf8(&bytes[..end]).unwrap()
    }

    fn checksum_holds(block: &[u8]) -> bool {
        let mut copy = block.to_vec();
        copy[148..156].fill(b' ');
        let sum: u32 = copy.iter().map(|&b| u32::from(b)).sum();
        u32::from_str_radix(field(block, 148..154), 8).unwrap() == sum
    }

    #[test]
    fn a_short_file_is_one_ustar_block() {
        let mut out = Vec::new();
        let e = entry("photos/a.jpg", EntryKind::File, 1234, 1_700_000_000);
        assert_eq!(write(&e, &mut out), 512);
        assert_eq!(field(&out, 0..100), "photos/a.jpg");
        assert_eq!(field(&out, 100..108), "0000644");
        assert_eq!(field(&out, 108..116), "0000000");
        assert_eq!(field(&out, 124..136), format!("{:011o}", 1234));
        assert_eq!(field(&out, 136..148), format!("{:011o}", 1_700_000_000));
        assert_eq!(out[156], b'0');
        assert_eq!(&out[257..265], b"ustar\x0000");
        assert_eq!(field(&out, 265..297), "");
        assert!(checksum_holds(&out));
    }

    #[test]
    fn a_directory_has_a_slash_type_5_and_no_size() {
        let mut out = Vec::new();
        write(&entry("photos", EntryKind::Directory, 4096, 5), &mut out);
        assert_eq!(field(&out, 0..100), "photos/");
        assert_eq!(out[156], b'5');
        assert_eq!(field(&out, 124..136), "00000000000");
    }

    #[test]
    fn special_mode_bits_are_not_archived() {
        let mut out = Vec::new();
        let mut e = entry("x", EntryKind::File, 0, 0);
        e.mode = 0o104_755;
        write(&e, &mut out);
        assert_eq!(field(&out, 100..108), "0000755");
    }

    #[test]
    fn names_split_into_prefix_and_name_where_ustar_allows() {
        let long_dir = "d".repeat(120);
        let name = format!("{long_dir}/file");
        let mut out = Vec::new();
        assert_eq!(write(&entry(&name, EntryKind::File, 1, 0), &mut out), 512);
        assert_eq!(field(&out, 345..500), long_dir);
        assert_eq!(field(&out, 0..100), "file");
        // A last component over 100 bytes cannot be split: pax.
        let name = format!("dir/{}", "f".repeat(101));
        let mut out = Vec::new();
        assert_eq!(write(&entry(&name, EntryKind::File, 1, 0), &mut out), 1536);
    }

    #[test]
    fn long_non_ascii_and_large_values_go_to_pax_records() {
        let cases = [
            (
                format!("{}/{}", "a".repeat(200), "b".repeat(99)),
                1,
                0,
                "path",
            ),
            ("照片/猫.jpg".to_string(), 1, 0, "path"),
            ("big".to_string(), 9 << 30, 0, "size"),
            ("old".to_string(), 1, -1, "mtime"),
        ];
        for (name, size, mtime, key) in cases {
            let mut out = Vec::new();
            let len = write(&entry(&name, EntryKind::File, size, mtime), &mut out);
            assert_eq!(len, out.len());
            assert_eq!(len % 512, 0);
            assert_eq!(out[156], b'x', "{name}");
            assert!(checksum_holds(&out[..512]));
            let records_len = usize::from_str_radix(field(&out, 124..136), 8).unwrap();
            let records = std::str::from_utf8(&out[512..512 + records_len]).unwrap();
            let (length, rest) = records.split_once(' ').unwrap();
            assert!(rest.starts_with(&format!("{key}=")), "{records}");
            let value = match key {
                "path" => name.clone(),
                "size" => size.to_string(),
                _ => mtime.to_string(),
            };
            assert_eq!(length.parse::<usize>().unwrap(), records.len(), "{records}");
            assert_eq!(rest, format!("{key}={value}\n"));
            let member = &out[len - 512..];
            assert_eq!(member[156], b'0');
            assert!(checksum_holds(member));
        }
    }

    /// The `ustar` name under a pax `path` record, as a reader that
    /// ignores pax records sees it (GNU tar `--pax-option=delete=path`).
    fn fallback_seen(name: &str) -> String {
        let mut out = Vec::new();
        let len = write(&entry(name, EntryKind::File, 1, 0), &mut out);
        assert_eq!(out[156], b'x', "{name} needs a pax record");
        let member = &out[len - 512..];
        let prefix = field(member, 345..500);
        let short = String::from_utf8_lossy(&member[..100])
            .trim_end_matches('\0')
            .to_owned();
        if prefix.is_empty() {
            short
        } else {
            format!("{prefix}/{short}")
        }
    }

    #[test]
    fn a_reader_without_pax_sees_a_name_under_the_top_directory_without_dot_dot() {
        let cases = [
            format!("photos/é../{}", "y".repeat(97)),
            format!("photos/{}", "f".repeat(101)),
            format!("photos/{}", "h".repeat(255)),
            format!("photos/{}/x", "d".repeat(200)),
            format!("photos/é{}../z", "a".repeat(89)),
            format!("photos/é{}/..hidden", "a".repeat(89)),
            format!("photos/é{}/../z", "a".repeat(88)),
            format!("photos/é{}/z", "a".repeat(90)),
            format!("photos/{}", "é".repeat(100)),
        ];
        for name in cases {
            let seen = fallback_seen(&name);
            assert!(
                seen.starts_with("photos/"),
                "{name:?} is {seen:?} without pax"
            );
            assert!(
                !seen.split('/').any(|c| c == ".." || c == "."),
                "{name:?} is {seen:?} without pax"
            );
            assert!(
                !seen.ends_with('/'),
                "the file {name:?} reads as the folder {seen:?}"
            );
        }
    }

    #[test]
    fn a_record_s_length_counts_its_own_digits() {
        // 1 + 4 + 1 + 1 = 7 bytes beside the digits: "8 path=x\n" is 9
        // bytes, so the length is 9; at a boundary a digit is added.
        for value_len in 0..200 {
            let mut out = Vec::new();
            record(&mut out, "path", &vec![b'x'; value_len]);
            let text = std::str::from_utf8(&out).unwrap();
            let (length, _) = text.split_once(' ').unwrap();
            assert_eq!(length.parse::<usize>().unwrap(), out.len(), "{text}");
        }
    }
}
