//! Test certificates, made with rcgen: a CA, server certificates for
//! `localhost` and 127.0.0.1 (valid for a chosen number of days, or
//! expired), and client certificates, written as PEM files; and the TLS
//! side of the tests: the `[listener.tls]` table of a pair, a rustls
//! client that trusts a CA, its bounded handshake, and the leaf served.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::time::timeout;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, CrlDistributionPoint, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SerialNumber,
};
use time::{Duration, OffsetDateTime};

use crate::common::{LIMIT, connect};

/// A certificate and its key, as PEM files.
#[derive(Debug, Clone)]
pub struct Pair {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The `[listener.tls]` table serving `cert` and `key`, with more keys.
pub fn tls_table(cert: &Path, key: &Path, extra: &str) -> String {
    format!(
        "[listener.tls]\ncert = '{}'\nkey = '{}'\n{extra}\n",
        cert.display(),
        key.display()
    )
}

impl Pair {
    /// The `[listener.tls]` table serving this pair, with more keys.
    pub fn tls_table(&self, extra: &str) -> String {
        tls_table(&self.cert, &self.key, extra)
    }
}

/// A CA whose certificate is at `ca_pem`, which signs what it is asked for.
pub struct Pki {
    dir: PathBuf,
    ca: CertifiedIssuer<'static, KeyPair>,
    /// The CA's certificate (PEM).
    pub ca_pem: PathBuf,
}

fn named(cn: &str) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, cn);
    name
}

impl Pki {
    /// A new CA called `cn`, its files in `dir`.
    pub fn new(dir: &Path, cn: &str) -> Pki {
        let mut params = CertificateParams::default();
        params.distinguished_name = named(cn);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().unwrap();
        let ca = CertifiedIssuer::self_signed(params, key).unwrap();
        let ca_pem = dir.join(format!("{}-ca.pem", cn.replace(' ', "_")));
        std::fs::write(&ca_pem, ca.pem()).unwrap();
        Pki {
            dir: dir.to_owned(),
            ca,
            ca_pem,
        }
    }

    /// A server certificate for `localhost` and 127.0.0.1, valid from a
    /// day ago for `days` days from now (negative: expired), in
    /// `stem.pem` and `stem.key`.
    pub fn server(&self, stem: &str, days: i64) -> Pair {
        let mut params =
            CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
        params.distinguished_name = named("localhost");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        // Where a real CA says its revocation list is (never fetched here).
        params.crl_distribution_points = vec![CrlDistributionPoint {
            uris: vec!["http://127.0.0.1/test-ca.crl".into()],
        }];
        self.sign(stem, params, days)
    }

    /// Like [`Pki::server`], with the serial number `serial` (so that a
    /// test can tell which of several certificates is served).
    pub fn server_with_serial(&self, stem: &str, days: i64, serial: u64) -> Pair {
        let mut params =
            CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
        params.distinguished_name = named("localhost");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.serial_number = Some(SerialNumber::from(serial));
        self.sign(stem, params, days)
    }

    /// A client certificate whose subject is `CN=cn`.
    pub fn client(&self, stem: &str, cn: &str) -> Pair {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name = named(cn);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.sign(stem, params, 30)
    }

    fn sign(&self, stem: &str, mut params: CertificateParams, days: i64) -> Pair {
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::days(2).max(Duration::days(1 - days));
        params.not_after = now + Duration::days(days);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.ca).unwrap();
        let pair = Pair {
            cert: self.dir.join(format!("{stem}.pem")),
            key: self.dir.join(format!("{stem}.key")),
        };
        std::fs::write(&pair.cert, cert.pem()).unwrap();
        std::fs::write(&pair.key, key.serialize_pem()).unwrap();
        pair
    }
}

/// A rustls client config trusting `ca` (PEM), presenting `client` if given.
pub fn client_config(ca: &Path, client: Option<&Pair>) -> Arc<rustls::ClientConfig> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let config = match client {
        None => builder.with_no_client_auth(),
        Some(pair) => {
            let chain = CertificateDer::pem_file_iter(&pair.cert)
                .unwrap()
                .map(Result::unwrap)
                .collect();
            let key = rustls_pki_types::PrivateKeyDer::from_pem_file(&pair.key).unwrap();
            builder.with_client_auth_cert(chain, key).unwrap()
        }
    };
    Arc::new(config)
}

/// Connects with TLS to `addr` as `localhost`.
pub async fn tls_connect(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
) -> std::io::Result<TlsStream<tokio::net::TcpStream>> {
    let tcp = connect(addr).await;
    let name = ServerName::try_from("localhost").unwrap();
    timeout(LIMIT, TlsConnector::from(config).connect(name, tcp))
        .await
        .expect("handshake timed out")
}

/// The leaf certificate a TLS connection was served.
pub fn served_leaf(stream: &TlsStream<tokio::net::TcpStream>) -> Vec<u8> {
    let (_, conn) = stream.get_ref();
    conn.peer_certificates().unwrap()[0].as_ref().to_vec()
}

/// The DER of the first certificate of a PEM file.
pub fn leaf_of(pem: &Path) -> Vec<u8> {
    CertificateDer::pem_file_iter(pem)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .as_ref()
        .to_vec()
}
