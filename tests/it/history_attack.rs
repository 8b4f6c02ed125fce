//! The attacker's pass on the random-bot's Redis and SQLite histories: a
//! hostile Redis server (a fake speaking RESP) that answers the script
//! with anything but its picks, a real Redis whose hash another client
//! tampered with, the picks' generator, and a SQLite file another
//! connection writes to. Each message gets a message that was sent, or
//! one `ERR history ...` line; the daemon never panics, its log says an
//! outage once in a bounded line, Redis is never left running the script
//! forever, and service comes back once the backend behaves.

use std::collections::HashSet;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

use crate::cli::Daemon;
use crate::common::{LIMIT, ask, connect_lines};
use crate::history::{Redis, all_sent, ask_until_served, bot_config, chat, have_redis, stored};

fn is_err_history(reply: &str) -> bool {
    reply == "ERR history unavailable" || reply == "ERR history timeout"
}

/// Panics if the daemon logged a panic.
fn no_panic(daemon: &mut Daemon) {
    for line in daemon.log_now() {
        assert!(!line.contains("panic"), "the daemon panicked: {line}");
    }
}

/// What the fake Redis answers to `EVALSHA`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    /// Each message as its own pick, framed right.
    Good,
    /// The right frame less its last byte.
    Cut,
    /// The right frame and two bytes more.
    Extra,
    /// A pick whose length is 0xFFFFFFFF.
    HugeLength,
    /// An array of bulk strings.
    Array,
    /// An array of integers that read as bytes (a frame of one-byte picks).
    IntArray,
    /// An integer.
    Integer,
    /// A nil bulk string.
    Nil,
    /// An error reply of this many bytes, after an escape sequence.
    Error(usize),
    /// A 4 MiB bulk string of zeros.
    Huge,
    /// Not RESP at all.
    Garbage,
    /// Nothing: the connection is held until the mode changes, then closed.
    Silent,
}

/// A Redis server that answers `EVALSHA` as told, and `+OK` to the rest.
struct FakeRedis {
    port: u16,
    answer: Arc<Mutex<Answer>>,
    evals: Arc<AtomicUsize>,
}

impl FakeRedis {
    async fn start() -> FakeRedis {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let answer = Arc::new(Mutex::new(Answer::Good));
        let evals = Arc::new(AtomicUsize::new(0));
        let (a, e) = (answer.clone(), evals.clone());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve_fake(stream, a.clone(), e.clone()));
            }
        });
        FakeRedis {
            port,
            answer,
            evals,
        }
    }

    fn set(&self, answer: Answer) {
        *self.answer.lock().unwrap() = answer;
    }
}

/// One RESP command (an array of bulk strings), `None` at the end.
async fn read_command(stream: &mut BufReader<TcpStream>) -> Option<Vec<Vec<u8>>> {
    let mut line = String::new();
    if stream.read_line(&mut line).await.ok()? == 0 {
        return None;
    }
    let n: usize = line.trim_end().strip_prefix('*')?.parse().ok()?;
    let mut args = Vec::with_capacity(n.min(1024));
    for _ in 0..n {
        line.clear();
        stream.read_line(&mut line).await.ok()?;
        let len: usize = line.trim_end().strip_prefix('$')?.parse().ok()?;
        let mut arg = vec![0; len + 2];
        stream.read_exact(&mut arg).await.ok()?;
        arg.truncate(len);
        args.push(arg);
    }
    Some(args)
}

fn bulk(data: &[u8]) -> Vec<u8> {
    let mut out = format!("${}\r\n", data.len()).into_bytes();
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
    out
}

fn framed(picks: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    for pick in picks {
        out.extend_from_slice(&u32::try_from(pick.len()).unwrap().to_le_bytes());
        out.extend_from_slice(pick);
    }
    out
}

