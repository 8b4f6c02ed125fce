//! What rustls and webpki say of a certificate or a key, in words that
//! tell a person what is wrong and how to make one that works: for the
//! server's log and config errors, and for the clients' messages.

use rustls::{CertificateError, InconsistentKeys};

/// Why a certificate was refused, with the fix where there is a usual one.
pub fn certificate_problem(e: &CertificateError) -> &'static str {
    match e {
        CertificateError::UnknownIssuer | CertificateError::BadSignature => {
            "it is not signed by a trusted CA"
        }
        CertificateError::Expired | CertificateError::ExpiredContext { .. } => "it has expired",
        CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
            "it is not valid yet (is the clock right?)"
        }
        CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
            "it is not valid for the name asked for"
        }
        CertificateError::Revoked => "it has been revoked",
        CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. } => {
            "its extendedKeyUsage does not allow this use (serverAuth for a server, \
             clientAuth for a client)"
        }
        CertificateError::BadEncoding => "it is not a well-formed X.509 certificate",
        CertificateError::Other(other) => match other.0.downcast_ref::<webpki::Error>() {
            Some(webpki::Error::CaUsedAsEndEntity) => {
                "it is a CA certificate (basicConstraints CA:TRUE, which `openssl req -x509` \
                 sets by default) presented as its holder's own: make it with \
                 -addext basicConstraints=critical,CA:FALSE"
            }
            Some(webpki::Error::UnsupportedCertVersion) => {
                "it is an X.509 version 1 certificate (made without extensions): make it \
                 with extensions, e.g. `openssl x509 -req ... -extfile FILE` with \
                 basicConstraints=CA:FALSE"
            }
            Some(webpki::Error::RequiredEkuNotFoundContext(_)) => {
                "its extendedKeyUsage does not allow this use (serverAuth for a server, \
                 clientAuth for a client)"
            }
            Some(webpki::Error::UnknownIssuer) => "it is not signed by a trusted CA",
            _ => "it is not a certificate that can be used here",
        },
        _ => "it is not a certificate that can be used here",
    }
}

/// Why a key does not go with its certificate.
pub fn key_problem(e: &rustls::Error) -> String {
    match e {
        rustls::Error::InconsistentKeys(InconsistentKeys::KeyMismatch) => {
            "the key is not the certificate's (it belongs to another pair): name the key \
             made with this certificate"
                .into()
        }
        rustls::Error::InvalidCertificate(cert) => {
            format!("the certificate: {}", certificate_problem(cert))
        }
        rustls::Error::General(what) => {
            format!("the key cannot sign ({what}): use an RSA, ECDSA (P-256, P-384) or Ed25519 key")
        }
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use rustls::OtherError;

    use super::*;

    #[test]
    fn each_refusal_says_what_is_wrong() {
        let other = |e: webpki::Error| CertificateError::Other(OtherError(Arc::new(e)));
        let table = [
            (
                CertificateError::UnknownIssuer,
                "not signed by a trusted CA",
            ),
            (CertificateError::Expired, "expired"),
            (
                other(webpki::Error::CaUsedAsEndEntity),
                "basicConstraints=critical,CA:FALSE",
            ),
            (other(webpki::Error::UnsupportedCertVersion), "version 1"),
            (
                other(webpki::Error::BadDer),
                "not a certificate that can be used",
            ),
        ];
        for (error, words) in table {
            let said = certificate_problem(&error);
            assert!(said.contains(words), "{error:?}: {said}");
        }
        let mismatch = rustls::Error::InconsistentKeys(InconsistentKeys::KeyMismatch);
        assert!(key_problem(&mismatch).contains("not the certificate's"));
    }
}
