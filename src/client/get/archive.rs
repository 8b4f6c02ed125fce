//! `-r` through one tar stream: a switchboard server answers `NAME.tar`
//! for a folder `NAME` with the folder as one POSIX tar archive, and the
//! tree is extracted as it arrives, over one connection, never buffered
//! (one header block, or one pax header of at most 64 KiB, and one read's
//! bytes are held at a time).
//!
//! The answer is taken for the folder's archive only when it says so:
//! `Content-Type: application/x-tar` and an entity tag `"tar-` followed by
//! hex digits, which the server gives its archives and never a file (a
//! file's tag is hex digits and dashes only: a real file `NAME.tar`, which
//! the server serves in preference, is never extracted as the folder).
//! Any other answer (`404` from an older server, a file, `403` for a
//! folder too large or too deep to archive, a server of the raw protocol)
//! falls back to the mirror through listings; a `403` or `503` with a
//! warning that quotes the server's reason.
//!
//! Every member is checked as a listing's names are: its first member
//! must be the folder itself, every other must lie under it, each
//! component a plain name ([`safe_component`]), at most [`MAX_PATH`]
//! bytes and [`MAX_DEPTH`] levels deep; only regular files and directories
//! are created, never through a symlink, and a member whose paths are
//! another's or a directory's is skipped. Skipped members end the run in
//! an error, as skipped names do. Files are written to `FILE.part` and
//! renamed when their last byte is in, with their modification time; a
//! stream that ends before the archive's end blocks is an incomplete
//! transfer (exit status 4): the file being written is removed, and a
//! record (`tar_resume`) lets `-c` ask for the rest of the same archive
//! from the first member not yet whole.

