//! `download`: the client names a file; the server streams it from the
//! listener's root in `chunk_size` pieces and closes. A directory (or an
//! empty name) gets a listing, one entry a line, directories with a `/`.
//!
//! Names are confined to the root (`paths`); a refusal is one `ERR <reason>`
//! line. A name whose whole path is in the kernel's lookup cache is
//! resolved and opened on the worker (it cannot wait for the disk); any
//! other, and every listing (`listing`), on the blocking pool. A first line
//! that is an HTTP request line switches the connection to HTTP (`http`).

mod archive;
pub(crate) mod http;
mod listing;
mod paths;
mod slots;
mod tail;

use std::fs;
use std::io;
use std::net::IpAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use prometheus::IntCounter;
use serde::Deserialize;
use tracing::{debug, info};

use super::probe::{Probe, ProbeContext, line_then_close, shown};
use super::{BuildContext, Ended, Handler, HandlerError, Invalid, Refusal};
use crate::conn::send_budget::{SendBudget, SendBuffer};
use crate::conn::text::{QUOTE_MAX_BYTES, TextEncoding, quote};
use crate::conn::{ConnError, Connection, Incoming, Io, MinRate};
use archive::{Archives, archived_folder};
use listing::{Format, ListingError, Listings};
use paths::{Policy, Target, io_reason, open_root, resolve, resolve_cached};
use slots::{NoSlot, Slot, Slots};

/// Bytes sent per write by default.
const CHUNK_SIZE: usize = 64 * 1024;

/// The slowest average read of a file by default: 16 KiB/s, a slow mobile
/// link; a 1 GiB file may take up to about 18 hours at it.
const MIN_SEND_RATE: u64 = 16 * 1024;

/// Before the minimum rate counts: a connection's start is slow.
const MIN_SEND_RATE_GRACE: Duration = Duration::from_secs(10);

/// Files sent at once by default.
const MAX_DOWNLOADS: usize = 256;

/// Files sent at once to one source by default: twice what the most
/// parallel download tools open to one server (aria2's 16), so that it
/// takes eight hosts' stalled readers to hold every slot.
const MAX_DOWNLOADS_PER_SOURCE: usize = 32;

/// The send buffer of a file send by default (the kernel doubles it): with
/// `max_downloads` stalled readers, at most 256 × 512 KiB of kernel memory.
const SEND_BUFFER: usize = 256 * 1024;

/// The largest `send_buffer`.
const MAX_SEND_BUFFER: usize = 64 << 20;

/// The largest `send_budget`: 1 TiB.
const MAX_SEND_BUDGET: usize = 1 << 40;

/// The largest `max_downloads`.
const MAX_MAX_DOWNLOADS: usize = 1_000_000;

/// The largest `chunk_size` (tokio reads files at most 2 MiB at a time).
const MAX_CHUNK_SIZE: usize = 2 * 1024 * 1024;

/// What the probe asks for: refused before anything on disk is touched.
const PROBE_REQUEST: &str = "..";

/// A body at most this long goes out in one write with its head.
const SMALL_BODY: usize = 16 * 1024;

/// Settings of the download handler.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DownloadConfig {
    /// Directory served; resolved to an absolute path without symlinks at load.
    pub root: PathBuf,
    /// Bytes sent per write through a buffer (TLS, listings); a sendfile
    /// call asks for at least 1 MiB.
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
    /// Of `max_downloads`, those one source may hold (its address as
    /// `max_connections_per_source` counts it); a request over it gets
    /// `ERR too many downloads from your address` (429 over HTTP). 0: no
    /// share but `max_downloads`.
    #[serde(default = "default_max_downloads_per_source")]
    pub max_downloads_per_source: usize,
    /// The socket send buffer of a file send, in bytes (`SO_SNDBUF`; the
    /// kernel doubles it for its bookkeeping). 0: the kernel's autotuning,
    /// which lets a stalled reader hold several MB.
    #[serde(default = "default_send_buffer")]
    pub send_buffer: usize,
    /// Bytes of send buffer (`SO_SNDBUF`, as `send_buffer`) by which this
    /// listener's file sends may grow past `send_buffer` in all, while
    /// their clients keep up; a grant is kept until its connection ends.
    /// Unset: `max_downloads` × `send_buffer`. 0: no growth.
    #[serde(default)]
    pub send_budget: Option<usize>,
}

