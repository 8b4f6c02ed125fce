//! A listener's TLS as its connections meet it: the rustls server config
//! built from the settings (versions, client certificates, the rotating
//! pair), the bounded handshake with its failure reasons, and what a
//! finished handshake tells the logs.

use std::io;
use std::sync::{Arc, RwLock};

use rustls::client::danger::HandshakeSignatureValid;
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};
use rustls::{ServerConfig, SupportedProtocolVersion};
use rustls_pki_types::{CertificateDer, UnixTime};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tracing::{error, info, info_span};

use super::capped::{CapReached, Capped};
use super::material::{
    LoadError, Part, client_roots, describe, load_certificate, load_client_cas, provider,
};
use super::rotation::ServedPair;
use super::settings::{ClientAuth, MinVersion, Mode, TlsSettings};
use super::words::certificate_problem;
use crate::metrics::ListenerMetrics;

/// Why a handshake did not finish: a small, fixed set, for the metrics'
/// `reason` label and the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    /// It did not finish within `handshake_timeout`.
    #[error("the TLS handshake took too long")]
    Timeout,
    /// The client closed (or reset) the connection during it.
    #[error("the client closed the connection during the TLS handshake")]
    Closed,
    /// What the client sent is not TLS, or is broken TLS.
    #[error("the client did not speak TLS")]
    NotTls,
    /// No version or cipher suite the client offered is one we speak.
    #[error("no TLS version or cipher suite in common with the client")]
    Incompatible,
    /// A client certificate is required and none was presented.
    #[error("the client presented no certificate")]
    NoClientCertificate,
    /// The client's certificate is not signed by `client_ca`, expired, or
    /// otherwise invalid.
    #[error("the client's certificate was rejected: {0}")]
    BadClientCertificate(&'static str),
    /// The client rejected our certificate (or ended with another alert).
    #[error("the client sent a TLS alert: it did not accept the handshake")]
    ClientAlert,
    /// The listener has no certificate to serve (its files did not load).
    #[error("no certificate to serve")]
    NoCertificate,
    /// The server is shutting down.
    #[error("the server is shutting down")]
    Shutdown,
    /// Anything else (a socket error).
    #[error("the TLS handshake failed")]
    Other,
}

impl HandshakeError {
    /// The metrics' `result` label.
    pub fn label(self) -> &'static str {
        match self {
            HandshakeError::Timeout => "timeout",
            HandshakeError::Closed => "closed",
            HandshakeError::NotTls => "not_tls",
            HandshakeError::Incompatible => "incompatible",
            HandshakeError::NoClientCertificate => "no_client_certificate",
            HandshakeError::BadClientCertificate(_) => "bad_client_certificate",
            HandshakeError::ClientAlert => "client_alert",
            HandshakeError::NoCertificate => "no_certificate",
            HandshakeError::Shutdown => "shutdown",
            HandshakeError::Other => "other",
        }
    }

    /// Every label, for the tests.
    #[cfg(test)]
    pub const LABELS: [&'static str; 10] = [
        "timeout",
        "closed",
        "not_tls",
        "incompatible",
        "no_client_certificate",
        "bad_client_certificate",
        "client_alert",
        "no_certificate",
        "shutdown",
        "other",
    ];

    /// The reason of an error tokio-rustls returned.
    fn of(e: &io::Error) -> HandshakeError {
        use rustls::Error as Tls;
        if e.get_ref().is_some_and(|inner| inner.is::<CapReached>()) {
            // More than any handshake sends: not TLS as clients speak it.
            return HandshakeError::NotTls;
        }
        if let Some(tls) = e.get_ref().and_then(|inner| inner.downcast_ref::<Tls>()) {
            return match tls {
                Tls::NoCertificatesPresented => HandshakeError::NoClientCertificate,
                Tls::InvalidCertificate(cert) => {
                    HandshakeError::BadClientCertificate(certificate_problem(cert))
                }
                Tls::PeerIncompatible(_) => HandshakeError::Incompatible,
                Tls::AlertReceived(_) => HandshakeError::ClientAlert,
                Tls::General(_) => HandshakeError::NoCertificate,
                Tls::InvalidMessage(_)
                | Tls::InappropriateMessage { .. }
                | Tls::InappropriateHandshakeMessage { .. }
                | Tls::PeerMisbehaved(_)
                | Tls::DecryptError => HandshakeError::NotTls,
                _ => HandshakeError::Other,
            };
        }
        match e.kind() {
            io::ErrorKind::UnexpectedEof
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe => HandshakeError::Closed,
            _ => HandshakeError::Other,
        }
    }
}

