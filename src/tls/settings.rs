//! A listener's `[listener.tls]` table: the keys as written, their
//! defaults, and the validated settings. Loading the files the settings
//! name is `material`'s.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// How long a handshake may take by default: a client on a slow mobile
/// link needs two round trips and a certificate; a silent one must not
/// hold its slot for long.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the certificate's files are looked at for a change by default.
pub const DEFAULT_CHECK_INTERVAL: Duration = Duration::from_secs(10);
/// `handshake_timeout`'s range.
pub const HANDSHAKE_TIMEOUT: std::ops::RangeInclusive<Duration> =
    Duration::from_millis(10)..=Duration::from_secs(300);
/// `check_interval`'s range (0 turns the file watch off).
pub const CHECK_INTERVAL: std::ops::RangeInclusive<Duration> =
    Duration::from_millis(100)..=Duration::from_secs(24 * 60 * 60);

/// The `[listener.tls]` keys as written in the file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TlsKeys {
    cert: PathBuf,
    key: PathBuf,
    #[serde(default)]
    client_ca: Option<PathBuf>,
    #[serde(default)]
    client_auth: Option<String>,
    #[serde(default = "default_min_version")]
    min_version: String,
    #[serde(default = "default_handshake_timeout", with = "humantime_serde")]
    handshake_timeout: Duration,
    #[serde(default = "default_mode")]
    mode: String,
    #[serde(default = "default_check_interval", with = "humantime_serde")]
    check_interval: Duration,
}

fn default_min_version() -> String {
    "1.2".into()
}
fn default_handshake_timeout() -> Duration {
    DEFAULT_HANDSHAKE_TIMEOUT
}
fn default_mode() -> String {
    "required".into()
}
fn default_check_interval() -> Duration {
    DEFAULT_CHECK_INTERVAL
}

/// Whether a listener with TLS also serves plaintext on its port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Every connection must start with a TLS handshake.
    Required,
    /// The first byte decides: a TLS record (0x16) is a handshake, anything
    /// else is served as plaintext.
    Optional,
}

/// Whether clients must present a certificate signed by `client_ca`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// A client without a valid certificate is refused at the handshake.
    Required,
    /// A client may present none; one it presents must be valid.
    Optional,
}

/// The oldest protocol version a listener speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MinVersion {
    /// TLS 1.2 and 1.3.
    Tls12,
    /// TLS 1.3 only.
    Tls13,
}

/// A listener's validated TLS settings. The files are named, not loaded:
/// they are read at start, on SIGHUP, and when they change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    /// The certificate chain, leaf first (PEM).
    pub cert: PathBuf,
    /// The private key (PEM: PKCS#8, PKCS#1 RSA or SEC1 EC).
    pub key: PathBuf,
    /// The CAs that sign client certificates, and whether one is required
    /// (`None`: clients are not asked for one).
    pub client_ca: Option<(PathBuf, ClientAuth)>,
    /// The oldest version spoken.
    pub min_version: MinVersion,
    /// The handshake must be complete within this long of its first byte's
    /// wait (the connection's admission).
    pub handshake_timeout: Duration,
    /// TLS only, or TLS and plaintext on one port.
    pub mode: Mode,
    /// How often the files are looked at for a change (`None`: only on
    /// SIGHUP).
    pub check_interval: Option<Duration>,
}

/// A mistake in the table: its key (relative to `tls`) and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct InvalidTls {
    /// The key, such as `client_auth`.
    pub key: &'static str,
    /// What is wrong.
    pub message: String,
}

fn invalid(key: &'static str, message: impl Into<String>) -> InvalidTls {
    InvalidTls {
        key,
        message: message.into(),
    }
}

