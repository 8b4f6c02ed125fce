//! Two switchboard replicas behind a real HAProxy (`mode tcp`, round
//! robin, `send-proxy-v2`, a health check that says the random-bot's
//! farewell and expects its goodbye), sharing one random-bot history in a
//! real redis-server, all on loopback: replies are drawn from what every
//! client sent through either replica; `kill -9` of a replica loses no
//! acknowledged message and the other serves; a replica stopped with
//! SIGTERM closes its listener first while HAProxy sends new clients to
//! the other, none of them failing; Redis killed and restarted mid-chat
//! gives `ERR history unavailable` (or `ERR history timeout`), then
//! service.
//!
//! Needs Debian's `haproxy` and `redis-server`; without them the test says
//! so and passes, unless SWITCHBOARD_REQUIRE_BALANCERS and
//! SWITCHBOARD_REQUIRE_REDIS are set (as CI sets them).

use std::collections::HashSet;
use std::fs;
use std::io::Read;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::time::timeout;

use crate::balancers::haproxy_stat_row;
use crate::cli::Daemon;
use crate::common::{LIMIT, ask, connect_from};
use crate::history::{Redis, all_sent, ask_until_served, bot_config, have_redis, stored};

fn have_haproxy() -> bool {
    let found = Command::new("haproxy")
        .arg("-v")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found && std::env::var_os("SWITCHBOARD_REQUIRE_BALANCERS").is_some() {
        panic!("haproxy is required (SWITCHBOARD_REQUIRE_BALANCERS is set) but is not usable here");
    }
    if !found {
        eprintln!("skipped: haproxy is not installed (apt-get install haproxy)");
    }
    found
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// HAProxy, killed when dropped.
struct Haproxy {
    child: Child,
    stats: std::path::PathBuf,
}

impl Haproxy {
    fn start(dir: &Path, front: u16, a: u16, b: u16) -> Haproxy {
        let stats = dir.join("haproxy.sock");
        let config = dir.join("haproxy.cfg");
        // retries + redispatch: a connection refused by a replica that is
        // gone or stopping is tried on the other one.
        fs::write(
            &config,
            format!(
                "global\n    stats socket {stats} mode 600 level admin\n    maxconn 500\n\
                 defaults\n    mode tcp\n    timeout connect 2s\n    timeout client 30s\n\
                 \x20   timeout server 30s\n    retries 3\n    option redispatch\n\
                 frontend bots\n    bind 127.0.0.1:{front}\n    default_backend bots\n\
                 backend bots\n    balance roundrobin\n    option tcp-check\n\
                 \x20   tcp-check send-binary 6279650a\n    tcp-check expect string bye\n\
                 \x20   server a 127.0.0.1:{a} send-proxy-v2 check check-send-proxy inter 100ms rise 1 fall 1\n\
                 \x20   server b 127.0.0.1:{b} send-proxy-v2 check check-send-proxy inter 100ms rise 1 fall 1\n",
                stats = stats.display()
            ),
        )
        .expect("write haproxy.cfg");
        let child = Command::new("haproxy")
            .arg("-db")
            .arg("-f")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cannot start haproxy");
        Haproxy { child, stats }
    }

    /// The `show stat` row of `server` in the backend, as columns (and a
    /// panic with its stderr if HAProxy has exited).
    fn row(&mut self, server: &str) -> Option<Vec<String>> {
        if let Ok(Some(status)) = self.child.try_wait() {
            let mut err = String::new();
            if let Some(mut pipe) = self.child.stderr.take() {
                let _ = pipe.read_to_string(&mut err);
            }
            panic!("haproxy exited ({status}):\n{err}");
        }
        haproxy_stat_row(&self.stats, "bots", server)
    }

    /// Waits until HAProxy's check says `server` is `want` (UP, DOWN).
    async fn wait_status(&mut self, server: &str, want: &str) {
        let deadline = Instant::now() + LIMIT;
        loop {
            // Column 17 is `status`.
            let status = self.row(server).and_then(|row| row.get(17).cloned());
            if status.as_deref() == Some(want) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "HAProxy never saw server {server} {want} (last: {status:?})"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Sessions HAProxy sent to `server` so far (column 7, `stot`).
    fn sessions(&mut self, server: &str) -> u64 {
        self.row(server)
            .and_then(|row| row.get(7).and_then(|n| n.parse().ok()))
            .unwrap_or(0)
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What a new client got from one exchange through the balancer.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Exchange {
    /// A reply (a message from the history).
    Reply(String),
    /// The goodbye of a replica shutting down mid-exchange: served, not failed.
    Goodbye,
    /// No reply, an error line, or no connection.
    Failed(String),
}

/// Connects from 127.0.0.`n` through `front`, sends `message`, reads one line.
async fn exchange(n: u8, front: SocketAddr, message: &str) -> Exchange {
    let attempt = async {
        let socket = tokio::net::TcpSocket::new_v4().map_err(|e| e.to_string())?;
        socket
            .bind(SocketAddr::from(([127, 0, 0, n], 0)))
            .map_err(|e| e.to_string())?;
        let conn = socket.connect(front).await.map_err(|e| e.to_string())?;
        let mut conn = BufReader::new(conn);
        conn.get_mut()
            .write_all(format!("{message}\n").as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let mut line = String::new();
        conn.read_line(&mut line).await.map_err(|e| e.to_string())?;
        Ok::<String, String>(line)
    };
    match timeout(LIMIT, attempt).await {
        Ok(Ok(line)) if line.is_empty() => Exchange::Failed("closed without a reply".into()),
        Ok(Ok(line)) if line == "bye\n" => Exchange::Goodbye,
        Ok(Ok(line)) if line.starts_with("ERR") => Exchange::Failed(line),
        Ok(Ok(line)) => Exchange::Reply(line.trim_end().to_owned()),
        Ok(Err(e)) => Exchange::Failed(e),
        Err(_) => Exchange::Failed("no reply in time".into()),
    }
}

#[tokio::test]
async fn two_replicas_behind_haproxy_share_one_history_in_redis() {
    if !have_haproxy() || !have_redis() {
        return;
    }
    let mut redis = Redis::start(&[]);
    let dir = tempfile::tempdir().expect("tempdir");
    let (port_a, port_b, front) = (free_port(), free_port(), free_port());
    let replica = |file: &str, port: u16| {
        bot_config(
            dir.path(),
            file,
            &format!("127.0.0.1:{port}"),
            "proxy_protocol = \"v2\"\ntrusted_proxies = [\"127.0.0.1\"]",
            &format!(
                "backend = \"redis\"\nurl = \"redis://127.0.0.1:{}/0\"\nkey = \"test:scale-out\"\ntimeout = \"500ms\"",
                redis.port
            ),
        )
    };
    let config_a = replica("a.toml", port_a);
    let config_b = replica("b.toml", port_b);
    let mut a = Daemon::start(&config_a);
    let mut b = Daemon::start(&config_b);
    let mut haproxy = Haproxy::start(dir.path(), front, port_a, port_b);
    haproxy.wait_status("a", "UP").await;
    haproxy.wait_status("b", "UP").await;
    let front: SocketAddr = ([127, 0, 0, 1], front).into();

    // 8 clients (127.0.0.5-12), round robin over both replicas: every
    // reply is one of the messages sent, through either replica.
    let mut sent = HashSet::new();
    let mut replies = Vec::new();
    for n in 5..13u8 {
        let mut conn = BufReader::new(connect_from(n, front).await);
        for i in 0..5 {
            let message = format!("client{n}-{i}");
            replies.push(ask(&mut conn, &format!("{message}\n")).await);
            sent.insert(message);
        }
    }
    all_sent(&replies, &sent);
    let (to_a, to_b) = (haproxy.sessions("a"), haproxy.sessions("b"));
    assert!(to_a >= 1 && to_b >= 1, "sessions: a {to_a}, b {to_b}");
    // Messages sent through B come back through A and the other way round:
    // with 40 messages shared, the clients of one replica are answered
    // from the other's too (every client's replies are drawn from all).
    assert!(
        replies.iter().collect::<HashSet<_>>().len() > 10,
        "replies drawn from too few messages: {replies:?}"
    );
    assert_eq!(stored(&config_a), 40);

    // kill -9 of A: nothing acknowledged is lost, and new clients are
    // served by B.
    a.child.kill().expect("kill -9");
    a.child.wait().expect("wait");
    assert_eq!(stored(&config_b), 40);
    for i in 0..20 {
        let message = format!("after-kill-{i}");
        match exchange(5 + (i % 8) as u8, front, &message).await {
            Exchange::Reply(reply) => {
                sent.insert(message);
                assert!(sent.contains(&reply), "reply {reply:?} was never sent");
            }
            other => panic!("new client {i} after kill -9 of a replica: {other:?}"),
        }
    }
    haproxy.wait_status("a", "DOWN").await;
    assert_eq!(stored(&config_b), 60);

    // A is back; then B gets SIGTERM while new clients keep coming: B
    // closes its listener first, HAProxy sends them to A, none fails.
    let mut a = Daemon::start(&config_a);
    haproxy.wait_status("a", "UP").await;
    let outcomes = Arc::new(Mutex::new(Vec::new()));
    let clients = {
        let outcomes = outcomes.clone();
        tokio::spawn(async move {
            for i in 0..150u32 {
                let got = exchange(5 + (i % 8) as u8, front, &format!("drain-{i}")).await;
                outcomes.lock().expect("lock").push(got);
            }
        })
    };
    while outcomes.lock().expect("lock").len() < 30 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    b.signal("TERM");
    let stopped = b.wait_exit(LIMIT);
    timeout(LIMIT * 3, clients)
        .await
        .expect("the clients finished in time")
        .expect("clients task");
    assert!(stopped.success(), "B exited with {stopped}");
    let outcomes = outcomes.lock().expect("lock").clone();
    let failed: Vec<&Exchange> = outcomes
        .iter()
        .filter(|o| matches!(o, Exchange::Failed(_)))
        .collect();
    assert_eq!(outcomes.len(), 150);
    assert!(
        failed.is_empty(),
        "new clients failed during the drain: {failed:?}"
    );
    b.wait_for_log("shutting down");

    // Redis killed and restarted mid-chat, through the balancer: errors on
    // the open connection, then service without reconnecting.
    let mut conn = BufReader::new(connect_from(9, front).await);
    let reply = ask(&mut conn, "before-redis-loss\n").await;
    assert!(!reply.starts_with("ERR"), "{reply}");
    redis.kill();
    // Not stored, or (sent on the connection Redis broke) its fate unknown.
    let during = ask(&mut conn, "during\n").await;
    assert!(
        during == "ERR history unavailable" || during == "ERR history timeout",
        "{during}"
    );
    redis.restart();
    assert_eq!(
        ask_until_served(&mut conn, "redis-back").await,
        "redis-back",
        "an empty Redis holds only this message"
    );
    drop(conn);
    a.signal("TERM");
    assert!(a.wait_exit(LIMIT).success());
}
