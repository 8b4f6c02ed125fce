//! Directory listings of the download handler: the names a client could
//! request back, sorted, one a line, directories with a `/`, at most
//! [`MAX_LISTING_ENTRIES`] of them; as text (the raw protocol, and
//! `text/plain` over HTTP, in the listener's encoding) or as an HTML page
//! (bounded by [`html::MAX_PAGE_BYTES`]).
//!
//! Every rendering is built once: on the blocking pool, at most
//! [`BUILDS_AT_ONCE`] at a time, one build per listing however many
//! requests wait for it, and cached by directory (device, inode), its
//! modification time (which changes when an entry is added, removed or
//! renamed), the format and the encoding. Requests share the cached bytes
//! (`Bytes`: one buffer, no copy per request). The cache is bounded in
//! entries and bytes.
//!
//! A rendering outlives the cache while a slow client is still sent it:
//! the renderings alive anywhere (cached or being sent) are counted, and
//! no new one is built while they hold [`LIVE_BYTES`] or more (the
//! request is told `ERR busy`, 503 over HTTP), so that clients reading
//! slowly, each holding a rendering built after the last, cannot pin one
//! page a build until memory runs out. A page built again that came out
//! the same as the one cached (a directory that did not change) is not
//! kept twice: the cached buffer is shared on, so a flood of slow readers
//! of one unchanged directory holds one buffer, not one a build.
//!
//! The HTML page also shows each entry's size and modification time,
//! which change without the directory's modification time changing (a
//! file written to, a subdirectory's own entries): a cached page is
//! therefore used for [`HTML_FRESH_FOR`] (or, for a page slow to build,
//! [`FRESH_PER_BUILD`] times its build), then built again. A flood of
//! requests still builds a page at most once per that window per
//! directory, while a page shows a file that grows within that long.
//! The text listing has names only, which the directory's modification
//! time covers: it is kept until that changes.

use std::collections::{BinaryHeap, HashMap};
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::Semaphore;
use tokio::time::{Instant, timeout_at};
use tracing::info;

use super::paths::{Policy, check_confined, descriptor_path};
use crate::conn::text::{QUOTE_MAX_BYTES, TextEncoding, quote};
use crate::http::html;

/// Listings built at once, at most, per listener.
const BUILDS_AT_ONCE: usize = 4;

/// How long a request waits for a listing to be built (its turn, and the
/// build) before it is told `ERR busy` (503 over HTTP).
const BUILD_WAIT: Duration = Duration::from_secs(5);

/// How long a cached HTML page is used before it is built again (its
/// sizes and times may have changed without the directory's mtime).
const HTML_FRESH_FOR: Duration = Duration::from_secs(2);

/// A page is used at least this many times as long as its build took,
/// up to [`MAX_HTML_FRESH_FOR`]: a flood of requests for a huge directory
/// (10^5 entries took 0.76 s to build) spends at most a twentieth of a
/// core rebuilding its page, not a third.
const FRESH_PER_BUILD: u32 = 20;
const MAX_HTML_FRESH_FOR: Duration = Duration::from_secs(30);

/// Renderings kept, and their bytes in all, at most.
const CACHED_RENDERINGS: usize = 256;
const CACHED_BYTES: usize = 32 << 20;

/// The bytes of renderings alive (cached, or held by a response being
/// sent) at or over which no new one is built. Builds under way may pass
/// it by at most [`BUILDS_AT_ONCE`] renderings.
const LIVE_BYTES: usize = 2 * CACHED_BYTES;

/// What a listing is rendered as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Format {
    /// The names, one a line, in the listener's encoding (raw, and
    /// `text/plain` over HTTP).
    Text,
    /// The HTML index page (UTF-8).
    Html,
}

/// Why there is no listing.
#[derive(Debug)]
pub(super) enum ListingError {
    /// Too many listings are being built; try again later.
    Busy,
    /// The directory could not be read.
    Io(io::Error),
}

