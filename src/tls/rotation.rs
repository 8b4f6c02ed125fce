//! The certificate a listener serves, replaced while it runs: the rustls
//! resolver that every new handshake asks, the re-read (on SIGHUP, and
//! when the files change) that swaps in a new pair or keeps the old one,
//! and the task that watches the files.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError, RwLock, Weak};
use std::time::{Duration, SystemTime};

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tracing::{error, info, warn};

use super::material::{LoadError, ServedCertificate, load_certificate};
use super::settings::TlsSettings;
use crate::metrics::ListenerMetrics;

/// What a file looked like when last read: a change to any of these
/// (a rewrite, a rename over it, a Kubernetes secret's symlink swap)
/// makes the watch re-read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: i64,
    mtime_nsec: i64,
}

impl FileStamp {
    /// The stamp of the file `path` names now (following symlinks);
    /// `None` when it cannot be looked at.
    fn of(path: &Path) -> Option<FileStamp> {
        let meta = std::fs::metadata(path).ok()?;
        Some(FileStamp {
            dev: meta.dev(),
            ino: meta.ino(),
            len: meta.len(),
            mtime: meta.mtime(),
            mtime_nsec: meta.mtime_nsec(),
        })
    }
}

/// The stamps of the certificate and the key files.
type Stamps = (Option<FileStamp>, Option<FileStamp>);

fn stamps(settings: &TlsSettings) -> Stamps {
    (FileStamp::of(&settings.cert), FileStamp::of(&settings.key))
}

/// What a re-read came to.
#[derive(Debug)]
pub enum Rotation {
    /// A new pair is served.
    Rotated,
    /// The files hold the pair already served.
    Unchanged,
    /// The new files did not load; the old pair is still served.
    Failed(LoadError),
}

/// The pair a listener serves, which rustls asks for at every handshake.
#[derive(Debug)]
pub struct ServedPair {
    settings: TlsSettings,
    current: RwLock<Arc<ServedCertificate>>,
    /// The files' stamps when last read (whether or not they loaded), so
    /// that a broken file is reported once, not at every look.
    seen: Mutex<Stamps>,
    /// Held for a whole re-read: the watch and a SIGHUP never load, compare
    /// and swap at once (which could count one renewal twice, or put back
    /// an older pair loaded before a newer one).
    reloading: Mutex<()>,
    metrics: Arc<ListenerMetrics>,
}

impl ServedPair {
    /// Serves `first` (already loaded from `settings`).
    pub(crate) fn new(
        settings: TlsSettings,
        first: ServedCertificate,
        metrics: Arc<ListenerMetrics>,
    ) -> Arc<ServedPair> {
        let seen = stamps(&settings);
        metrics.tls_certificate_expiry(first.expiry_timestamp());
        Arc::new(ServedPair {
            settings,
            current: RwLock::new(Arc::new(first)),
            seen: Mutex::new(seen),
            reloading: Mutex::new(()),
            metrics,
        })
    }

    /// The settings it was made for.
    pub fn settings(&self) -> &TlsSettings {
        &self.settings
    }

    /// The certificate served now.
    pub fn current(&self) -> Arc<ServedCertificate> {
        match self.current.read() {
            Ok(current) => current.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Like [`ServedPair::reload`], unless a re-read is already under way
    /// (which reads the same files): then `None` at once. For the reload's
    /// own thread, which must not wait on a watch stuck in a slow read.
    pub fn try_reload(&self) -> Option<Rotation> {
        let busy = match self.reloading.try_lock() {
            Ok(guard) => {
                drop(guard);
                false
            }
            Err(std::sync::TryLockError::Poisoned(_)) => false,
            Err(std::sync::TryLockError::WouldBlock) => true,
        };
        // The lock is taken again inside: a re-read that starts between
        // the two only makes this one wait for it, as `reload` would.
        (!busy).then(|| self.reload())
    }

    /// Re-reads the files: a pair that loads and differs from the one
    /// served replaces it for new handshakes (open connections keep
    /// theirs); one that does not load leaves the old one, with one error
    /// line and a count. Blocking: reads files.
    pub fn reload(&self) -> Rotation {
        let _one_at_a_time = self
            .reloading
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // Named in each line: a re-read runs on the blocking pool or in
        // the reload, outside any listener's span.
        let listener = self.metrics.labels().0;
        // Stamped before the read: a change during it is seen at the next look.
        let now = stamps(&self.settings);
        if let Ok(mut seen) = self.seen.lock() {
            *seen = now;
        }
        let outcome = match load_certificate(&self.settings) {
            Err(e) => Rotation::Failed(e),
            Ok(new) if same_pair(&new.certified, &self.current().certified) => Rotation::Unchanged,
            Ok(new) => {
                let (subject, expiry) = (new.subject.clone(), new.expiry_timestamp());
                let expires = new.not_after.map(httpdate::fmt_http_date);
                if new.expired(SystemTime::now()) {
                    warn!(
                        listener,
                        subject, "the new certificate has expired; serving it anyway"
                    );
                }
                match self.current.write() {
                    Ok(mut current) => *current = Arc::new(new),
                    Err(poisoned) => *poisoned.into_inner() = Arc::new(new),
                }
                self.metrics.tls_certificate_expiry(expiry);
                info!(listener, subject, expires, "certificate rotated");
                Rotation::Rotated
            }
        };
        match &outcome {
            Rotation::Rotated => self.metrics.tls_rotation(true),
            Rotation::Failed(e) => {
                self.metrics.tls_rotation(false);
                error!(listener, error = %e, "new certificate not loaded; the old one is still served");
            }
            Rotation::Unchanged => {}
        }
        outcome
    }

    /// Re-reads the files if they changed since they were last read.
    fn reload_if_changed(&self) -> Option<Rotation> {
        let now = stamps(&self.settings);
        let changed = self.seen.lock().map(|seen| *seen != now).unwrap_or(true);
        changed.then(|| self.reload())
    }

    /// Starts the task that looks at the files every `check_interval`
    /// (if set) and re-reads them when they change. It ends when the pair
    /// is no longer served. Needs a tokio runtime.
    pub(crate) fn watch(self: &Arc<Self>, span: tracing::Span) {
        let Some(interval) = self.settings.check_interval else {
            return;
        };
        let pair: Weak<ServedPair> = Arc::downgrade(self);
        let watch = async move {
            let mut ticks = tokio::time::interval(interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticks.tick().await;
            loop {
                ticks.tick().await;
                let Some(pair) = pair.upgrade() else { break };
                // Reading files blocks: off the async workers.
                let looked = tokio::task::spawn_blocking(move || {
                    pair.reload_if_changed();
                })
                .await;
                if looked.is_err() {
                    break;
                }
            }
        };
        tokio::spawn(tracing::Instrument::instrument(watch, span));
    }
}

/// True when two pairs are the same chain (the key goes with it).
fn same_pair(a: &CertifiedKey, b: &CertifiedKey) -> bool {
    a.cert == b.cert
}

impl ResolvesServerCert for ServedPair {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current().certified.clone())
    }
}

/// How long before a certificate's expiry `check` and the start warn.
pub const EXPIRY_WARNING: Duration = Duration::from_secs(14 * 24 * 60 * 60);