async fn serve_fake(stream: TcpStream, answer: Arc<Mutex<Answer>>, evals: Arc<AtomicUsize>) {
    let mut stream = BufReader::new(stream);
    while let Some(args) = read_command(&mut stream).await {
        if !args[0].eq_ignore_ascii_case(b"EVALSHA") {
            let _ = stream.get_mut().write_all(b"+OK\r\n").await;
            continue;
        }
        evals.fetch_add(1, Ordering::SeqCst);
        // EVALSHA sha 1 key, five arguments, then the messages.
        let messages = &args[9..];
        let now = *answer.lock().unwrap();
        let reply = match now {
            Answer::Good => bulk(&framed(messages)),
            Answer::Cut => {
                let mut frame = framed(messages);
                frame.pop();
                bulk(&frame)
            }
            Answer::Extra => {
                let mut frame = framed(messages);
                frame.extend_from_slice(b"xx");
                bulk(&frame)
            }
            Answer::HugeLength => bulk(b"\xff\xff\xff\xffabc"),
            Answer::Array => b"*2\r\n$1\r\na\r\n$1\r\nb\r\n".to_vec(),
            // [1, 0, 0, 0, 'Z'] per message: a pick "Z" nobody sent
            // would come back if an array were read as the picks, but it
            // is read as the bytes it spells, which is a lie of a server
            // like any other; what matters is no panic.
            Answer::IntArray => {
                let mut out = format!("*{}\r\n", 5 * messages.len()).into_bytes();
                for _ in messages {
                    out.extend_from_slice(b":1\r\n:0\r\n:0\r\n:0\r\n:90\r\n");
                }
                out
            }
            Answer::Integer => b":42\r\n".to_vec(),
            Answer::Nil => b"$-1\r\n".to_vec(),
            Answer::Error(len) => {
                let mut out = b"-ERR \x1b[31m".to_vec();
                out.extend(std::iter::repeat_n(b'e', len));
                out.extend_from_slice(b"\r\n");
                out
            }
            Answer::Huge => bulk(&vec![0; 4 << 20]),
            Answer::Garbage => b"?what\r\n".to_vec(),
            Answer::Silent => {
                let deadline = Instant::now() + LIMIT;
                while *answer.lock().unwrap() == Answer::Silent && Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                return;
            }
        };
        if stream.get_mut().write_all(&reply).await.is_err() {
            return;
        }
    }
}

fn redis_bot(dir: &Path, port: u16, extra: &str, key: &str) -> std::path::PathBuf {
    bot_config(
        dir,
        "switchboard.toml",
        "127.0.0.1:0",
        extra,
        &format!(
            "backend = \"redis\"\nurl = \"redis://127.0.0.1:{port}/0\"\nkey = \"{key}\"\n\
             timeout = \"300ms\""
        ),
    )
}

/// Lines of the daemon's log that say an outage began, once there are
/// `n` of them (within [`LIMIT`]; the log comes through a pipe), and
/// 100 ms more for any line too many.
fn outages(daemon: &mut Daemon, n: usize) -> Vec<String> {
    let lines = |daemon: &mut Daemon| -> Vec<String> {
        (daemon.log_now().iter())
            .filter(|l| l.contains("history unavailable: each message gets"))
            .cloned()
            .collect()
    };
    let deadline = Instant::now() + LIMIT;
    while lines(daemon).len() < n && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(100));
    lines(daemon)
}

