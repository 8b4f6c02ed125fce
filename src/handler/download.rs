//! `download`: the client names a file; the server streams it from the
//! listener's root in `chunk_size` pieces and closes. A directory (or an
//! empty name) gets a listing, one entry a line, directories with a `/`.
//!
//! Names are confined to the root: absolute paths, `..`, NUL bytes, hidden
//! names (unless `allow_hidden`), symlinks that lead outside the root, and
//! anything that is not a regular file or directory are refused with one
//! `ERR <reason>` line. Path checks and opens run on the blocking pool; the
//! file is opened `O_NOFOLLOW | O_NONBLOCK` and checked again with `fstat`,
//! so a FIFO or a symlink swapped in after the check cannot block or escape.

use std::fs;
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use tokio::io::AsyncReadExt;
use tracing::{debug, info};

use super::{Ended, Handler, HandlerError, Io};
use crate::config::DownloadConfig;
use crate::connection::{Connection, Incoming};

/// A listing stops after this many entries, so a huge directory costs bounded memory.
pub const MAX_LISTING_ENTRIES: usize = 10_000;

/// The download handler.
#[derive(Debug, Clone)]
pub struct Download {
    root: Arc<Path>,
    chunk_size: usize,
    allow_hidden: bool,
}

/// What a requested name resolved to.
#[derive(Debug)]
enum Target {
    File {
        file: fs::File,
        path: PathBuf,
        len: u64,
    },
    Directory(PathBuf),
}

impl Download {
    /// A handler serving `config.root` (already canonical: see the config's validation).
    pub fn new(config: &DownloadConfig) -> Self {
        Download {
            root: Arc::from(config.root.as_path()),
            chunk_size: config.chunk_size,
            allow_hidden: config.allow_hidden,
        }
    }

    async fn resolve_blocking(&self, name: String) -> Result<Target, HandlerError> {
        let (root, allow_hidden) = (self.root.clone(), self.allow_hidden);
        tokio::task::spawn_blocking(move || resolve(&root, &name, allow_hidden))
            .await
            .map_err(io::Error::other)?
            .map_err(HandlerError::Refused)
    }

    async fn listing_blocking(&self, dir: PathBuf) -> Result<String, HandlerError> {
        let (root, allow_hidden) = (self.root.clone(), self.allow_hidden);
        tokio::task::spawn_blocking(move || listing(&root, &dir, allow_hidden))
            .await
            .map_err(io::Error::other)?
            .map_err(|e| HandlerError::Refused(io_reason(&e)))
    }
}

impl Handler for Download {
    async fn serve<S: Io>(&self, conn: &mut Connection<S>) -> Result<Ended, HandlerError> {
        let mut reader = conn.message_reader();
        let request = match conn.next_message(&mut reader).await? {
            Incoming::Message(request) => request,
            Incoming::Closed => return Ok(Ended::ClientClosed),
            Incoming::Shutdown => return Err(HandlerError::Refused("server shutting down".into())),
        };
        drop(reader);
        let name = conn.settings.encoding.decode(&request).trim().to_owned();
        let target = match self.resolve_blocking(name.clone()).await {
            Ok(target) => target,
            Err(e) => {
                info!(name = %name.escape_debug(), reason = %e, "download refused");
                return Err(e);
            }
        };
        match target {
            Target::Directory(dir) => {
                let text = self.listing_blocking(dir.clone()).await?;
                info!(dir = %dir.display(), "sending listing");
                conn.send(&conn.settings.encoding.encode(&text)).await?;
            }
            Target::File { file, path, len } => {
                info!(file = %path.display(), bytes = len, "sending file");
                let mut file = tokio::fs::File::from_std(file).take(len);
                let mut chunk = vec![
                    0u8;
                    self.chunk_size
                        .min(usize::try_from(len).unwrap_or(usize::MAX))
                        .max(1)
                ];
                let mut sent = 0u64;
                loop {
                    let n = file.read(&mut chunk).await?;
                    if n == 0 {
                        break;
                    }
                    if let Err(e) = conn.send(&chunk[..n]).await {
                        if e.is_disconnect() {
                            debug!(sent, of = len, "client disconnected mid-file");
                        }
                        return Err(e);
                    }
                    sent += n as u64;
                }
            }
        }
        Ok(Ended::Completed)
    }
}

