//! The keyword bot and the random-reply bot over real TCP: the seed clients'
//! unframed messages, framing across writes, encodings, farewells, limits.

use std::collections::HashSet;
use std::time::Duration;

use tokio::io::{AsyncWriteExt, BufReader};

use crate::common::{TestServer, ask, connect, connect_lines, listener, read_line, read_to_end};

const SEED_RULES: &str = r#"
default_reply = "我不能明白您的意思,好尴尬啊..."
goodbye_reply = "再见"
[[listener.rules]]
keywords = ["你好", "hello"]
reply = "你好"
[[listener.rules]]
keywords = ["名字", "name"]
reply = "我是python29号"
[[listener.rules]]
keywords = ["时间", "time"]
reply = "当前时间是:{time}"
[[listener.rules]]
keywords = ["who"]
reply = "{listener} talking to {peer}"
"#;

fn keyword_bot(extra: &str) -> TestServer {
    TestServer::start(&listener(
        "kw",
        "keyword-bot",
        &format!("{extra}\n{SEED_RULES}"),
    ))
}

#[tokio::test]
async fn answers_seed_client_messages_without_newline() {
    let server = keyword_bot("");
    let mut conn = connect_lines(server.addr("kw")).await;
    // The seed client sends bare text and waits: the quiet gap ends the message.
    assert_eq!(ask(&mut conn, "hello").await, "你好");
    assert_eq!(ask(&mut conn, "你的名字").await, "我是python29号");
    let time = ask(&mut conn, "现在时间").await;
    let stamp = time
        .strip_prefix("当前时间是:")
        .unwrap_or_else(|| panic!("time reply {time:?}"));
    assert!(
        chrono::NaiveDateTime::parse_from_str(stamp, "%Y-%m-%d %H:%M:%S").is_ok(),
        "{stamp:?}"
    );
    assert_eq!(
        ask(&mut conn, "¿qué?").await,
        "我不能明白您的意思,好尴尬啊..."
    );
    let peer = conn.get_ref().local_addr().unwrap();
    assert_eq!(
        ask(&mut conn, "WHO are you\n").await,
        format!("kw talking to {peer}")
    );
}

#[tokio::test]
async fn two_messages_in_one_write_get_two_replies() {
    let server = keyword_bot("");
    let mut conn = connect_lines(server.addr("kw")).await;
    conn.get_mut().write_all(b"hello\r\nname\n").await.unwrap();
    assert_eq!(read_line(&mut conn).await, "你好");
    assert_eq!(read_line(&mut conn).await, "我是python29号");
}

/// Messages sent before their replies are read are answered together
/// (their replies gathered into a few writes): every reply comes, in order.
#[tokio::test]
async fn pipelined_messages_get_every_reply_in_order() {
    let server = keyword_bot("");
    let mut conn = connect_lines(server.addr("kw")).await;
    let mut batch = Vec::new();
    for i in 0..300 {
        batch.extend_from_slice(if i % 3 == 0 {
            b"hello\n"
        } else if i % 3 == 1 {
            b"\n"
        } else {
            b"NAME?\n"
        });
    }
    conn.get_mut().write_all(&batch).await.unwrap();
    // Blank lines get no reply: 200 replies, alternating.
    for i in 0..200 {
        let want = if i % 2 == 0 {
            "你好"
        } else {
            "我是python29号"
        };
        assert_eq!(read_line(&mut conn).await, want, "reply {i}");
    }
    assert_eq!(ask(&mut conn, "hello\n").await, "你好");
}

/// The replies to the messages before a bad one are written before the
/// error that ends the connection.
#[tokio::test]
async fn replies_before_a_too_long_message_come_before_its_error() {
    let server = keyword_bot("max_message_bytes = 100");
    let mut stream = connect(server.addr("kw")).await;
    let mut batch = b"hello\nname\n".to_vec();
    batch.extend_from_slice(&[b'a'; 5000]);
    stream.write_all(&batch).await.unwrap();
    let rest = read_to_end(&mut stream).await;
    assert_eq!(
        String::from_utf8_lossy(&rest),
        "你好\n我是python29号\nERR message too long\n"
    );
}

/// A farewell among pipelined messages: the replies before it, the
/// goodbye, the close, and nothing for what came after it.
#[tokio::test]
async fn a_pipelined_farewell_ends_the_chat_after_the_replies_before_it() {
    let server = TestServer::start(&listener("rb", "random-bot", ""));
    let mut stream = connect(server.addr("rb")).await;
    stream.write_all(b"hi\nhi\nbye\nho\n").await.unwrap();
    let rest = read_to_end(&mut stream).await;
    assert_eq!(String::from_utf8_lossy(&rest), "hi\nhi\nbye\n");
}