impl DownloadConfig {
    /// `send_budget`, or its default.
    fn send_budget_bytes(&self) -> usize {
        self.send_budget
            .unwrap_or_else(|| self.max_downloads.saturating_mul(self.send_buffer))
            .min(MAX_SEND_BUDGET)
    }
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
fn default_max_downloads_per_source() -> usize {
    MAX_DOWNLOADS_PER_SOURCE
}
fn default_send_buffer() -> usize {
    SEND_BUFFER
}

/// The download handler.
#[derive(Debug)]
pub(crate) struct Download {
    root: Arc<Path>,
    /// The root's directory handle, for resolving on the worker when the
    /// kernel's lookup cache can answer (`None`: always the blocking pool).
    root_dir: Option<Arc<OwnedFd>>,
    chunk_size: usize,
    policy: Policy,
    pace: Option<MinRate>,
    /// One per file, listing or archive being sent.
    slots: Arc<Slots>,
    send_buffer: usize,
    /// What file sends grow their send buffer from (`None`: no growth).
    send_budget: Option<Arc<SendBudget>>,
    /// Listings, cached and built a few at a time.
    listings: Arc<Listings>,
    /// Folders as tar streams: walked a few at a time, their layouts bounded.
    archives: Arc<Archives>,
    files_sent: IntCounter,
    file_bytes_sent: IntCounter,
}

impl Download {
    /// Sends `head` (an HTTP response head, or nothing), then the `len`
    /// bytes of `file` from `start` under the listener's limits (send
    /// buffer, chunk size, minimum rate), counting the file's bytes (also
    /// of a send cut short) and the files sent whole. A file that shrank is
    /// [`HandlerError::Truncated`].
    async fn send_range<S: Io>(
        &self,
        conn: &mut Connection<S>,
        head: &[u8],
        file: fs::File,
        start: u64,
        len: u64,
    ) -> Result<(), HandlerError> {
        let (_, before) = conn.bytes();
        let buffer = SendBuffer {
            base: self.send_buffer,
            budget: self.send_budget.as_ref(),
        };
        let sent = conn
            .send_file(head, file, start, len, self.chunk_size, self.pace, buffer)
            .await;
        // The head goes first: whatever went out past it is the file's.
        let file_bytes = (conn.bytes().1 - before).saturating_sub(head.len() as u64);
        self.file_bytes_sent.inc_by(file_bytes);
        let sent = sent.map_err(|e| {
            let e = HandlerError::from(e);
            if e.is_disconnect() {
                debug!(sent = file_bytes, of = len, "client disconnected mid-file");
            }
            e
        })?;
        if sent < len {
            return Err(HandlerError::Truncated {
                sent,
                expected: len,
            });
        }
        self.files_sent.inc();
        Ok(())
    }

    /// Sends `head` (an HTTP response head, or nothing), then `body` (a
    /// listing) under the same limits as a file: the send buffer, writes of
    /// at most `chunk_size`, each within the idle timeout, and the minimum
    /// rate. A client that never reads holds at most the send buffer of
    /// kernel memory and the task until the first limit passes; the body
    /// itself is shared, not copied.
    async fn send_bytes<S: Io>(
        &self,
        conn: &mut Connection<S>,
        head: &[u8],
        body: &[u8],
    ) -> Result<(), HandlerError> {
        if self.send_buffer > 0 && body.len() > self.send_buffer {
            conn.set_send_buffer(self.send_buffer);
        }
        if body.len() <= SMALL_BODY {
            let mut reply = Vec::with_capacity(head.len() + body.len());
            reply.extend_from_slice(head);
            reply.extend_from_slice(body);
            return Ok(conn.send(&reply).await?);
        }
        if !head.is_empty() {
            conn.send(head).await?;
        }
        let started = tokio::time::Instant::now();
        let mut sent = 0u64;
        for chunk in body.chunks(self.chunk_size.max(1)) {
            match self.pace {
                Some(pace) => {
                    let by = pace_deadline(pace, started, sent);
                    tokio::time::timeout_at(by, conn.send(chunk))
                        .await
                        .map_err(|_| ConnError::ReaderTooSlow(pace.bytes_per_second))??;
                }
                None => conn.send(chunk).await?,
            }
            sent += chunk.len() as u64;
        }
        Ok(())
    }

    /// Resolves a requested name: on the worker when the kernel's lookup
    /// cache holds the path, else on the blocking pool (the disk may wait).
    async fn resolve_target(&self, name: &str) -> Result<Target, HandlerError> {
        if let Some(root_dir) = &self.root_dir
            && let Some(resolved) = resolve_cached(&self.root, root_dir.as_fd(), name, self.policy)
        {
            return resolved.map_err(HandlerError::Refused);
        }
        let (root, name, policy) = (self.root.clone(), name.to_owned(), self.policy);
        tokio::task::spawn_blocking(move || resolve(&root, &name, policy))
            .await
            .map_err(io::Error::other)?
            .map_err(HandlerError::Refused)
    }