/// Resolves a requested name under `root` (canonical), or says why not.
fn resolve(root: &Path, name: &str, allow_hidden: bool) -> Result<Target, String> {
    if name.contains('\0') {
        return Err("invalid name: NUL byte".into());
    }
    let requested = Path::new(name);
    for component in requested.components() {
        match component {
            Component::Normal(part)
                if !allow_hidden && part.as_encoded_bytes().starts_with(b".") =>
            {
                return Err("hidden files are not served".into());
            }
            Component::Normal(_) | Component::CurDir => {}
            Component::ParentDir => return Err("'..' is not allowed".into()),
            Component::RootDir | Component::Prefix(_) => {
                return Err("absolute paths are not allowed".into());
            }
        }
    }
    let path = fs::canonicalize(root.join(requested)).map_err(|e| io_reason(&e))?;
    // Symlinks are resolved now: the real path must still be inside the root.
    let inside = path
        .strip_prefix(root)
        .map_err(|_| "outside the download root".to_owned())?;
    if !allow_hidden
        && inside
            .components()
            .any(|c| c.as_os_str().as_encoded_bytes().starts_with(b"."))
    {
        return Err("hidden files are not served".into());
    }
    let meta = fs::metadata(&path).map_err(|e| io_reason(&e))?;
    if meta.is_dir() {
        return Ok(Target::Directory(path));
    }
    if !meta.is_file() {
        return Err("not a regular file or directory".into());
    }
    // O_NONBLOCK: a FIFO swapped in after the check must not block the open.
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(&path)
        .map_err(|e| io_reason(&e))?;
    let meta = file.metadata().map_err(|e| io_reason(&e))?;
    if !meta.is_file() {
        return Err("not a regular file or directory".into());
    }
    Ok(Target::File {
        file,
        path,
        len: meta.len(),
    })
}

/// The listing of `dir`: servable entries, sorted, one a line, directories with "/".
fn listing(root: &Path, dir: &Path, allow_hidden: bool) -> io::Result<String> {
    let mut names = Vec::new();
    let mut truncated = false;
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !allow_hidden && name.starts_with('.') {
            continue;
        }
        if names.len() == MAX_LISTING_ENTRIES {
            truncated = true;
            break;
        }
        // An entry that vanished or cannot be inspected is left out, not fatal.
        let Ok(mut kind) = entry.file_type() else {
            continue;
        };
        if kind.is_symlink() {
            // Listed only if it resolves to something servable inside the root.
            let real = match fs::canonicalize(entry.path()) {
                Ok(real) if servable_target(root, &real, allow_hidden) => real,
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
            names.push(name);
        }
    }
    names.sort_unstable();
    let mut text = String::new();
    for name in &names {
        text.push_str(name);
        text.push('\n');
    }
    if truncated {
        text.push_str(&format!(
            "(listing stops after {MAX_LISTING_ENTRIES} entries)\n"
        ));
    }
    Ok(text)
}

/// True when a path relative to the root has a component starting with ".".
fn has_hidden_part(relative: &Path) -> bool {
    relative
        .components()
        .any(|c| c.as_os_str().as_encoded_bytes().starts_with(b"."))
}

/// True when a symlink's resolved target may be served: inside the root and,
/// unless hidden names are allowed, not hidden (the same rule as `resolve`).
fn servable_target(root: &Path, real: &Path, allow_hidden: bool) -> bool {
    match real.strip_prefix(root) {
        Ok(inside) => allow_hidden || !has_hidden_part(inside),
        Err(_) => false,
    }
}

/// A client-facing reason for a failed file-system call (no paths leaked).
fn io_reason(err: &io::Error) -> String {
    match err.kind() {
        io::ErrorKind::NotFound => "not found".into(),
        io::ErrorKind::PermissionDenied => "permission denied".into(),
        _ if err.raw_os_error() == Some(libc::ELOOP) => "outside the download root".into(),
        _ if err.raw_os_error() == Some(libc::ENOTDIR) => "not found".into(),
        _ if err.raw_os_error() == Some(libc::ENAMETOOLONG) => "name too long".into(),
        _ => "cannot read".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(root: &Path, name: &str) -> String {
        match resolve(root, name, false) {
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
        assert_eq!(listing(&root, &root, false).unwrap(), "plain\nto-plain\n");
        assert_eq!(refused(&root, "to-secret"), "hidden files are not served");
        assert_eq!(
            listing(&root, &root, true).unwrap(),
            ".secret\nplain\nto-plain\nto-secret\n"
        );
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