/// The handshake's outcome as the log shows it: version, cipher suite and
/// the client certificate's subject.
#[derive(Debug, Clone)]
pub struct SessionInfo {
    /// `TLSv1.3`.
    pub version: &'static str,
    /// `TLS13_AES_256_GCM_SHA384`.
    pub cipher: &'static str,
    /// The client certificate's subject, with mutual TLS.
    pub client_subject: Option<String>,
}

impl SessionInfo {
    /// What a finished handshake negotiated.
    pub fn of(stream: &TlsStream<Capped>) -> SessionInfo {
        let (_, conn) = stream.get_ref();
        let version = match conn.protocol_version() {
            Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3",
            Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2",
            _ => "TLS",
        };
        let cipher = conn
            .negotiated_cipher_suite()
            .and_then(|s| s.suite().as_str())
            .unwrap_or("unknown");
        let client_subject = conn
            .peer_certificates()
            .and_then(|chain| chain.first())
            .map(|leaf| describe(leaf).1);
        SessionInfo {
            version,
            cipher,
            client_subject,
        }
    }
}

/// A listener's TLS: what new connections are handed.
#[derive(Debug)]
pub struct TlsService {
    settings: TlsSettings,
    /// `None` when the files did not load (then every handshake is
    /// refused: closed, not plaintext).
    ready: Option<Ready>,
}

struct Ready {
    /// What new handshakes get; a reload that finds other client CAs
    /// replaces it.
    accepting: RwLock<Accepting>,
    pair: Arc<ServedPair>,
    metrics: Arc<ListenerMetrics>,
}

/// The rustls config handshakes are run with, and the client CAs it
/// trusts (empty without `client_ca`), as read.
struct Accepting {
    acceptor: TlsAcceptor,
    client_cas: Vec<CertificateDer<'static>>,
}

impl Ready {
    /// What is read of the current [`Accepting`].
    fn with_accepting<R>(&self, read: impl FnOnce(&Accepting) -> R) -> R {
        match self.accepting.read() {
            Ok(accepting) => read(&accepting),
            Err(poisoned) => read(&poisoned.into_inner()),
        }
    }

    /// The acceptor of new handshakes (a shared config: cheap to clone).
    fn acceptor(&self) -> TlsAcceptor {
        self.with_accepting(|a| a.acceptor.clone())
    }
}

impl std::fmt::Debug for Ready {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ready")
            .field("pair", &self.pair)
            .finish_non_exhaustive()
    }
}

impl TlsService {
    /// The TLS of a listener's config. `previous` is the service it
    /// replaces: its pair is kept (and re-read) when the files are the
    /// same, so a reload does not start a second watch of them. Blocking:
    /// reads files.
    pub(crate) fn new(
        settings: &TlsSettings,
        metrics: &Arc<ListenerMetrics>,
        previous: Option<&TlsService>,
    ) -> TlsService {
        let same_files = |pair: &&Arc<ServedPair>| {
            let old = pair.settings();
            old.cert == settings.cert
                && old.key == settings.key
                && old.check_interval == settings.check_interval
        };
        let kept = previous
            .and_then(|p| p.ready.as_ref())
            .map(|r| &r.pair)
            .filter(same_files)
            .cloned();
        let ready = match Self::ready(settings, metrics, kept) {
            Ok(ready) => Some(ready),
            Err(e) => {
                metrics.tls_rotation(false);
                error!(listener = %metrics.labels().0, error = %e, "TLS not ready: every handshake is refused until the files load");
                None
            }
        };
        TlsService {
            settings: settings.clone(),
            ready,
        }
    }

    fn ready(
        settings: &TlsSettings,
        metrics: &Arc<ListenerMetrics>,
        kept: Option<Arc<ServedPair>>,
    ) -> Result<Ready, LoadError> {
        let pair = match kept {
            Some(pair) => {
                // Not waiting on a watch stuck in a slow read: that read
                // serves whatever it finds.
                pair.try_reload();
                pair
            }
            None => {
                let pair = ServedPair::new(
                    settings.clone(),
                    load_certificate(settings)?,
                    metrics.clone(),
                );
                let (listener, _) = metrics.labels();
                pair.watch(info_span!("tls_watch", listener = %listener));
                pair
            }
        };
        let client_cas = match &settings.client_ca {
            Some((path, _)) => load_client_cas(path)?,
            None => Vec::new(),
        };
        let acceptor = acceptor(settings, &pair, &client_cas)?;
        Ok(Ready {
            accepting: RwLock::new(Accepting {
                acceptor,
                client_cas,
            }),
            pair,
            metrics: metrics.clone(),
        })
    }