    /// The listing of the opened directory `dir` (at `path`) as `format`,
    /// shared from the listing cache.
    async fn listing(
        &self,
        dir: fs::File,
        path: &Path,
        encoding: TextEncoding,
        format: Format,
    ) -> Result<bytes::Bytes, HandlerError> {
        self.listings
            .get(self.root.clone(), dir, path, self.policy, encoding, format)
            .await
            .map_err(|e| match e {
                ListingError::Busy => HandlerError::Refused(Refusal::Busy),
                ListingError::Io(e) => HandlerError::Refused(io_reason(&e)),
            })
    }

    /// One of the listener's send slots for `source`, or the refusal that
    /// says why there is none.
    fn slot(&self, source: IpAddr) -> Result<Slot, HandlerError> {
        self.slots.take(source).map_err(|none| {
            HandlerError::Refused(match none {
                NoSlot::Busy => Refusal::Busy,
                NoSlot::SourceBusy => Refusal::TooManyFromSource,
            })
        })
    }

    /// Serves a raw-protocol request: `request` names a file, or a
    /// directory for its listing.
    async fn serve_raw<S: Io>(
        &self,
        conn: &mut Connection<S>,
        request: bytes::BytesMut,
    ) -> Result<Ended, HandlerError> {
        let encoding = conn.settings().encoding;
        let name = encoding.decode(&request).trim().to_owned();
        let target = match self.resolve_target(&name).await {
            Ok(target) => target,
            Err(HandlerError::Refused(Refusal::NotFound | Refusal::Hidden))
                if let Some(folder) = archived_folder(&name) =>
            {
                return self.serve_raw_archive(conn, folder).await;
            }
            Err(e) => {
                info!(name = quote(&name, QUOTE_MAX_BYTES).as_str(), reason = %e, "download refused");
                return Err(e);
            }
        };
        match target {
            Target::Directory { handle, path } => {
                let _slot = self.slot(source(conn))?;
                let text = self.listing(handle, &path, encoding, Format::Text).await?;
                info!(
                    dir = quote(&path.to_string_lossy(), QUOTE_MAX_BYTES).as_str(),
                    bytes = text.len(),
                    "sending listing"
                );
                self.send_bytes(conn, &[], &text).await?;
            }
            Target::File { file, path, meta } => {
                let _slot = self.slot(source(conn))?;
                info!(
                    file = quote(&path.to_string_lossy(), QUOTE_MAX_BYTES).as_str(),
                    bytes = meta.len(),
                    "sending file"
                );
                self.send_range(conn, &[], file, 0, meta.len()).await?;
            }
        }
        Ok(Ended::Completed)
    }

