//! UDP listeners: the tutorial's UDP programs (`sendto`, then
//! `recvfrom(1024)`, in UTF-8 and GBK) against echo, keyword-bot and
//! random-bot over UDP; the reflection bound; datagrams over the limit;
//! access lists; a UDP and a TCP listener on one port number; reload and
//! shutdown; a random-bot whose history waits for SQLite.

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::time::{Instant, timeout};

use crate::common::{LIMIT, TestServer, ask, connect_lines, listener};
use crate::metrics::{of, scrape};

/// A UDP client on the loopback address `127.0.0.N` (a distinct source).
async fn client_from(n: u8) -> UdpSocket {
    UdpSocket::bind(format!("127.0.0.{n}:0"))
        .await
        .expect("bind a UDP client")
}

/// Sends `message` as one datagram and returns the reply datagram.
async fn ask_udp(socket: &UdpSocket, addr: SocketAddr, message: &[u8]) -> Vec<u8> {
    socket.send_to(message, addr).await.expect("send");
    let mut buf = vec![0u8; 65_536];
    let (n, from) = timeout(LIMIT, socket.recv_from(&mut buf))
        .await
        .expect("no reply")
        .expect("receive");
    assert_eq!(from, addr, "the reply comes from the listener's address");
    buf.truncate(n);
    buf
}

/// Like [`ask_udp`], sending again each second (up to ten times) while no
/// reply comes, as a UDP client must: under a flood the kernel may drop
/// the datagram before the server sees it.
async fn ask_udp_again(socket: &UdpSocket, addr: SocketAddr, message: &[u8]) -> Vec<u8> {
    let mut buf = vec![0u8; 65_536];
    for _ in 0..10 {
        socket.send_to(message, addr).await.expect("send");
        if let Ok(received) = timeout(Duration::from_secs(1), socket.recv_from(&mut buf)).await {
            let (n, _) = received.expect("receive");
            buf.truncate(n);
            return buf;
        }
    }
    panic!("no reply to ten tries");
}

fn udp_listener(name: &str, handler: &str, extra: &str) -> String {
    listener(name, handler, &format!("transport = \"udp\"\n{extra}"))
}

const HELLO_RULE: &str = "[[listener.rules]]\nkeywords = [\"hello\", \"你好\"]\nreply = \"你好\"\n";

/// The tutorial's UDP client, written as its section 1.2 shows: `sendto`
/// with bytes and an (IP, port) tuple, then `recvfrom(1024)`.
const TUTORIAL_UDP_CLIENT: &str = r#"
import socket, sys
ip, port, message, encoding = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
udp_socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
udp_socket.settimeout(10)
udp_socket.sendto(message.encode(encoding), (ip, port))
recv_data, addr = udp_socket.recvfrom(1024)
sys.stdout.buffer.write(recv_data)
udp_socket.close()
"#;