    /// TLS only, or plaintext too.
    pub fn mode(&self) -> Mode {
        self.settings.mode
    }

    /// The rustls config new handshakes get (`None`: not ready).
    #[cfg(any(test, feature = "fuzzing"))]
    pub(crate) fn server_config(&self) -> Option<Arc<ServerConfig>> {
        self.ready.as_ref().map(|r| r.acceptor().config().clone())
    }

    /// Re-reads the certificate's files, and the client CAs' (SIGHUP):
    /// a CA taken out of `client_ca` is trusted by no handshake after it.
    /// Blocking.
    pub fn reload(&self) {
        let Some(ready) = &self.ready else { return };
        ready.pair.reload();
        let Some((path, _)) = &self.settings.client_ca else {
            return;
        };
        let listener = ready.metrics.labels().0;
        let reread = load_client_cas(path).and_then(|cas| {
            if ready.with_accepting(|a| a.client_cas == cas) {
                return Ok(None);
            }
            let acceptor = acceptor(&self.settings, &ready.pair, &cas)?;
            Ok(Some(Accepting {
                acceptor,
                client_cas: cas,
            }))
        });
        match reread {
            Ok(None) => {}
            Ok(Some(new)) => {
                let count = new.client_cas.len();
                match ready.accepting.write() {
                    Ok(mut accepting) => *accepting = new,
                    Err(poisoned) => *poisoned.into_inner() = new,
                }
                info!(
                    listener,
                    cas = count,
                    "client CAs re-read: new handshakes trust these"
                );
            }
            Err(e) => {
                error!(listener, error = %e, "client CAs not re-read; the old ones are still trusted");
            }
        }
    }

    /// Runs the handshake on `stream`, within `handshake_timeout`. The
    /// bytes it reads are bounded by rustls (a handshake message is at
    /// most 64 KiB).
    pub async fn handshake(&self, stream: TcpStream) -> Result<TlsStream<Capped>, HandshakeError> {
        let Some(ready) = &self.ready else {
            return Err(HandshakeError::NoCertificate);
        };
        let cap = match self.settings.client_ca {
            None => MAX_HANDSHAKE_BYTES,
            Some(_) => MAX_HANDSHAKE_BYTES_WITH_CLIENT_CERTIFICATE,
        };
        match tokio::time::timeout(
            self.settings.handshake_timeout,
            ready.acceptor().accept(Capped::new(stream, cap)),
        )
        .await
        {
            Err(_) => Err(HandshakeError::Timeout),
            Ok(Err(e)) => Err(HandshakeError::of(&e)),
            Ok(Ok(mut stream)) => {
                stream.get_mut().0.uncap();
                Ok(stream)
            }
        }
    }
}

/// Most bytes a client may send during a handshake without client
/// certificates: a ClientHello is a few KiB (with a post-quantum key
/// share, a retry after HelloRetryRequest, or TLS 1.2's last flight,
/// still under 8 KiB). rustls holds a handshake message of up to 64 KiB
/// until it is whole: without this cap any client could make the server
/// hold that much (74 KiB a connection, measured) until `handshake_timeout`.
pub const MAX_HANDSHAKE_BYTES: usize = 16 * 1024;

/// The same with client certificates, whose chain (at most
/// [`MAX_CLIENT_INTERMEDIATES`] intermediates) comes in the handshake.
pub const MAX_HANDSHAKE_BYTES_WITH_CLIENT_CERTIFICATE: usize = 64 * 1024;

/// Most intermediates a client certificate may come with. A client PKI
/// has one or two; a chain of many that all name the same issuer costs
/// the verifier a signature check per candidate (about 70 ms of CPU for
/// a hundred, on the connection's async worker, from a client no CA
/// signed), so a longer one is refused before it is looked at.
pub const MAX_CLIENT_INTERMEDIATES: usize = 4;

/// The client certificate verifier, refusing chains longer than
/// [`MAX_CLIENT_INTERMEDIATES`] before webpki's path building sees them.
#[derive(Debug)]
struct ShortChains(Arc<dyn ClientCertVerifier>);

impl ClientCertVerifier for ShortChains {
    fn offer_client_auth(&self) -> bool {
        self.0.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.0.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.0.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        if intermediates.len() > MAX_CLIENT_INTERMEDIATES {
            return Err(rustls::Error::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure,
            ));
        }
        self.0.verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }

    fn requires_raw_public_keys(&self) -> bool {
        self.0.requires_raw_public_keys()
    }
}

