//! Deadlines that a client's pace cannot stretch: the first message must
//! arrive within `first_message_timeout` of the connect, and a message must
//! be complete within `message_timeout` of its first byte, however the
//! bytes are dripped. The idle timeout still lets a chat pause between
//! messages.

use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;

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