/// A rendering's identity: the directory (device, inode), the format, and
/// the encoding (by name: it decides which names a client could send back).
type Key = (u64, u64, Format, &'static str);

/// The listings of one listener: a bounded cache, and turns to build one.
#[derive(Debug)]
pub(super) struct Listings {
    cache: Mutex<Cache>,
    builds: Arc<Semaphore>,
    /// One gate per rendering being built, so that the requests that want
    /// it wait for the one build instead of building it again.
    building: Mutex<HashMap<Key, Arc<tokio::sync::Mutex<()>>>>,
    /// Renderings built (for the tests: a flood renders once).
    renders: AtomicU64,
    /// How long a cached HTML page is used ([`HTML_FRESH_FOR`]).
    html_fresh_for: Duration,
    /// The bytes of the renderings alive, cached or being sent.
    live: Arc<AtomicUsize>,
    /// No rendering is built while `live` is at this or more ([`LIVE_BYTES`]).
    max_live: usize,
}

/// A rendering's buffer, counted in [`Listings::live`] until the last
/// response holding it (or the cache) lets it go.
struct Counted {
    bytes: Vec<u8>,
    live: Arc<AtomicUsize>,
}

impl Counted {
    /// `bytes` as a shared buffer, counted in `live` while it exists.
    fn shared(bytes: Vec<u8>, live: &Arc<AtomicUsize>) -> Bytes {
        live.fetch_add(bytes.len(), Ordering::Relaxed);
        Bytes::from_owner(Counted {
            bytes,
            live: live.clone(),
        })
    }
}

impl AsRef<[u8]> for Counted {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.live.fetch_sub(self.bytes.len(), Ordering::Relaxed);
    }
}

#[derive(Debug, Default)]
struct Cache {
    entries: HashMap<Key, Cached>,
    bytes: usize,
}

#[derive(Debug)]
struct Cached {
    /// The directory's modification time (seconds, nanoseconds) it is of.
    mtime: (i64, i64),
    /// When it was built (before the directory was read).
    built: std::time::Instant,
    /// How long a page is used: the listings' window, or longer for a
    /// page that was slow to build ([`FRESH_PER_BUILD`]).
    fresh_for: Duration,
    body: Bytes,
}

impl Default for Listings {
    fn default() -> Self {
        Listings {
            cache: Mutex::new(Cache::default()),
            builds: Arc::new(Semaphore::new(BUILDS_AT_ONCE)),
            building: Mutex::new(HashMap::new()),
            renders: AtomicU64::new(0),
            html_fresh_for: HTML_FRESH_FOR,
            live: Arc::new(AtomicUsize::new(0)),
            max_live: LIVE_BYTES,
        }
    }
}

/// Removes a build's gate when its last waiter is done.
struct Building<'a> {
    listings: &'a Listings,
    key: Key,
    gate: Arc<tokio::sync::Mutex<()>>,
}

impl Drop for Building<'_> {
    fn drop(&mut self) {
        let mut building = lock(&self.listings.building);
        // The map's reference and this one: nobody else waits on it.
        if Arc::strong_count(&self.gate) <= 2 {
            building.remove(&self.key);
        }
    }
}

impl Listings {
    /// Listings whose HTML pages are used for `html_fresh_for` (tests).
    #[cfg(test)]
    fn with_html_fresh_for(html_fresh_for: Duration) -> Listings {
        Listings {
            html_fresh_for,
            ..Listings::default()
        }
    }

    /// Listings that build nothing while `max_live` bytes of renderings
    /// are alive (tests).
    #[cfg(test)]
    fn with_max_live(html_fresh_for: Duration, max_live: usize) -> Listings {
        Listings {
            html_fresh_for,
            max_live,
            ..Listings::default()
        }
    }

    /// The bytes of the renderings alive, cached or held by responses.
    #[cfg(test)]
    fn live_bytes(&self) -> usize {
        self.live.load(Ordering::Relaxed)
    }

