//! Reloading a running server (what SIGHUP does, through `ServerHandle`):
//! listeners added, removed, changed and moved, while open connections of
//! the listeners that stay are kept; a reload that cannot bind changes
//! nothing; the random-bot's history survives. A reload reaches the open
//! connections of a changed listener at their next request: HTTP
//! keep-alive takes no further request, and a client the new access lists
//! deny is told `ERR access denied` and closed.

use std::net::TcpListener as StdListener;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use tokio::io::BufReader;

use crate::common::{
    LIMIT, TestServer, ask, connect, connect_from, connect_lines, listener, private_listener,
    read_line, read_to_end,
};

/// Sends a line on an echo connection and checks it comes back.
async fn echoes(conn: &mut tokio::net::TcpStream, line: &str) {
    conn.write_all(line.as_bytes()).await.expect("send");
    let mut back = vec![0u8; line.len()];
    tokio::time::timeout(crate::common::LIMIT, conn.read_exact(&mut back))
        .await
        .expect("no echo in time")
        .expect("echo read failed");
    assert_eq!(back, line.as_bytes());
}

fn bot_with_reply(name: &str, reply: &str) -> String {
    listener(
        name,
        "keyword-bot",
        &format!("[[listener.rules]]\nkeywords = [\"ping\"]\nreply = \"{reply}\"\n"),
    )
}

#[tokio::test]
async fn adds_removes_and_changes_listeners_while_open_connections_stay() {
    let before = [
        listener("stays", "echo", ""),
        bot_with_reply("bot", "one"),
        private_listener(11, "goes", "echo", ""),
    ]
    .concat();
    let mut server = TestServer::start(&before);
    let stays = server.addr("stays");
    let goes = server.addr("goes");
    let mut kept = connect(stays).await;
    echoes(&mut kept, "before\n").await;
    let mut old_bot = connect_lines(server.addr("bot")).await;
    assert_eq!(ask(&mut old_bot, "ping\n").await, "one");
    let mut dropped = connect(goes).await;
    echoes(&mut dropped, "before\n").await;

    let after = [
        listener("stays", "echo", ""),
        bot_with_reply("bot", "two"),
        listener("new", "echo", ""),
    ]
    .concat();
    let summary = server.reload(&after).await.expect("reload");
    assert_eq!(summary.added, ["new"]);
    assert_eq!(summary.removed, ["goes"]);
    assert_eq!(summary.changed, ["bot"]);
    assert!(summary.rebound.is_empty(), "{summary:?}");
    assert_eq!(
        summary.to_string(),
        "added: new; removed: goes; changed: bot"
    );

    // The unchanged listener kept its socket and its open connection.
    assert_eq!(server.addr("stays"), stays);
    echoes(&mut kept, "after\n").await;
    let mut fresh = connect(stays).await;
    echoes(&mut fresh, "fresh\n").await;
    // The changed bot: open conversations keep the old rules, new ones get the new.
    assert_eq!(ask(&mut old_bot, "ping\n").await, "one");
    let mut new_bot = connect_lines(server.addr("bot")).await;
    assert_eq!(ask(&mut new_bot, "ping\n").await, "two");
    // The new listener serves.
    let mut added = connect(server.addr("new")).await;
    echoes(&mut added, "hello\n").await;
    // The removed one was asked to finish (echo closes) and no longer accepts.
    assert!(read_to_end(&mut dropped).await.is_empty());
    assert!(
        tokio::net::TcpStream::connect(goes).await.is_err(),
        "the removed listener's port still accepts"
    );
    assert_eq!(server.handle().status().listeners, 3);
    server.shutdown().await;
}

#[tokio::test]
async fn a_reload_that_cannot_bind_changes_nothing() {
    let before = [listener("a", "echo", ""), bot_with_reply("bot", "one")].concat();
    let mut server = TestServer::start(&before);
    let mut open = connect(server.addr("a")).await;
    echoes(&mut open, "x\n").await;
    let taken = StdListener::bind("127.0.0.1:0").expect("bind");
    let busy = taken.local_addr().expect("addr");
    let after = [
        bot_with_reply("bot", "two"),
        format!("[[listener]]\nname = \"b\"\nbind = \"{busy}\"\nhandler = \"echo\"\n"),
    ]
    .concat();
    let err = server.reload(&after).await.expect_err("the port is taken");
    assert!(err.to_string().contains("\"b\""), "{err}");
    // Still the old config: "a" serves, its connection is open, the bot
    // still says "one".
    echoes(&mut open, "y\n").await;
    let mut bot = connect_lines(server.addr("bot")).await;
    assert_eq!(ask(&mut bot, "ping\n").await, "one");
    assert_eq!(server.handle().status().listeners, 2);
    drop(taken);
    server.shutdown().await;
}

