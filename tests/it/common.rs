//! Shared helpers of the integration tests: an in-process server started
//! from a TOML string on 127.0.0.1 port 0, and bounded client reads.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use switchboard::{Config, ReloadSummary, Server, ServerHandle, ShutdownReport};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;

/// Upper bound of any single wait in a test; a hang fails instead of blocking CI.
pub const LIMIT: Duration = Duration::from_secs(20);

/// A server running in this test's runtime.
pub struct TestServer {
    addrs: HashMap<String, SocketAddr>,
    handle: ServerHandle,
    stop: CancellationToken,
    task: JoinHandle<ShutdownReport>,
}

impl TestServer {
    /// Parses `toml`, binds every listener and serves them.
    pub fn start(toml: &str) -> TestServer {
        let config =
            Config::from_toml(toml, "test.toml").unwrap_or_else(|e| panic!("test config: {e}"));
        Self::start_config(&config)
    }

    /// Serves an already loaded config.
    pub fn start_config(config: &Config) -> TestServer {
        let server =
            Server::bind(config).unwrap_or_else(|e| panic!("bind: {:#}", anyhow::Error::from(e)));
        let addrs = server
            .listeners()
            .into_iter()
            .map(|l| (l.name, l.addr))
            .collect();
        let handle = server.handle();
        let stop = CancellationToken::new();
        let task = tokio::spawn(server.run(stop.clone().cancelled_owned()));
        TestServer {
            addrs,
            handle,
            stop,
            task,
        }
    }

    /// Applies a new config as SIGHUP does; the listener addresses follow it.
    pub async fn reload(&mut self, toml: &str) -> Result<ReloadSummary, switchboard::ReloadError> {
        let config =
            Config::from_toml(toml, "reload.toml").unwrap_or_else(|e| panic!("test config: {e}"));
        let summary = timeout(LIMIT, self.handle.reload(config))
            .await
            .expect("reload did not finish")?;
        self.addrs = summary
            .listeners
            .iter()
            .map(|l| (l.name.clone(), l.addr))
            .collect();
        Ok(summary)
    }

    /// The running server's handle (status, reload).
    pub fn handle(&self) -> &ServerHandle {
        &self.handle
    }

    /// The address of listener `name`.
    pub fn addr(&self, name: &str) -> SocketAddr {
        *self
            .addrs
            .get(name)
            .unwrap_or_else(|| panic!("no listener {name:?}"))
    }

    /// Starts the graceful shutdown (what SIGTERM does) without waiting.
    pub fn begin_shutdown(&self) {
        self.stop.cancel();
    }

    /// Shuts down gracefully and waits for the server to return.
    pub async fn shutdown(self) -> ShutdownReport {
        self.stop.cancel();
        timeout(LIMIT, self.task)
            .await
            .expect("server did not stop")
            .expect("server task panicked")
    }
}

/// A listener table with the given name, handler and extra keys, on port 0.
pub fn listener(name: &str, handler: &str, extra: &str) -> String {
    format!(
        "[[listener]]\nname = \"{name}\"\nbind = \"127.0.0.1:0\"\nhandler = \"{handler}\"\n{extra}\n"
    )
}

/// Like [`listener`], on a loopback address of its own (`127.0.0.N`): a
/// test that checks that a port was closed must not be fooled by another
/// test of the same run being given that freed port on 127.0.0.1.
pub fn private_listener(ip_last: u8, name: &str, handler: &str, extra: &str) -> String {
    listener(name, handler, extra).replace("127.0.0.1:0", &format!("127.0.0.{ip_last}:0"))
}

/// Connects to `addr` from the loopback address `127.0.0.N` (a distinct
/// client), bounded in time.
pub async fn connect_from(n: u8, addr: SocketAddr) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind(SocketAddr::new(std::net::IpAddr::from([127, 0, 0, n]), 0))
        .expect("bind the source address");
    timeout(LIMIT, socket.connect(addr))
        .await
        .expect("connect timed out")
        .expect("connect")
}

/// Connects to `addr` (bounded in time).
pub async fn connect(addr: SocketAddr) -> TcpStream {
    timeout(LIMIT, TcpStream::connect(addr))
        .await
        .expect("connect timed out")
        .expect("connect failed")
}

/// Reads one "\n"-terminated line (without it), bounded in time.
pub async fn read_line<R: tokio::io::AsyncBufRead + Unpin>(reader: &mut R) -> String {
    let mut line = Vec::new();
    timeout(LIMIT, reader.read_until(b'\n', &mut line))
        .await
        .expect("no reply in time")
        .expect("read failed");
    assert_eq!(
        line.pop(),
        Some(b'\n'),
        "reply not newline-terminated: {:?}",
        String::from_utf8_lossy(&line)
    );
    String::from_utf8(line).expect("reply is not UTF-8")
}

/// Reads until the server closes, bounded in time.
pub async fn read_to_end(stream: &mut TcpStream) -> Vec<u8> {
    let mut all = Vec::new();
    timeout(LIMIT, stream.read_to_end(&mut all))
        .await
        .expect("server did not close in time")
        .expect("read failed");
    all
}

/// Sends `message` and returns the one reply line: the common bot exchange.
pub async fn ask(conn: &mut BufReader<TcpStream>, message: &str) -> String {
    conn.get_mut()
        .write_all(message.as_bytes())
        .await
        .expect("send failed");
    read_line(conn).await
}

/// Connects and wraps the stream for line reads.
pub async fn connect_lines(addr: SocketAddr) -> BufReader<TcpStream> {
    BufReader::new(connect(addr).await)
}