#[tokio::test]
async fn a_redis_that_answers_the_script_wrongly_gets_one_err_line_per_message_then_service() {
    let fake = FakeRedis::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = redis_bot(dir.path(), fake.port, "", "k");
    let mut daemon = Daemon::start(&config);
    let addr = daemon.addr("bot");
    let mut conn = connect_lines(addr).await;
    assert_eq!(ask(&mut conn, "hello\n").await, "hello");
    let wrong = [
        Answer::Cut,
        Answer::Extra,
        Answer::HugeLength,
        Answer::Array,
        Answer::Integer,
        Answer::Nil,
        Answer::Error(100_000),
        Answer::Huge,
        Answer::Garbage,
        Answer::Silent,
    ];
    for (round, answer) in wrong.into_iter().enumerate() {
        fake.set(answer);
        for i in 0..3 {
            let reply = ask(&mut conn, &format!("{answer:?}-{i}\n")).await;
            assert!(is_err_history(&reply), "{answer:?}: {reply:?}");
        }
        // Several connections at once: one line each, nothing more.
        let burst: Vec<_> = (0..8)
            .map(|c| tokio::spawn(async move { chat(addr, &[format!("b{c}")]).await }))
            .collect();
        for client in burst {
            let replies = client.await.expect("a client");
            assert_eq!(replies.len(), 1);
            assert!(is_err_history(&replies[0]), "{answer:?}: {replies:?}");
        }
        // Redis behaves again: service on the same connection.
        fake.set(Answer::Good);
        let back = format!("back-{round}");
        assert_eq!(ask_until_served(&mut conn, &back).await, back, "{answer:?}");
        // One outage, one line, bounded however long Redis's error was.
        let lines = outages(&mut daemon, round + 1);
        assert_eq!(lines.len(), round + 1, "{answer:?}: {lines:#?}");
        let line = lines.last().unwrap();
        assert!(
            line.len() < 4096,
            "{answer:?}: a log line of {} bytes",
            line.len()
        );
        assert!(
            !line.contains('\x1b'),
            "{answer:?}: an escape sequence logged"
        );
    }
    // An array of integers is read as the bytes they spell: no panic.
    fake.set(Answer::IntArray);
    let reply = ask(&mut conn, "ints\n").await;
    assert!(reply == "Z" || is_err_history(&reply), "{reply:?}");
    // Every wrong answer was asked for (a message, a burst, the return).
    assert!(fake.evals.load(Ordering::SeqCst) >= 3 * wrong.len());
    no_panic(&mut daemon);
    daemon.signal("TERM");
    assert!(daemon.wait_exit(LIMIT).success());
}

/// Sets `fields` (name, value) of the hash `key` in `redis`.
fn tamper(redis: &Redis, key: &str, fields: &[(&str, &str)]) {
    for (field, value) in fields {
        let reply = redis.command(&format!("HSET {key} {field} {value}"));
        assert!(
            reply.as_deref().is_some_and(|r| r.starts_with(':')),
            "HSET {field} {value}: {reply:?}"
        );
    }
}

#[tokio::test]
async fn a_tampered_redis_hash_never_hangs_the_script_nor_gets_a_reply_never_sent() {
    if !have_redis() {
        return;
    }
    let redis = Redis::start(&["--busy-reply-threshold", "2000"]);
    let dir = tempfile::tempdir().expect("tempdir");
    let config = redis_bot(dir.path(), redis.port, "history_limit = 5", "t");
    let mut daemon = Daemon::start(&config);
    let addr = daemon.addr("bot");
    let mut conn = connect_lines(addr).await;
    let mut sent: Vec<String> = Vec::new();
    // Values past 2^53 (where adding one changes nothing), infinities,
    // NaN (which Lua's tonumber reads), negatives, fractions, garbage,
    // and a first past the last.
    let cases: &[&[(&str, &str)]] = &[
        &[("#last", "1e16")],
        &[("#first", "1e17"), ("#last", "2e17")],
        &[("#first", "-inf")],
        &[("#last", "inf")],
        &[("#last", "nan")],
        &[("#first", "nan"), ("#bytes", "nan")],
        &[("#bytes", "inf")],
        &[("#bytes", "-1e300")],
        &[("#last", "-9223372036854775808")],
        &[("#first", "2.5"), ("#last", "7.25")],
        &[("#first", "garbage"), ("#last", "--"), ("#bytes", "x")],
        &[("#first", "1000000"), ("#last", "3")],
        &[("#first", "0"), ("#last", "4000000")],
    ];
    for (round, case) in cases.iter().enumerate() {
        for i in 0..5 {
            let message = format!("r{round}-{i}");
            sent.push(message.clone());
            chat(addr, std::slice::from_ref(&message)).await;
        }
        tamper(&redis, "t", case);
        for i in 0..6 {
            let message = format!("after{round}-{i}");
            sent.push(message.clone());
            let reply = ask(&mut conn, &format!("{message}\n")).await;
            assert!(
                is_err_history(&reply) || sent.contains(&reply),
                "{case:?}: {reply:?} was never sent"
            );
            // Redis is never left running the script.
            assert_eq!(redis.command("PING").as_deref(), Some("+PONG"), "{case:?}");
        }
        // The history is usable again by the end of the round.
        let message = format!("served{round}");
        sent.push(message.clone());
        let reply = ask_until_served(&mut conn, &message).await;
        assert!(sent.contains(&reply), "{case:?}: {reply:?}");
    }
    no_panic(&mut daemon);
    daemon.signal("TERM");
    daemon.wait_exit(LIMIT);
}

