//! Deadlines that a client's pace cannot stretch: the first message must
//! arrive within `first_message_timeout` of the connect, and a message must
//! be complete within `message_timeout` of its first byte, however the
//! bytes are dripped. The idle timeout still lets a chat pause between
//! messages. A reply cut by a deadline ends in a reset, never a clean end.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::{TestServer, connect, connect_lines, listener, read_line, read_to_end};

/// A keyword-bot without rules answers everything with this.
const DEFAULT_REPLY: &str = "我不能明白您的意思,好尴尬啊...";

const FAST: &str = "first_message_timeout = \"300ms\"\nmessage_timeout = \"600ms\"";

#[tokio::test]
async fn a_client_that_says_nothing_is_closed_at_the_first_message_timeout() {
    let root = tempfile::tempdir().expect("tempdir");
    let root_key = format!("root = '{}'", root.path().display());
    let server = TestServer::start(
        &[
            listener("echo", "echo", FAST),
            listener("bot", "keyword-bot", FAST),
            listener("files", "download", &format!("{FAST}\n{root_key}")),
        ]
        .concat(),
    );
    for name in ["echo", "bot", "files"] {
        let started = Instant::now();
        let mut conn = connect(server.addr(name)).await;
        assert_eq!(read_to_end(&mut conn).await, b"ERR too slow\n", "{name}");
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(300) && waited < Duration::from_secs(5),
            "{name}: closed after {waited:?}"
        );
    }
    server.shutdown().await;
}

#[tokio::test]
async fn a_line_dripped_byte_by_byte_is_cut_at_the_message_timeout() {
    let server = TestServer::start(&listener("bot", "keyword-bot", FAST));
    let mut bot = connect_lines(server.addr("bot")).await;
    // A first line, then a second one dripped a byte every 100 ms: each
    // byte well within the idle timeout, the line never within 600 ms.
    bot.get_mut().write_all(b"hello\n").await.expect("send");
    assert_eq!(read_line(&mut bot).await, DEFAULT_REPLY);
    let started = Instant::now();
    let mut dripped = 0;
    while dripped < 50 {
        if bot.get_mut().write_all(b"x").await.is_err() {
            break;
        }
        dripped += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
        if started.elapsed() > Duration::from_millis(900) {
            break;
        }
    }
    assert_eq!(read_line(&mut bot).await, "ERR too slow");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(600) && waited < Duration::from_secs(5),
        "cut after {waited:?}"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn a_chat_may_pause_between_messages_longer_than_the_message_timeout() {
    let server = TestServer::start(&listener("bot", "keyword-bot", FAST));
    let mut bot = connect_lines(server.addr("bot")).await;
    for _ in 0..3 {
        bot.get_mut().write_all(b"hello\n").await.expect("send");
        assert_eq!(read_line(&mut bot).await, DEFAULT_REPLY);
        // Longer than both deadlines, shorter than the idle timeout (5 min).
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    server.shutdown().await;
}

#[tokio::test]
async fn a_download_whose_reader_stalls_past_the_idle_timeout_ends_in_a_reset() {
    let root = tempfile::tempdir().expect("tempdir");
    let file: Vec<u8> = (0..64u32 << 20).map(|i| (i % 251) as u8).collect();
    std::fs::write(root.path().join("big.bin"), file).expect("write");
    let server = TestServer::start(&listener(
        "files",
        "download",
        &format!(
            "root = '{}'\nidle_timeout = \"500ms\"\nmin_send_rate = 0",
            root.path().display()
        ),
    ));
    let mut conn = connect(server.addr("files")).await;
    conn.write_all(b"big.bin\n").await.expect("send");
    let mut first = [0u8; 1024];
    tokio::time::timeout(crate::common::LIMIT, conn.read_exact(&mut first))
        .await
        .expect("no data in time")
        .expect("read");
    // The client stops reading: the send stalls, and the idle timeout ends
    // it. What sits in the buffers is then read, and must end in a reset.
    let deadline = Instant::now() + crate::common::LIMIT;
    while server.handle().status().connections > 0 {
        assert!(Instant::now() < deadline, "the stalled send was not ended");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut rest = Vec::new();
    let end = tokio::time::timeout(crate::common::LIMIT, conn.read_to_end(&mut rest))
        .await
        .expect("the server neither finished nor reset");
    let error = end.expect_err("a stalled download ended like a whole file");
    assert_eq!(error.kind(), std::io::ErrorKind::ConnectionReset, "{error}");
    assert!(rest.len() + first.len() < 64 << 20);
    server.shutdown().await;
}