#[tokio::test]
async fn a_moved_listener_keeps_its_open_connections() {
    let mut server = TestServer::start(&private_listener(12, "m", "echo", ""));
    let old = server.addr("m");
    let mut open = connect(old).await;
    echoes(&mut open, "x\n").await;
    let moved = private_listener(13, "m", "echo", "");
    let summary = server.reload(&moved).await.expect("reload");
    assert_eq!(summary.rebound, ["m"]);
    let new = server.addr("m");
    assert_eq!(new.ip().to_string(), "127.0.0.13");
    echoes(&mut open, "still here\n").await;
    let mut fresh = connect(new).await;
    echoes(&mut fresh, "y\n").await;
    assert!(tokio::net::TcpStream::connect(old).await.is_err());
    server.shutdown().await;
}

#[tokio::test]
async fn the_random_bot_history_survives_a_reload_of_its_listener() {
    let bot = |goodbye: &str| {
        listener(
            "rb",
            "random-bot",
            &format!("goodbye_reply = \"{goodbye}\""),
        )
    };
    let mut server = TestServer::start(&bot("bye one"));
    let mut conn = connect_lines(server.addr("rb")).await;
    for _ in 0..50 {
        ask(&mut conn, "before\n").await;
    }
    let summary = server.reload(&bot("bye two")).await.expect("reload");
    assert_eq!(summary.changed, ["rb"]);
    // Each reply is drawn from the whole history: with 50 "before" entries
    // kept, 20 draws all missing them has a chance below 1e-30; with the
    // history lost, "before" could never come back.
    let mut conn = connect_lines(server.addr("rb")).await;
    let mut replies = Vec::new();
    for i in 0..20 {
        replies.push(ask(&mut conn, &format!("after {i}\n")).await);
    }
    assert!(
        replies.iter().any(|r| r == "before"),
        "the history was lost: {replies:?}"
    );
    // The new settings apply to the new connection.
    assert_eq!(ask(&mut conn, "bye\n").await, "bye two");
    server.shutdown().await;
}

#[tokio::test]
async fn a_smaller_max_connections_applies_to_new_clients_only() {
    let mut server = TestServer::start(&listener("e", "echo", "max_connections = 2"));
    let addr = server.addr("e");
    let mut a = connect(addr).await;
    let mut b = connect(addr).await;
    echoes(&mut a, "a\n").await;
    echoes(&mut b, "b\n").await;
    server
        .reload(&listener("e", "echo", "max_connections = 1"))
        .await
        .expect("reload");
    // Both stay served; a third client waits in the backlog until the
    // count drops below the new limit of one, i.e. both have closed.
    echoes(&mut a, "a\n").await;
    echoes(&mut b, "b\n").await;
    let mut c = connect(addr).await;
    c.write_all(b"c\n").await.expect("send");
    drop(a);
    let mut byte = [0u8; 1];
    assert!(
        tokio::time::timeout(std::time::Duration::from_millis(200), c.read(&mut byte))
            .await
            .is_err(),
        "served while two were open against a limit of one"
    );
    drop(b);
    let mut back = [0u8; 2];
    tokio::time::timeout(crate::common::LIMIT, c.read_exact(&mut back))
        .await
        .expect("not served after the others closed")
        .expect("read");
    assert_eq!(&back, b"c\n");
    server.shutdown().await;
}

