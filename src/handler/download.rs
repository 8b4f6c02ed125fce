//! `download`: the client names a file; the server streams it from the
//! listener's root in `chunk_size` pieces and closes. A directory (or an
//! empty name) gets a listing, one entry a line, directories with a `/`.
//!
//! Names are confined to the root: absolute paths, `..`, NUL bytes, hidden
//! names (unless `allow_hidden`), symlinks that lead outside the root, and
//! anything that is not a regular file or directory are refused with one
//! `ERR <reason>` line. Path checks and opens run on the blocking pool. A
//! name is checked by path, opened `O_NOFOLLOW | O_NONBLOCK`, then checked
//! again through its descriptor (`/proc/self/fd`, `fstat`), so a FIFO, or a
//! directory swapped for a symlink after the first check, can neither block
//! nor escape the root.

use std::collections::BinaryHeap;
use std::fs;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use prometheus::IntCounter;
use serde::Deserialize;
use tokio::sync::Semaphore;
use tracing::{debug, info, warn};

use super::probe::{Probe, ProbeContext, line_then_close, shown};
use super::{BuildContext, Ended, Handler, HandlerError, Invalid};
use crate::conn::text::{QUOTE_MAX_BYTES, TextEncoding, quote};
use crate::conn::{Connection, Incoming, Io, MinRate};

/// Bytes sent per write by default.
const CHUNK_SIZE: usize = 64 * 1024;

/// The slowest average read of a file by default: 16 KiB/s, a slow mobile
/// link; a 1 GiB file may take up to about 18 hours at it.
const MIN_SEND_RATE: u64 = 16 * 1024;

/// Before the minimum rate counts: a connection's start is slow.
const MIN_SEND_RATE_GRACE: Duration = Duration::from_secs(10);

/// Files sent at once by default.
const MAX_DOWNLOADS: usize = 256;

/// The largest `max_downloads`.
const MAX_MAX_DOWNLOADS: usize = 1_000_000;

/// The largest `chunk_size` (tokio reads files at most 2 MiB at a time).
const MAX_CHUNK_SIZE: usize = 2 * 1024 * 1024;

/// What the probe asks for: refused before anything on disk is touched.
const PROBE_REQUEST: &str = "..";
const PROBE_REFUSAL: &str = "'..' is not allowed";

/// Settings of the download handler.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DownloadConfig {
    /// Directory served; resolved to an absolute path without symlinks at load.
    pub root: PathBuf,
    /// Bytes sent per write.
    #[serde(default = "default_chunk_size")]
    pub chunk_size: usize,
    /// Serve names starting with `.`.
    #[serde(default)]
    pub allow_hidden: bool,
    /// Serve regular files that have more than one hard link (one of them
    /// may be outside the root, where the path checks cannot see it).
    #[serde(default)]
    pub allow_hard_links: bool,
    /// The slowest a client may read a file, in bytes a second on average
    /// (after a grace of 10 s); a slower one is reset. 0: no minimum.
    #[serde(default = "default_min_send_rate")]
    pub min_send_rate: u64,
    /// Files sent at once on this listener; a request over it gets
    /// `ERR busy`. Bounds the kernel memory that stalled readers can hold.
    #[serde(default = "default_max_downloads")]
    pub max_downloads: usize,
}

fn default_chunk_size() -> usize {
    CHUNK_SIZE
}
fn default_min_send_rate() -> u64 {
    MIN_SEND_RATE
}
fn default_max_downloads() -> usize {
    MAX_DOWNLOADS
}

/// A listing stops after this many entries, so a huge directory costs bounded memory.
const MAX_LISTING_ENTRIES: usize = 10_000;

/// The download handler.
#[derive(Debug)]
pub(crate) struct Download {
    root: Arc<Path>,
    chunk_size: usize,
    policy: Policy,
    pace: Option<MinRate>,
    /// One permit per file being sent.
    sending: Arc<Semaphore>,
    max_downloads: usize,
    files_sent: IntCounter,
    file_bytes_sent: IntCounter,
}

