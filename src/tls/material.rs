//! Reading what a listener's TLS settings name: the certificate chain and
//! its key (checked to match), the CAs of client certificates, and what
//! the logs and metrics say of a certificate (its expiry, its subject).
//! Every file is read with a size limit, and every failure names the key
//! whose file it was.

use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::settings::TlsSettings;
use super::words::key_problem;

/// Largest PEM file read: a chain of a few certificates is a few KiB, a
/// CA bundle (every public root) about 200 KiB.
pub const MAX_PEM_BYTES: u64 = 1024 * 1024;

/// Which file of the settings a failure is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// The certificate chain.
    Cert,
    /// The private key.
    Key,
    /// The CAs of client certificates.
    ClientCa,
}

impl Part {
    /// The key in `[listener.tls]` that names the file.
    pub fn key(self) -> &'static str {
        match self {
            Part::Cert => "cert",
            Part::Key => "key",
            Part::ClientCa => "client_ca",
        }
    }
}

/// Why a certificate, key or CA file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// Which file.
        part: Part,
        /// Its path.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The path names something other than a regular file (a FIFO, a
    /// device, a directory), which is not read: opening a FIFO would wait
    /// for a writer forever, and a device never ends.
    #[error("{} is not a regular file (it is {what}): a certificate or key must be a file", path.display())]
    NotAFile {
        /// Which file.
        part: Part,
        /// Its path.
        path: PathBuf,
        /// What it is instead.
        what: &'static str,
    },
    /// The file is larger than any PEM file of its kind.
    #[error("{} is larger than {MAX_PEM_BYTES} bytes: not a PEM certificate or key", path.display())]
    TooLarge {
        /// Which file.
        part: Part,
        /// Its path.
        path: PathBuf,
    },
    /// The file holds no PEM object of the kind expected, or a broken one.
    #[error("{}: {what}", path.display())]
    Pem {
        /// Which file.
        part: Part,
        /// Its path.
        path: PathBuf,
        /// What was wrong with it.
        what: String,
    },
    /// The key is not the certificate's, or not a key rustls can sign with.
    #[error("{} does not go with {}: {what}", key.display(), cert.display())]
    Mismatch {
        /// The certificate's path.
        cert: PathBuf,
        /// The key's path.
        key: PathBuf,
        /// What rustls said.
        what: String,
    },
}

impl LoadError {
    /// The file the failure is about.
    pub fn part(&self) -> Part {
        match self {
            LoadError::Read { part, .. }
            | LoadError::TooLarge { part, .. }
            | LoadError::NotAFile { part, .. }
            | LoadError::Pem { part, .. } => *part,
            LoadError::Mismatch { .. } => Part::Key,
        }
    }
}

/// The crypto provider: *ring*. It builds with a C compiler alone (no
/// OpenSSL, no CMake), and keeps the binary small. rustls marks it
/// deprecated since 0.23.48 because it has no post-quantum key exchange
/// (X25519MLKEM768): connections use X25519 or the NIST curves, as
/// nginx with OpenSSL 3.0 does. The README says so.
#[allow(deprecated)]
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A certificate chain and its key, ready to serve, with what is shown of it.
#[derive(Debug, Clone)]
pub struct ServedCertificate {
    /// The chain and the key, for rustls.
    pub certified: Arc<CertifiedKey>,
    /// When the leaf certificate expires.
    pub not_after: Option<SystemTime>,
    /// The leaf's subject, as `CN=..., O=...`.
    pub subject: String,
}

impl ServedCertificate {
    /// True when the leaf has expired at `now`.
    pub fn expired(&self, now: SystemTime) -> bool {
        self.not_after.is_some_and(|at| at <= now)
    }

    /// Seconds since the epoch of the leaf's expiry, for the metrics.
    pub fn expiry_timestamp(&self) -> Option<i64> {
        let at = self.not_after?;
        Some(match at.duration_since(UNIX_EPOCH) {
            Ok(after) => i64::try_from(after.as_secs()).unwrap_or(i64::MAX),
            Err(before) => -i64::try_from(before.duration().as_secs()).unwrap_or(i64::MAX),
        })
    }
}

/// What a file that is not a regular one is, for the error.
fn kind_of(file_type: std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if file_type.is_dir() {
        "a directory"
    } else if file_type.is_fifo() {
        "a FIFO"
    } else if file_type.is_char_device() {
        "a character device"
    } else if file_type.is_block_device() {
        "a block device"
    } else if file_type.is_socket() {
        "a socket"
    } else {
        "not a file"
    }
}

