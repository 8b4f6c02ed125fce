//! Directory listings of the download handler: the names a client could
//! request back, sorted, one a line, directories with a `/`, at most
//! [`MAX_LISTING_ENTRIES`] of them. Listings are cached by directory and
//! its modification time (a directory's mtime changes when an entry is
//! added, removed or renamed), so a flood of listing requests reads a big
//! directory once, not once each; and at most [`BUILDS_AT_ONCE`] are built
//! at a time on the blocking pool, so listings cannot take it over.

use std::collections::{BinaryHeap, HashMap};
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::Semaphore;

use super::paths::{Policy, check_confined, descriptor_path};
use crate::conn::text::TextEncoding;

/// Listings built at once, at most, per listener.
const BUILDS_AT_ONCE: usize = 4;

/// How long a request waits for a turn to build a listing before it is
/// told `ERR busy`.
const BUILD_WAIT: Duration = Duration::from_secs(5);

/// Directories whose listing is kept, and their text's bytes in all, at most.
const CACHED_DIRECTORIES: usize = 256;
const CACHED_BYTES: usize = 16 << 20;

/// Why there is no listing.
#[derive(Debug)]
pub(super) enum ListingError {
    /// Too many listings are being built; try again later.
    Busy,
    /// The directory could not be read.
    Io(io::Error),
}

/// The listings of one listener: a bounded cache, and turns to build one.
#[derive(Debug)]
pub(super) struct Listings {
    cache: Mutex<HashMap<(u64, u64), Cached>>,
    builds: Arc<Semaphore>,
}

#[derive(Debug)]
struct Cached {
    /// The directory's modification time (seconds, nanoseconds) it is of.
    mtime: (i64, i64),
    text: Arc<str>,
}

impl Default for Listings {
    fn default() -> Self {
        Listings {
            cache: Mutex::new(HashMap::new()),
            builds: Arc::new(Semaphore::new(BUILDS_AT_ONCE)),
        }
    }
}

impl Listings {
    /// The listing of the opened directory `dir`: from the cache when the
    /// directory has not changed since, else built on the blocking pool.
    pub(super) async fn get(
        &self,
        root: Arc<Path>,
        dir: fs::File,
        policy: Policy,
        encoding: TextEncoding,
    ) -> Result<Arc<str>, ListingError> {
        let meta = dir.metadata().map_err(ListingError::Io)?;
        let key = (meta.dev(), meta.ino());
        let mtime = (meta.mtime(), meta.mtime_nsec());
        if let Some(text) = self.cached(key, mtime) {
            return Ok(text);
        }
        let turn = tokio::time::timeout(BUILD_WAIT, self.builds.clone().acquire_owned())
            .await
            .map_err(|_| ListingError::Busy)?
            .map_err(|_| ListingError::Busy)?;
        // Another request may have built it while this one waited.
        if let Some(text) = self.cached(key, mtime) {
            return Ok(text);
        }
        let text: Arc<str> = tokio::task::spawn_blocking(move || {
            let _turn = turn;
            listing(&root, &dir, policy, encoding)
        })
        .await
        .map_err(|e| ListingError::Io(io::Error::other(e)))?
        .map_err(ListingError::Io)?
        .into();
        self.keep(key, mtime, text.clone());
        Ok(text)
    }

    fn cached(&self, key: (u64, u64), mtime: (i64, i64)) -> Option<Arc<str>> {
        let cache = self.cache();
        cache
            .get(&key)
            .filter(|cached| cached.mtime == mtime)
            .map(|cached| cached.text.clone())
    }

    /// Keeps a listing, making room within the bounds (any entries go:
    /// they are all cheap to build again compared to a flood of them).
    fn keep(&self, key: (u64, u64), mtime: (i64, i64), text: Arc<str>) {
        let mut cache = self.cache();
        cache.remove(&key);
        let mut bytes: usize = cache.values().map(|c| c.text.len()).sum();
        while !cache.is_empty()
            && (cache.len() >= CACHED_DIRECTORIES || bytes + text.len() > CACHED_BYTES)
        {
            let Some(evicted) = cache.keys().next().copied() else {
                break;
            };
            if let Some(gone) = cache.remove(&evicted) {
                bytes -= gone.text.len();
            }
        }
        if text.len() <= CACHED_BYTES {
            cache.insert(key, Cached { mtime, text });
        }
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, HashMap<(u64, u64), Cached>> {
        // Every update leaves the map consistent: a poisoned lock is usable.
        self.cache.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A listing stops after this many entries, so a huge directory costs bounded memory.
const MAX_LISTING_ENTRIES: usize = 10_000;

/// The listing of an opened directory: the entries a client could request
/// back, sorted, one a line, directories with "/". At most
/// [`MAX_LISTING_ENTRIES`] (the first ones in sort order) are kept in memory.
pub(super) fn listing(
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handler::download::paths::resolve;

    #[tokio::test]
    async fn a_listing_is_built_once_until_the_directory_changes() {
        let dir = tempfile::tempdir().unwrap();
        let root: Arc<Path> = Arc::from(fs::canonicalize(dir.path()).unwrap().as_path());
        fs::write(root.join("a"), b"a").unwrap();
        let listings = Listings::default();
        let get = || async {
            let handle = fs::File::open(&*root).unwrap();
            listings
                .get(root.clone(), handle, STRICT, TextEncoding::Utf8)
                .await
                .unwrap()
        };
        let first = get().await;
        let second = get().await;
        assert_eq!(&*first, "a\n");
        assert!(
            Arc::ptr_eq(&first, &second),
            "the second came from the cache"
        );
        // A new entry changes the directory's mtime: built again. (Set it
        // explicitly: two changes within one clock tick look the same.)
        fs::write(root.join("b"), b"b").unwrap();
        let later = std::time::SystemTime::now() + Duration::from_secs(5);
        fs::File::open(&*root).unwrap().set_modified(later).unwrap();
        assert_eq!(&*get().await, "a\nb\n");
    }

    const STRICT: Policy = Policy {
        allow_hidden: false,
        allow_hard_links: false,
    };

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
}
