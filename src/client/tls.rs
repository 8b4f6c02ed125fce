//! TLS for the clients (`get https://`, `send --tls`, `chat --tls`) and
//! for `probe`: the rustls client config built from the command line
//! (the system's roots, `--cacert FILE`, or `--insecure`; `--cert` and
//! `--key` for a client certificate), the handshake bounded in time, and
//! its failures said in one line each, with what to do: a certificate not
//! trusted, for another name, expired; a port that does not speak TLS; a
//! server that wants a client certificate.
//!
//! The server name is the host of the address: a name is checked against
//! the certificate's DNS names, an IP address against its IP addresses.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{
    AlertDescription, CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore,
};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout_at};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::tls::material::{MAX_PEM_BYTES, provider};
use crate::tls::words::{certificate_problem, key_problem};

/// Whose certificates the client trusts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trust {
    /// The system's CA certificates (rustls-native-certs).
    System,
    /// Only the CAs in this PEM file (`--cacert FILE`).
    CaFile(PathBuf),
    /// No verification at all (`--insecure`).
    Insecure,
}

/// What the command line says about TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsOptions {
    /// Whose certificates are trusted.
    pub trust: Trust,
    /// A client certificate chain and its key (`--cert FILE --key FILE`).
    pub identity: Option<(PathBuf, PathBuf)>,
}

/// Why the TLS options cannot be used: a file named on the command line,
/// or a system without CA certificates. Said before any connection.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    /// A file could not be read, or is too large to be PEM.
    #[error("{flag} {}: {why}", path.display())]
    File {
        /// `--cacert`, `--cert` or `--key`.
        flag: &'static str,
        /// The file.
        path: PathBuf,
        /// What went wrong.
        why: String,
    },
    /// The key is not the certificate's, or not one rustls can sign with.
    #[error("--key {} does not go with --cert {}: {why}", key.display(), cert.display())]
    Mismatch {
        /// The certificate.
        cert: PathBuf,
        /// The key.
        key: PathBuf,
        /// What rustls said.
        why: String,
    },
    /// The system has no CA certificates rustls can load.
    #[error(
        "no CA certificates could be loaded from this system{0}: use --cacert FILE to name the \
         CA that signed the server's certificate (or --insecure to skip verification)"
    )]
    NoSystemRoots(String),
    /// The crypto provider cannot make a client config (never with *ring*).
    #[error("TLS cannot be set up: {0}")]
    Provider(String),
}

/// A client's TLS, ready to connect: the rustls config and whether it
/// verifies anything.
#[derive(Clone)]
pub struct ClientTls {
    config: Arc<ClientConfig>,
    trust: Trust,
    has_identity: bool,
}

impl fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientTls")
            .field("trust", &self.trust)
            .field("has_identity", &self.has_identity)
            .finish_non_exhaustive()
    }
}