/// Reads a regular file of at most [`MAX_PEM_BYTES`]. It is opened
/// `O_NONBLOCK` and checked before any read: a FIFO put where a
/// certificate was (or a symlink to `/dev/zero`, or a directory) is an
/// error at once, not an open that waits for a writer forever on the
/// thread that reads it (the start, a reload, the file watch).
fn read_bounded(part: Part, path: &Path) -> Result<Vec<u8>, LoadError> {
    use std::os::unix::fs::OpenOptionsExt;
    let read = |source| LoadError::Read {
        part,
        path: path.to_owned(),
        source,
    };
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(read)?;
    let file_type = file.metadata().map_err(read)?.file_type();
    if !file_type.is_file() {
        return Err(LoadError::NotAFile {
            part,
            path: path.to_owned(),
            what: kind_of(file_type),
        });
    }
    let mut bytes = Vec::new();
    file.take(MAX_PEM_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(read)?;
    if bytes.len() as u64 > MAX_PEM_BYTES {
        return Err(LoadError::TooLarge {
            part,
            path: path.to_owned(),
        });
    }
    Ok(bytes)
}

/// The certificates of a PEM file, in order; at least one.
fn certificates(part: Part, path: &Path) -> Result<Vec<CertificateDer<'static>>, LoadError> {
    let bytes = read_bounded(part, path)?;
    let pem = |what: String| LoadError::Pem {
        part,
        path: path.to_owned(),
        what,
    };
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem(format!("not a PEM certificate file ({e})")))?;
    if certs.is_empty() {
        return Err(pem(
            "no certificate in it (expected -----BEGIN CERTIFICATE-----)".into(),
        ));
    }
    Ok(certs)
}

/// Reads the chain and key of `settings` and checks that they go together.
pub fn load_certificate(settings: &TlsSettings) -> Result<ServedCertificate, LoadError> {
    let chain = certificates(Part::Cert, &settings.cert)?;
    let key_bytes = read_bounded(Part::Key, &settings.key)?;
    let key = PrivateKeyDer::from_pem_slice(&key_bytes).map_err(|e| LoadError::Pem {
        part: Part::Key,
        path: settings.key.clone(),
        what: match e {
            rustls_pki_types::pem::Error::NoItemsFound => {
                "no private key in it (expected -----BEGIN PRIVATE KEY-----, \
                 -----BEGIN RSA PRIVATE KEY----- or -----BEGIN EC PRIVATE KEY-----)"
                    .into()
            }
            e => format!("not a PEM private key ({e})"),
        },
    })?;
    let (not_after, subject) = describe(&chain[0]);
    let certified =
        CertifiedKey::from_der(chain, key, &provider()).map_err(|e| LoadError::Mismatch {
            cert: settings.cert.clone(),
            key: settings.key.clone(),
            what: key_problem(&e),
        })?;
    Ok(ServedCertificate {
        certified: Arc::new(certified),
        not_after,
        subject,
    })
}

/// Reads the CAs of client certificates.
pub fn load_client_roots(path: &Path) -> Result<RootCertStore, LoadError> {
    client_roots(path, load_client_cas(path)?)
}

/// The certificates of the client CAs' file at `path`, as read (a reload
/// compares them with those trusted).
pub fn load_client_cas(path: &Path) -> Result<Vec<CertificateDer<'static>>, LoadError> {
    certificates(Part::ClientCa, path)
}

/// The trust store of client CAs read from `path`.
pub fn client_roots(
    path: &Path,
    cas: Vec<CertificateDer<'static>>,
) -> Result<RootCertStore, LoadError> {
    let mut roots = RootCertStore::empty();
    for cert in cas {
        roots.add(cert).map_err(|e| LoadError::Pem {
            part: Part::ClientCa,
            path: path.to_owned(),
            what: format!("not a CA certificate rustls can use ({e})"),
        })?;
    }
    Ok(roots)
}

/// The expiry and subject of a DER certificate, as far as they parse.
pub fn describe(cert: &CertificateDer<'_>) -> (Option<SystemTime>, String) {
    match x509_parser::parse_x509_certificate(cert.as_ref()) {
        Ok((_, parsed)) => {
            let at = parsed.validity().not_after.timestamp();
            let not_after = match u64::try_from(at) {
                Ok(secs) => UNIX_EPOCH.checked_add(Duration::from_secs(secs)),
                Err(_) => Some(UNIX_EPOCH),
            };
            (not_after, parsed.subject().to_string())
        }
        Err(_) => (None, String::new()),
    }
}
