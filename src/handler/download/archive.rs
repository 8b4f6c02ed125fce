//! Folders as tar streams: a request for `NAME.tar`, where `NAME` is a
//! directory under the root and no file `NAME.tar` exists, gets that
//! directory as one archive (`crate::tar`), and `.tar` gets the root.
//!
//! This file owns which entries go in and the walk that finds them. The
//! root's rules are a download's: names not UTF-8, hidden (unless
//! allowed) or with control characters are left out, as from a listing; a
//! symlink is archived as the regular file it leads to when that is inside
//! the root, and left out otherwise (a symlink to a directory too: no
//! cycles, no member twice); hard-linked files (unless allowed), devices,
//! FIFOs and sockets are left out. The walk opens each directory beneath
//! the archived one by `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`,
//! so it holds two descriptors at most, and a directory swapped for a
//! symlink mid-walk is not followed.
//!
//! Bounded: at most [`MAX_ENTRIES`] members and [`MAX_DEPTH`] levels (a
//! larger tree is refused, never cut short), a few walks at a time, and
//! the layouts alive (being walked, or held by archives being sent) never
//! over [`LIVE_BYTES`]: each member is charged as the walk finds it (its
//! name can be 4 KB, so the entry count alone bounds nothing), and a walk
//! that would pass the budget stops. The walk, the sort and the entity tag
//! run on the blocking pool, never on an async worker.

use std::ffi::CStr;
use std::io;
use std::net::IpAddr;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use rustix::fs::{AtFlags, Dir, FileType, Mode, OFlags, ResolveFlags, Stat};
use tokio::time::{Instant, timeout_at};

use super::paths::{Policy, Target, check_confined, io_reason};
use super::slots::{NoSlot, Slots};
use super::{Download, pace_deadline};
use crate::conn::send_budget::SendBuffer;
use crate::conn::text::{QUOTE_MAX_BYTES, quote};
use crate::conn::{ConnError, Connection, Io, MinRate};
use crate::handler::{HandlerError, Refusal};
use crate::tar::{Entry, EntryKind, Layout, Piece};

/// Bytes gathered before they are written: headers, padding, and the
/// bodies of small files, so that a folder of small files goes out in
/// writes of this size, not one (and a wake-up of the client) a file.
const BATCH_BYTES: usize = 64 * 1024;

/// A body at most this long is read into the batch; a longer one goes out
/// by sendfile. So a batch holds at most twice [`BATCH_BYTES`].
const SMALL_BODY: u64 = BATCH_BYTES as u64;

/// The most members an archive has; a larger tree is refused.
pub(super) const MAX_ENTRIES: usize = 100_000;

/// The deepest an archive's directories nest below the archived one.
pub(super) const MAX_DEPTH: usize = 32;

/// Walks at once, per listener.
const WALKS_AT_ONCE: usize = 4;

/// Walks at once for one source (a HEAD walks too, and takes no send
/// slot): one source cannot take every turn from the others.
const WALKS_PER_SOURCE: usize = 1;

/// The layouts' bytes alive (being walked, or held by archives being
/// sent) that no walk passes: one that would is stopped, and the request
/// is told `ERR busy` (503 over HTTP), or that the folder is too large
/// when its layout alone would pass it.
const LIVE_BYTES: usize = 64 << 20;

/// The bytes a member takes in a layout, about: its entry and name, and
/// its place in the layout.
fn member_bytes(entry: &Entry) -> usize {
    std::mem::size_of::<Entry>() + 16 + entry.name.len()
}