use std::fs;
use std::io::{self, IsTerminal, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use tokio::io::AsyncReadExt;
use tokio::time::timeout_at;

use super::exchange::{Accept, Framing, NotHttp, error_words, try_request};
use super::mirror::{MAX_COMPONENT, MAX_DEPTH, MAX_DIRS, MAX_FILES, MAX_PATH, safe_component};
use super::part::{in_the_way, open_part, part_paths};
use super::tar_resume::{TarResume, record_path, remove_record};
use super::{GetError, Run, at, progress, server_words};
use crate::client::escape_text;
use crate::conn::text::TextEncoding;
use crate::http::response::{ChunkedDecoder, ResponseHead};
use crate::tar::read::{Event, Kind, Member, Reader};

/// Most members read from one archive: the folder, and as many files and
/// directories as `-r` takes.
pub(super) const MAX_MEMBERS: usize = 1 + MAX_FILES + MAX_DIRS;

/// True when `head` is a switchboard server's archive of a folder.
pub(super) fn is_folder_archive(head: &ResponseHead) -> bool {
    let tagged = head
        .etag
        .as_deref()
        .and_then(|tag| tag.strip_prefix("\"tar-"))
        .and_then(|rest| rest.strip_suffix('"'))
        .is_some_and(|hex| !hex.is_empty() && hex.bytes().all(|b| b.is_ascii_hexdigit()));
    tagged && head.media_type().as_deref() == Some("application/x-tar")
}

/// The member being read.
enum Current {
    /// Written to `part`, renamed to `target` at its end.
    File {
        file: fs::File,
        part: PathBuf,
        target: PathBuf,
        mtime: i64,
        /// Bytes of the body so far: where the next ones go.
        at: u64,
    },
    /// Read past: a directory, or a member skipped.
    Nothing,
}

/// Fetches the tree `dir` (`""` for the root) into `into` through one tar
/// stream; `Ok(false)` when the server does not offer it (nothing was
/// written: the caller mirrors through listings).
pub(super) async fn fetch_tree(
    run: &mut Run<'_>,
    dir: &str,
    into: &Path,
    written: &mut usize,
) -> Result<bool, GetError> {
    let folder = dir.trim_matches('/');
    let name = format!("{folder}.tar");
    let expected_top = folder.rsplit('/').next().filter(|t| !t.is_empty());
    // -c: the record of a stream of this folder cut earlier resumes it
    // where its first member not yet whole begins (no record where the
    // output has no name to put it beside: `/`).
    let record_at = record_path(into);
    let record = match (&record_at, run.options.resume) {
        (Some(path), true) => TarResume::read(path)
            .map_err(|e| at(path, e))?
            .filter(|r| expected_top.is_none_or(|t| t == r.top)),
        _ => None,
    };
    let range = record.as_ref().map(|r| (r.at, r.etag.as_str()));
    let answer = try_request(run, &name, range, Accept::Any).await;
    // Anything but the rest of the archive (the whole of it, a refusal,
    // the raw protocol) makes a record stale; a network error leaves it
    // for the next -c.
    let stale = match &answer {
        Ok((_, head, _)) => !(head.status == 206 && is_folder_archive(head)),
        Err(NotHttp::Raw) => true,
        Err(NotHttp::Error(_)) => false,
    };
    if let (true, Some(path)) = (stale, &record_at) {
        remove_record(path);
    }
    let (mut stream, head, rest) = match answer {
        Ok(done) => done,
        Err(NotHttp::Raw) => return Ok(false),
        Err(NotHttp::Error(e)) => return Err(e),
    };
    if matches!(head.status, 403 | 503) {
        // A server with archives that would not make this one (too large,
        // too deep, busy): the listings may still serve the tree, but the
        // user should know why it comes a file at a time.
        let words = error_words(run, &mut stream, &head, &rest).await;
        run.warn(&format!(
            "{name}: the server did not send the folder as one archive ({words}); fetching it \
             through its listings, a request per file"
        ));
        return Ok(false);
    }
    if !matches!(head.status, 200 | 206) || !is_folder_archive(&head) {
        return Ok(false);
    }
    let resumed = match (head.status, record) {
        (206, Some(record)) => {
            // A record was read, so it has a path.
            let path = record_at.as_deref().unwrap_or(into);
            check_continues(&record, &head, path).map_err(|e| e.context(&name))?;
            Some(record)
        }
        (206, None) => {
            return Err(GetError::Failed(format!(
                "{name}: a 206 to a request without a range"
            )));
        }
        (_, record) => {
            if record.is_some() {
                run.warn(&format!(
                    "{name}: the folder changed on the server (or cannot resume); fetching it \
                     whole again"
                ));
            }
            None
        }
    };
    let mut framing = match (head.chunked, head.content_length) {
        (true, _) => Framing::Chunked(ChunkedDecoder::new()),
        (false, Some(length)) => Framing::Length(length),
        (false, None) => {
            return Err(GetError::Failed(format!(
                "{name}: an archive without Content-Length or chunked framing: cannot tell \
                 whether it is whole"
            )));
        }
    };
    // The archive's version and length, for a record if it is cut.
    let version = match (&resumed, &head.etag, head.content_length, head.chunked) {
        (Some(r), _, _, _) => Some((r.etag.clone(), r.length)),
        (None, Some(etag), Some(length), false) => Some((etag.clone(), length)),
        _ => None,
    };
    let start = resumed.as_ref().map_or(0, |r| r.at);
    let mut extract = Extract {
        into,
        expected_top,
        top: resumed.as_ref().map(|r| r.top.clone()),
        members: resumed.as_ref().map_or(0, |r| r.members),
        completed: resumed.as_ref().map_or(0, |r| r.members),
        written,
    };
    if let Some(r) = &resumed {
        run.dirs = r.dirs;
        run.skipped += r.skipped;
        *extract.written += r.written;
        if !run.options.quiet {
            eprintln!(
                "{}: resuming at byte {} of {} ({} file(s) already written)",
                escape_text(&name),
                r.at,
                r.length,
                r.written
            );
        }
    }
    let bar = (!run.options.quiet && io::stderr().is_terminal()).then(|| {
        progress::bar(
            &escape_text(&name),
            start,
            version.as_ref().map(|(_, length)| *length),
            indicatif::ProgressDrawTarget::stderr(),
        )
    });
    let started = std::time::Instant::now();
    let mut reader = Reader::resumed_at(start);
    let mut current = Current::Nothing;
    let mut received = start;
    let mut pending = rest;
    let mut body = Vec::with_capacity(256 * 1024);
    let mut buf = vec![0u8; 256 * 1024];
    let outcome = loop {
        body.clear();
        let framed_end = match framing.take(&pending, &mut body) {
            Ok(done) => done,
            Err(e) => break Err(e.context(&name)),
        };
        received += body.len() as u64;
        if let Some(bar) = &bar {
            bar.set_position(received);
        }
        match extract.feed(run, &mut reader, &mut current, &body) {
            Ok(true) => break Ok(()),
            Ok(false) => {}
            Err(e) => break Err(e.context(&name)),
        }
        if run.stopped.is_some() {
            break Ok(());
        }
        if framed_end {
            break Err(GetError::Incomplete(format!(
                "{name}: the archive ended after {received} bytes, before its end blocks"
            )));
        }
        match timeout_at(run.wait_until(), stream.read(&mut buf)).await {
            Ok(Ok(0)) => {
                break Err(GetError::Incomplete(format!(
                    "{name}: the server closed the connection after {received} bytes of the \
                     archive"
                )));
            }
            Ok(Ok(n)) => pending = buf[..n].to_vec(),
            Ok(Err(e)) => {
                break Err(GetError::Incomplete(format!(
                    "{name}: the connection broke off after {received} bytes of the archive ({e})"
                )));
            }
            Err(_) => {
                break Err(GetError::Incomplete(format!(
                    "{name}: {} after {received} bytes of the archive",
                    run.why_late()
                )));
            }
        }
    };
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    if let Err(e) = outcome {
        if let Current::File { part, .. } = &current {
            // Its member is sent again from its header on a resume.
            let _ = fs::remove_file(part);
        }
        let GetError::Incomplete(_) = e else {
            return Err(e);
        };
        // What a resume needs, when the stream said its version and the
        // folder's first member came.
        let record = match (version, &extract.top) {
            (Some((etag, length)), Some(top)) if reader.resume_point() < length => {
                Some(TarResume {
                    etag,
                    length,
                    at: reader.resume_point(),
                    top: top.clone(),
                    members: extract.completed,
                    dirs: run.dirs,
                    skipped: run.skipped,
                    written: *extract.written,
                })
            }
            _ => None,
        };
        let resumes_at = match (record, &record_at) {
            (Some(r), Some(path)) => r.write(path).ok().map(|()| r.at),
            _ => None,
        };
        return Err(match resumes_at {
            Some(at) => e.with_suffix(&format!(
                "; get -r -c resumes it at byte {at} (the first member not yet whole)"
            )),
            _ => e.with_suffix("; get -r fetches the folder again whole"),
        });
    }
    if let Some(path) = &record_at {
        remove_record(path);
    }
    if !run.options.quiet {
        let secs = started.elapsed().as_secs_f64().max(1e-6);
        // This run's bytes: a resume's rate is not the whole archive's.
        let this_run = received - start;
        eprintln!(
            "{}: {this_run} bytes as one tar stream in {secs:.2} s ({:.1} MB/s)",
            escape_text(&name),
            this_run as f64 / secs / 1e6,
        );
    }
    Ok(true)
}

/// Where the members go, and what the archive has shown so far.
struct Extract<'a> {
    into: &'a Path,
    /// The folder's own name, which its archive's first member must be
    /// (`None` for the root, whose name the server chooses).
    expected_top: Option<&'a str>,
    /// The first member's name: every other lies under it.
    top: Option<String>,
    /// Members read so far, skipped ones and directories that exist
    /// already included: capped by [`MAX_MEMBERS`].
    members: usize,
    /// Members read whole (their ends reached): what a resume counts.
    completed: usize,
    written: &'a mut usize,
}

