//! The tutorial's clients done right, in the same binary: `send` (its TCP
//! client, 2.4, and with `--udp` its UDP programs, 1.2), `chat` (its robot
//! client, 3.1 and 3.3) and `get` (its
//! download client, 2.7: over HTTP with sizes and resume, or the raw
//! protocol). Every connect, read and write is bounded in time, every run
//! has a deadline, and every line, listing and response head is bounded
//! in size. Nothing a server says reaches a terminal unescaped (`terminal`)
//! unless `--raw` asks for its bytes. Over TCP each speaks plaintext or
//! TLS (`tls`: `get https://`, `send --tls`, `chat --tls`) through one
//! stream type (`stream`); `target` reads `get`'s address or URL.

mod datagram;
mod get;
mod line_client;
mod lines;
mod stream;
pub(crate) mod target;
mod terminal;
mod tls;

use std::time::Duration;

use tokio::net::TcpStream;
use tokio::time::timeout;

#[cfg(any(test, feature = "fuzzing"))]
pub(crate) use get::listing_entries;
pub use get::{GetError, GetOptions, get};
pub use line_client::{LineOptions, Sent};
pub use lines::{chat, send};
pub use target::{GetTarget, get_target};
pub use terminal::{Shown, escape_bytes, escape_text};
pub use tls::{ClientTls, TlsOptions, TlsSetupError, Trust};
pub(crate) use tls::{peer_expiry, rustls_error};

/// Longest reply line a line client reads.
const MAX_LINE: usize = 64 * 1024;

/// The instant `limit` from now; a limit too long to add (`--timeout
/// 1000000000y`) is about thirty years, as good as never.
pub(crate) fn after(limit: std::time::Duration) -> tokio::time::Instant {
    let now = tokio::time::Instant::now();
    now.checked_add(limit)
        .or_else(|| now.checked_add(Duration::from_secs(30 * 365 * 86_400)))
        .unwrap_or(now)
}

/// What is wrong with `addr` as a server's address, if a glance can tell:
/// the usual slips (a URL, no port) get what to write instead of the
/// resolver's "invalid socket address".
fn address_mistake(addr: &str) -> Option<String> {
    if let Some((scheme, rest)) = addr.split_once("://") {
        let host_port = rest.split('/').next().unwrap_or(rest);
        let tls = if scheme.eq_ignore_ascii_case("https") {
            " with --tls"
        } else {
            ""
        };
        return Some(format!(
            "ADDR is HOST:PORT, not a URL: write {host_port}{tls}"
        ));
    }
    let port = addr.rsplit_once(':').map(|(_, port)| port);
    if !port.is_some_and(|port| !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit())) {
        return Some(format!(
            "ADDR is HOST:PORT: {addr} has no port (for example 127.0.0.1:1111)"
        ));
    }
    None
}

/// [`address_mistake`] as the error a connect would give, naming `addr`.
fn check_address(addr: &str) -> std::io::Result<()> {
    match address_mistake(addr) {
        Some(mistake) => Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("cannot connect to {addr}: {mistake}"),
        )),
        None => Ok(()),
    }
}

/// Connects to `addr` (`host:port`) within `limit`; an error names `addr`.
async fn connect(addr: &str, limit: Duration) -> std::io::Result<TcpStream> {
    check_address(addr)?;
    let named =
        |e: std::io::Error| std::io::Error::new(e.kind(), format!("cannot connect to {addr}: {e}"));
    match timeout(limit, TcpStream::connect(addr)).await {
        Ok(stream) => {
            let stream = stream.map_err(named)?;
            stream.set_nodelay(true).map_err(named)?;
            Ok(stream)
        }
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!(
                "cannot connect to {addr}: no connection within {}",
                humantime::format_duration(limit)
            ),
        )),
    }
}

#[cfg(test)]
mod address_tests {
    use super::address_mistake;

    #[test]
    fn the_usual_slips_in_an_address_say_what_to_write() {
        let cases = [
            ("127.0.0.1:1111", None),
            ("localhost:10086", None),
            ("[::1]:10010", None),
            (
                "http://127.0.0.1:1111/hello.txt",
                Some("write 127.0.0.1:1111"),
            ),
            (
                "https://127.0.0.1:1111",
                Some("write 127.0.0.1:1111 with --tls"),
            ),
            ("127.0.0.1", Some("has no port")),
            ("127.0.0.1:", Some("has no port")),
            ("127.0.0.1:http", Some("has no port")),
            ("[::1]", Some("has no port")),
        ];
        for (addr, says) in cases {
            let got = address_mistake(addr);
            match says {
                None => assert_eq!(got, None, "{addr}"),
                Some(part) => assert!(
                    got.as_deref().is_some_and(|m| m.contains(part)),
                    "{addr}: {got:?}"
                ),
            }
        }
    }
}