impl ClientTls {
    /// Reads the files `options` names and builds the client config.
    pub fn new(options: &TlsOptions) -> Result<ClientTls, TlsSetupError> {
        let provider = provider();
        let builder = versions(provider.clone())?;
        let builder = match &options.trust {
            Trust::Insecure => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate::new(provider))),
            Trust::CaFile(path) => builder.with_root_certificates(roots_from(path)?),
            Trust::System => builder.with_root_certificates(system_roots()?),
        };
        let config = match &options.identity {
            None => builder.with_no_client_auth(),
            Some((cert, key)) => {
                let chain = certificates("--cert", cert)?;
                let key_der = private_key(key)?;
                builder
                    .with_client_auth_cert(chain, key_der)
                    .map_err(|e| match &e {
                        // The certificate itself, not the pair.
                        rustls::Error::InvalidCertificate(problem) => TlsSetupError::File {
                            flag: "--cert",
                            path: cert.clone(),
                            why: certificate_problem(problem).to_owned(),
                        },
                        _ => TlsSetupError::Mismatch {
                            cert: cert.clone(),
                            key: key.clone(),
                            why: key_problem(&e),
                        },
                    })?
            }
        };
        Ok(ClientTls {
            config: Arc::new(config),
            trust: options.trust.clone(),
            has_identity: options.identity.is_some(),
        })
    }

    /// A config that accepts any certificate and names no server: what
    /// `probe` uses against its own listeners (it reads the certificate's
    /// expiry itself).
    pub(crate) fn unverified() -> Result<ClientTls, TlsSetupError> {
        let provider = provider();
        let config = versions(provider.clone())?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate::new(provider)))
            .with_no_client_auth();
        Ok(ClientTls {
            config: Arc::new(config),
            trust: Trust::Insecure,
            has_identity: false,
        })
    }

    /// True with `--insecure`: nothing is verified.
    pub fn insecure(&self) -> bool {
        self.trust == Trust::Insecure
    }

    /// Runs the handshake over `tcp` with the server at `addr`
    /// (`host:port`, whose host is the name checked), done by `until`.
    /// `plain_hint` is what to try against a port that does not speak
    /// TLS (`http://`, or "without --tls"). Every error is one line that
    /// names `addr`.
    pub(crate) async fn handshake(
        &self,
        tcp: TcpStream,
        addr: &str,
        until: Instant,
        plain_hint: &str,
    ) -> io::Result<TlsStream<TcpStream>> {
        let name = server_name(addr)?;
        let limit = until.saturating_duration_since(Instant::now());
        let connector = TlsConnector::from(self.config.clone());
        match timeout_at(until, connector.connect(name, tcp)).await {
            Ok(Ok(stream)) => Ok(stream),
            Ok(Err(e)) => Err(self.explain(e, addr, plain_hint)),
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "{addr}: no TLS handshake within {} (the server accepted the connection but \
                     did not answer TLS)",
                    humantime::format_duration(round(limit))
                ),
            )),
        }
    }

    /// A handshake's (or a first read's) failure as one line: what
    /// happened, about `addr`, and what to do.
    pub(crate) fn explain(&self, e: io::Error, addr: &str, plain_hint: &str) -> io::Error {
        let kind = e.kind();
        let Some(tls) = rustls_error(&e) else {
            return match kind {
                io::ErrorKind::UnexpectedEof => io::Error::new(
                    kind,
                    format!(
                        "{addr} closed the connection during the TLS handshake: is it a \
                         plaintext port? {plain_hint}"
                    ),
                ),
                _ => io::Error::new(kind, format!("{addr}: TLS handshake: {e}")),
            };
        };
        let words = self.say(tls, addr, plain_hint);
        io::Error::new(
            kind,
            Explained {
                words,
                source: tls.clone(),
            },
        )
    }

    fn say(&self, tls: &rustls::Error, addr: &str, plain_hint: &str) -> String {
        let trusted = match &self.trust {
            Trust::CaFile(path) => format!("the CAs of {}", path.display()),
            _ => "the system's CAs".to_owned(),
        };
        match tls {
            rustls::Error::InvalidCertificate(cert) => match cert {
                CertificateError::UnknownIssuer | CertificateError::BadSignature => format!(
                    "certificate not trusted: {addr}'s certificate is not signed by {trusted}; \
                     use --cacert FILE (the CA that signed it), or --insecure"
                ),
                CertificateError::NotValidForName => {
                    format!(
                        "{addr}'s certificate is not valid for the name {}",
                        host(addr)
                    )
                }
                CertificateError::NotValidForNameContext { presented, .. } => format!(
                    "{addr}'s certificate is not valid for the name {} (it is for {})",
                    host(addr),
                    if presented.is_empty() {
                        "no name".to_owned()
                    } else {
                        presented.join(", ")
                    }
                ),
                CertificateError::Expired => format!("{addr}'s certificate has expired"),
                CertificateError::ExpiredContext { not_after, .. } => format!(
                    "{addr}'s certificate has expired (on {})",
                    http_date(not_after)
                ),
                CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                    format!(
                        "{addr}'s certificate is not valid yet (is this machine's clock right?)"
                    )
                }
                other => format!(
                    "{addr}'s certificate was refused: {}",
                    certificate_problem(other)
                ),
            },
            rustls::Error::InvalidMessage(_)
            | rustls::Error::InappropriateMessage { .. }
            | rustls::Error::InappropriateHandshakeMessage { .. } => {
                format!("{addr} did not answer TLS: is it a plaintext port? {plain_hint}")
            }
            rustls::Error::AlertReceived(
                AlertDescription::CertificateRequired | AlertDescription::HandshakeFailure,
            ) if !self.has_identity => format!(
                "{addr} refused the TLS handshake: it requires a client certificate (give one \
                 with --cert FILE --key FILE)"
            ),
            rustls::Error::AlertReceived(
                alert @ (AlertDescription::BadCertificate
                | AlertDescription::UnknownCA
                | AlertDescription::CertificateExpired
                | AlertDescription::CertificateUnknown
                | AlertDescription::AccessDenied),
            ) if self.has_identity => format!(
                "{addr} refused our client certificate (--cert): {}",
                alert_words(*alert)
            ),
            rustls::Error::AlertReceived(alert) => {
                format!("{addr} ended the TLS handshake: {}", alert_words(*alert))
            }
            rustls::Error::PeerIncompatible(why) => format!(
                "{addr}: no TLS version or cipher suite in common with the server ({why:?})"
            ),
            other => format!("{addr}: TLS: {other}"),
        }
    }
}

