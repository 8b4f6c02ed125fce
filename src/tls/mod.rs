//! TLS on a TCP listener (rustls, with the *ring* provider): the
//! `[listener.tls]` settings, the certificate files and what is read from
//! them, the pair served and its rotation without a restart, and the
//! handshake a connection goes through after admission.
//!
//! A TLS connection reaches the handlers as a stream that has a socket
//! (for `SO_LINGER` and `SO_SNDBUF`) but is not plaintext: files go
//! through it in bounded chunks, as `sendfile(2)` cannot encrypt (and
//! kernel TLS is not used).

pub(crate) mod capped;
pub(crate) mod material;
pub(crate) mod rotation;
pub(crate) mod service;
pub(crate) mod settings;
pub(crate) mod words;

pub use settings::{ClientAuth, MinVersion, Mode, TlsSettings};