    /// The listing of the opened directory `dir` (at `path`, below `root`)
    /// as `format`: from the cache when the directory has not changed
    /// since, else built on the blocking pool (once, however many ask).
    pub(super) async fn get(
        &self,
        root: Arc<Path>,
        dir: fs::File,
        path: &Path,
        policy: Policy,
        encoding: TextEncoding,
        format: Format,
    ) -> Result<Bytes, ListingError> {
        let meta = dir.metadata().map_err(ListingError::Io)?;
        let key = (meta.dev(), meta.ino(), format, encoding.name());
        let mtime = (meta.mtime(), meta.mtime_nsec());
        if let Some(body) = self.cached(key, mtime) {
            return Ok(body);
        }
        let deadline = Instant::now() + BUILD_WAIT;
        let gate = {
            let mut building = lock(&self.building);
            building.entry(key).or_default().clone()
        };
        let building = Building {
            listings: self,
            key,
            gate,
        };
        let _built_here = timeout_at(deadline, building.gate.lock())
            .await
            .map_err(|_| ListingError::Busy)?;
        // The build this one waited for may have made it.
        if let Some(body) = self.cached(key, mtime) {
            return Ok(body);
        }
        let turn = timeout_at(deadline, self.builds.clone().acquire_owned())
            .await
            .map_err(|_| ListingError::Busy)?
            .map_err(|_| ListingError::Busy)?;
        // Slow clients still hold renderings the cache let go: build no
        // more until they are sent (or their clients cut off).
        if self.live.load(Ordering::Relaxed) >= self.max_live {
            return Err(ListingError::Busy);
        }
        let dir_name = path
            .strip_prefix(&*root)
            .map_or_else(|_| String::new(), |rel| rel.to_string_lossy().into_owned());
        let shown = quote(&dir_name, QUOTE_MAX_BYTES);
        let built = std::time::Instant::now();
        let rendered = tokio::task::spawn_blocking(move || {
            let _turn = turn;
            render(&root, &dir, &dir_name, policy, encoding, format)
        })
        .await
        .map_err(|e| ListingError::Io(io::Error::other(e)))?
        .map_err(ListingError::Io)?;
        self.renders.fetch_add(1, Ordering::Relaxed);
        // One line per rendering, not per request: renderings are bounded.
        info!(dir = %shown, ?format, encoding = encoding.name(), bytes = rendered.len(), "listing rendered");
        // The same as the one cached (stale, but unchanged): share that
        // buffer on rather than keep a second copy alive.
        let body = match self.cached_any(key) {
            Some(cached) if cached[..] == rendered[..] => cached,
            _ => Counted::shared(rendered, &self.live),
        };
        self.keep(key, mtime, built, body.clone());
        Ok(body)
    }

    /// Renderings built so far.
    #[cfg(test)]
    pub(super) fn renders(&self) -> u64 {
        self.renders.load(Ordering::Relaxed)
    }

    /// A cached rendering of the directory as it is now: of its
    /// modification time, and for a page, fresh.
    fn cached(&self, key: Key, mtime: (i64, i64)) -> Option<Bytes> {
        let cache = lock(&self.cache);
        cache
            .entries
            .get(&key)
            .filter(|cached| cached.mtime == mtime)
            .filter(|cached| key.2 != Format::Html || cached.built.elapsed() < cached.fresh_for)
            .map(|cached| cached.body.clone())
    }

    /// The cached rendering of `key`, however old.
    fn cached_any(&self, key: Key) -> Option<Bytes> {
        lock(&self.cache)
            .entries
            .get(&key)
            .map(|cached| cached.body.clone())
    }