#[tokio::test]
async fn a_new_listener_on_a_removed_listeners_address_takes_its_socket_over() {
    // A fixed port: both configs name it, so only a takeover (not a second
    // bind, which the kernel refuses while the first socket listens) works.
    let port = StdListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let on_port = |name: &str, handler: &str, extra: &str| {
        format!(
            "[[listener]]\nname = \"{name}\"\nbind = \"127.0.0.1:{port}\"\nhandler = \"{handler}\"\n{extra}\n"
        )
    };
    let mut server = TestServer::start(&on_port("old", "echo", ""));
    let mut open = connect(server.addr("old")).await;
    echoes(&mut open, "x\n").await;
    let summary = server
        .reload(&on_port(
            "new",
            "keyword-bot",
            "[[listener.rules]]\nkeywords = [\"ping\"]\nreply = \"pong\"",
        ))
        .await
        .expect("reload");
    assert_eq!(
        (summary.added, summary.removed),
        (vec!["new".to_owned()], vec!["old".to_owned()])
    );
    assert_eq!(server.addr("new").port(), port);
    // The old listener's connection was asked to finish; the port now
    // belongs to the new handler.
    assert!(read_to_end(&mut open).await.is_empty());
    let mut bot = connect_lines(server.addr("new")).await;
    assert_eq!(ask(&mut bot, "ping\n").await, "pong");
    server.shutdown().await;
}

/// One HTTP/1.1 keep-alive GET of `path` on `conn`; the response head and
/// body (read by its Content-Length).
async fn keep_alive_get(
    conn: &mut BufReader<tokio::net::TcpStream>,
    path: &str,
) -> (String, Vec<u8>) {
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n");
    conn.get_mut()
        .write_all(request.as_bytes())
        .await
        .expect("send");
    let mut head = String::new();
    loop {
        let line = read_line(conn).await;
        if line.trim_end().is_empty() {
            break;
        }
        head.push_str(&line);
        head.push('\n');
    }
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no Content-Length in {head}"));
    let mut body = vec![0u8; len];
    tokio::time::timeout(LIMIT, conn.read_exact(&mut body))
        .await
        .expect("no body in time")
        .expect("body");
    (head, body)
}

#[tokio::test]
async fn an_open_keep_alive_connection_gets_no_file_the_reload_took_away() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(dir.path().join("public")).expect("mkdir");
    std::fs::write(dir.path().join("public").join("open.txt"), b"open").expect("write");
    std::fs::write(dir.path().join("secret.txt"), b"secret").expect("write");
    let files = |root: &std::path::Path, extra: &str| {
        private_listener(
            18,
            "files",
            "download",
            &format!("root = '{}'\n{extra}", root.display()),
        )
    };
    let mut server = TestServer::start(&files(dir.path(), ""));
    let addr = server.addr("files");
    let mut denied = BufReader::new(connect_from(2, addr).await);
    let mut allowed = BufReader::new(connect_from(3, addr).await);
    for conn in [&mut denied, &mut allowed] {
        let (head, body) = keep_alive_get(conn, "/secret.txt").await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert_eq!(body, b"secret");
    }
    // The root narrows to public/, and 127.0.0.2 is denied.
    let summary = server
        .reload(&files(&dir.path().join("public"), "deny = [\"127.0.0.2\"]"))
        .await
        .expect("reload");
    assert_eq!(summary.changed, ["files"]);
    // Both open connections take no further request: asked again for the
    // old file, neither gets it (the connection was closed).
    for conn in [&mut denied, &mut allowed] {
        let _ = conn
            .get_mut()
            .write_all(b"GET /secret.txt HTTP/1.1\r\nHost: x\r\n\r\n")
            .await;
        let mut rest = Vec::new();
        let _ = tokio::time::timeout(LIMIT, conn.read_to_end(&mut rest))
            .await
            .expect("the connection stayed open after the reload");
        let rest = String::from_utf8_lossy(&rest);
        assert!(
            !rest.contains("200 OK") && !rest.contains("secret"),
            "{rest}"
        );
    }
    // A new connection from the allowed client gets the new rules.
    let mut fresh = BufReader::new(connect_from(3, addr).await);
    let (head, body) = keep_alive_get(&mut fresh, "/open.txt").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(body, b"open");
    let (head, _) = keep_alive_get(&mut fresh, "/secret.txt").await;
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");
    server.shutdown().await;
}