/// Runs the tutorial's UDP client; its output (the reply datagram), as bytes.
async fn tutorial_client(addr: SocketAddr, message: &str, encoding: &str) -> Vec<u8> {
    let mut command = Command::new("python3");
    command.args([
        "-c",
        TUTORIAL_UDP_CLIENT,
        &addr.ip().to_string(),
        &addr.port().to_string(),
        message,
        encoding,
    ]);
    let out = tokio::task::spawn_blocking(move || command.output())
        .await
        .expect("join")
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "the tutorial's UDP client failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

#[tokio::test]
async fn the_tutorials_udp_programs_get_their_replies_in_utf8_and_gbk() {
    let server = TestServer::start(
        &[
            udp_listener("echo", "echo", ""),
            udp_listener("bot", "keyword-bot", HELLO_RULE),
            udp_listener(
                "bot-gbk",
                "keyword-bot",
                &format!("encoding = \"gbk\"\n{HELLO_RULE}"),
            ),
            udp_listener("random", "random-bot", ""),
            udp_listener("random-gbk", "random-bot", "encoding = \"gbk\""),
        ]
        .concat(),
    );
    // (listener, message, encoding, the reply datagram)
    let cases: [(&str, &str, &str, &[u8]); 5] = [
        // echo: the datagram comes back as it was sent (no newline added).
        ("echo", "你好, echo", "utf-8", "你好, echo".as_bytes()),
        ("echo", "你好", "gbk", b"\xc4\xe3\xba\xc3"),
        // keyword-bot: the reply is a line, in the listener's encoding.
        ("bot", "hello", "utf-8", "你好\n".as_bytes()),
        ("bot-gbk", "你好", "gbk", b"\xc4\xe3\xba\xc3\n"),
        // random-bot: the first message is the only one it can answer with.
        ("random", "第一", "utf-8", "第一\n".as_bytes()),
    ];
    for (listener, message, encoding, reply) in cases {
        assert_eq!(
            tutorial_client(server.addr(listener), message, encoding).await,
            reply,
            "{listener} {message:?} in {encoding}"
        );
    }
    let second = tutorial_client(server.addr("random"), "second", "utf-8").await;
    assert!(
        second == "第一\n".as_bytes() || second == b"second\n",
        "{second:?}"
    );
    assert_eq!(
        tutorial_client(server.addr("random-gbk"), "中文", "gbk").await,
        b"\xd6\xd0\xce\xc4\n"
    );
    server.shutdown().await;
}

/// Datagrams that wait together (the loop takes many in one wake-up, and
/// reuses its buffers from one to the next) are each answered to their
/// own sender, with their own bytes, in the order each sender sent. 20
/// sockets on 4 source addresses send three datagrams each, all before
/// reading a reply, so the loop finds many at once.
#[tokio::test]
async fn datagrams_that_wait_together_are_each_answered_to_their_own_sender_in_order() {
    let server = TestServer::start(
        &[
            udp_listener("echo", "echo", ""),
            udp_listener("bot", "keyword-bot", HELLO_RULE),
        ]
        .concat(),
    );
    // Every other client greets (the bot answers "你好"); the others get
    // the default reply. Lengths differ, so a reply sent to the wrong
    // client, or cut at another's end, shows.
    let message = |i: usize, round: usize| {
        let greeting = if i.is_multiple_of(2) { "hello " } else { "" };
        format!("{greeting}{i} {round} {}", "x".repeat(i * 37 % 300))
    };
    for listener in ["echo", "bot"] {
        let addr = server.addr(listener);
        let mut clients = Vec::new();
        for i in 0..20u8 {
            clients.push(client_from(1 + i % 4).await);
        }
        for round in 0..3 {
            for (i, client) in clients.iter().enumerate() {
                client
                    .send_to(message(i, round).as_bytes(), addr)
                    .await
                    .expect("send");
            }
        }
        let mut buf = vec![0u8; 65_536];
        for (i, client) in clients.iter().enumerate() {
            for round in 0..3 {
                let (n, from) = timeout(LIMIT, client.recv_from(&mut buf))
                    .await
                    .expect("no reply")
                    .expect("receive");
                assert_eq!(from, addr);
                let expected = match (listener, i % 2) {
                    ("echo", _) => message(i, round).into_bytes(),
                    (_, 0) => "你好\n".as_bytes().to_vec(),
                    _ => "我不能明白您的意思,好尴尬啊...\n".as_bytes().to_vec(),
                };
                assert_eq!(
                    String::from_utf8_lossy(&buf[..n]),
                    String::from_utf8_lossy(&expected),
                    "{listener}: client {i}, round {round}"
                );
            }
        }
    }
    server.shutdown().await;
}

#[tokio::test]
async fn a_bot_strips_one_newline_skips_blank_datagrams_and_answers_a_farewell() {
    let server = TestServer::start(
        &[
            udp_listener("bot", "keyword-bot", HELLO_RULE),
            udp_listener("random", "random-bot", ""),
        ]
        .concat(),
    );
    let (bot, random) = (server.addr("bot"), server.addr("random"));
    let client = client_from(2).await;
    assert_eq!(
        ask_udp(&client, bot, b"hello\r\n").await,
        "你好\n".as_bytes()
    );
    // A blank datagram gets no reply: the next reply is the next message's.
    client.send_to(b"\n", random).await.expect("send");
    assert_eq!(ask_udp(&client, random, b"only\n").await, b"only\n");
    // "bye" gets the goodbye, and is not kept in the history.
    assert_eq!(ask_udp(&client, random, b"bye\n").await, b"bye\n");
    let reply = ask_udp(&client, random, b"again").await;
    assert!(reply == b"only\n" || reply == b"again\n", "{reply:?}");
    server.shutdown().await;
}

#[tokio::test]
async fn a_flood_of_one_byte_datagrams_gets_back_no_more_than_the_reply_budget() {
    // The default reply is 43 bytes for a 1-byte request: each reply
    // spends 42 bytes of its source's budget of 2000 a second.
    let server = TestServer::start(
        &[
            udp_listener(
                "bot",
                "keyword-bot",
                &format!("reply_bytes_per_source = \"2000/s\"\n{HELLO_RULE}"),
            ),
            listener("metrics", "metrics", ""),
        ]
        .concat(),
    );
    let bot = server.addr("bot");
    let flooder = std::sync::Arc::new(client_from(2).await);
    let counting = {
        let flooder = flooder.clone();
        tokio::spawn(async move {
            let (mut replies, mut bytes) = (0u64, 0u64);
            let mut buf = vec![0u8; 2048];
            // Until the replies stop: the flood is over, and the budget spent.
            while let Ok(Ok((n, _))) =
                timeout(Duration::from_millis(500), flooder.recv_from(&mut buf)).await
            {
                replies += 1;
                bytes += n as u64;
            }
            (replies, bytes, Instant::now())
        })
    };
    let started = Instant::now();
    const FLOOD: u64 = 20_000;
    for _ in 0..FLOOD {
        flooder.send_to(b"x", bot).await.expect("send");
    }
    // Another source is answered during and after the flood.
    let other = client_from(3).await;
    assert_eq!(
        ask_udp_again(&other, bot, b"hello").await,
        "你好\n".as_bytes()
    );
    let (replies, bytes, ended) = counting.await.expect("join");
    let elapsed = ended.duration_since(started).as_secs_f64();
    // Each reply may be as long as its request for free; the rest comes
    // out of the burst (2000) and 2000 bytes a second.
    let bound = replies + 2000 + (2000.0 * elapsed).ceil() as u64;
    assert!(replies > 0, "the budget allows some replies");
    assert!(
        bytes <= bound,
        "{bytes} bytes in {replies} replies in {elapsed:.2}s: over the budget ({bound})"
    );
    assert!(
        replies < FLOOD / 10,
        "{replies} replies to {FLOOD} datagrams: the budget did not bite"
    );
    // The kernel drops what overflows the socket's receive buffer under a
    // flood; its count (read once a second) makes up the rest: every
    // datagram sent is received or counted as dropped by the kernel.
    let deadline = Instant::now() + LIMIT;
    let figures = loop {
        let figures = scrape(server.addr("metrics")).await;
        let received = of(
            &figures,
            "switchboard_datagrams_received_total",
            "keyword-bot",
            "bot",
            "",
        );
        let kernel = of(
            &figures,
            "switchboard_datagrams_dropped_total",
            "keyword-bot",
            "bot",
            ",reason=\"receive_buffer\"",
        );
        if received + kernel >= FLOOD as f64 {
            // And nothing counted twice (the other source sent up to ten).
            assert!(
                received + kernel <= (FLOOD + 10) as f64,
                "{received} received and {kernel} dropped by the kernel of {FLOOD} sent"
            );
            break figures;
        }
        assert!(
            Instant::now() < deadline,
            "{received} received and {kernel} dropped by the kernel of {FLOOD} sent"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let dropped = of(
        &figures,
        "switchboard_datagrams_dropped_total",
        "keyword-bot",
        "bot",
        ",reason=\"reply_budget\"",
    );
    let received = of(
        &figures,
        "switchboard_datagrams_received_total",
        "keyword-bot",
        "bot",
        "",
    );
    let sent = of(
        &figures,
        "switchboard_datagrams_sent_total",
        "keyword-bot",
        "bot",
        "",
    );
    assert!(
        sent > replies as f64,
        "every reply sent was counted: {sent}"
    );
    // What the kernel did not drop (its receive buffer overflows under a
    // flood) was received, and every datagram received was answered or
    // dropped for the budget.
    assert!(received > replies as f64, "received {received}");
    assert_eq!(
        dropped,
        received - sent,
        "dropped {dropped}, sent {sent}, received {received}"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn a_datagram_over_max_datagram_bytes_is_dropped_and_counted_not_cut() {
    let server = TestServer::start(
        &[
            udp_listener("echo", "echo", "max_datagram_bytes = 100"),
            listener("metrics", "metrics", ""),
        ]
        .concat(),
    );
    let echo = server.addr("echo");
    let client = client_from(2).await;
    client.send_to(&[b'a'; 101], echo).await.expect("send");
    // Datagrams are taken in order: the reply to the next one proves the
    // big one was handled, and nothing came back for it.
    assert_eq!(ask_udp(&client, echo, &[b'b'; 100]).await, [b'b'; 100]);
    let figures = scrape(server.addr("metrics")).await;
    let too_big = of(
        &figures,
        "switchboard_datagrams_dropped_total",
        "echo",
        "echo",
        ",reason=\"too_big\"",
    );
    assert_eq!(too_big, 1.0);
    assert_eq!(
        of(
            &figures,
            "switchboard_datagrams_received_total",
            "echo",
            "echo",
            ""
        ),
        2.0
    );
    assert_eq!(
        of(
            &figures,
            "switchboard_datagrams_sent_total",
            "echo",
            "echo",
            ""
        ),
        1.0
    );
    assert_eq!(
        of(
            &figures,
            "switchboard_received_bytes_total",
            "echo",
            "echo",
            ""
        ),
        201.0
    );
    assert_eq!(
        of(&figures, "switchboard_sent_bytes_total", "echo", "echo", ""),
        100.0
    );
    server.shutdown().await;
}

#[tokio::test]
async fn access_lists_and_the_datagram_rate_apply_per_source() {
    let server = TestServer::start(
        &[
            udp_listener(
                "echo",
                "echo",
                "deny = [\"127.0.0.2\"]\ndatagram_rate_per_source = \"1/h burst 3\"",
            ),
            listener("metrics", "metrics", ""),
        ]
        .concat(),
    );
    let echo = server.addr("echo");
    let denied = client_from(2).await;
    denied.send_to(b"let me in", echo).await.expect("send");
    let limited = client_from(3).await;
    for i in 0..3 {
        let message = format!("m{i}");
        assert_eq!(
            ask_udp(&limited, echo, message.as_bytes()).await,
            message.as_bytes()
        );
    }
    limited.send_to(b"one too many", echo).await.expect("send");
    // A third source is still answered, after the others were handled.
    assert_eq!(ask_udp(&client_from(4).await, echo, b"hi").await, b"hi");
    let mut buf = [0u8; 64];
    for socket in [&denied, &limited] {
        assert!(
            socket.try_recv_from(&mut buf).is_err(),
            "a dropped datagram got a reply"
        );
    }
    let figures = scrape(server.addr("metrics")).await;
    let dropped = |reason: &str| {
        of(
            &figures,
            "switchboard_datagrams_dropped_total",
            "echo",
            "echo",
            &format!(",reason=\"{reason}\""),
        )
    };
    assert_eq!(dropped("denied"), 1.0);
    assert_eq!(dropped("too_fast"), 1.0);
    server.shutdown().await;
}

#[tokio::test]
async fn a_udp_and_a_tcp_listener_share_a_port_number_and_reloads_and_shutdown_apply() {
    let mut server = TestServer::start(&listener("echo", "echo", ""));
    let port = server.addr("echo").port();
    // A UDP echo on the TCP echo's port number, added by a reload.
    let both = [
        listener("echo", "echo", "").replace(":0", &format!(":{port}")),
        udp_listener("echo-udp", "echo", "").replace(":0", &format!(":{port}")),
    ]
    .concat();
    let summary = server.reload(&both).await.expect("reload");
    assert_eq!(summary.added, ["echo-udp"]);
    let addr = server.addr("echo-udp");
    assert_eq!(addr, server.addr("echo"));
    let client = client_from(2).await;
    assert_eq!(ask_udp(&client, addr, b"over udp").await, b"over udp");
    let mut tcp = connect_lines(addr).await;
    assert_eq!(ask(&mut tcp, "over tcp\n").await, "over tcp");
    drop(tcp);
    // The UDP listener changes handler in place: its socket is kept.
    let bot = [
        listener("echo", "echo", "").replace(":0", &format!(":{port}")),
        udp_listener("echo-udp", "keyword-bot", HELLO_RULE).replace(":0", &format!(":{port}")),
    ]
    .concat();
    let summary = server.reload(&bot).await.expect("reload");
    assert_eq!(summary.changed, ["echo-udp"]);
    assert_eq!(ask_udp(&client, addr, b"hello").await, "你好\n".as_bytes());
    // Shutdown closes the UDP socket: a datagram then gets a "port
    // unreachable", which a connected socket reports.
    server.shutdown().await;
    let connected = client_from(2).await;
    connected.connect(addr).await.expect("connect");
    connected.send(b"anyone?").await.expect("send");
    let mut buf = [0u8; 64];
    let err = timeout(LIMIT, connected.recv(&mut buf))
        .await
        .expect("no answer at all")
        .expect_err("a reply after shutdown");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);
}

#[tokio::test]
async fn a_udp_random_bot_shares_an_sqlite_history_with_a_tcp_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("shared.db");
    let history = format!(
        "[listener.history]\nbackend = \"sqlite\"\npath = \"{}\"\n",
        path.display()
    );
    let server = TestServer::start(
        &[
            listener("tcp", "random-bot", &history),
            udp_listener("udp", "random-bot", &history),
        ]
        .concat(),
    );
    let mut tcp = connect_lines(server.addr("tcp")).await;
    assert_eq!(ask(&mut tcp, "from tcp\n").await, "from tcp");
    let client = client_from(2).await;
    // Every reply over UDP (which waits for the SQLite writer) is one of
    // the two messages: the history is one.
    let mut saw_tcp = false;
    for i in 0..40 {
        let reply = ask_udp(&client, server.addr("udp"), format!("udp {i}").as_bytes()).await;
        let reply = String::from_utf8(reply).expect("UTF-8");
        assert!(
            reply == "from tcp\n" || reply.starts_with("udp "),
            "{reply:?}"
        );
        saw_tcp |= reply == "from tcp\n";
    }
    assert!(saw_tcp, "the UDP bot never answered with the TCP message");
    drop(tcp);
    server.shutdown().await;
}