/// Why a folder cannot be archived.
#[derive(Debug, thiserror::Error)]
pub(super) enum WalkError {
    #[error("more than {MAX_ENTRIES} entries")]
    TooManyEntries,
    #[error("directories nested more than {MAX_DEPTH} levels")]
    TooDeep,
    #[error("a layout over the listener's budget for archives")]
    TooLarge,
    #[error("too many archives being prepared or sent")]
    Busy,
    #[error("the source walks another folder already")]
    SourceBusy,
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// The archives of one listener: turns to walk, and the bytes of the
/// layouts alive.
#[derive(Debug)]
pub(super) struct Archives {
    walks: Arc<Slots>,
    live: Arc<AtomicUsize>,
    max_live: usize,
    max_entries: usize,
}

impl Default for Archives {
    fn default() -> Self {
        Archives {
            walks: Slots::new(WALKS_AT_ONCE, WALKS_PER_SOURCE),
            live: Arc::new(AtomicUsize::new(0)),
            max_live: LIVE_BYTES,
            max_entries: MAX_ENTRIES,
        }
    }
}

/// An archive's layout, counted in its listener's live bytes until the
/// last holder lets it go.
#[derive(Debug)]
pub(super) struct Walked {
    pub(super) layout: Layout,
    _charge: Charge,
}

/// The bytes a walk or a layout holds of its listener's budget, given back
/// when it ends (a walk that stops included).
#[derive(Debug)]
struct Charge {
    bytes: usize,
    live: Arc<AtomicUsize>,
    max_live: usize,
}

impl Charge {
    fn new(live: Arc<AtomicUsize>, max_live: usize) -> Charge {
        Charge {
            bytes: 0,
            live,
            max_live,
        }
    }