/// Which names the root's rules let through.
#[derive(Debug, Clone, Copy)]
struct Policy {
    /// Names starting with `.`.
    allow_hidden: bool,
    /// Regular files with more than one hard link.
    allow_hard_links: bool,
}

/// What a requested name resolved to.
#[derive(Debug)]
enum Target {
    File {
        file: fs::File,
        path: PathBuf,
        len: u64,
    },
    Directory {
        handle: fs::File,
        path: PathBuf,
    },
}

impl Download {
    async fn resolve_blocking(&self, name: String) -> Result<Target, HandlerError> {
        let (root, policy) = (self.root.clone(), self.policy);
        tokio::task::spawn_blocking(move || resolve(&root, &name, policy))
            .await
            .map_err(io::Error::other)?
            .map_err(HandlerError::Refused)
    }

    async fn listing_blocking(
        &self,
        dir: fs::File,
        encoding: TextEncoding,
    ) -> Result<String, HandlerError> {
        let (root, policy) = (self.root.clone(), self.policy);
        tokio::task::spawn_blocking(move || listing(&root, &dir, policy, encoding))
            .await
            .map_err(io::Error::other)?
            .map_err(|e| HandlerError::Refused(io_reason(&e)))
    }
}

impl Handler for Download {
    const NAME: &'static str = "download";
    type Config = DownloadConfig;

    /// Resolves `root` to an absolute path without symlinks, which must be
    /// a directory, and bounds `chunk_size`.
    fn validate(config: &mut DownloadConfig) -> Result<(), Invalid> {
        config.root = fs::canonicalize(&config.root)
            .map_err(|e| Invalid::at("root", format!("download root {:?}: {e}", config.root)))?;
        if !config.root.is_dir() {
            return Err(Invalid::at(
                "root",
                format!("download root {:?} is not a directory", config.root),
            ));
        }
        if !(1..=MAX_MAX_DOWNLOADS).contains(&config.max_downloads) {
            return Err(Invalid::at(
                "max_downloads",
                format!("max_downloads must be between 1 and {MAX_MAX_DOWNLOADS}"),
            ));
        }
        if !(1..=MAX_CHUNK_SIZE).contains(&config.chunk_size) {
            return Err(Invalid::at(
                "chunk_size",
                format!("chunk_size must be between 1 and {MAX_CHUNK_SIZE}"),
            ));
        }
        Ok(())
    }

    fn build(config: &DownloadConfig, ctx: &BuildContext<'_>, previous: Option<&Self>) -> Self {
        let (files_sent, file_bytes_sent) = ctx.metrics.files_sent();
        // Files being sent keep counting after a reload, unless the limit
        // changed (then the new one counts only the files sent from now).
        let sending = match previous {
            Some(previous) if previous.max_downloads == config.max_downloads => {
                previous.sending.clone()
            }
            _ => Arc::new(Semaphore::new(config.max_downloads)),
        };
        Download {
            root: Arc::from(config.root.as_path()),
            chunk_size: config.chunk_size,
            policy: Policy {
                allow_hidden: config.allow_hidden,
                allow_hard_links: config.allow_hard_links,
            },
            pace: (config.min_send_rate > 0).then_some(MinRate {
                bytes_per_second: config.min_send_rate,
                grace: MIN_SEND_RATE_GRACE,
            }),
            sending,
            max_downloads: config.max_downloads,
            files_sent,
            file_bytes_sent,
        }
    }