#[tokio::test]
async fn redis_fields_deleted_in_the_middle_are_never_picked_as_empty_replies() {
    if !have_redis() {
        return;
    }
    let redis = Redis::start(&[]);
    let dir = tempfile::tempdir().expect("tempdir");
    let config = redis_bot(dir.path(), redis.port, "history_limit = 50", "holes");
    let mut daemon = Daemon::start(&config);
    let addr = daemon.addr("bot");
    let first: Vec<String> = (0..40).map(|i| format!("old-{i}")).collect();
    chat(addr, &first).await;
    // Another client deletes 39 of the 40 (all but the newest).
    let fields: Vec<String> = (1..40).map(|i| i.to_string()).collect();
    assert_eq!(
        redis.command(&format!("HDEL holes {}", fields.join(" "))),
        Some(":39".to_owned())
    );
    let later: Vec<String> = (0..30).map(|i| format!("new-{i}")).collect();
    let replies = chat(addr, &later).await;
    all_sent(&replies, first.iter().chain(&later));
    // A key of another type: errors, then service once it is gone.
    assert_eq!(redis.command("DEL holes"), Some(":1".to_owned()));
    assert_eq!(redis.command("LPUSH holes x"), Some(":1".to_owned()));
    let mut conn = connect_lines(addr).await;
    for i in 0..3 {
        let reply = ask(&mut conn, &format!("typed-{i}\n")).await;
        assert!(is_err_history(&reply), "{reply:?}");
    }
    assert_eq!(outages(&mut daemon, 1).len(), 1);
    assert_eq!(redis.command("DEL holes"), Some(":1".to_owned()));
    assert_eq!(ask_until_served(&mut conn, "fresh").await, "fresh");
    no_panic(&mut daemon);
    daemon.signal("TERM");
    daemon.wait_exit(LIMIT);
}

#[tokio::test]
async fn the_redis_picks_reach_every_kept_message_batch_after_batch() {
    if !have_redis() {
        return;
    }
    let redis = Redis::start(&[]);
    let dir = tempfile::tempdir().expect("tempdir");
    let config = redis_bot(dir.path(), redis.port, "history_limit = 2", "two");
    let mut daemon = Daemon::start(&config);
    let mut conn = connect_lines(daemon.addr("bot")).await;
    assert_eq!(ask(&mut conn, "m0\n").await, "m0");
    // One message a batch, two kept: the new one or the one before, each
    // half the time from a seed drawn per batch (a seed of 0, or one
    // seed for every batch, would always give the same side).
    let (mut new, mut old) = (0, 0);
    for i in 1..=60 {
        let reply = ask(&mut conn, &format!("m{i}\n")).await;
        if reply == format!("m{i}") {
            new += 1;
        } else {
            assert_eq!(reply, format!("m{}", i - 1));
            old += 1;
        }
    }
    assert!(new >= 5 && old >= 5, "new {new}, old {old}");
    daemon.signal("TERM");
    daemon.wait_exit(LIMIT);
}

fn sqlite_bot(dir: &Path, extra: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let db = dir.join("history.db");
    let config = bot_config(
        dir,
        "switchboard.toml",
        "127.0.0.1:0",
        extra,
        &format!("backend = \"sqlite\"\npath = \"{}\"", db.display()),
    );
    (config, db)
}

/// A second connection to the history file, as another writer.
fn other_writer(db: &Path) -> rusqlite::Connection {
    let conn = rusqlite::Connection::open(db).expect("open the history file");
    conn.busy_timeout(LIMIT).expect("busy timeout");
    conn
}

