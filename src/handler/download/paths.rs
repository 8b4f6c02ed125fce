//! Where a requested name leads, under the download root: absolute paths,
//! `..`, NUL bytes, hidden names (unless allowed), symlinks that lead
//! outside the root, hard-linked files (unless allowed), and anything that
//! is not a regular file or directory are refused. A name is checked by
//! path, opened `O_NOFOLLOW | O_NONBLOCK`, then checked again through its
//! descriptor (`/proc/self/fd`, `fstat`), so a FIFO, or a directory swapped
//! for a symlink after the first check, can neither block nor escape.
//! A fast path ([`resolve_cached`]) answers on the async worker when the
//! kernel's lookup cache holds the whole path and it has no symlink, with
//! the same checks.

use std::fs;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use rustix::fs::{Mode, OFlags, ResolveFlags};

use tracing::warn;

use crate::handler::Refusal;

/// Which names the root's rules let through.
#[derive(Debug, Clone, Copy)]
pub(super) struct Policy {
    /// Names starting with `.`.
    pub(super) allow_hidden: bool,
    /// Regular files with more than one hard link.
    pub(super) allow_hard_links: bool,
}

/// What a requested name resolved to.
#[derive(Debug)]
pub(super) enum Target {
    File {
        file: fs::File,
        path: PathBuf,
        /// Its metadata when opened (length, identity, modification time).
        meta: fs::Metadata,
    },
    Directory {
        handle: fs::File,
        path: PathBuf,
    },
}

/// Refuses, by its text alone, a name with a NUL byte, `..`, an absolute
/// path, or (unless allowed) a hidden component.
fn check_name(name: &str, allow_hidden: bool) -> Result<(), Refusal> {
    if name.contains('\0') {
        return Err(Refusal::NulByte);
    }
    for component in Path::new(name).components() {
        match component {
            Component::Normal(part)
                if !allow_hidden && part.as_encoded_bytes().starts_with(b".") =>
            {
                return Err(Refusal::Hidden);
            }
            Component::Normal(_) | Component::CurDir => {}
            Component::ParentDir => return Err(Refusal::ParentDir),
            Component::RootDir | Component::Prefix(_) => {
                return Err(Refusal::Absolute);
            }
        }
    }
    Ok(())
}

/// Set once `openat2(RESOLVE_CACHED)` turned out not to exist here (Linux
/// before 5.12): the fast path is not tried again.
static NO_CACHED_RESOLVE: AtomicBool = AtomicBool::new(false);