    async fn serve<S: Io>(&self, conn: &mut Connection<S>) -> Result<Ended, HandlerError> {
        let request = match conn.next_message().await? {
            Incoming::Data(request) => request,
            Incoming::Closed => return Ok(Ended::ClientClosed),
            Incoming::Shutdown => return Err(HandlerError::Refused("server shutting down")),
        };
        let encoding = conn.settings().encoding;
        let name = encoding.decode(&request).trim().to_owned();
        let target = match self.resolve_blocking(name.clone()).await {
            Ok(target) => target,
            Err(e) => {
                info!(name = %quote(&name, QUOTE_MAX_BYTES), reason = %e, "download refused");
                return Err(e);
            }
        };
        match target {
            Target::Directory { handle, path } => {
                let text = self.listing_blocking(handle, encoding).await?;
                info!(dir = %quote(&path.to_string_lossy(), QUOTE_MAX_BYTES), "sending listing");
                conn.send(&encoding.encode(&text)).await?;
            }
            Target::File { file, path, len } => {
                let Ok(_sending) = self.sending.clone().try_acquire_owned() else {
                    return Err(HandlerError::Refused(BUSY));
                };
                info!(file = %quote(&path.to_string_lossy(), QUOTE_MAX_BYTES), bytes = len, "sending file");
                let (_, before) = conn.bytes();
                let sent = conn.send_file(file, len, self.chunk_size, self.pace).await;
                let (_, after) = conn.bytes();
                self.file_bytes_sent.inc_by(after - before);
                let sent = match sent {
                    Ok(sent) => sent,
                    Err(e) => {
                        let e = HandlerError::from(e);
                        if e.is_disconnect() {
                            debug!(
                                sent = after - before,
                                of = len,
                                "client disconnected mid-file"
                            );
                        }
                        return Err(e);
                    }
                };
                if sent < len {
                    return Err(HandlerError::Truncated {
                        sent,
                        expected: len,
                    });
                }
                self.files_sent.inc();
            }
        }
        Ok(Ended::Completed)
    }

    /// `..` must be refused with its `ERR` line, then the close: a request
    /// that touches nothing on disk.
    fn probe(_config: &DownloadConfig, ctx: &ProbeContext<'_>) -> Probe {
        let mut send = ctx.encoding.encode(PROBE_REQUEST).into_owned();
        send.push(b'\n');
        let expected = format!("ERR {PROBE_REFUSAL}");
        Probe {
            send,
            check: line_then_close(ctx.encoding, "answered", move |line| {
                if line == expected {
                    Ok(())
                } else {
                    Err(format!(
                        "answered {} instead of {}",
                        shown(line.as_bytes()),
                        shown(expected.as_bytes())
                    ))
                }
            }),
        }
    }

    /// The socket, and the file being sent.
    fn descriptors_per_connection(_config: &DownloadConfig) -> u64 {
        2
    }

    fn summary(config: &DownloadConfig) -> String {
        format!(
            "root={} chunk_size={}",
            config.root.display(),
            config.chunk_size
        )
    }
}

/// What `name` resolves to under `root` (hidden names refused), for the
/// fuzz target of the path rules.
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) fn resolve_for_fuzzing(root: &Path, name: &str) -> Result<PathBuf, &'static str> {
    let policy = Policy {
        allow_hidden: false,
        allow_hard_links: false,
    };
    resolve(root, name, policy).map(|target| match target {
        Target::File { path, .. } | Target::Directory { path, .. } => path,
    })
}

/// Resolves a requested name under `root` (canonical) and opens it, or says why not.
fn resolve(root: &Path, name: &str, policy: Policy) -> Result<Target, &'static str> {
    let allow_hidden = policy.allow_hidden;
    if name.contains('\0') {
        return Err("invalid name: NUL byte");
    }
    let requested = Path::new(name);
    for component in requested.components() {
        match component {
            Component::Normal(part)
                if !allow_hidden && part.as_encoded_bytes().starts_with(b".") =>
            {
                return Err("hidden files are not served");
            }
            Component::Normal(_) | Component::CurDir => {}
            Component::ParentDir => return Err(PROBE_REFUSAL),
            Component::RootDir | Component::Prefix(_) => {
                return Err("absolute paths are not allowed");
            }
        }
    }
    // Checked by path first, so escapes and special files are never opened.
    let path = fs::canonicalize(root.join(requested)).map_err(|e| io_reason(&e))?;
    check_confined(root, &path, allow_hidden)?;
    let meta = fs::metadata(&path).map_err(|e| io_reason(&e))?;
    if !meta.is_file() && !meta.is_dir() {
        return Err(NOT_SERVABLE);
    }
    // O_NONBLOCK: a FIFO swapped in after the check must not block the open.
    let handle = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(&path)
        .map_err(|e| io_reason(&e))?;
    // A directory on the path may have been swapped for a symlink between the
    // check and the open: check again what was really opened, by descriptor.
    let real = fs::read_link(descriptor_path(&handle)).map_err(|e| {
        warn!(error = %e, "cannot read /proc/self/fd to verify an opened path");
        "cannot verify the path"
    })?;
    check_confined(root, &real, allow_hidden)?;
    let meta = handle.metadata().map_err(|e| io_reason(&e))?;
    if meta.is_file() && meta.nlink() > 1 && !policy.allow_hard_links {
        return Err(HARD_LINKED);
    }
    if meta.is_dir() {
        Ok(Target::Directory { handle, path: real })
    } else if meta.is_file() {
        Ok(Target::File {
            len: meta.len(),
            file: handle,
            path: real,
        })
    } else {
        Err(NOT_SERVABLE)
    }
}