    /// Serves a raw-protocol request for a folder's tar stream (`NAME.tar`
    /// with no such file): the whole archive.
    async fn serve_raw_archive<S: Io>(
        &self,
        conn: &mut Connection<S>,
        folder: &str,
    ) -> Result<Ended, HandlerError> {
        let _slot = self.slot(source(conn))?;
        let archive = match self.open_archive(folder, source(conn)).await {
            Ok(archive) => archive,
            Err(e) => {
                info!(folder = quote(folder, QUOTE_MAX_BYTES).as_str(), reason = %e, "archive refused");
                return Err(e);
            }
        };
        let layout = archive.layout();
        info!(
            folder = quote(folder, QUOTE_MAX_BYTES).as_str(),
            entries = layout.entries().len(),
            bytes = layout.len(),
            "sending archive"
        );
        self.send_archive(conn, &[], &archive, 0, layout.len())
            .await?;
        Ok(Ended::Completed)
    }
}

/// The address `conn`'s client is counted under by the per-source limits
/// (its peer's, before admission has said).
fn source<S: Io>(conn: &Connection<S>) -> IpAddr {
    conn.signals().source().map_or_else(
        || conn.peer().ip().to_canonical(),
        |source| source.counted_as,
    )
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
        if config.send_buffer > MAX_SEND_BUFFER {
            return Err(Invalid::at(
                "send_buffer",
                format!("send_buffer must be at most {MAX_SEND_BUFFER} (0: the kernel's)"),
            ));
        }
        if config.send_budget.is_some_and(|b| b > MAX_SEND_BUDGET) {
            return Err(Invalid::at(
                "send_budget",
                format!("send_budget must be at most {MAX_SEND_BUDGET} (0: no growth)"),
            ));
        }
        if !(1..=MAX_MAX_DOWNLOADS).contains(&config.max_downloads) {
            return Err(Invalid::at(
                "max_downloads",
                format!("max_downloads must be between 1 and {MAX_MAX_DOWNLOADS}"),
            ));
        }
        if config.max_downloads_per_source > MAX_MAX_DOWNLOADS {
            return Err(Invalid::at(
                "max_downloads_per_source",
                format!(
                    "max_downloads_per_source must be at most {MAX_MAX_DOWNLOADS} (0: no share but max_downloads)"
                ),
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
        // Files being sent keep counting after a reload, against a new
        // `max_downloads` and `max_downloads_per_source` too: reloads that
        // change them cannot add up limits.
        let slots = match previous {
            Some(previous) => Slots::reloaded(
                &previous.slots,
                config.max_downloads,
                config.max_downloads_per_source,
            ),
            None => Slots::new(config.max_downloads, config.max_downloads_per_source),
        };
        // Kept over a reload unless its size changed: the grants of the
        // sends under way are still counted in it.
        let total = config.send_budget_bytes();
        let send_budget = match previous.and_then(|p| p.send_budget.as_ref()) {
            Some(budget) if budget.total() == total => Some(budget.clone()),
            _ => (total > 0 && config.send_buffer > 0)
                .then(|| SendBudget::new(total, ctx.metrics.send_budget_in_use())),
        };
        Download {
            root: Arc::from(config.root.as_path()),
            root_dir: open_root(&config.root).map(Arc::new),
            chunk_size: config.chunk_size,
            policy: Policy {
                allow_hidden: config.allow_hidden,
                allow_hard_links: config.allow_hard_links,
            },
            pace: (config.min_send_rate > 0).then_some(MinRate {
                bytes_per_second: config.min_send_rate,
                grace: MIN_SEND_RATE_GRACE,
            }),
            slots,
            send_buffer: config.send_buffer,
            send_budget,
            // New: the root, its rules or the encoding may have changed.
            listings: Arc::new(Listings::default()),
            archives: Arc::new(Archives::default()),
            files_sent,
            file_bytes_sent,
        }
    }

    async fn serve<S: Io>(&self, conn: &mut Connection<S>) -> Result<Ended, HandlerError> {
        // Its read boxed, made once the first byte is in: an idle HTTP
        // keep-alive connection's task does not carry room for it.
        let request = match conn.first_message().await? {
            Incoming::Data(request) => request,
            Incoming::Closed => return Ok(Ended::ClientClosed),
            Incoming::Shutdown => return Err(HandlerError::Refused(Refusal::ShuttingDown)),
        };
        if http::is_request_line(&request) {
            return http::serve(self, conn, request).await;
        }
        // Boxed: an idle HTTP keep-alive connection (served above) does not
        // carry room for the raw protocol's send.
        Box::pin(self.serve_raw(conn, request)).await
    }

    /// `..` must be refused with its `ERR` line, then the close: a request
    /// that touches nothing on disk.
    fn probe(_config: &DownloadConfig, ctx: &ProbeContext<'_>) -> Probe {
        let mut send = ctx.encoding.encode(PROBE_REQUEST).into_owned();
        send.push(b'\n');
        let expected = format!("ERR {}", Refusal::ParentDir);
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

/// When `sent` bytes of a body stop being enough at the minimum rate: the
/// start, the grace, and the time those bytes take at the rate.
fn pace_deadline(pace: MinRate, started: tokio::time::Instant, sent: u64) -> tokio::time::Instant {
    let rate = pace.bytes_per_second.max(1);
    let earned = Duration::from_secs(sent / rate)
        + Duration::from_nanos((sent % rate) * 1_000_000_000 / rate);
    started + pace.grace + earned
}

/// A real path, or why not.
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) type Resolved = Result<PathBuf, Refusal>;

/// What `name` resolves to under `root` (hidden names refused), by the
/// blocking resolver and by the fast path (`None`: it deferred), for the
/// fuzz target of the path rules.
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) fn resolve_for_fuzzing(root: &Path, name: &str) -> (Resolved, Option<Resolved>) {
    let policy = Policy {
        allow_hidden: false,
        allow_hard_links: false,
    };
    let path_of = |target: Target| match target {
        Target::File { path, .. } | Target::Directory { path, .. } => path,
    };
    let slow = resolve(root, name, policy).map(path_of);
    let fast = open_root(root)
        .and_then(|fd| resolve_cached(root, fd.as_fd(), name, policy))
        .map(|resolved| resolved.map(path_of));
    (slow, fast)
}