#[tokio::test]
async fn a_message_split_over_writes_is_one_message() {
    // The parts arrive ~30 ms apart, far below the 2s quiet gap: the server
    // reads them one by one, and only the newline ends the message.
    let server = keyword_bot("message_gap = \"2s\"");
    let mut conn = connect_lines(server.addr("kw")).await;
    // No Nagle: each part leaves as its own segment instead of waiting for an ACK.
    conn.get_ref().set_nodelay(true).unwrap();
    let parts = ["wh", "at is your ", "na", "me?\n"];
    for (i, part) in parts.iter().enumerate() {
        conn.get_mut().write_all(part.as_bytes()).await.unwrap();
        conn.get_mut().flush().await.unwrap();
        if i + 1 < parts.len() {
            // The network's timing: lets the server read what has arrived so far.
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
    }
    assert_eq!(read_line(&mut conn).await, "我是python29号");
    // Had the parts been taken as several messages, their replies would come first.
    assert_eq!(ask(&mut conn, "hello\n").await, "你好");
}

#[tokio::test]
async fn after_a_newline_a_pause_inside_a_line_does_not_split_it() {
    // Default 50 ms gap; the pause inside the second line is four times longer.
    let server = keyword_bot("");
    let mut conn = connect_lines(server.addr("kw")).await;
    conn.get_ref().set_nodelay(true).unwrap();
    assert_eq!(ask(&mut conn, "hello\n").await, "你好");
    conn.get_mut().write_all(b"what is your na").await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    conn.get_mut().write_all(b"me?\n").await.unwrap();
    // Split by the gap, "what is your na" would get the default reply first.
    assert_eq!(read_line(&mut conn).await, "我是python29号");
    assert_eq!(ask(&mut conn, "hello\n").await, "你好");
}

#[tokio::test]
async fn gbk_in_gbk_out() {
    let server = keyword_bot("encoding = \"gbk\"");
    let mut stream = connect(server.addr("kw")).await;
    let (hello, _, _) = encoding_rs::GBK.encode("你好");
    stream.write_all(&hello).await.unwrap();
    let mut conn = BufReader::new(stream);
    let mut line = Vec::new();
    tokio::time::timeout(
        crate::common::LIMIT,
        tokio::io::AsyncBufReadExt::read_until(&mut conn, b'\n', &mut line),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(line, b"\xc4\xe3\xba\xc3\n", "reply is not GBK 你好");
}

#[tokio::test]
async fn bytes_that_do_not_decode_are_replaced_not_fatal() {
    let server = keyword_bot("");
    let mut conn = connect_lines(server.addr("kw")).await;
    assert_eq!(
        ask(&mut conn, "\u{fffd}").await,
        "我不能明白您的意思,好尴尬啊..."
    );
    conn.get_mut()
        .write_all(b"\xff\xfe hello \xc0\n")
        .await
        .unwrap();
    assert_eq!(read_line(&mut conn).await, "你好");
}

#[tokio::test]
async fn too_long_message_gets_one_err_line_and_a_close() {
    let server = keyword_bot("max_message_bytes = 100");
    let mut stream = connect(server.addr("kw")).await;
    stream.write_all(&[b'a'; 5000]).await.unwrap();
    let rest = read_to_end(&mut stream).await;
    assert_eq!(rest, b"ERR message too long\n");
    // The listener still serves.
    let mut conn = connect_lines(server.addr("kw")).await;
    assert_eq!(ask(&mut conn, "hello\n").await, "你好");
}

#[tokio::test]
async fn keyword_bot_says_goodbye_at_shutdown() {
    let server = keyword_bot("");
    let mut conn = connect_lines(server.addr("kw")).await;
    assert_eq!(ask(&mut conn, "hello\n").await, "你好");
    server.begin_shutdown();
    assert_eq!(read_line(&mut conn).await, "再见");
    assert!(read_to_end(conn.get_mut()).await.is_empty());
    assert_eq!(server.shutdown().await.abandoned, 0);
}

#[tokio::test]
async fn random_bot_replies_from_the_shared_history() {
    let server = TestServer::start(&listener("rb", "random-bot", ""));
    let addr = server.addr("rb");
    let mut first = connect_lines(addr).await;
    // The history is empty: the only entry to pick is the message itself.
    assert_eq!(ask(&mut first, "alpha").await, "alpha");
    for _ in 0..49 {
        assert_eq!(ask(&mut first, "alpha\n").await, "alpha");
    }
    // Another client: 50 of 51+ entries are "alpha", so "alpha" shows up
    // (the chance that 10 replies all miss it is below 1e-16).
    let mut second = connect_lines(addr).await;
    let mut replies = HashSet::new();
    for i in 0..10 {
        replies.insert(ask(&mut second, &format!("beta{i}\n")).await);
    }
    assert!(replies.contains("alpha"), "history not shared: {replies:?}");
    let sent: HashSet<String> = std::iter::once("alpha".to_owned())
        .chain((0..10).map(|i| format!("beta{i}")))
        .collect();
    assert!(
        replies.is_subset(&sent),
        "replied something never sent: {replies:?}"
    );
}

#[tokio::test]
async fn farewell_ends_the_chat() {
    let server = TestServer::start(&listener(
        "rb",
        "random-bot",
        "farewell = [\"bye\", \"再见\"]\ngoodbye_reply = \"see you, {peer}\"",
    ));
    let mut conn = connect_lines(server.addr("rb")).await;
    assert_eq!(ask(&mut conn, "hi\n").await, "hi");
    let peer = conn.get_ref().local_addr().unwrap();
    assert_eq!(ask(&mut conn, "  BYE \n").await, format!("see you, {peer}"));
    assert!(read_to_end(conn.get_mut()).await.is_empty());
    let mut conn = connect_lines(server.addr("rb")).await;
    assert!(ask(&mut conn, "再见").await.starts_with("see you"));
    // Farewells are not recorded: the history holds only "hi".
    let mut conn = connect_lines(server.addr("rb")).await;
    for _ in 0..5 {
        let reply = ask(&mut conn, "ho\n").await;
        assert!(reply == "hi" || reply == "ho", "{reply:?}");
    }
}

#[tokio::test]
async fn random_bot_says_goodbye_at_shutdown() {
    let server = TestServer::start(&listener("rb", "random-bot", ""));
    let mut conn = connect_lines(server.addr("rb")).await;
    assert_eq!(ask(&mut conn, "x\n").await, "x");
    server.begin_shutdown();
    assert_eq!(read_line(&mut conn).await, "bye");
    assert!(read_to_end(conn.get_mut()).await.is_empty());
}