/// The builder of a client config with the provider's safe versions
/// (TLS 1.2 and 1.3).
fn versions(
    provider: Arc<CryptoProvider>,
) -> Result<rustls::ConfigBuilder<ClientConfig, rustls::WantsVerifier>, TlsSetupError> {
    ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsSetupError::Provider(e.to_string()))
}

/// A TLS failure said in words, with the rustls error it was.
#[derive(Debug, thiserror::Error)]
#[error("{words}")]
struct Explained {
    words: String,
    #[source]
    source: rustls::Error,
}

/// The rustls error inside an I/O error of tokio-rustls (or of
/// [`ClientTls::explain`]), if it is one.
pub(crate) fn rustls_error(e: &io::Error) -> Option<&rustls::Error> {
    let inner = e.get_ref()?;
    inner
        .downcast_ref::<rustls::Error>()
        .or_else(|| inner.downcast_ref::<Explained>().map(|x| &x.source))
}

/// An alert as words.
fn alert_words(alert: AlertDescription) -> String {
    match alert {
        AlertDescription::BadCertificate => "bad certificate".into(),
        AlertDescription::UnknownCA => "unknown CA (it does not trust the CA of ours)".into(),
        AlertDescription::CertificateExpired => "certificate expired".into(),
        AlertDescription::CertificateRequired => "certificate required".into(),
        AlertDescription::HandshakeFailure => "handshake failure".into(),
        AlertDescription::ProtocolVersion => "protocol version (no version in common)".into(),
        other => format!("alert {other:?}"),
    }
}

/// A duration shown to a tenth of a second (what is left of a bound
/// after the connect: `1s`, not `998ms 312us`).
fn round(d: Duration) -> Duration {
    let tenths = d.as_millis().div_ceil(100);
    Duration::from_millis(u64::try_from(tenths * 100).unwrap_or(u64::MAX))
}

/// A certificate time as an HTTP date.
fn http_date(at: &UnixTime) -> String {
    UNIX_EPOCH
        .checked_add(Duration::from_secs(at.as_secs()))
        .map_or_else(|| "a date out of range".into(), httpdate::fmt_http_date)
}

/// The host of `host:port` (without the brackets of an IPv6 address).
pub(crate) fn host(addr: &str) -> &str {
    let host = addr.rsplit_once(':').map_or(addr, |(host, _)| host);
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
}

/// The name checked in the server's certificate: the host of `addr`.
fn server_name(addr: &str) -> io::Result<ServerName<'static>> {
    ServerName::try_from(host(addr).to_owned()).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{addr}: {} is not a host name or an IP address a certificate can name",
                host(addr)
            ),
        )
    })
}