    /// Keeps a rendering, making room within the bounds (any entries go:
    /// they are all cheap to build again compared to a flood of them).
    fn keep(&self, key: Key, mtime: (i64, i64), built: std::time::Instant, body: Bytes) {
        if body.len() > CACHED_BYTES {
            return;
        }
        let mut cache = lock(&self.cache);
        if let Some(gone) = cache.entries.remove(&key) {
            cache.bytes -= gone.body.len();
        }
        while cache.entries.len() >= CACHED_RENDERINGS || cache.bytes + body.len() > CACHED_BYTES {
            let Some(evicted) = cache.entries.keys().next().copied() else {
                break;
            };
            if let Some(gone) = cache.entries.remove(&evicted) {
                cache.bytes -= gone.body.len();
            }
        }
        cache.bytes += body.len();
        let fresh_for = if self.html_fresh_for.is_zero() {
            Duration::ZERO
        } else {
            let slow = built
                .elapsed()
                .saturating_mul(FRESH_PER_BUILD)
                .min(MAX_HTML_FRESH_FOR);
            self.html_fresh_for.max(slow)
        };
        cache.entries.insert(
            key,
            Cached {
                mtime,
                built,
                fresh_for,
                body,
            },
        );
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Every update leaves the map consistent: a poisoned lock is usable.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Renders the listing of `dir` (named `dir_name` below the root) as `format`.
fn render(
    root: &Path,
    dir: &fs::File,
    dir_name: &str,
    policy: Policy,
    encoding: TextEncoding,
    format: Format,
) -> io::Result<Vec<u8>> {
    let names = names(root, dir, policy, encoding, format)?;
    Ok(match format {
        Format::Text => encoding.encode(&names.text()).into_owned(),
        Format::Html => html::index_page(
            dir_name,
            &names.entries,
            names.stopped_after,
            html::MAX_PAGE_BYTES,
        )
        .into_bytes(),
    })
}

/// A listing stops after this many entries, so a huge directory costs bounded memory.
const MAX_LISTING_ENTRIES: usize = 10_000;

/// The entries of a listing, in order, and where it stopped if it did.
struct Names {
    entries: Vec<html::Entry>,
    stopped_after: Option<usize>,
}

impl Names {
    /// One name a line, and a last line saying where the listing stops.
    fn text(&self) -> String {
        let mut text = String::new();
        for entry in &self.entries {
            text.push_str(&entry.name);
            text.push('\n');
        }
        if let Some(after) = self.stopped_after {
            text.push_str(&format!("(listing stops after {after} entries)\n"));
        }
        text
    }
}

/// An entry in a listing's order: for the page, directories first (`file`
/// false), then by name; for the text, by name alone (`file` always false).
/// The name is unique, so the fields after it never decide.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Ordered {
    file: bool,
    name: String,
    size: Option<u64>,
    modified: Option<i64>,
}

/// The listing of an opened directory as text: the entries a client could
/// request back, sorted, one a line, directories with "/".
#[cfg(test)]
pub(super) fn listing(
    root: &Path,
    dir: &fs::File,
    policy: Policy,
    encoding: TextEncoding,
) -> io::Result<String> {
    names(root, dir, policy, encoding, Format::Text).map(|names| names.text())
}

/// The entries of an opened directory that a client could request back,
/// directories with "/": sorted by name for the text, directories first
/// for the page. At most [`MAX_LISTING_ENTRIES`] (the first ones in that
/// order) are kept in memory. The page shows sizes and times: an entry
/// not already inspected (to follow a symlink or count hard links) is
/// inspected once it is among those kept, so a huge directory costs at
/// most that many more `stat` calls.
fn names(
    root: &Path,
    dir: &fs::File,
    policy: Policy,
    encoding: TextEncoding,
    format: Format,
) -> io::Result<Names> {
    let allow_hidden = policy.allow_hidden;
    let details = format == Format::Html;
    let mut kept = BinaryHeap::new();
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
        // What the entry leads to, when it had to be looked at anyway.
        let mut meta = None;
        if kind.is_symlink() {
            // Listed only if it resolves to something servable inside the root.
            let real = match fs::canonicalize(entry.path()) {
                Ok(real) if check_confined(root, &real, allow_hidden).is_ok() => real,
                _ => continue,
            };
            let Ok(target) = fs::metadata(&real) else {
                continue;
            };
            kind = target.file_type();
            meta = Some(target);
        }
        let is_dir = kind.is_dir();
        if kind.is_file() && !policy.allow_hard_links {
            // A file that would be refused is not listed either.
            if meta.is_none() {
                meta = fs::metadata(entry.path()).ok();
            }
            if meta.as_ref().is_some_and(|meta| meta.nlink() > 1) {
                continue;
            }
        } else if !is_dir && !kind.is_file() {
            continue;
        }
        let (size, modified) = match &meta {
            Some(meta) if details => (Some(meta.len()), Some(meta.mtime())),
            _ => (None, None),
        };
        kept.push(Ordered {
            file: details && !is_dir,
            name: if is_dir { format!("{name}/") } else { name },
            size,
            modified,
        });
        if kept.len() > MAX_LISTING_ENTRIES {
            kept.pop(); // the last in order
            truncated = true;
        }
    }
    let base = descriptor_path(dir);
    let entries = kept
        .into_sorted_vec()
        .into_iter()
        .map(|mut entry| {
            if details
                && entry.modified.is_none()
                && let Ok(meta) = fs::metadata(base.join(entry.name.trim_end_matches('/')))
            {
                entry.size = Some(meta.len());
                entry.modified = Some(meta.mtime());
            }
            html::Entry {
                is_dir: entry.name.ends_with('/'),
                name: entry.name,
                size: entry.size,
                modified: entry.modified,
            }
        })
        .collect();
    Ok(Names {
        entries,
        stopped_after: truncated.then_some(MAX_LISTING_ENTRIES),
    })
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
        // Pages fresh for as long as the test takes, however slow.
        let listings = Listings::with_html_fresh_for(Duration::from_secs(3600));
        let get = |format| {
            let (root, listings) = (root.clone(), &listings);
            async move {
                let handle = fs::File::open(&*root).unwrap();
                listings
                    .get(
                        root.clone(),
                        handle,
                        &root,
                        STRICT,
                        TextEncoding::Utf8,
                        format,
                    )
                    .await
                    .unwrap()
            }
        };
        let first = get(Format::Text).await;
        let second = get(Format::Text).await;
        assert_eq!(&first[..], b"a\n");
        assert_eq!(
            first.as_ptr(),
            second.as_ptr(),
            "the second came from the cache"
        );
        let page = get(Format::Html).await;
        assert!(
            std::str::from_utf8(&page)
                .unwrap()
                .contains("<a href=\"/a\">a</a></td><td class=\"s\" title=\"1 byte\">"),
            "{page:?}"
        );
        assert_eq!(get(Format::Html).await.as_ptr(), page.as_ptr());
        assert_eq!(listings.renders(), 2, "one text, one page");
        // A new entry changes the directory's mtime: built again. (Set it
        // explicitly: two changes within one clock tick look the same.)
        fs::write(root.join("b"), b"b").unwrap();
        let later = std::time::SystemTime::now() + Duration::from_secs(5);
        fs::File::open(&*root).unwrap().set_modified(later).unwrap();
        assert_eq!(&get(Format::Text).await[..], b"a\nb\n");
        assert_eq!(listings.renders(), 3);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_flood_of_requests_for_one_listing_renders_it_once() {
        let dir = tempfile::tempdir().unwrap();
        let root: Arc<Path> = Arc::from(fs::canonicalize(dir.path()).unwrap().as_path());
        for i in 0..2000 {
            fs::write(root.join(format!("{i:04}{}", "x".repeat(200))), b"").unwrap();
        }
        let listings = Arc::new(Listings::with_html_fresh_for(Duration::from_secs(3600)));
        let tasks: Vec<_> = (0..60)
            .map(|_| {
                let (root, listings) = (root.clone(), listings.clone());
                tokio::spawn(async move {
                    let handle = fs::File::open(&*root).unwrap();
                    listings
                        .get(
                            root.clone(),
                            handle,
                            &root,
                            STRICT,
                            TextEncoding::Utf8,
                            Format::Html,
                        )
                        .await
                        .unwrap()
                })
            })
            .collect();
        let mut pages = Vec::new();
        for task in tasks {
            pages.push(task.await.unwrap());
        }
        assert_eq!(listings.renders(), 1, "60 requests, one rendering");
        assert!(
            pages.iter().all(|p| p.as_ptr() == pages[0].as_ptr()),
            "all share one buffer"
        );
    }