    /// Charges `bytes` more: refused when this charge alone would pass
    /// the budget (too large), or the listener's layouts together (busy).
    fn add(&mut self, bytes: usize) -> Result<(), WalkError> {
        if self.bytes.saturating_add(bytes) > self.max_live {
            return Err(WalkError::TooLarge);
        }
        let before = self.live.fetch_add(bytes, Ordering::Relaxed);
        self.bytes += bytes;
        if before.saturating_add(bytes) > self.max_live {
            return Err(WalkError::Busy);
        }
        Ok(())
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.live.fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

impl Archives {
    /// Archives whose layouts may hold `max_live` bytes and `max_entries`
    /// members (tests).
    #[cfg(test)]
    fn with_limits(max_live: usize, max_entries: usize) -> Archives {
        Archives {
            max_live,
            max_entries,
            ..Archives::default()
        }
    }

    /// The layout of the archive of `dir` (opened), with its members under
    /// `top`, walked on the blocking pool in its turn. `root` is the
    /// download root (real path), `dir_path` the directory's real path.
    pub(super) async fn walk(
        &self,
        source: IpAddr,
        root: Arc<Path>,
        dir: std::fs::File,
        dir_path: &Path,
        top: String,
        policy: Policy,
    ) -> Result<Walked, WalkError> {
        let turn = self.walks.take(source).map_err(|none| match none {
            NoSlot::Busy => WalkError::Busy,
            NoSlot::SourceBusy => WalkError::SourceBusy,
        })?;
        if self.live.load(Ordering::Relaxed) >= self.max_live {
            return Err(WalkError::Busy);
        }
        let dir_path = dir_path.to_path_buf();
        let max_entries = self.max_entries;
        let mut charge = Charge::new(self.live.clone(), self.max_live);
        // The sort and the entity tag read every name: on the blocking
        // pool too, as the walk.
        tokio::task::spawn_blocking(move || {
            let _turn = turn;
            let entries = walk(
                &root,
                dir.as_fd(),
                &dir_path,
                &top,
                policy,
                max_entries,
                &mut charge,
            )?;
            Ok(Walked {
                layout: Layout::new(entries),
                _charge: charge,
            })
        })
        .await
        .map_err(io::Error::other)?
    }

    /// The bytes of the layouts alive (tests).
    #[cfg(test)]
    fn live_bytes(&self) -> usize {
        self.live.load(Ordering::Relaxed)
    }
}

/// The folder a requested name asks for as a tar stream: `NAME.tar` and
/// `NAME/.tar` are the folder `NAME`, and `.tar` the root (`""`), as a
/// folder's own `.tar` inside it. `None` for any other name: no other
/// spelling of a folder (`NAME/.tar` with `NAME` ending in `/`, `..tar`,
/// `NAME/..tar`) is one.
pub(super) fn archived_folder(name: &str) -> Option<&str> {
    if name == ".tar" {
        return Some("");
    }
    let folder = name
        .strip_suffix("/.tar")
        .or_else(|| name.strip_suffix(".tar"))?;
    let last = folder.rsplit('/').next().unwrap_or(folder);
    (!matches!(last, "" | "." | "..")).then_some(folder)
}

/// The name of an archive's top directory: the folder's last component,
/// or for the root its own name (`root` if it has none, as `/` has not).
fn top_name(folder: &str, root: &Path) -> String {
    let last = if folder.is_empty() {
        root.file_name()
            .map(|name| name.to_string_lossy().into_owned())
    } else {
        Path::new(folder)
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
    };
    last.unwrap_or_else(|| "root".to_owned())
}

/// A folder ready to be sent as a tar stream: its layout, and where it is.
#[derive(Debug)]
pub(super) struct Archive {
    walked: Walked,
    /// The folder's path below the root (`""`: the root).
    folder: String,
}

impl Archive {
    pub(super) fn layout(&self) -> &Layout {
        &self.walked.layout
    }

    /// The path below the root of a member (not the top directory).
    fn member_path(&self, entry: &Entry) -> String {
        let below = entry.name.split_once('/').map_or("", |(_, below)| below);
        if self.folder.is_empty() {
            below.to_owned()
        } else {
            format!("{}/{below}", self.folder)
        }
    }
}

impl Download {
    /// The archive of `folder` (a path below the root, `""` for the root):
    /// resolved as any name is, then walked in its turn. A name that is not
    /// a folder is not found.
    pub(super) async fn open_archive(
        &self,
        folder: &str,
        source: IpAddr,
    ) -> Result<Archive, HandlerError> {
        let Target::Directory { handle, path } = self.resolve_target(folder).await? else {
            return Err(HandlerError::Refused(Refusal::NotFound));
        };
        let top = top_name(folder, &self.root);
        let walked = self
            .archives
            .walk(source, self.root.clone(), handle, &path, top, self.policy)
            .await
            .map_err(|e| {
                HandlerError::Refused(match e {
                    WalkError::TooManyEntries | WalkError::TooLarge => Refusal::ArchiveTooLarge,
                    WalkError::TooDeep => Refusal::ArchiveTooDeep,
                    WalkError::Busy => Refusal::Busy,
                    WalkError::SourceBusy => Refusal::TooManyFromSource,
                    WalkError::Io(e) => io_reason(&e),
                })
            })?;
        Ok(Archive {
            walked,
            folder: folder.to_owned(),
        })
    }

    /// Sends `head` (an HTTP response head, or nothing), then the `len`
    /// bytes from `first` of `archive`, under the listener's limits: the
    /// send buffer, the minimum rate over the whole stream, each write
    /// within the idle timeout. Headers and padding are built as they go;
    /// each file is opened (one at a time) when its body is due, and must
    /// still be what the walk saw, before and after its bytes are sent:
    /// else [`HandlerError::ArchiveChanged`], and the stream is reset.
    pub(super) async fn send_archive<S: Io>(
        &self,
        conn: &mut Connection<S>,
        head: &[u8],
        archive: &Archive,
        first: u64,
        len: u64,
    ) -> Result<(), HandlerError> {
        if self.send_buffer > 0 && len > self.send_buffer as u64 {
            conn.set_send_buffer(self.send_buffer);
        }
        let (_, before) = conn.bytes();
        let sent = self.send_pieces(conn, head, archive, first, len).await;
        let bytes = (conn.bytes().1 - before).saturating_sub(head.len() as u64);
        self.file_bytes_sent.inc_by(bytes);
        sent?;
        self.files_sent.inc();
        Ok(())
    }

    async fn send_pieces<S: Io>(
        &self,
        conn: &mut Connection<S>,
        head: &[u8],
        archive: &Archive,
        first: u64,
        len: u64,
    ) -> Result<(), HandlerError> {
        let layout = archive.layout();
        let started = Instant::now();
        // Archive bytes gone out or in `batch`, for the minimum rate.
        let mut sent = 0u64;
        let mut batch = Vec::with_capacity(head.len() + 2 * crate::tar::BLOCK as usize);
        batch.extend_from_slice(head);
        let mut header = Vec::new();
        for piece in layout.pieces(first, len) {
            match piece {
                Piece::Header { member, skip, len } => {
                    header.clear();
                    layout.header(member, &mut header);
                    batch.extend_from_slice(&header[skip..skip + len]);
                    sent += len as u64;
                }
                Piece::Zeros(len) => {
                    // Padding (under a block) or the end (two blocks).
                    batch.resize(batch.len() + usize::try_from(len).unwrap_or(0), 0);
                    sent += len;
                }
                Piece::Body {
                    member,
                    offset,
                    len,
                } => {
                    let entry = layout.entry(member);
                    let file = self.open_member(archive, entry).await?;
                    if len <= SMALL_BODY {
                        let stall = conn.settings().idle_timeout;
                        // Both within SMALL_BODY.
                        let file = read_body(file, offset, len as usize, &mut batch, stall)
                            .await?
                            .ok_or_else(|| changed(entry))?;
                        if !same_version(entry, &file.metadata()?) {
                            return Err(changed(entry));
                        }
                        sent += len;
                        if batch.len() >= BATCH_BYTES {
                            self.flush(conn, &mut batch, started, sent).await?;
                        }
                        continue;
                    }
                    let watch = file.try_clone()?;
                    let pace = self.pace.map(|pace| continued(pace, started, sent));
                    let buffer = SendBuffer {
                        base: self.send_buffer,
                        budget: self.send_budget.as_ref(),
                    };
                    let went = conn
                        .send_file(&batch, file, offset, len, self.chunk_size, pace, buffer)
                        .await?;
                    batch.clear();
                    sent += len;
                    let meta = watch.metadata()?;
                    if went < len || !same_version(entry, &meta) {
                        return Err(changed(entry));
                    }
                }
            }
            if batch.len() >= BATCH_BYTES {
                self.flush(conn, &mut batch, started, sent).await?;
            }
        }
        self.flush(conn, &mut batch, started, sent).await
    }

    /// Writes `batch` (the archive's first `sent` bytes end with it) within
    /// the minimum rate and the idle timeout, and empties it.
    async fn flush<S: Io>(
        &self,
        conn: &mut Connection<S>,
        batch: &mut Vec<u8>,
        started: Instant,
        sent: u64,
    ) -> Result<(), HandlerError> {
        if batch.is_empty() {
            return Ok(());
        }
        match self.pace {
            Some(pace) => timeout_at(pace_deadline(pace, started, sent), conn.send(batch))
                .await
                .map_err(|_| ConnError::ReaderTooSlow(pace.bytes_per_second))??,
            None => conn.send(batch).await?,
        }
        batch.clear();
        Ok(())
    }

    /// Opens a member's file by its name, as any download is (the root's
    /// rules again), and checks that it is the version the walk saw.
    async fn open_member(
        &self,
        archive: &Archive,
        entry: &Entry,
    ) -> Result<std::fs::File, HandlerError> {
        match self.resolve_target(&archive.member_path(entry)).await {
            Ok(Target::File { file, meta, .. }) if same_version(entry, &meta) => Ok(file),
            Ok(_) | Err(HandlerError::Refused(_)) => Err(changed(entry)),
            Err(e) => Err(e),
        }
    }
}

/// Appends the `len` bytes of `file` from `offset` to `batch`: from the
/// page cache on the worker when it holds them (`preadv2(RWF_NOWAIT)`),
/// else on the blocking pool within `stall`. The file back, or `None` (and
/// `batch` as it was) when it is shorter now.
async fn read_body(
    file: std::fs::File,
    offset: u64,
    len: usize,
    batch: &mut Vec<u8>,
    stall: std::time::Duration,
) -> Result<Option<std::fs::File>, HandlerError> {
    let before = batch.len();
    batch.resize(before + len, 0);
    let cached = rustix::io::preadv2(
        &file,
        &mut [std::io::IoSliceMut::new(&mut batch[before..])],
        offset,
        rustix::io::ReadWriteFlags::NOWAIT,
    );
    if cached.is_ok_and(|n| n == len) {
        return Ok(Some(file));
    }
    batch.truncate(before);
    let read = tokio::task::spawn_blocking(move || {
        use std::os::unix::fs::FileExt;
        let mut body = vec![0u8; len];
        let mut got = 0;
        while got < len {
            match file.read_at(&mut body[got..], offset + got as u64) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok((file, body, got))
    });
    let (file, body, got) = timeout_at(Instant::now() + stall, read)
        .await
        .map_err(|_| ConnError::DiskStalled)?
        .map_err(io::Error::other)??;
    if got < len {
        return Ok(None);
    }
    batch.extend_from_slice(&body);
    Ok(Some(file))
}

/// The minimum rate of a send that continues a stream: what is left of the
/// stream's allowance (`sent` bytes since `started`) as its grace, none if
/// it is behind.
fn continued(pace: MinRate, started: Instant, sent: u64) -> MinRate {
    MinRate {
        bytes_per_second: pace.bytes_per_second,
        grace: pace_deadline(pace, started, sent).saturating_duration_since(Instant::now()),
    }
}

/// The file is what the walk saw: the same file (device, inode), size and
/// modification time.
fn same_version(entry: &Entry, meta: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::MetadataExt;
    meta.is_file()
        && meta.dev() == entry.dev
        && meta.ino() == entry.inode
        && meta.len() == entry.size
        && meta.mtime() == entry.mtime
        && meta.mtime_nsec() == entry.mtime_nsec
}

fn changed(entry: &Entry) -> HandlerError {
    // Logged with the connection's end, as the error it ends with.
    HandlerError::ArchiveChanged {
        member: quote(&entry.name, QUOTE_MAX_BYTES),
    }
}

/// The entries of the archive of the directory `dir` (open, at the real
/// path `dir_path` below `root`), named under `top`: the directory itself,
/// then what is below it, in walk order (the layout sorts them). Each is
/// charged to `charge` as it is found. The walk's memory is about twice
/// its charge at most: the directories still to read have names no longer
/// than their members', and the entries' vector grows by doubling.
fn walk(
    root: &Path,
    dir: BorrowedFd<'_>,
    dir_path: &Path,
    top: &str,
    policy: Policy,
    max_entries: usize,
    charge: &mut Charge,
) -> Result<Vec<Entry>, WalkError> {
    let top_entry = entry(
        top.to_owned(),
        EntryKind::Directory,
        &rustix::fs::fstat(dir).map_err(io::Error::from)?,
    );
    charge.add(member_bytes(&top_entry))?;
    let mut entries = vec![top_entry];
    // Directories still to read: their path below `dir` ("" for `dir`)
    // and their depth.
    let mut pending = vec![(String::new(), 0usize)];
    while let Some((below, depth)) = pending.pop() {
        let opened = rustix::fs::openat2(
            dir,
            if below.is_empty() {
                "."
            } else {
                below.as_str()
            },
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOCTTY | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS,
        )
        .map_err(io::Error::from)?;
        let mut reader = Dir::new(opened).map_err(io::Error::from)?;
        while let Some(item) = reader.read() {
            let item = item.map_err(io::Error::from)?;
            let Some(name) = archivable_name(item.file_name(), policy.allow_hidden) else {
                continue;
            };
            let parent = reader.fd().map_err(io::Error::from)?;
            let Ok(stat) = rustix::fs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW) else {
                continue; // gone since it was listed
            };
            let path = if below.is_empty() {
                name.to_owned()
            } else {
                format!("{below}/{name}")
            };
            let member = format!("{top}/{path}");
            let file_type = FileType::from_raw_mode(stat.st_mode);
            let found = match file_type {
                FileType::Directory => {
                    if depth + 1 > MAX_DEPTH {
                        return Err(WalkError::TooDeep);
                    }
                    pending.push((path, depth + 1));
                    Some(entry(member, EntryKind::Directory, &stat))
                }
                FileType::RegularFile => {
                    servable_file(&stat, policy).then(|| entry(member, EntryKind::File, &stat))
                }
                FileType::Symlink => linked_file(root, &dir_path.join(&path), policy)
                    .map(|stat| entry(member, EntryKind::File, &stat)),
                _ => None,
            };
            if let Some(found) = found {
                if entries.len() >= max_entries {
                    return Err(WalkError::TooManyEntries);
                }
                charge.add(member_bytes(&found))?;
                entries.push(found);
            }
        }
    }
    Ok(entries)
}

/// A directory entry's name as an archive member's, or `None` when it is
/// left out: `.` and `..`, not UTF-8, hidden (unless allowed), or with a
/// control character.
fn archivable_name(name: &CStr, allow_hidden: bool) -> Option<&str> {
    let name = name.to_str().ok()?;
    let left_out = name == "."
        || name == ".."
        || (!allow_hidden && name.starts_with('.'))
        || name.chars().any(char::is_control);
    (!left_out).then_some(name)
}

/// A regular file the rules let through: one link, unless hard links are allowed.
fn servable_file(stat: &Stat, policy: Policy) -> bool {
    policy.allow_hard_links || stat.st_nlink <= 1
}

/// What the symlink at `path` leads to, when that is a regular file inside
/// the root that the rules let through.
fn linked_file(root: &Path, path: &Path, policy: Policy) -> Option<Stat> {
    let real = std::fs::canonicalize(path).ok()?;
    check_confined(root, &real, policy.allow_hidden).ok()?;
    // The real path has no symlink: one swapped in since is not followed
    // (a stat by path would report a file outside the root).
    let handle = rustix::fs::openat2(
        rustix::fs::CWD,
        &real,
        OFlags::PATH | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::NO_SYMLINKS,
    )
    .ok()?;
    let stat = rustix::fs::fstat(&handle).ok()?;
    (FileType::from_raw_mode(stat.st_mode) == FileType::RegularFile && servable_file(&stat, policy))
        .then_some(stat)
}

fn entry(name: String, kind: EntryKind, stat: &Stat) -> Entry {
    Entry {
        name,
        kind,
        size: match kind {
            EntryKind::File => u64::try_from(stat.st_size).unwrap_or(0),
            EntryKind::Directory => 0,
        },
        mode: stat.st_mode,
        mtime: stat.st_mtime,
        mtime_nsec: stat.st_mtime_nsec as i64,
        dev: stat.st_dev,
        inode: stat.st_ino,
    }
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::unix::fs::symlink;

    use super::*;

    const STRICT: Policy = Policy {
        allow_hidden: false,
        allow_hard_links: false,
    };

    const LOCAL: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    /// A root with `photos/` holding what an archive must take and leave.
    fn tree() -> (tempfile::TempDir, Arc<Path>) {
        let base = tempfile::tempdir().unwrap();
        let root = base.path().join("root");
        let photos = root.join("photos");
        fs::create_dir_all(photos.join("2026/may")).unwrap();
        fs::write(photos.join("a.jpg"), b"aaaa").unwrap();
        fs::write(photos.join("2026/may/b.jpg"), b"bb").unwrap();
        fs::write(photos.join(".secret"), b"no").unwrap();
        fs::create_dir(photos.join(".git")).unwrap();
        fs::write(photos.join(".git/config"), b"no").unwrap();
        fs::write(photos.join("bad\u{1b}[31m"), b"no").unwrap();
        fs::write(root.join("elsewhere.txt"), b"inside the root").unwrap();
        symlink("../elsewhere.txt", photos.join("link-in")).unwrap();
        fs::write(base.path().join("outside.txt"), b"outside").unwrap();
        symlink("../../outside.txt", photos.join("link-out")).unwrap();
        symlink("2026", photos.join("link-dir")).unwrap();
        fs::write(photos.join("linked"), b"two links").unwrap();
        fs::hard_link(photos.join("linked"), base.path().join("linked-too")).unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            photos.join("fifo"),
            FileType::Fifo,
            Mode::RUSR | Mode::WUSR,
            0,
        )
        .unwrap();
        let root: Arc<Path> = Arc::from(fs::canonicalize(&root).unwrap().as_path());
        (base, root)
    }

    fn walked(
        root: &Path,
        dir: &str,
        policy: Policy,
        max_entries: usize,
    ) -> Result<Vec<Entry>, WalkError> {
        let path = root.join(dir);
        let handle = fs::File::open(&path).unwrap();
        let mut charge = Charge::new(Arc::new(AtomicUsize::new(0)), usize::MAX);
        walk(
            root,
            handle.as_fd(),
            &path,
            dir,
            policy,
            max_entries,
            &mut charge,
        )
    }

    #[test]
    fn a_folder_is_named_with_tar_after_it_or_inside_it() {
        let cases = [
            (".tar", Some("")),
            ("photos.tar", Some("photos")),
            ("photos/.tar", Some("photos")),
            ("a/b.tar", Some("a/b")),
            ("a/b/.tar", Some("a/b")),
            ("photos/", None),
            ("photos", None),
            ("photos//.tar", None),
            ("photos/.tar/", None),
            ("..tar", None),
            ("photos/..tar", None),
            ("photos/.../.tar", Some("photos/...")),
            ("/.tar", None),
            ("tar", None),
        ];
        for (name, folder) in cases {
            assert_eq!(archived_folder(name), folder, "{name:?}");
        }
    }

    fn names(entries: &[Entry]) -> Vec<(String, EntryKind, u64)> {
        let mut names: Vec<_> = entries
            .iter()
            .map(|e| (e.name.clone(), e.kind, e.size))
            .collect();
        names.sort();
        names
    }

    #[test]
    fn the_walk_takes_what_a_download_serves_and_leaves_the_rest() {
        let (_base, root) = tree();
        let entries = walked(&root, "photos", STRICT, MAX_ENTRIES).unwrap();
        let dir = |n: &str| (n.to_string(), EntryKind::Directory, 0);
        let file = |n: &str, size| (n.to_string(), EntryKind::File, size);
        assert_eq!(
            names(&entries),
            [
                dir("photos"),
                dir("photos/2026"),
                dir("photos/2026/may"),
                file("photos/2026/may/b.jpg", 2),
                file("photos/a.jpg", 4),
                // A symlink to a file inside the root: that file's bytes.
                file("photos/link-in", 15),
            ]
        );
        let link = entries.iter().find(|e| e.name == "photos/link-in").unwrap();
        let target = fs::metadata(root.join("elsewhere.txt")).unwrap();
        assert_eq!(link.inode, std::os::unix::fs::MetadataExt::ino(&target));
    }

    #[test]
    fn hidden_names_and_hard_links_go_in_when_the_root_allows_them() {
        let (_base, root) = tree();
        let open = Policy {
            allow_hidden: true,
            allow_hard_links: true,
        };
        let got = names(&walked(&root, "photos", open, MAX_ENTRIES).unwrap());
        for name in [
            "photos/.secret",
            "photos/.git",
            "photos/.git/config",
            "photos/linked",
        ] {
            assert!(
                got.iter().any(|(n, ..)| n == name),
                "{name} missing from {got:?}"
            );
        }
        assert!(
            !got.iter()
                .any(|(n, ..)| n.contains('\u{1b}') || n.ends_with("fifo"))
        );
    }

    #[test]
    fn a_tree_over_the_limits_is_refused_not_cut_short() {
        let (_base, root) = tree();
        assert!(walked(&root, "photos", STRICT, 6).is_ok());
        assert!(matches!(
            walked(&root, "photos", STRICT, 5),
            Err(WalkError::TooManyEntries)
        ));
        let mut deep = root.join("deep");
        for _ in 0..MAX_DEPTH {
            deep.push("d");
        }
        fs::create_dir_all(&deep).unwrap();
        assert!(walked(&root, "deep", STRICT, MAX_ENTRIES).is_ok());
        fs::create_dir(deep.join("d")).unwrap();
        assert!(matches!(
            walked(&root, "deep", STRICT, MAX_ENTRIES),
            Err(WalkError::TooDeep)
        ));
    }

    #[tokio::test]
    async fn no_walk_starts_while_the_layouts_alive_hold_the_budget() {
        let (_base, root) = tree();
        let photos_bytes: usize = walked(&root, "photos", STRICT, MAX_ENTRIES)
            .unwrap()
            .iter()
            .map(member_bytes)
            .sum();
        let archives = Archives::with_limits(photos_bytes, MAX_ENTRIES);
        let path = root.join("photos");
        let walk = || {
            let dir = fs::File::open(&path).unwrap();
            archives.walk(LOCAL, root.clone(), dir, &path, "photos".into(), STRICT)
        };
        let first = walk().await.unwrap();
        assert_eq!(first.layout.entries().len(), 6);
        assert!(archives.live_bytes() > 0);
        assert!(matches!(walk().await, Err(WalkError::Busy)));
        drop(first);
        assert_eq!(archives.live_bytes(), 0);
        assert!(walk().await.is_ok());
    }

    /// Found by attack2: the budget was checked only before a walk, and a
    /// walk's names were not counted until it ended (one walk of 100 000
    /// names of 3.8 KB held ~400 MB, 4 at once 1.5 GB).
    #[tokio::test]
    async fn a_walk_charges_the_budget_as_it_goes_and_never_passes_it() {
        let (_base, root) = tree();
        let wide = root.join("wide");
        fs::create_dir(&wide).unwrap();
        for i in 0..60 {
            fs::write(wide.join(format!("{i:03}{}", "n".repeat(247))), b"").unwrap();
        }
        let wide_bytes: usize = walked(&root, "wide", STRICT, MAX_ENTRIES)
            .unwrap()
            .iter()
            .map(member_bytes)
            .sum();
        async fn walk_in(archives: &Archives, root: &Arc<Path>) -> Result<Walked, WalkError> {
            let path = root.join("wide");
            let dir = fs::File::open(&path).unwrap();
            archives
                .walk(LOCAL, root.clone(), dir, &path, "wide".into(), STRICT)
                .await
        }
        // Alone over the budget: refused, and nothing stays charged.
        let small = Archives::with_limits(wide_bytes / 2, MAX_ENTRIES);
        assert!(matches!(
            walk_in(&small, &root).await,
            Err(WalkError::TooLarge)
        ));
        assert_eq!(small.live_bytes(), 0);
        // Room for one: a second while the first is held would pass it.
        let archives = Archives::with_limits(wide_bytes + wide_bytes / 2, MAX_ENTRIES);
        let first = walk_in(&archives, &root).await.unwrap();
        assert_eq!(archives.live_bytes(), wide_bytes);
        let second = walk_in(&archives, &root).await;
        assert!(
            matches!(second, Err(WalkError::Busy)),
            "a second walk took the live bytes to {}, over the budget of {}",
            archives.live_bytes(),
            wide_bytes + wide_bytes / 2
        );
        assert_eq!(archives.live_bytes(), wide_bytes);
        drop(first);
        assert_eq!(archives.live_bytes(), 0);
    }
}