/// Reads a PEM file named by `flag`, bounded in size.
fn read_pem(flag: &'static str, path: &Path) -> Result<Vec<u8>, TlsSetupError> {
    use std::io::Read;
    let fail = |why: String| TlsSetupError::File {
        flag,
        path: path.to_owned(),
        why,
    };
    let file = std::fs::File::open(path).map_err(|e| fail(e.to_string()))?;
    let mut bytes = Vec::new();
    file.take(MAX_PEM_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| fail(e.to_string()))?;
    if bytes.len() as u64 > MAX_PEM_BYTES {
        return Err(fail(format!(
            "larger than {MAX_PEM_BYTES} bytes: not a PEM file"
        )));
    }
    Ok(bytes)
}

/// The certificates of a PEM file; at least one.
fn certificates(
    flag: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsSetupError> {
    let bytes = read_pem(flag, path)?;
    let fail = |why: String| TlsSetupError::File {
        flag,
        path: path.to_owned(),
        why,
    };
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| fail(format!("not a PEM certificate file ({e})")))?;
    if certs.is_empty() {
        return Err(fail(
            "no certificate in it (expected -----BEGIN CERTIFICATE-----)".into(),
        ));
    }
    Ok(certs)
}

/// The private key of `--key`.
fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsSetupError> {
    let bytes = read_pem("--key", path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| TlsSetupError::File {
        flag: "--key",
        path: path.to_owned(),
        why: match e {
            rustls::pki_types::pem::Error::NoItemsFound => {
                "no private key in it (expected -----BEGIN PRIVATE KEY-----)".into()
            }
            e => format!("not a PEM private key ({e})"),
        },
    })
}

/// The CAs of `--cacert FILE`.
fn roots_from(path: &Path) -> Result<RootCertStore, TlsSetupError> {
    let mut roots = RootCertStore::empty();
    for cert in certificates("--cacert", path)? {
        roots.add(cert).map_err(|e| TlsSetupError::File {
            flag: "--cacert",
            path: path.to_owned(),
            why: format!("not a CA certificate rustls can use ({e})"),
        })?;
    }
    Ok(roots)
}

/// The system's CAs; none is an error that says to use `--cacert`.
fn system_roots() -> Result<RootCertStore, TlsSetupError> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        let why = found
            .errors
            .first()
            .map_or(String::new(), |e| format!(" ({e})"));
        return Err(TlsSetupError::NoSystemRoots(why));
    }
    Ok(roots)
}

/// The leaf certificate a finished handshake got, and when it expires.
pub(crate) fn peer_expiry(stream: &TlsStream<TcpStream>) -> Option<SystemTime> {
    let (_, session) = stream.get_ref();
    let leaf = session.peer_certificates()?.first()?;
    crate::tls::material::describe(leaf).0
}

/// `--insecure` (and `probe`): every certificate is accepted, for any
/// name; the handshake's signatures are still checked, so the session is
/// with the holder of the certificate's key.
#[derive(Debug)]
pub(crate) struct AcceptAnyCertificate {
    provider: Arc<CryptoProvider>,
}

impl AcceptAnyCertificate {
    fn new(provider: Arc<CryptoProvider>) -> Self {
        AcceptAnyCertificate { provider }
    }
}

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_server_name_is_the_host_of_the_address() {
        for (addr, host_part) in [
            ("localhost:443", "localhost"),
            ("127.0.0.1:1111", "127.0.0.1"),
            ("[::1]:8443", "::1"),
            ("example.com:1", "example.com"),
        ] {
            assert_eq!(host(addr), host_part, "{addr}");
            assert!(server_name(addr).is_ok(), "{addr}");
        }
        assert!(matches!(
            server_name("127.0.0.1:1").unwrap(),
            ServerName::IpAddress(_)
        ));
        assert!(server_name("bad_name!:1").is_err());
    }

    #[test]
    fn files_that_cannot_be_used_are_named_with_their_flag() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let options = TlsOptions {
            trust: Trust::CaFile(missing.clone()),
            identity: None,
        };
        let e = ClientTls::new(&options).unwrap_err().to_string();
        assert!(
            e.starts_with("--cacert ") && e.contains("missing.pem"),
            "{e}"
        );
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not pem\n").unwrap();
        let options = TlsOptions {
            trust: Trust::CaFile(empty),
            identity: None,
        };
        let e = ClientTls::new(&options).unwrap_err().to_string();
        assert!(e.contains("no certificate in it"), "{e}");
    }
}