    /// The HTML page of `root` from `listings` (its root directory).
    async fn root_page(listings: &Listings, root: &Arc<Path>) -> Result<Bytes, ListingError> {
        let handle = fs::File::open(&**root).unwrap();
        listings
            .get(
                root.clone(),
                handle,
                root,
                STRICT,
                TextEncoding::Utf8,
                Format::Html,
            )
            .await
    }

    /// Slow clients each holding a page built after the last one cached
    /// must not pin one buffer a build: a page built again the same as
    /// the one cached shares that buffer.
    #[tokio::test]
    async fn an_unchanged_page_built_again_shares_the_cached_buffer() {
        let dir = tempfile::tempdir().unwrap();
        let root: Arc<Path> = Arc::from(fs::canonicalize(dir.path()).unwrap().as_path());
        for i in 0..50 {
            fs::write(root.join(format!("{i:03}{}", "x".repeat(100))), b"a").unwrap();
        }
        // Never fresh: every request builds the page again.
        let listings = Listings::with_html_fresh_for(Duration::ZERO);
        let mut held = Vec::new();
        for _ in 0..20 {
            held.push(root_page(&listings, &root).await.unwrap());
        }
        assert_eq!(listings.renders(), 20, "built each time");
        assert!(
            held.iter().all(|page| page.as_ptr() == held[0].as_ptr()),
            "one buffer for one unchanged page"
        );
        assert_eq!(listings.live_bytes(), held[0].len(), "one page alive");
        drop(held);
        assert_eq!(
            listings.live_bytes(),
            root_page(&listings, &root).await.unwrap().len(),
            "the cached one"
        );
    }

