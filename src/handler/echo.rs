//! `echo`: every byte the client sends comes back, in order, until it closes.
//!
//! Backpressure is natural: the next read waits until the last chunk was
//! written, so a client that sends but never reads fills its own socket
//! buffers, not the server's memory.

use bytes::BytesMut;
use serde::Deserialize;

use super::probe::{Probe, ProbeContext, Verdict, shown};
use super::{BuildContext, DatagramSource, Ended, Handler, HandlerError};
use crate::conn::{Connection, Incoming, Io};

/// Bytes echoed per read.
const ECHO_CHUNK: usize = 64 * 1024;

/// Chunks echoed before the task lets the other connections of its worker
/// run. Without turns, one busy connection is echoed until its client's
/// window is empty while the other clients wait, and they then sleep and are
/// woken far more often: with 8 connections and 1 MiB windows that cost a
/// quarter of the throughput. 4 is the ceiling server's turn as well, and
/// measured best of 1, 2, 4, 8 and 16 (`bench/ANALYSIS.md`).
const CHUNKS_PER_TURN: u32 = 4;

/// Settings of the echo handler: it has none.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EchoConfig {}

/// The echo handler.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Echo;

impl Handler for Echo {
    const NAME: &'static str = "echo";
    type Config = EchoConfig;

    fn build(_config: &EchoConfig, _ctx: &BuildContext<'_>, _previous: Option<&Self>) -> Self {
        Echo
    }

    async fn serve<S: Io>(&self, conn: &mut Connection<S>) -> Result<Ended, HandlerError> {
        // Allocated when data arrives and given back when the client pauses,
        // so idle connections cost no buffer.
        let mut buffer: Option<BytesMut> = None;
        let mut chunks_in_turn = 0;
        loop {
            // After a read that filled the buffer more may have arrived, or
            // the client stopped exactly there: only what is there now is
            // read with the buffer kept, and otherwise the pause is waited
            // for without it.
            let mut read = None;
            if let Some(buf) = buffer.as_mut() {
                buf.clear();
                read = conn.read_chunk_now(buf).await?;
            }
            let read = match read {
                Some(read) => read,
                None => {
                    buffer = None;
                    if let Incoming::Shutdown = conn.readable().await? {
                        return Ok(Ended::Shutdown);
                    }
                    let buf = buffer.insert(BytesMut::with_capacity(ECHO_CHUNK));
                    conn.read_chunk(buf).await?
                }
            };
            let buf = buffer.get_or_insert_with(|| BytesMut::with_capacity(ECHO_CHUNK));
            let n = match read {
                Incoming::Data(n) => n,
                Incoming::Closed => return Ok(Ended::ClientClosed),
                Incoming::Shutdown => return Ok(Ended::Shutdown),
            };
            conn.send(buf).await?;
            if n < ECHO_CHUNK {
                // The read drained what had arrived: the client is pausing.
                buffer = None;
            }
            chunks_in_turn += 1;
            if chunks_in_turn == CHUNKS_PER_TURN {
                chunks_in_turn = 0;
                tokio::task::yield_now().await;
            }
        }
    }

    /// A random token ending in "\r\n" must come back byte for byte. The bots
    /// and download strip the "\r", so even a random-bot with an empty
    /// history (which answers a message with itself) fails it.
    const DATAGRAMS: bool = true;

    /// Every byte comes back, as it came: the datagram itself.
    async fn datagram(
        &self,
        datagram: &[u8],
        _from: &DatagramSource<'_>,
        reply: &mut Vec<u8>,
    ) -> bool {
        reply.extend_from_slice(datagram);
        true
    }

    fn probe(_config: &EchoConfig, ctx: &ProbeContext<'_>) -> Probe {
        let line = format!("switchboard probe {}\r\n", ctx.token).into_bytes();
        let expected = line.clone();
        Probe {
            send: line,
            check: Box::new(move |reply, closed| {
                let n = reply.len().min(expected.len());
                if reply[..n] != expected[..n] {
                    Verdict::Fail(format!(
                        "sent back {} instead of the probe line",
                        shown(reply)
                    ))
                } else if n == expected.len() {
                    Verdict::Pass("echoed")
                } else if closed {
                    Verdict::Fail(format!("closed after echoing {}", shown(reply)))
                } else {
                    Verdict::More
                }
            }),
        }
    }

    fn summary(_config: &EchoConfig) -> String {
        String::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conn::test_connection;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn echoes_binary_until_half_close() {
        let (client, server) = tokio::io::duplex(1024);
        let mut conn = test_connection(server);
        // The connection is dropped when the handler returns: the client sees EOF.
        let handler = tokio::spawn(async move { (Echo.serve(&mut conn).await, conn.bytes()) });
        let data: Vec<u8> = (0..=255u8).cycle().take(10_000).collect();
        let (mut rd, mut wr) = tokio::io::split(client);
        let sent = data.clone();
        let writer = tokio::spawn(async move {
            wr.write_all(&sent).await.unwrap();
            wr.shutdown().await.unwrap();
            wr
        });
        let mut got = Vec::new();
        rd.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, data);
        let (ended, bytes) = handler.await.unwrap();
        assert_eq!(ended.unwrap(), Ended::ClientClosed);
        assert_eq!(bytes, (10_000, 10_000));
        drop(writer.await.unwrap());
    }
}
