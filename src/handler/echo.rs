//! `echo`: every byte the client sends comes back, in order, until it closes.
//!
//! Backpressure is natural: the next read waits until the last chunk was
//! written, so a client that sends but never reads fills its own socket
//! buffers, not the server's memory.

use bytes::BytesMut;
use tokio::io::AsyncReadExt;
use tokio::time::timeout;

use super::{Ended, Handler, HandlerError, Io};
use crate::connection::Connection;

/// Bytes echoed per read.
const ECHO_CHUNK: usize = 64 * 1024;

/// Chunks echoed before the task lets the other connections of its worker
/// run. Without turns, one busy connection is echoed until its client's
/// window is empty while the other clients wait, and they then sleep and are
/// woken far more often: with 8 connections and 1 MiB windows that cost a
/// quarter of the throughput. 4 is the ceiling server's turn as well, and
/// measured best of 1, 2, 4, 8 and 16 (`bench/ANALYSIS.md`).
const CHUNKS_PER_TURN: u32 = 4;

/// The echo handler.
#[derive(Debug, Clone, Copy, Default)]
pub struct Echo;

impl Handler for Echo {
    async fn serve<S: Io>(&self, conn: &mut Connection<S>) -> Result<Ended, HandlerError> {
        let shutdown = conn.shutdown.clone();
        // Allocated when data arrives and given back when the client pauses,
        // so idle connections cost no buffer.
        let mut buffer: Option<BytesMut> = None;
        let mut chunks_in_turn = 0;
        loop {
            if buffer.is_none() {
                tokio::select! {
                    biased;
                    () = shutdown.cancelled() => return Ok(Ended::Shutdown),
                    ready = conn.readable() => ready?,
                }
            }
            let buf = buffer.get_or_insert_with(|| BytesMut::with_capacity(ECHO_CHUNK));
            buf.clear();
            let n = tokio::select! {
                biased;
                () = shutdown.cancelled() => return Ok(Ended::Shutdown),
                read = read_within(conn, buf) => read?,
            };
            if n == 0 {
                return Ok(Ended::ClientClosed);
            }
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
}

/// One read into the buffer's spare capacity, bounded by the idle timeout.
async fn read_within<S: Io>(
    conn: &mut Connection<S>,
    buf: &mut BytesMut,
) -> Result<usize, HandlerError> {
    let idle = conn.settings.idle_timeout;
    match timeout(idle, conn.stream().read_buf(buf)).await {
        Ok(read) => Ok(read?),
        Err(_) => Err(HandlerError::Idle(idle)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connection::test_settings as settings;
    use tokio::io::AsyncWriteExt;
    use tokio_util::sync::CancellationToken;

    #[tokio::test]
    async fn echoes_binary_until_half_close() {
        let (client, server) = tokio::io::duplex(1024);
        let mut conn = Connection::new(
            server,
            "127.0.0.1:1".parse().unwrap(),
            settings(),
            CancellationToken::new(),
        );
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