/// The rustls config of `settings`, serving `pair`, trusting `client_cas`
/// (read from `client_ca`) for client certificates.
fn acceptor(
    settings: &TlsSettings,
    pair: &Arc<ServedPair>,
    client_cas: &[CertificateDer<'static>],
) -> Result<TlsAcceptor, LoadError> {
    let versions: &[&SupportedProtocolVersion] = match settings.min_version {
        MinVersion::Tls12 => &[&rustls::version::TLS13, &rustls::version::TLS12],
        MinVersion::Tls13 => &[&rustls::version::TLS13],
    };
    let builder = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(versions)
        .map_err(|e| LoadError::Pem {
            part: Part::Cert,
            path: settings.cert.clone(),
            what: e.to_string(),
        })?;
    let builder = match &settings.client_ca {
        None => builder.with_no_client_auth(),
        Some((path, auth)) => {
            let roots = Arc::new(client_roots(path, client_cas.to_vec())?);
            let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider());
            let verifier = match auth {
                ClientAuth::Required => verifier,
                ClientAuth::Optional => verifier.allow_unauthenticated(),
            };
            let verifier = verifier.build().map_err(|e| LoadError::Pem {
                part: Part::ClientCa,
                path: path.clone(),
                what: e.to_string(),
            })?;
            builder.with_client_cert_verifier(Arc::new(ShortChains(verifier)))
        }
    };
    let mut config = builder.with_cert_resolver(pair.clone());
    // Our order of cipher suites (AEADs only, strongest first), not
    // the client's: a client cannot talk the server down to its
    // weakest suite (testssl.sh rates a client-chosen order HIGH).
    config.ignore_client_order = true;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// The first byte of a TLS connection: a handshake record's content type.
pub const HANDSHAKE_RECORD: u8 = 0x16;

/// True when a connection whose first byte is `first` starts a TLS
/// handshake (on a port with `mode = "optional"`). No text protocol the
/// handlers speak starts with 0x16 (a control character), and HTTP never.
pub fn starts_tls(first: u8) -> bool {
    first == HANDSHAKE_RECORD
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_handshake_record_starts_tls() {
        let table: &[(u8, bool)] = &[
            (0x16, true),
            (b'G', false),
            (b'H', false),
            (b'\n', false),
            (0x15, false),
            (0x17, false),
            (0x80, false),
            (0x00, false),
        ];
        for (first, tls) in table {
            assert_eq!(starts_tls(*first), *tls, "{first:#x}");
        }
    }

    #[test]
    fn every_handshake_error_has_a_listed_label() {
        let all = [
            HandshakeError::Timeout,
            HandshakeError::Closed,
            HandshakeError::NotTls,
            HandshakeError::Incompatible,
            HandshakeError::NoClientCertificate,
            HandshakeError::BadClientCertificate("x"),
            HandshakeError::ClientAlert,
            HandshakeError::NoCertificate,
            HandshakeError::Shutdown,
            HandshakeError::Other,
        ];
        let labels: Vec<&str> = all.iter().map(|e| e.label()).collect();
        assert_eq!(labels, HandshakeError::LABELS);
    }

    #[test]
    fn rustls_errors_map_to_reasons() {
        let wrap = |e: rustls::Error| io::Error::new(io::ErrorKind::InvalidData, e);
        let table = [
            (
                wrap(rustls::Error::NoCertificatesPresented),
                HandshakeError::NoClientCertificate,
            ),
            (
                wrap(rustls::Error::InvalidCertificate(
                    rustls::CertificateError::UnknownIssuer,
                )),
                HandshakeError::BadClientCertificate("it is not signed by a trusted CA"),
            ),
            (
                wrap(rustls::Error::PeerIncompatible(
                    rustls::PeerIncompatible::NoCipherSuitesInCommon,
                )),
                HandshakeError::Incompatible,
            ),
            (
                wrap(rustls::Error::InvalidMessage(
                    rustls::InvalidMessage::InvalidContentType,
                )),
                HandshakeError::NotTls,
            ),
            (
                io::Error::from(io::ErrorKind::UnexpectedEof),
                HandshakeError::Closed,
            ),
            (
                io::Error::from(io::ErrorKind::ConnectionReset),
                HandshakeError::Closed,
            ),
            (io::Error::other("?"), HandshakeError::Other),
        ];
        for (error, reason) in table {
            assert_eq!(HandshakeError::of(&error), reason, "{error}");
        }
    }
}
