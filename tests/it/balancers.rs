//! switchboard behind a real HAProxy (`send-proxy-v2` with its
//! `check-send-proxy` health check, and `send-proxy`) and a real nginx
//! `stream` proxy (`proxy_protocol on`), all on loopback: the bot answers,
//! and the log names, the client behind the balancer; the per-source limit
//! counts that client, not the balancer. The clients connect from
//! 127.0.0.5-8, the balancers forward from 127.0.0.1.
//!
//! Needs Debian's `haproxy`, and `nginx-light` with `libnginx-mod-stream`.
//! Without them the tests say so and pass, unless
//! SWITCHBOARD_REQUIRE_BALANCERS is set (as CI sets it): then they fail.

use std::fs;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::time::timeout;

use crate::cli::Daemon;
use crate::common::{LIMIT, connect_from};

const NGINX_STREAM_MODULE: &str = "/usr/lib/nginx/modules/ngx_stream_module.so";

fn have(tool: &str, args: &[&str], extra: Option<&str>) -> bool {
    let runs = Command::new(tool)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    let found = runs && extra.is_none_or(|path| Path::new(path).exists());
    if !found && std::env::var_os("SWITCHBOARD_REQUIRE_BALANCERS").is_some() {
        panic!("{tool} is required (SWITCHBOARD_REQUIRE_BALANCERS is set) but is not usable here");
    }
    if !found {
        eprintln!(
            "skipped: {tool} is not installed (apt-get install haproxy nginx-light libnginx-mod-stream)"
        );
    }
    found
}

/// A balancer process, killed when dropped.
struct Balancer {
    child: Child,
    name: &'static str,
}

impl Balancer {
    fn start(name: &'static str, command: &mut Command) -> Balancer {
        let child = command
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Balancer { child, name }
    }