const NOT_SERVABLE: &str = "not a regular file or directory";
const HARD_LINKED: &str = "hard-linked files are not served";
const BUSY: &str = "busy";

/// The `/proc` path that names an open file by its descriptor.
fn descriptor_path(file: &fs::File) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()))
}

/// Refuses a real (symlink-free) path outside the root or, unless hidden
/// names are allowed, with a component starting with ".".
fn check_confined(root: &Path, real: &Path, allow_hidden: bool) -> Result<(), &'static str> {
    let inside = real
        .strip_prefix(root)
        .map_err(|_| "outside the download root")?;
    let hidden = inside
        .components()
        .any(|c| c.as_os_str().as_encoded_bytes().starts_with(b"."));
    if hidden && !allow_hidden {
        return Err("hidden files are not served");
    }
    Ok(())
}

/// The listing of an opened directory: the entries a client could request
/// back, sorted, one a line, directories with "/". At most
/// [`MAX_LISTING_ENTRIES`] (the first ones in sort order) are kept in memory.
fn listing(
    root: &Path,
    dir: &fs::File,
    policy: Policy,
    encoding: TextEncoding,
) -> io::Result<String> {
    let allow_hidden = policy.allow_hidden;
    let mut names = BinaryHeap::new();
    let mut truncated = false;
    // Read through the descriptor, so the directory checked is the one listed.
    for entry in fs::read_dir(descriptor_path(dir))? {
        let entry = entry?;
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue; // not UTF-8: no client could ask for it by name
        };
        if !requestable(&name, allow_hidden, encoding) {
            continue;
        }
        // An entry that vanished or cannot be inspected is left out, not fatal.
        let Ok(mut kind) = entry.file_type() else {
            continue;
        };
        if kind.is_symlink() {
            // Listed only if it resolves to something servable inside the root.
            let real = match fs::canonicalize(entry.path()) {
                Ok(real) if check_confined(root, &real, allow_hidden).is_ok() => real,
                _ => continue,
            };
            let Ok(meta) = fs::metadata(&real) else {
                continue;
            };
            kind = meta.file_type();
        }
        if kind.is_dir() {
            names.push(format!("{name}/"));
        } else if kind.is_file() {
            // A file that would be refused is not listed either.
            let hard_linked = !policy.allow_hard_links
                && fs::metadata(entry.path()).is_ok_and(|meta| meta.nlink() > 1);
            if hard_linked {
                continue;
            }
            names.push(name);
        } else {
            continue;
        }
        if names.len() > MAX_LISTING_ENTRIES {
            names.pop(); // the last in sort order
            truncated = true;
        }
    }
    let mut text = String::new();
    for name in names.into_sorted_vec() {
        text.push_str(&name);
        text.push('\n');
    }
    if truncated {
        text.push_str(&format!(
            "(listing stops after {MAX_LISTING_ENTRIES} entries)\n"
        ));
    }
    Ok(text)
}

/// True when a client could send `name` back and get this entry: not hidden
/// (unless allowed), no control characters, no surrounding white space
/// (requests are trimmed), and representable in the listener's encoding.
fn requestable(name: &str, allow_hidden: bool, encoding: TextEncoding) -> bool {
    (allow_hidden || !name.starts_with('.'))
        && !name.chars().any(char::is_control)
        && name.trim() == name
        && encoding.decode(&encoding.encode(name)) == name
}