/// The download root opened as a directory handle (`O_PATH`), for
/// [`resolve_cached`]; `None` if it cannot be opened (the fast path is then off).
pub(super) fn open_root(root: &Path) -> Option<OwnedFd> {
    rustix::fs::open(
        root,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .ok()
}

/// The fast path of [`resolve`], for an async worker: it never waits for
/// the disk. `openat2` opens the name under the root's handle only if every
/// component is in the kernel's lookup cache (`RESOLVE_CACHED`), never
/// outside the root (`RESOLVE_BENEATH`) and through no symlink at all
/// (`RESOLVE_NO_SYMLINKS`): so the name, whose text was checked as
/// [`resolve`] checks it, is the real path, with no second look through
/// `/proc`. What was opened (`O_NONBLOCK`, so a FIFO cannot block) is
/// then checked by descriptor as [`resolve`] checks it: the file type and
/// hard links. `None` when it cannot decide without the disk, the name
/// goes through a symlink, or the file system says no (the answer is then
/// [`resolve`]'s, on the blocking pool); a refusal of the name's text or
/// of what was opened is final. Unlike [`resolve`], it opens before it
/// knows the file type: a device node in the root is opened (without
/// blocking or taking a terminal, never read) and then refused, as nginx
/// does with every name.
pub(super) fn resolve_cached(
    root: &Path,
    root_fd: BorrowedFd<'_>,
    name: &str,
    policy: Policy,
) -> Option<Result<Target, Refusal>> {
    if let Err(refused) = check_name(name, policy.allow_hidden) {
        return Some(Err(refused));
    }
    if NO_CACHED_RESOLVE.load(Ordering::Relaxed) {
        return None;
    }
    let opened = rustix::fs::openat2(
        root_fd,
        if name.is_empty() { "." } else { name },
        OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::BENEATH
            | ResolveFlags::NO_SYMLINKS
            | ResolveFlags::NO_MAGICLINKS
            | ResolveFlags::CACHED,
    );
    let handle = match opened {
        Ok(opened) => fs::File::from(opened),
        Err(rustix::io::Errno::NOSYS | rustix::io::Errno::INVAL) => {
            NO_CACHED_RESOLVE.store(true, Ordering::Relaxed);
            return None;
        }
        Err(_) => return None,
    };
    let meta = handle.metadata().ok()?;
    if !meta.is_dir() && !meta.is_file() {
        return Some(Err(Refusal::NotServable));
    }
    if meta.is_file() && meta.nlink() > 1 && !policy.allow_hard_links {
        return Some(Err(Refusal::HardLinked));
    }
    // No symlink was followed and `..` is refused: the real path is the
    // root and the name's components.
    let mut path = root.to_path_buf();
    for component in Path::new(name).components() {
        if let Component::Normal(part) = component {
            path.push(part);
        }
    }
    Some(Ok(if meta.is_dir() {
        Target::Directory { handle, path }
    } else {
        Target::File {
            meta,
            file: handle,
            path,
        }
    }))
}

/// Resolves a requested name under `root` (canonical) and opens it, or says
/// why not. It may wait for the disk: run it on the blocking pool.
pub(super) fn resolve(root: &Path, name: &str, policy: Policy) -> Result<Target, Refusal> {
    let allow_hidden = policy.allow_hidden;
    check_name(name, allow_hidden)?;
    let requested = Path::new(name);
    // Checked by path first, so escapes and special files are never opened.
    let path = fs::canonicalize(root.join(requested)).map_err(|e| io_reason(&e))?;
    check_confined(root, &path, allow_hidden)?;
    let meta = fs::metadata(&path).map_err(|e| io_reason(&e))?;
    if !meta.is_file() && !meta.is_dir() {
        return Err(Refusal::NotServable);
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
        Refusal::CannotVerify
    })?;
    check_confined(root, &real, allow_hidden)?;
    let meta = handle.metadata().map_err(|e| io_reason(&e))?;
    if meta.is_file() && meta.nlink() > 1 && !policy.allow_hard_links {
        return Err(Refusal::HardLinked);
    }
    if meta.is_dir() {
        Ok(Target::Directory { handle, path: real })
    } else if meta.is_file() {
        Ok(Target::File {
            meta,
            file: handle,
            path: real,
        })
    } else {
        Err(Refusal::NotServable)
    }
}

/// The `/proc` path that names an open file by its descriptor.
pub(super) fn descriptor_path(file: &impl AsRawFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()))
}

/// Refuses a real (symlink-free) path outside the root or, unless hidden
/// names are allowed, with a component starting with ".".
pub(super) fn check_confined(root: &Path, real: &Path, allow_hidden: bool) -> Result<(), Refusal> {
    let inside = real.strip_prefix(root).map_err(|_| Refusal::OutsideRoot)?;
    let hidden = inside
        .components()
        .any(|c| c.as_os_str().as_encoded_bytes().starts_with(b"."));
    if hidden && !allow_hidden {
        return Err(Refusal::Hidden);
    }
    Ok(())
}