    /// Panics with its stderr if it exited.
    fn still_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            let mut err = String::new();
            if let Some(mut pipe) = self.child.stderr.take() {
                let _ = pipe.read_to_string(&mut err);
            }
            panic!("{} exited ({status}):\n{err}", self.name);
        }
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// Waits until `addr` accepts connections (the balancer is up).
async fn wait_listening(addr: SocketAddr, balancer: &mut Balancer) {
    let deadline = Instant::now() + LIMIT;
    while TcpStream::connect(addr).await.is_err() {
        balancer.still_running();
        assert!(
            Instant::now() < deadline,
            "{} never listened on {addr}",
            balancer.name
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A daemon with a keyword-bot behind balancers on 127.0.0.1.
fn bot_daemon(dir: &Path) -> Daemon {
    let config = dir.join("switchboard.toml");
    fs::write(
        &config,
        "[[listener]]\nname = \"bot\"\nbind = \"127.0.0.1:0\"\nhandler = \"keyword-bot\"\n\
         proxy_protocol = \"any\"\ntrusted_proxies = [\"127.0.0.1\"]\nmax_connections_per_source = 1\n\
         [[listener.rules]]\nkeywords = [\"who\"]\nreply = \"you are {peer}\"\n",
    )
    .expect("write config");
    Daemon::start(&config)
}

/// Opens a connection from 127.0.0.`n` through the balancer at `front`,
/// asks "who" and returns the reply and the connection.
async fn who_from(n: u8, front: SocketAddr) -> (String, SocketAddr, BufReader<TcpStream>) {
    let conn = connect_from(n, front).await;
    let local = conn.local_addr().expect("local address");
    let mut conn = BufReader::new(conn);
    conn.get_mut().write_all(b"who\n").await.expect("send");
    let mut line = String::new();
    timeout(LIMIT, conn.read_line(&mut line))
        .await
        .expect("no reply in time")
        .expect("read");
    (line.trim_end().to_owned(), local, conn)
}

/// HAProxy's `show stat` row of `backend/server`, as columns, through its
/// stats socket (column 7 is `stot`, the sessions sent to it; 17 `status`).
pub(crate) fn haproxy_stat_row(socket: &Path, backend: &str, server: &str) -> Option<Vec<String>> {
    let mut stats = std::os::unix::net::UnixStream::connect(socket).ok()?;
    stats.set_read_timeout(Some(LIMIT)).ok()?;
    stats.write_all(b"show stat\n").ok()?;
    let mut csv = String::new();
    stats.read_to_string(&mut csv).ok()?;
    let line = csv
        .lines()
        .find(|l| l.starts_with(&format!("{backend},{server},")))?;
    Some(line.split(',').map(str::to_owned).collect())
}

/// HAProxy's view of its server `backend/s1` (the status column).
fn haproxy_status(socket: &Path, backend: &str) -> Option<String> {
    haproxy_stat_row(socket, backend, "s1").and_then(|row| row.get(17).cloned())
}

#[tokio::test]
async fn behind_haproxy_v2_and_v1_the_client_address_is_answered_logged_and_limited() {
    if !have("haproxy", &["-v"], None) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let mut daemon = bot_daemon(dir.path());
    let bot = daemon.addr("bot");
    let (v2_port, v1_port) = (free_port(), free_port());
    let stats = dir.path().join("haproxy.sock");
    let config = dir.path().join("haproxy.cfg");
    fs::write(
        &config,
        format!(
            "global\n    stats socket {stats} mode 600 level admin\n    maxconn 200\n\
             defaults\n    mode tcp\n    timeout connect 5s\n    timeout client 30s\n    timeout server 30s\n\
             frontend v2\n    bind 127.0.0.1:{v2_port}\n    default_backend v2\n\
             backend v2\n    option tcp-check\n    tcp-check send-binary 77686f0a\n\
             \x20   tcp-check expect rstring ^you.are.127\\.0\\.0\\.1:\n\
             \x20   server s1 {bot} send-proxy-v2 check check-send-proxy inter 100ms rise 1 fall 1\n\
             frontend v1\n    bind 127.0.0.1:{v1_port}\n    default_backend v1\n\
             backend v1\n    server s1 {bot} send-proxy\n",
            stats = stats.display()
        ),
    )
    .expect("write haproxy.cfg");
    let mut haproxy = Balancer::start(
        "haproxy",
        Command::new("haproxy").arg("-db").arg("-f").arg(&config),
    );
    let v2_front: SocketAddr = ([127, 0, 0, 1], v2_port).into();
    let v1_front: SocketAddr = ([127, 0, 0, 1], v1_port).into();
    wait_listening(v2_front, &mut haproxy).await;
    wait_listening(v1_front, &mut haproxy).await;

    // The health check (a PROXY header, "who", and the answer naming the
    // checker itself) passes: the server is UP.
    let deadline = Instant::now() + LIMIT;
    let mut status = None;
    while Instant::now() < deadline {
        status = haproxy_status(&stats, "v2");
        if status.as_deref() == Some("UP") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        status.as_deref(),
        Some("UP"),
        "HAProxy's check-send-proxy check"
    );

    // v2: the reply and the log name the client, and the balancer as `via`.
    let (reply, client, held) = who_from(5, v2_front).await;
    assert_eq!(reply, format!("you are {client}"));
    // v1 (send-proxy) too.
    let (reply, client_v1, conn) = who_from(6, v1_front).await;
    assert_eq!(reply, format!("you are {client_v1}"));
    drop(conn);
    let closed = daemon.wait_for_log(&format!("peer={client_v1}"));
    assert!(closed.contains("via=127.0.0.1:"), "{closed}");

    // The per-source limit (1) counts 127.0.0.5, not HAProxy: its second
    // connection is refused while 127.0.0.7 is served.
    let (reply, _, _second) = who_from(5, v2_front).await;
    assert_eq!(reply, "ERR too many connections from your address");
    let (reply, client7, _third) = who_from(7, v2_front).await;
    assert_eq!(reply, format!("you are {client7}"));
    drop(held);
    haproxy.still_running();
}

#[tokio::test]
async fn behind_nginx_stream_with_proxy_protocol_the_client_address_is_answered_and_logged() {
    if !have("nginx", &["-v"], Some(NGINX_STREAM_MODULE)) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let mut daemon = bot_daemon(dir.path());
    let bot = daemon.addr("bot");
    let port = free_port();
    let config = dir.path().join("nginx.conf");
    fs::write(
        &config,
        format!(
            "load_module {NGINX_STREAM_MODULE};\ndaemon off;\nmaster_process off;\n\
             pid {dir}/nginx.pid;\nerror_log stderr;\nevents {{ worker_connections 64; }}\n\
             stream {{ server {{ listen 127.0.0.1:{port}; proxy_pass {bot}; proxy_protocol on; }} }}\n",
            dir = dir.path().display()
        ),
    )
    .expect("write nginx.conf");
    let mut nginx = Balancer::start(
        "nginx",
        Command::new("nginx")
            .arg("-e")
            .arg("stderr")
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(&config),
    );
    let front: SocketAddr = ([127, 0, 0, 1], port).into();
    wait_listening(front, &mut nginx).await;
    let (reply, client, conn) = who_from(8, front).await;
    assert_eq!(reply, format!("you are {client}"));
    drop(conn);
    let closed = daemon.wait_for_log(&format!("peer={client}"));
    assert!(closed.contains("via=127.0.0.1:"), "{closed}");
    nginx.still_running();
}