/// A connection that has sent nothing when a reload comes is served under
/// the new settings, as a new connection would be: opening connections
/// early cannot keep what a reload took away (the narrowed root, a rule).
#[tokio::test]
async fn a_connection_silent_until_after_a_reload_is_served_under_the_new_settings() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(dir.path().join("public")).expect("mkdir");
    std::fs::write(dir.path().join("public").join("open.txt"), b"open").expect("write");
    std::fs::write(dir.path().join("secret.txt"), b"secret").expect("write");
    let config = |root: &std::path::Path, reply: &str| {
        listener("files", "download", &format!("root = '{}'", root.display()))
            + &bot_with_reply("kw", reply)
    };
    let mut server = TestServer::start(&config(dir.path(), "pong"));
    let (files, kw) = (server.addr("files"), server.addr("kw"));
    let mut http = BufReader::new(connect(files).await);
    let mut raw = connect(files).await;
    let mut bot = connect_lines(kw).await;
    // Accepted (their routes taken) before the reload.
    let deadline = tokio::time::Instant::now() + LIMIT;
    while server.handle().status().connections < 3 {
        assert!(tokio::time::Instant::now() < deadline, "not accepted");
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    server
        .reload(&config(&dir.path().join("public"), "PONG"))
        .await
        .expect("reload");
    let (head, _) = keep_alive_get(&mut http, "/secret.txt").await;
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");
    let (head, body) = keep_alive_get(&mut http, "/open.txt").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(body, b"open");
    raw.write_all(b"secret.txt\n").await.expect("send");
    let got = read_to_end(&mut raw).await;
    assert!(
        got.starts_with(b"ERR "),
        "{:?}",
        String::from_utf8_lossy(&got)
    );
    assert_eq!(ask(&mut bot, "ping\n").await, "PONG");
    server.shutdown().await;
}

#[tokio::test]
async fn a_client_the_reload_denies_is_told_so_and_closed_while_others_chat_on() {
    let bots = |extra: &str| {
        [
            private_listener(
                19,
                "kw",
                "keyword-bot",
                &format!("{extra}\n[[listener.rules]]\nkeywords = [\"ping\"]\nreply = \"pong\"\n"),
            ),
            private_listener(19, "rb", "random-bot", extra),
            private_listener(19, "echo", "echo", extra),
            private_listener(19, "metrics", "metrics", ""),
        ]
        .concat()
    };
    let mut server = TestServer::start(&bots(""));
    let mut open = Vec::new();
    for name in ["kw", "rb", "echo"] {
        let addr = server.addr(name);
        let mut denied = BufReader::new(connect_from(2, addr).await);
        let mut allowed = BufReader::new(connect_from(3, addr).await);
        ask(&mut denied, "ping\n").await;
        ask(&mut allowed, "ping\n").await;
        open.push((name, denied, allowed));
    }
    server
        .reload(&bots("deny = [\"127.0.0.2/32\"]"))
        .await
        .expect("reload");
    for (name, denied, allowed) in &mut open {
        // Told once, without asking anything, and closed.
        let mut rest = Vec::new();
        tokio::time::timeout(LIMIT, denied.read_to_end(&mut rest))
            .await
            .expect("the denied client is still connected")
            .expect("read");
        assert_eq!(rest, b"ERR access denied\n", "{name}");
        // The client that stays allowed chats on.
        let reply = ask(allowed, "ping\n").await;
        assert!(!reply.starts_with("ERR"), "{name}: {reply}");
    }
    drop(open);
    // Counted once every connection has closed.
    let deadline = tokio::time::Instant::now() + LIMIT;
    while server.handle().status().connections > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "connections did not close"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let metrics = crate::metrics::scrape(server.addr("metrics")).await;
    for (name, handler) in [
        ("kw", "keyword-bot"),
        ("rb", "random-bot"),
        ("echo", "echo"),
    ] {
        let figure =
            |family: &str, more: &str| crate::metrics::of(&metrics, family, handler, name, more);
        assert_eq!(
            figure(
                "switchboard_error_replies_total",
                ",reason=\"access denied\""
            ),
            1.0,
            "{name}"
        );
        let closed = |reason: &str| {
            figure(
                "switchboard_connections_closed_total",
                &format!(",reason=\"{reason}\""),
            )
        };
        assert_eq!(
            (closed("denied"), closed("client_closed")),
            (1.0, 1.0),
            "{name}"
        );
    }
    server.shutdown().await;
}