    /// Pages that differ (a file growing between builds), each still held
    /// by a slow client: once they hold the bound, no page is built (busy)
    /// until they let go.
    #[tokio::test]
    async fn no_page_is_built_while_the_pages_alive_hold_the_bound() {
        let dir = tempfile::tempdir().unwrap();
        let root: Arc<Path> = Arc::from(fs::canonicalize(dir.path()).unwrap().as_path());
        for i in 0..50 {
            fs::write(root.join(format!("{i:03}{}", "x".repeat(100))), b"a").unwrap();
        }
        let page_bytes = root_page(&Listings::default(), &root).await.unwrap().len();
        let max_live = 5 * page_bytes;
        let listings = Listings::with_max_live(Duration::ZERO, max_live);
        let mut held = Vec::new();
        let mut busy = false;
        for size in 1..=50usize {
            // A new size: the page differs from the one before.
            fs::write(root.join("grows"), vec![b'g'; size]).unwrap();
            match root_page(&listings, &root).await {
                Ok(page) => held.push(page),
                Err(ListingError::Busy) => {
                    busy = true;
                    break;
                }
                Err(e) => panic!("{e:?}"),
            }
        }
        assert!(busy, "50 different pages held, never busy");
        let alive: usize = held.iter().map(Bytes::len).sum();
        assert!(
            alive <= max_live + 2 * page_bytes,
            "{alive} bytes alive, bound {max_live}"
        );
        assert_eq!(listings.live_bytes(), alive);
        // The slow clients are done: pages are built again.
        drop(held);
        fs::write(root.join("grows"), b"").unwrap();
        assert!(root_page(&listings, &root).await.is_ok());
    }

    /// A page shows sizes and times, which change without the directory's
    /// A page that was slow to build is used for twenty times its build,
    /// so a flood cannot keep a core rebuilding a huge directory's page.
    #[test]
    fn a_page_slow_to_build_is_used_for_longer() {
        let listings = Listings::with_html_fresh_for(Duration::from_millis(1));
        let key = (1, 7, Format::Html, "UTF-8");
        let page = Bytes::from_static(b"<html>");
        let now = std::time::Instant::now();
        // Built in about 50 ms: fresh for about a second, though the
        // window is 1 ms.
        listings.keep(key, (0, 0), now - Duration::from_millis(50), page.clone());
        assert!(listings.cached(key, (0, 0)).is_some());
        let fresh_for = lock(&listings.cache).entries[&key].fresh_for;
        assert!(
            (Duration::from_millis(1000)..=MAX_HTML_FRESH_FOR).contains(&fresh_for),
            "{fresh_for:?}"
        );
        // Built an hour ago (by the instant it began): at most the cap.
        listings.keep(key, (0, 0), now - Duration::from_secs(3600), page);
        assert_eq!(
            lock(&listings.cache).entries[&key].fresh_for,
            MAX_HTML_FRESH_FOR
        );
    }

    /// mtime: a cached page is used only while fresh.
    #[tokio::test]
    async fn a_page_is_built_again_once_it_is_no_longer_fresh() {
        let dir = tempfile::tempdir().unwrap();
        let root: Arc<Path> = Arc::from(fs::canonicalize(dir.path()).unwrap().as_path());
        fs::write(root.join("grows"), b"ab").unwrap();
        async fn page(listings: &Listings, root: &Arc<Path>) -> String {
            let handle = fs::File::open(&**root).unwrap();
            let body = listings
                .get(
                    root.clone(),
                    handle,
                    root,
                    STRICT,
                    TextEncoding::Utf8,
                    Format::Html,
                )
                .await
                .unwrap();
            String::from_utf8(body.to_vec()).unwrap()
        }
        let (fresh, stale) = (
            Listings::with_html_fresh_for(Duration::from_secs(3600)),
            Listings::with_html_fresh_for(Duration::ZERO),
        );
        for listings in [&fresh, &stale] {
            assert!(page(listings, &root).await.contains("title=\"2 bytes\""));
        }
        // Written to: the directory's mtime stays.
        let before = fs::metadata(&*root).unwrap().modified().unwrap();
        fs::write(root.join("grows"), b"abcd").unwrap();
        assert_eq!(fs::metadata(&*root).unwrap().modified().unwrap(), before);
        assert!(
            page(&fresh, &root).await.contains("title=\"2 bytes\""),
            "cached"
        );
        assert!(
            page(&stale, &root).await.contains("title=\"4 bytes\""),
            "built again"
        );
        assert_eq!((fresh.renders(), stale.renders()), (1, 2));
    }