impl Extract<'_> {
    /// Reads `bytes` of the archive into the tree; true at the archive's end.
    fn feed(
        &mut self,
        run: &mut Run<'_>,
        reader: &mut Reader,
        current: &mut Current,
        bytes: &[u8],
    ) -> Result<bool, GetError> {
        let mut pos = 0;
        loop {
            let (n, event) = reader
                .next(&bytes[pos..])
                .map_err(|e| GetError::Failed(format!("refused the archive: {e}")))?;
            pos += n;
            match event {
                Event::More => return Ok(false),
                Event::End => {
                    if self.top.is_none() {
                        return Err(GetError::Failed("an empty archive".into()));
                    }
                    return Ok(true);
                }
                Event::Member(member) => {
                    *current = self.begin(run, member)?;
                    if run.stopped.is_some() {
                        return Ok(false);
                    }
                }
                Event::Data(data) => {
                    if let Current::File { file, part, at, .. } = current {
                        write_sparse(file, at, data).map_err(|e| {
                            GetError::Failed(format!("writing {}: {e}", part.display()))
                        })?;
                    }
                }
                Event::MemberEnd => {
                    self.completed += 1;
                    if let Current::File {
                        file,
                        part,
                        target,
                        mtime,
                        at: length,
                    } = std::mem::replace(current, Current::Nothing)
                    {
                        // A body that ends in a hole has its length only
                        // once it is set.
                        file.set_len(length).map_err(|e| at(&part, e))?;
                        file.sync_all().map_err(|e| at(&part, e))?;
                        if let Some(time) = system_time(mtime) {
                            // A time the file system cannot hold is no reason
                            // to fail: the bytes are what matter.
                            let _ = file.set_modified(time);
                        }
                        drop(file);
                        fs::rename(&part, &target).map_err(|e| at(&part, e))?;
                        let (_, stored) = part_paths(&target);
                        let _ = fs::remove_file(stored);
                        *self.written += 1;
                    }
                }
            }
        }
    }

    /// What to do with `member`: a file to write, or nothing (a directory,
    /// made here, or a member skipped with a warning).
    fn begin(&mut self, run: &mut Run<'_>, member: Member) -> Result<Current, GetError> {
        // Every member counts, as every directory followed does in the
        // mirror: the same directory, a skipped link or a global header
        // sent over and over creates nothing, but must not hold the run
        // until its deadline.
        self.members += 1;
        if self.members > MAX_MEMBERS {
            run.stopped = Some(format!("more than {MAX_MEMBERS} members in the archive"));
            return Ok(Current::Nothing);
        }
        let shown = server_words(&member.path, TextEncoding::Utf8);
        let Ok(path) = std::str::from_utf8(&member.path) else {
            run.skip(&format!("skipped the member \"{shown}\": not UTF-8"));
            return Ok(Current::Nothing);
        };
        let path = match member.kind {
            Kind::Directory => path.strip_suffix('/').unwrap_or(path),
            _ => path,
        };
        let mut components = path.split('/');
        let first = components.next().unwrap_or("");
        let Some(top) = &self.top else {
            // The first member is the folder itself.
            let fits = member.kind == Kind::Directory
                && safe_component(path)
                && self.expected_top.is_none_or(|t| t == path);
            if !fits {
                return Err(GetError::Failed(format!(
                    "refused the archive: its first member, \"{shown}\", is not the folder{}",
                    self.expected_top
                        .map_or(String::new(), |t| format!(" {}/", escape_text(t)))
                )));
            }
            self.top = Some(path.to_owned());
            return Ok(Current::Nothing);
        };
        let rest: Vec<&str> = components.collect();
        if first != top || rest.is_empty() {
            run.skip(&format!(
                "skipped the member \"{shown}\": not under the folder {}/",
                escape_text(top)
            ));
            return Ok(Current::Nothing);
        }
        if !rest.iter().all(|c| safe_component(c)) {
            run.skip(&format!(
                "skipped the member \"{shown}\": not a plain relative name (no .., no absolute \
                 path, no control characters, at most {MAX_COMPONENT} bytes a name)"
            ));
            return Ok(Current::Nothing);
        }
        let relative_len = path.len() - first.len() - 1;
        if relative_len > MAX_PATH || rest.len() > MAX_DEPTH + 1 {
            run.skip(&format!(
                "skipped the member \"{shown}\": over {MAX_PATH} bytes or {MAX_DEPTH} levels deep"
            ));
            return Ok(Current::Nothing);
        }
        let (parents, last) = match member.kind {
            Kind::Directory => (&rest[..], None),
            Kind::File => (&rest[..rest.len() - 1], rest.last().copied()),
            Kind::Other(flag) => {
                run.skip(&format!(
                    "skipped the member \"{shown}\": a {}; only files and directories are \
                     extracted",
                    kind_name(flag)
                ));
                return Ok(Current::Nothing);
            }
        };
        let Some(parent) = self.directory(run, parents, &shown)? else {
            return Ok(Current::Nothing);
        };
        let Some(last) = last else {
            return Ok(Current::Nothing);
        };
        if *self.written >= MAX_FILES {
            run.stopped = Some(format!("more than {MAX_FILES} files"));
            return Ok(Current::Nothing);
        }
        if last.len() + ".part".len() > MAX_COMPONENT {
            run.skip(&format!(
                "skipped the member \"{shown}\": a name too long for its .part (over {} bytes)",
                MAX_COMPONENT - ".part".len()
            ));
            return Ok(Current::Nothing);
        }
        let target = parent.join(last);
        let (part, stored) = part_paths(&target);
        let paths = [target.as_path(), part.as_path(), stored.as_path()];
        if let Some(taken) = paths.iter().find(|p| run.claimed.contains(p)) {
            run.skip(&format!(
                "skipped the member \"{shown}\": {} is another member's",
                taken.display()
            ));
            return Ok(Current::Nothing);
        }
        if let Some(why) = in_the_way(&paths) {
            run.skip(&format!(
                "skipped the member \"{shown}\": {why}; not written through"
            ));
            return Ok(Current::Nothing);
        }
        for path in paths {
            run.claimed.insert(path);
        }
        let file = open_part(&part, 0).map_err(|e| at(&part, e))?;
        Ok(Current::File {
            file,
            part,
            target,
            mtime: member.mtime,
            at: 0,
        })
    }

    /// The directory `components` below the output directory, made (each
    /// level) where it is missing; `None`, with the member skipped, when a
    /// level is a file, a symlink or another member's file.
    fn directory(
        &mut self,
        run: &mut Run<'_>,
        components: &[&str],
        shown: &str,
    ) -> Result<Option<PathBuf>, GetError> {
        let mut at_path = self.into.to_path_buf();
        for component in components {
            at_path.push(component);
            if run.claimed.contains(&at_path) {
                run.skip(&format!(
                    "skipped the member \"{shown}\": {} is a file of this archive",
                    at_path.display()
                ));
                return Ok(None);
            }
            match fs::symlink_metadata(&at_path) {
                Ok(meta) if meta.is_dir() => {}
                Ok(_) => {
                    run.skip(&format!(
                        "skipped the member \"{shown}\": {} exists and is not a directory",
                        at_path.display()
                    ));
                    return Ok(None);
                }
                Err(_) => {
                    if run.dirs >= MAX_DIRS {
                        run.stopped = Some(format!("more than {MAX_DIRS} directories"));
                        return Ok(None);
                    }
                    run.dirs += 1;
                    fs::create_dir(&at_path).map_err(|e| at(&at_path, e))?;
                }
            }
        }
        Ok(Some(at_path))
    }
}