impl TlsKeys {
    /// The settings these keys say, or the first mistake.
    pub(crate) fn validate(self) -> Result<TlsSettings, InvalidTls> {
        let min_version = match self.min_version.as_str() {
            "1.2" => MinVersion::Tls12,
            "1.3" => MinVersion::Tls13,
            _ => {
                return Err(invalid(
                    "min_version",
                    "min_version must be \"1.2\" (TLS 1.2 and 1.3) or \"1.3\" (TLS 1.3 only)",
                ));
            }
        };
        let mode = match self.mode.as_str() {
            "required" => Mode::Required,
            "optional" => Mode::Optional,
            _ => {
                return Err(invalid(
                    "mode",
                    "mode must be \"required\" (TLS only) or \"optional\" (TLS and plaintext on one port)",
                ));
            }
        };
        let client_auth = match self.client_auth.as_deref() {
            None | Some("required") => ClientAuth::Required,
            Some("optional") => ClientAuth::Optional,
            Some(_) => {
                return Err(invalid(
                    "client_auth",
                    "client_auth must be \"required\" or \"optional\"",
                ));
            }
        };
        if self.client_auth.is_some() && self.client_ca.is_none() {
            return Err(invalid(
                "client_auth",
                "client_auth needs client_ca: the PEM file of the CAs that sign client certificates",
            ));
        }
        if !HANDSHAKE_TIMEOUT.contains(&self.handshake_timeout) {
            return Err(invalid(
                "handshake_timeout",
                format!(
                    "handshake_timeout must be between {} and {}",
                    humantime::format_duration(*HANDSHAKE_TIMEOUT.start()),
                    humantime::format_duration(*HANDSHAKE_TIMEOUT.end())
                ),
            ));
        }
        let check_interval = if self.check_interval.is_zero() {
            None
        } else if CHECK_INTERVAL.contains(&self.check_interval) {
            Some(self.check_interval)
        } else {
            return Err(invalid(
                "check_interval",
                format!(
                    "check_interval must be \"0s\" (only on SIGHUP) or between {} and {}",
                    humantime::format_duration(*CHECK_INTERVAL.start()),
                    humantime::format_duration(*CHECK_INTERVAL.end())
                ),
            ));
        };
        Ok(TlsSettings {
            cert: self.cert,
            key: self.key,
            client_ca: self.client_ca.map(|ca| (ca, client_auth)),
            min_version,
            handshake_timeout: self.handshake_timeout,
            mode,
            check_interval,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(extra: &str) -> Result<TlsSettings, InvalidTls> {
        let text = format!("cert = \"c.pem\"\nkey = \"k.pem\"\n{extra}");
        let keys: TlsKeys = toml::from_str(&text).unwrap();
        keys.validate()
    }

    #[test]
    fn defaults_are_tls_only_from_1_2_with_no_client_certificates() {
        let s = keys("").unwrap();
        assert_eq!(s.mode, Mode::Required);
        assert_eq!(s.min_version, MinVersion::Tls12);
        assert_eq!(s.client_ca, None);
        assert_eq!(s.handshake_timeout, DEFAULT_HANDSHAKE_TIMEOUT);
        assert_eq!(s.check_interval, Some(DEFAULT_CHECK_INTERVAL));
    }

    #[test]
    fn each_key_is_validated() {
        let table: &[(&str, Result<(), &str>)] = &[
            ("min_version = \"1.3\"", Ok(())),
            ("min_version = \"1.1\"", Err("min_version")),
            ("mode = \"optional\"", Ok(())),
            ("mode = \"sometimes\"", Err("mode")),
            ("client_ca = \"ca.pem\"", Ok(())),
            ("client_ca = \"ca.pem\"\nclient_auth = \"optional\"", Ok(())),
            (
                "client_ca = \"ca.pem\"\nclient_auth = \"maybe\"",
                Err("client_auth"),
            ),
            ("client_auth = \"required\"", Err("client_auth")),
            ("handshake_timeout = \"1ms\"", Err("handshake_timeout")),
            ("handshake_timeout = \"301s\"", Err("handshake_timeout")),
            ("handshake_timeout = \"2s\"", Ok(())),
            ("check_interval = \"0s\"", Ok(())),
            ("check_interval = \"1ms\"", Err("check_interval")),
        ];
        for (extra, expected) in table {
            let got = keys(extra).map(|_| ()).map_err(|e| e.key);
            assert_eq!(got, *expected, "{extra}");
        }
    }

    #[test]
    fn a_client_ca_alone_requires_client_certificates() {
        let s = keys("client_ca = \"ca.pem\"").unwrap();
        assert_eq!(s.client_ca, Some(("ca.pem".into(), ClientAuth::Required)));
        assert_eq!(
            keys("check_interval = \"0s\"").unwrap().check_interval,
            None
        );
    }
}