#[tokio::test]
async fn a_sqlite_row_at_the_largest_id_gets_err_lines_not_a_panic_and_service_once_gone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (config, db) = sqlite_bot(dir.path(), "history_limit = 5");
    let other = other_writer(&db);
    other
        .execute_batch(
            "CREATE TABLE messages (id INTEGER PRIMARY KEY, body BLOB NOT NULL);
             INSERT INTO messages VALUES (1, x'6f6c64'), (9223372036854775807, x'6d6178');",
        )
        .expect("a file with the largest id");
    let mut daemon = Daemon::start(&config);
    let mut conn = connect_lines(daemon.addr("bot")).await;
    for i in 0..3 {
        assert_eq!(
            ask(&mut conn, &format!("full-{i}\n")).await,
            "ERR history unavailable"
        );
    }
    assert_eq!(stored(&config), 2, "nothing stored past the largest id");
    // The row goes: the writer finds the ids free again.
    other
        .execute("DELETE FROM messages WHERE id > 1", [])
        .expect("delete");
    let reply = ask_until_served(&mut conn, "free").await;
    assert!(reply == "free" || reply == "old", "{reply:?}");
    no_panic(&mut daemon);
    daemon.signal("TERM");
    assert!(daemon.wait_exit(LIMIT).success());
}

#[tokio::test]
async fn sqlite_rows_another_writer_put_past_the_last_id_cost_one_batch_and_text_is_a_pick() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (config, db) = sqlite_bot(dir.path(), "history_limit = 4");
    let mut daemon = Daemon::start(&config);
    let addr = daemon.addr("bot");
    let mut conn = connect_lines(addr).await;
    let mut sent: Vec<String> = vec!["foreign".to_owned()];
    for i in 0..3 {
        sent.push(format!("m{i}"));
        ask(&mut conn, &format!("m{i}\n")).await;
    }
    // Ids 4 and 5, where this writer goes next: a TEXT body, and a BLOB.
    other_writer(&db)
        .execute_batch("INSERT INTO messages VALUES (4, 'foreign'), (5, x'666f726569676e');")
        .expect("insert");
    let mut errors = 0;
    let mut foreign = 0;
    for i in 0..40 {
        let message = format!("n{i}");
        sent.push(message.clone());
        let reply = ask(&mut conn, &format!("{message}\n")).await;
        if is_err_history(&reply) {
            errors += 1;
        } else {
            assert!(sent.contains(&reply), "{reply:?} was never sent");
            foreign += usize::from(reply == "foreign");
        }
    }
    assert!(errors <= 1, "{errors} messages refused after one collision");
    assert!(foreign > 0 || errors == 1, "the TEXT row was never picked");
    assert_eq!(stored(&config), 4, "history_limit holds");
    no_panic(&mut daemon);
    daemon.signal("TERM");
    assert!(daemon.wait_exit(LIMIT).success());
}

#[tokio::test]
async fn sqlite_limits_lowered_by_a_reload_hold_under_300_clients_of_the_largest_messages() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (config, _db) = sqlite_bot(dir.path(), "history_limit = 1000\nmax_message_bytes = 2000");
    let mut daemon = Daemon::start(&config);
    let addr = daemon.addr("bot");
    let big = |tag: String| format!("{tag}-{}", "x".repeat(1999 - tag.len()));
    let first: Vec<String> = (0..300).map(|i| big(format!("a{i}"))).collect();
    chat(addr, &first).await;
    assert_eq!(stored(&config), 300);
    // Tighter, then more than a batch (256) of clients at once.
    let (tighter, _) = sqlite_bot(
        dir.path(),
        "history_limit = 20\nhistory_bytes = 30000\nmax_message_bytes = 2000",
    );
    assert_eq!(tighter, config);
    daemon.signal("HUP");
    daemon.wait_for_log("reloaded:");
    let clients: Vec<_> = (0..300)
        .map(|c| {
            let mine = vec![big(format!("c{c}"))];
            tokio::spawn(async move { (chat(addr, &mine).await, mine) })
        })
        .collect();
    let mut sent: HashSet<String> = first.iter().cloned().collect();
    let mut replies = Vec::new();
    for client in clients {
        let (reply, mine) = client.await.expect("a client");
        sent.extend(mine);
        replies.extend(reply);
    }
    assert_eq!(replies.len(), 300);
    all_sent(&replies, &sent);
    // 30000 bytes hold 14 messages of 2000 (+80 each).
    assert_eq!(stored(&config), 14);
    no_panic(&mut daemon);
    daemon.signal("TERM");
    assert!(daemon.wait_exit(LIMIT).success());
}