/// Checks that `head`, a 206 to a resume of `record`, continues the same
/// archive from the record's offset to its end.
fn check_continues(
    record: &TarResume,
    head: &ResponseHead,
    record_at: &Path,
) -> Result<(), GetError> {
    let refuse = |what: String| {
        Err(GetError::Failed(format!(
            "refused the resume: {what} (remove {} to fetch the folder whole)",
            record_at.display()
        )))
    };
    if head.etag.as_deref() != Some(record.etag.as_str()) {
        return refuse(format!(
            "another version of the archive (validator {} instead of {})",
            server_words(
                head.etag.as_deref().unwrap_or("none").as_bytes(),
                TextEncoding::Utf8
            ),
            record.etag
        ));
    }
    let Some(range) = head.content_range else {
        return refuse("a 206 without a Content-Range".into());
    };
    if range.first != record.at || range.total != record.length || range.last + 1 != range.total {
        return refuse(format!(
            "a range {}-{}/{} where bytes {}- of {} were asked for",
            range.first, range.last, range.total, record.at, record.length
        ));
    }
    if head.chunked || head.content_length != Some(range.len()) {
        return refuse("a 206 whose length is not its range's".into());
    }
    Ok(())
}

/// The size of a hole: a block of the body this long, aligned, and all
/// zeros is skipped, not written.
const HOLE: u64 = 4096;