/// A client-facing reason for a failed file-system call (no paths leaked).
fn io_reason(err: &io::Error) -> &'static str {
    match err.kind() {
        io::ErrorKind::NotFound => "not found",
        io::ErrorKind::PermissionDenied => "permission denied",
        _ if err.raw_os_error() == Some(libc::ELOOP) => "too many levels of symbolic links",
        _ if err.raw_os_error() == Some(libc::ENOTDIR) => "not found",
        _ if err.raw_os_error() == Some(libc::ENAMETOOLONG) => "name too long",
        _ => "cannot read",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STRICT: Policy = Policy {
        allow_hidden: false,
        allow_hard_links: false,
    };

    #[test]
    fn a_hard_link_to_a_file_outside_the_root_is_refused_unless_allowed() {
        let base = tempfile::tempdir().unwrap();
        let base = fs::canonicalize(base.path()).unwrap();
        let root = base.join("root");
        fs::create_dir(&root).unwrap();
        fs::write(base.join("secret"), b"SECRET").unwrap();
        fs::hard_link(base.join("secret"), root.join("linked")).unwrap();
        fs::write(root.join("plain"), b"p").unwrap();
        assert_eq!(refused(&root, "linked"), HARD_LINKED);
        let allowed = Policy {
            allow_hard_links: true,
            ..STRICT
        };
        assert!(matches!(
            resolve(&root, "linked", allowed),
            Ok(Target::File { len: 6, .. })
        ));
        // Not listed when it would be refused.
        let dir = fs::File::open(&root).unwrap();
        assert_eq!(
            listing(&root, &dir, STRICT, TextEncoding::Utf8).unwrap(),
            "plain\n"
        );
        assert_eq!(
            listing(&root, &dir, allowed, TextEncoding::Utf8).unwrap(),
            "linked\nplain\n"
        );
    }

    fn refused(root: &Path, name: &str) -> &'static str {
        match resolve(root, name, STRICT) {
            Err(reason) => reason,
            Ok(target) => panic!("{name:?} was not refused: {target:?}"),
        }
    }

    #[test]
    fn listing_shows_only_what_can_be_downloaded() {
        let dir = tempfile::tempdir().unwrap();
        let root = fs::canonicalize(dir.path()).unwrap();
        fs::write(root.join(".secret"), b"s").unwrap();
        fs::write(root.join("plain"), b"p").unwrap();
        std::os::unix::fs::symlink(".secret", root.join("to-secret")).unwrap();
        std::os::unix::fs::symlink("plain", root.join("to-plain")).unwrap();
        std::os::unix::fs::symlink("/etc/hostname", root.join("to-outside")).unwrap();
        fs::write(root.join(" padded"), b"x").unwrap();
        fs::write(root.join("new\nline"), b"x").unwrap();
        fs::write(root.join("😀"), b"x").unwrap();
        let dir = fs::File::open(&root).unwrap();
        let list = |hidden, encoding| {
            let policy = Policy {
                allow_hidden: hidden,
                allow_hard_links: false,
            };
            listing(&root, &dir, policy, encoding).unwrap()
        };
        assert_eq!(list(false, TextEncoding::Utf8), "plain\nto-plain\n😀\n");
        assert_eq!(refused(&root, "to-secret"), "hidden files are not served");
        assert_eq!(
            list(true, TextEncoding::Utf8),
            ".secret\nplain\nto-plain\nto-secret\n😀\n"
        );
        // GBK has no emoji: a GBK client could not ask for it.
        assert_eq!(list(false, TextEncoding::Gbk), "plain\nto-plain\n");
    }

    #[test]
    fn a_long_listing_keeps_the_first_entries_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let root = fs::canonicalize(dir.path()).unwrap();
        for i in (0..MAX_LISTING_ENTRIES + 5).rev() {
            fs::write(root.join(format!("f{i:06}")), b"").unwrap();
        }
        let handle = fs::File::open(&root).unwrap();
        let text = listing(&root, &handle, STRICT, TextEncoding::Utf8).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), MAX_LISTING_ENTRIES + 1);
        assert_eq!(lines[0], "f000000");
        let last = format!("f{:06}", MAX_LISTING_ENTRIES - 1);
        assert_eq!(lines[MAX_LISTING_ENTRIES - 1], last);
        assert!(lines[MAX_LISTING_ENTRIES].starts_with("(listing stops"));
    }

    /// A directory on the requested path is swapped for a symlink to the
    /// outside, over and over, while names are resolved: whatever is opened
    /// must never be the outside file (the check after the open catches it).
    #[test]
    fn swapping_a_directory_for_a_symlink_cannot_escape() {
        use std::io::Read;
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::time::{Duration, Instant};

        let base = tempfile::tempdir().unwrap();
        let base = fs::canonicalize(base.path()).unwrap();
        let (root, outside) = (base.join("root"), base.join("outside"));
        fs::create_dir_all(root.join("d")).unwrap();
        fs::create_dir_all(&outside).unwrap();
        fs::write(root.join("d/f"), b"inside").unwrap();
        fs::write(outside.join("f"), b"SECRET").unwrap();

        let stop = Arc::new(AtomicBool::new(false));
        let swapper = {
            let (root, outside, stop) = (root.clone(), outside.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut swaps = 0u32;
                while !stop.load(Ordering::Relaxed) && swaps < 1_000_000 {
                    fs::rename(root.join("d"), root.join("d_real")).unwrap();
                    std::os::unix::fs::symlink(&outside, root.join("d")).unwrap();
                    fs::remove_file(root.join("d")).unwrap();
                    fs::rename(root.join("d_real"), root.join("d")).unwrap();
                    swaps += 1;
                }
                swaps
            })
        };
        let (mut served, mut refused) = (0u32, 0u32);
        let started = Instant::now();
        while started.elapsed() < Duration::from_millis(1500) && served + refused < 200_000 {
            match resolve(&root, "d/f", STRICT) {
                Ok(Target::File { mut file, .. }) => {
                    let mut body = String::new();
                    file.read_to_string(&mut body).unwrap();
                    assert_eq!(body, "inside", "escaped the root after {served} downloads");
                    served += 1;
                }
                Ok(other) => panic!("unexpected target {other:?}"),
                Err(_) => refused += 1,
            }
        }
        stop.store(true, Ordering::Relaxed);
        let swaps = swapper.join().unwrap();
        assert!(
            served > 0 && swaps > 0,
            "the race never ran: {served} served, {swaps} swaps"
        );
    }

    proptest::proptest! {
        /// Whatever the name, made of the pieces that matter to a path, what
        /// it resolves to is inside the root and not hidden (the fuzz
        /// target's root has symlinks inside and out, and a hidden file).
        #[test]
        fn a_resolved_name_never_leaves_the_root(
            pieces in proptest::collection::vec(
                proptest::sample::select(vec![
                    "a.txt", "dir", "b.txt", "to-a", "to-hidden", "to-outside", ".hidden",
                    "..", ".", "/", "//", "\0", " ", "\\", "%2e%2e", "outside",
                ]),
                0..8,
            ),
            slashes in proptest::collection::vec(proptest::prelude::any::<bool>(), 8),
        ) {
            let mut name = String::new();
            for (piece, slash) in pieces.iter().zip(&slashes) {
                name.push_str(piece);
                if *slash {
                    name.push('/');
                }
            }
            crate::fuzzing::download_path(name.as_bytes());
        }
    }

    #[test]
    fn refuses_escapes_before_touching_the_disk() {
        let root = Path::new("/nonexistent-root");
        assert_eq!(refused(root, "../etc/passwd"), "'..' is not allowed");
        assert_eq!(refused(root, "a/../../b"), "'..' is not allowed");
        assert_eq!(
            refused(root, "/etc/passwd"),
            "absolute paths are not allowed"
        );
        assert_eq!(refused(root, "a\0b"), "invalid name: NUL byte");
        assert_eq!(refused(root, ".env"), "hidden files are not served");
        assert_eq!(
            refused(root, "sub/.git/config"),
            "hidden files are not served"
        );
    }
}