    #[test]
    fn a_page_lists_directories_first_with_sizes_and_times() {
        let dir = tempfile::tempdir().unwrap();
        let root = fs::canonicalize(dir.path()).unwrap();
        fs::create_dir(root.join("b-dir")).unwrap();
        fs::create_dir(root.join("z-dir")).unwrap();
        fs::write(root.join("a-file"), vec![0u8; 2048]).unwrap();
        fs::write(root.join("c-file"), b"c").unwrap();
        std::os::unix::fs::symlink("a-file", root.join("to-a")).unwrap();
        let old = std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        fs::File::open(root.join("z-dir"))
            .unwrap()
            .set_modified(old)
            .unwrap();
        let handle = fs::File::open(&root).unwrap();
        let names = names(&root, &handle, STRICT, TextEncoding::Utf8, Format::Html).unwrap();
        let shown: Vec<(&str, Option<u64>)> = names
            .entries
            .iter()
            .map(|e| (e.name.as_str(), (!e.is_dir).then_some(e.size).flatten()))
            .collect();
        assert_eq!(
            shown,
            [
                ("b-dir/", None),
                ("z-dir/", None),
                ("a-file", Some(2048)),
                ("c-file", Some(1)),
                ("to-a", Some(2048)),
            ]
        );
        assert_eq!(names.entries[1].modified, Some(1_000_000_000));
        assert!(names.entries.iter().all(|e| e.modified.is_some()));
        // The text keeps its order: by name alone.
        let text = listing(&root, &handle, STRICT, TextEncoding::Utf8).unwrap();
        assert_eq!(text, "a-file\nb-dir/\nc-file\nto-a\nz-dir/\n");
    }

    #[test]
    fn a_long_page_keeps_the_directories_first() {
        let dir = tempfile::tempdir().unwrap();
        let root = fs::canonicalize(dir.path()).unwrap();
        for i in 0..MAX_LISTING_ENTRIES + 5 {
            fs::write(root.join(format!("f{i:06}")), b"").unwrap();
        }
        fs::create_dir(root.join("zz-last-by-name")).unwrap();
        let handle = fs::File::open(&root).unwrap();
        let names = names(&root, &handle, STRICT, TextEncoding::Utf8, Format::Html).unwrap();
        assert_eq!(names.entries.len(), MAX_LISTING_ENTRIES);
        assert_eq!(names.entries[0].name, "zz-last-by-name/");
        assert_eq!(names.entries[1].name, "f000000");
        assert_eq!(names.stopped_after, Some(MAX_LISTING_ENTRIES));
    }

    #[test]
    fn the_cache_stays_within_its_bounds() {
        let listings = Listings::default();
        let big = Bytes::from(vec![b'x'; CACHED_BYTES / 3]);
        for ino in 0..10 {
            listings.keep(
                (1, ino, Format::Html, "UTF-8"),
                (0, 0),
                std::time::Instant::now(),
                big.clone(),
            );
        }
        let small = Bytes::from_static(b"a\n");
        for ino in 100..(100 + 2 * CACHED_RENDERINGS as u64) {
            listings.keep(
                (1, ino, Format::Text, "UTF-8"),
                (0, 0),
                std::time::Instant::now(),
                small.clone(),
            );
        }
        let cache = lock(&listings.cache);
        assert!(
            cache.entries.len() <= CACHED_RENDERINGS,
            "{}",
            cache.entries.len()
        );
        let bytes: usize = cache.entries.values().map(|c| c.body.len()).sum();
        assert_eq!(bytes, cache.bytes);
        assert!(bytes <= CACHED_BYTES, "{bytes}");
    }

    const STRICT: Policy = Policy {
        allow_hidden: false,
        allow_hard_links: false,
    };

    fn refused(root: &Path, name: &str) -> &'static str {
        match resolve(root, name, STRICT) {
            Err(reason) => reason.as_str(),
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