/// Writes `data`, the body's bytes from `at`, to `file` (new, empty, at
/// `at`), leaving a hole (a seek) for every aligned [`HOLE`] of zeros, or
/// part of one at either end of `data`, so that a sparse file (a disk
/// image) stays sparse on disk; the bytes read back are the same. The
/// caller sets the file's length at the body's end.
fn write_sparse(file: &mut fs::File, at: &mut u64, data: &[u8]) -> io::Result<()> {
    let mut pos = 0;
    let mut pending = 0;
    while pos < data.len() {
        // At most HOLE: it fits.
        let to_boundary = (HOLE - (*at + pos as u64) % HOLE) as usize;
        let end = (pos + to_boundary).min(data.len());
        let block = &data[pos..end];
        // A part of a block at either end of `data` counts too: the file
        // was empty, so what is not written reads as zeros.
        if block.iter().all(|&b| b == 0) {
            file.write_all(&data[pending..pos])?;
            file.seek(SeekFrom::Current(block.len() as i64))?;
            pending = end;
        }
        pos = end;
    }
    file.write_all(&data[pending..])?;
    *at += data.len() as u64;
    Ok(())
}

/// What a tar type flag is, said.
fn kind_name(flag: u8) -> &'static str {
    match flag {
        b'1' => "hard link",
        b'2' => "symlink",
        b'3' => "character device",
        b'4' => "block device",
        b'6' => "FIFO",
        b'g' => "global pax header",
        b'L' | b'K' => "GNU long name",
        _ => "member of another type",
    }
}

