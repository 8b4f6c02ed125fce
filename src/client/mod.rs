//! The tutorial's clients done right, in the same binary: `send` (its TCP
//! client, 2.4, and with `--udp` its UDP programs, 1.2), `chat` (its robot
//! client, 3.1 and 3.3) and `get` (its
//! download client, 2.7: over HTTP with sizes and resume, or the raw
//! protocol). Every connect, read and write is bounded in time, every run
//! has a deadline, and every line, listing and response head is bounded
//! in size. Nothing a server says reaches a terminal unescaped (`terminal`)
//! unless `--raw` asks for its bytes.

mod datagram;
mod get;
mod line_client;
mod lines;
mod terminal;

use std::time::Duration;

use tokio::net::TcpStream;
use tokio::time::timeout;

#[cfg(any(test, feature = "fuzzing"))]
pub(crate) use get::listing_entries;
pub use get::{GetError, GetOptions, get};
pub use line_client::{LineOptions, Sent};
pub use lines::{chat, send};
pub use terminal::{Shown, escape_bytes, escape_text};

/// Longest reply line a line client reads.
const MAX_LINE: usize = 64 * 1024;

/// The instant `limit` from now; a limit too long to add (`--timeout
/// 1000000000y`) is about thirty years, as good as never.
fn after(limit: std::time::Duration) -> tokio::time::Instant {
    let now = tokio::time::Instant::now();
    now.checked_add(limit)
        .or_else(|| now.checked_add(Duration::from_secs(30 * 365 * 86_400)))
        .unwrap_or(now)
}

/// Connects to `addr` (`host:port`) within `limit`; an error names `addr`.
async fn connect(addr: &str, limit: Duration) -> std::io::Result<TcpStream> {
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