/// A client-facing reason for a failed file-system call (no paths leaked).
pub(super) fn io_reason(err: &io::Error) -> Refusal {
    match err.kind() {
        io::ErrorKind::NotFound => Refusal::NotFound,
        io::ErrorKind::PermissionDenied => Refusal::PermissionDenied,
        _ if err.raw_os_error() == Some(libc::ELOOP) => Refusal::SymlinkLoop,
        _ if err.raw_os_error() == Some(libc::ENOTDIR) => Refusal::NotFound,
        _ if err.raw_os_error() == Some(libc::ENAMETOOLONG) => Refusal::NameTooLong,
        _ => Refusal::CannotRead,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conn::text::TextEncoding;
    use crate::handler::download::listing::listing;
    use std::os::fd::AsFd;
    use std::sync::Arc;

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
        assert_eq!(refused(&root, "linked"), Refusal::HardLinked.as_str());
        let allowed = Policy {
            allow_hard_links: true,
            ..STRICT
        };
        assert!(matches!(
            resolve(&root, "linked", allowed),
            Ok(Target::File { meta, .. }) if meta.len() == 6
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

    /// What a resolution gave, comparably: the real path or the refusal.
    fn outcome(resolved: Result<Target, Refusal>) -> Result<PathBuf, Refusal> {
        resolved.map(|target| match target {
            Target::File { path, .. } | Target::Directory { path, .. } => path,
        })
    }

    #[test]
    fn the_fast_path_decides_as_the_slow_one_or_defers_to_it() {
        let base = tempfile::tempdir().unwrap();
        let base = fs::canonicalize(base.path()).unwrap();
        let root = base.join("root");
        fs::create_dir_all(root.join("d/e")).unwrap();
        fs::create_dir_all(root.join(".hid")).unwrap();
        fs::write(root.join("a.txt"), b"a").unwrap();
        fs::write(root.join("d/e/b.txt"), b"b").unwrap();
        fs::write(root.join(".hid/c"), b"c").unwrap();
        fs::write(base.join("secret"), b"SECRET").unwrap();
        fs::hard_link(base.join("secret"), root.join("linked")).unwrap();
        let link = |to: &Path, name: &str| std::os::unix::fs::symlink(to, root.join(name)).unwrap();
        link(&root.join("a.txt"), "to-a");
        link(Path::new("d/e"), "to-e");
        link(&base.join("secret"), "escape");
        link(Path::new("../secret"), "escape-rel");
        link(&root.join(".hid/c"), "to-hidden");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            root.join("fifo"),
            rustix::fs::FileType::Fifo,
            Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        let root_fd = open_root(&root).expect("open the root");
        let names = [
            "",
            ".",
            "a.txt",
            "./a.txt",
            "d",
            "d/",
            "d/e/b.txt",
            "d//e/b.txt",
            "to-a",
            "to-e/b.txt",
            "escape",
            "escape-rel",
            "to-hidden",
            ".hid/c",
            "linked",
            "fifo",
            "nope",
            "d/nope",
            "../secret",
            "/etc/passwd",
            "a.txt/x",
            "a\0b",
        ];
        let mut fast = 0;
        for name in names {
            let slow = outcome(resolve(&root, name, STRICT));
            // Twice: the first lookup may fill the kernel's cache.
            for _ in 0..2 {
                if let Some(resolved) = resolve_cached(&root, root_fd.as_fd(), name, STRICT) {
                    assert_eq!(outcome(resolved), slow, "{name:?}");
                    fast += 1;
                }
            }
        }
        assert!(fast >= 20, "the fast path answered only {fast} times");
        // A cached plain file is answered on the fast path.
        assert!(matches!(
            resolve_cached(&root, root_fd.as_fd(), "d/e/b.txt", STRICT),
            Some(Ok(Target::File { meta, .. })) if meta.len() == 1
        ));
    }

    fn refused(root: &Path, name: &str) -> &'static str {
        match resolve(root, name, STRICT) {
            Err(reason) => reason.as_str(),
            Ok(target) => panic!("{name:?} was not refused: {target:?}"),
        }
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
        let root_fd = open_root(&root).expect("open the root");
        let started = Instant::now();
        while started.elapsed() < Duration::from_millis(1500) && served + refused < 200_000 {
            // Both paths, by turns: the slow one and the fast one.
            let resolved = if (served + refused) % 2 == 0 {
                resolve(&root, "d/f", STRICT)
            } else {
                match resolve_cached(&root, root_fd.as_fd(), "d/f", STRICT) {
                    Some(resolved) => resolved,
                    None => resolve(&root, "d/f", STRICT),
                }
            };
            match resolved {
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