/// `mtime` (seconds since 1970) as a time, if it is one.
fn system_time(mtime: i64) -> Option<SystemTime> {
    let magnitude = Duration::from_secs(mtime.unsigned_abs());
    if mtime >= 0 {
        SystemTime::UNIX_EPOCH.checked_add(magnitude)
    } else {
        SystemTime::UNIX_EPOCH.checked_sub(magnitude)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::response::parse_head;

    fn head(text: &str) -> ResponseHead {
        let text = format!("{text}\r\n\r\n");
        parse_head(text.as_bytes()).unwrap().unwrap().0
    }

    #[test]
    fn zeros_in_aligned_blocks_become_holes_and_the_bytes_read_back_the_same() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let mut body = vec![0u8; 4 << 20];
        body[10] = 1;
        body[(2 << 20) + 5000] = 2;
        body.extend_from_slice(b"tail");
        body.extend(vec![0u8; 3 * HOLE as usize]);
        let path = dir.path().join("f");
        let mut file = fs::File::create(&path).unwrap();
        let mut at = 0;
        // Fed in pieces that cross the block boundaries.
        for piece in body.chunks(5000) {
            write_sparse(&mut file, &mut at, piece).unwrap();
        }
        file.set_len(at).unwrap();
        drop(file);
        assert_eq!(at, body.len() as u64);
        assert_eq!(fs::read(&path).unwrap(), body);
        // Three 4 KiB blocks hold bytes (tmpfs and ext4 keep holes).
        let allocated = fs::metadata(&path).unwrap().blocks() * 512;
        assert!(allocated < 1 << 20, "{allocated} bytes allocated");
    }

    #[test]
    fn only_the_server_s_folder_archive_is_taken_for_one() {
        let archive = "HTTP/1.1 200 OK\r\nContent-Type: application/x-tar\r\n\
                       ETag: \"tar-0123456789abcdef0123456789abcdef\"";
        assert!(is_folder_archive(&head(archive)));
        for file in [
            // A real file photos.tar: the tag of a file.
            "HTTP/1.1 200 OK\r\nContent-Type: application/x-tar\r\nETag: \"803-1a2b-400-17f\"",
            "HTTP/1.1 200 OK\r\nContent-Type: application/x-tar",
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nETag: \"tar-0123\"",
            "HTTP/1.1 200 OK\r\nContent-Type: application/x-tar\r\nETag: W/\"tar-0123\"",
            "HTTP/1.1 200 OK\r\nContent-Type: application/x-tar\r\nETag: \"tar-\"",
            "HTTP/1.1 200 OK\r\nContent-Type: application/x-tar\r\nETag: \"tar-xyz\"",
        ] {
            assert!(!is_folder_archive(&head(file)), "{file}");
        }
    }
}