#[tokio::test]
async fn a_response_in_flight_during_a_reload_completes_then_the_connection_closes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data: Vec<u8> = (0..8u32 << 20).map(|i| (i % 251) as u8).collect();
    std::fs::write(dir.path().join("big.bin"), &data).expect("write");
    let files = |extra: &str| {
        listener(
            "files",
            "download",
            &format!("root = '{}'\n{extra}", dir.path().display()),
        )
    };
    let mut server = TestServer::start(&files(""));
    let mut conn = BufReader::new(connect(server.addr("files")).await);
    conn.get_mut()
        .write_all(b"GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("send");
    let mut head = String::new();
    loop {
        let line = read_line(&mut conn).await;
        if line.trim_end().is_empty() {
            break;
        }
        head.push_str(&line);
    }
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let mut first = vec![0u8; 1 << 20];
    tokio::time::timeout(LIMIT, conn.read_exact(&mut first))
        .await
        .expect("no body in time")
        .expect("body");
    // A change to the listener while most of the body is still to come.
    server
        .reload(&files("chunk_size = 32768"))
        .await
        .expect("reload");
    let mut rest = Vec::new();
    tokio::time::timeout(LIMIT, conn.read_to_end(&mut rest))
        .await
        .expect("the connection stayed open after its response")
        .expect("the response was cut, not completed");
    first.extend_from_slice(&rest);
    assert!(
        first == data,
        "the body is not the file: {} bytes",
        first.len()
    );
    server.shutdown().await;
}

/// An idle keep-alive connection, which waits for its next request without
/// a buffer (a readiness wait), is still reached by a reload: it closes
/// without the client sending anything, and the next connection gets the
/// new rules.
#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_by_a_reload_without_a_request() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("a.txt"), b"a").expect("write");
    let files = |extra: &str| {
        private_listener(
            23,
            "files",
            "download",
            &format!("root = '{}'\n{extra}", dir.path().display()),
        )
    };
    let mut server = TestServer::start(&files(""));
    let addr = server.addr("files");
    let mut idle = BufReader::new(connect_from(4, addr).await);
    let (head, body) = keep_alive_get(&mut idle, "/a.txt").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(body, b"a");
    // Idle now, between requests: the reload must reach it.
    let summary = server
        .reload(&files("idle_timeout = \"4m\""))
        .await
        .expect("reload");
    assert_eq!(summary.changed, ["files"]);
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(LIMIT, idle.read_to_end(&mut rest))
        .await
        .expect("the idle keep-alive connection stayed open after the reload");
    assert!(rest.is_empty(), "{}", String::from_utf8_lossy(&rest));
    server.shutdown().await;
}

/// A keep-alive connection whose next head is partly read when the reload
/// comes (half a request line, or only the CRLF some clients send after a
/// request, RFC 9112 §2.2) is reached by it too: it closes without an
/// answer at once, as an idle one does, not with a 408 at the end of the
/// head's `message_timeout` (20 s here; 30 s by default).
#[tokio::test]
async fn a_keep_alive_connection_with_its_next_head_begun_is_closed_by_a_reload() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("a.txt"), b"a").expect("write");
    let files = |extra: &str| {
        private_listener(
            23,
            "files",
            "download",
            &format!(
                "root = '{}'\nmessage_timeout = \"20s\"\n{extra}",
                dir.path().display()
            ),
        )
    };
    let mut server = TestServer::start(&files(""));
    for (round, begun) in [&b"GET /a.t"[..], b"\r\n"].into_iter().enumerate() {
        let addr = server.addr("files");
        let mut conn = BufReader::new(connect_from(4, addr).await);
        let (head, body) = keep_alive_get(&mut conn, "/a.txt").await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert_eq!(body, b"a");
        conn.get_mut().write_all(begun).await.expect("send");
        // The bytes in before the reload.
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let summary = server
            .reload(&files(&format!("idle_timeout = \"{}m\"", 4 + round)))
            .await
            .expect("reload");
        assert_eq!(summary.changed, ["files"]);
        let mut rest = Vec::new();
        let closed = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            conn.read_to_end(&mut rest),
        )
        .await;
        assert!(
            closed.is_ok(),
            "{:?}: still open 5 s after the reload",
            String::from_utf8_lossy(begun)
        );
        assert!(rest.is_empty(), "{}", String::from_utf8_lossy(&rest));
    }
    server.shutdown().await;
}
