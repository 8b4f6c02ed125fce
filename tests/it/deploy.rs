//! The daemon the way operators deploy it, end to end as a process: the
//! sd_notify messages it sends to a `NOTIFY_SOCKET` of the test's own, SIGHUP
//! reloads of its config file, socket activation by the real
//! `systemd-socket-activate`, the descriptor budget under a low open-file
//! limit, and `switchboard probe` against it.

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use crate::cli::{BIN, Daemon, EXIT_CONFIG, client, output, switchboard, text, with_ulimit};
use crate::common::LIMIT;

/// `127.0.0.1:0`: the daemon binds a port the kernel picks, and says which.
pub(crate) fn any_port() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// An address on 127.0.0.1 with a port that was free a moment ago, for a
/// command line that cannot take port 0 (`systemd-socket-activate`). Bind it
/// at once: until then, another test binding port 0 may be given it.
pub(crate) fn free_addr() -> SocketAddr {
    let probe = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    probe.local_addr().expect("local addr")
}

/// A `[[listener]]` table bound to `addr`.
pub(crate) fn listener_at(name: &str, addr: SocketAddr, handler: &str, extra: &str) -> String {
    format!(
        "[[listener]]\nname = \"{name}\"\nbind = \"{addr}\"\nhandler = \"{handler}\"\n{extra}\n"
    )
}

/// A keyword-bot that answers `ping` with `reply`.
fn ping_bot_at(name: &str, addr: SocketAddr, reply: &str) -> String {
    listener_at(
        name,
        addr,
        "keyword-bot",
        &format!("[[listener.rules]]\nkeywords = [\"ping\"]\nreply = \"{reply}\"\n"),
    )
}

/// A temporary directory holding `switchboard.toml` with `toml` in it.
pub(crate) fn config_dir(toml: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("switchboard.toml");
    std::fs::write(&path, toml).expect("write config");
    (dir, path)
}

/// `path` as the body of a TOML literal string.
pub(crate) fn toml_literal(path: &Path) -> &str {
    let text = path.to_str().expect("temp path is UTF-8");
    assert!(
        !text.contains('\'') && !text.contains('\n'),
        "temp path {text:?} does not fit a TOML literal string"
    );
    text
}

/// Sends `line` on an echo connection and checks that it comes back.
fn echoes(conn: &mut TcpStream, line: &str) {
    conn.write_all(line.as_bytes()).expect("send to echo");
    let mut back = vec![0u8; line.len()];
    conn.read_exact(&mut back).expect("no echo");
    assert_eq!(String::from_utf8_lossy(&back), line);
}

/// A line-based connection to a bot (reads bounded by [`LIMIT`]).
fn bot(addr: SocketAddr) -> BufReader<TcpStream> {
    BufReader::new(client(addr))
}

/// Sends `message` and a newline, returns the reply line without its newline.
fn ask(conn: &mut BufReader<TcpStream>, message: &str) -> String {
    conn.get_mut()
        .write_all(format!("{message}\n").as_bytes())
        .expect("send to bot");
    let mut reply = String::new();
    conn.read_line(&mut reply).expect("no reply from the bot");
    assert!(reply.ends_with('\n'), "reply not a whole line: {reply:?}");
    reply.pop();
    reply
}

/// Asserts that nothing listens on `addr` any more.
fn refused(addr: SocketAddr) {
    match TcpStream::connect_timeout(&addr, LIMIT) {
        Err(e) => assert_eq!(e.kind(), ErrorKind::ConnectionRefused, "{addr}: {e}"),
        Ok(_) => panic!("{addr} still accepts connections"),
    }
}

/// `switchboard -c config` with `NOTIFY_SOCKET` set to `socket` and none of
/// the other variables of a service manager inherited.
fn notified_switchboard(config: &Path, socket: &Path) -> Command {
    let mut command = switchboard();
    command
        .arg("-c")
        .arg(config)
        .env("NOTIFY_SOCKET", socket)
        .env_remove("WATCHDOG_USEC")
        .env_remove("WATCHDOG_PID")
        .env_remove("LISTEN_FDS")
        .env_remove("LISTEN_PID")
        .env_remove("LISTEN_FDNAMES");
    command
}

/// The test's end of `NOTIFY_SOCKET`: a unix datagram socket in a temp dir.
struct NotifySocket {
    socket: UnixDatagram,
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl NotifySocket {
    fn bind() -> NotifySocket {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("notify");
        let socket = UnixDatagram::bind(&path).expect("bind the notify socket");
        socket
            .set_read_timeout(Some(LIMIT))
            .expect("notify socket timeout");
        NotifySocket {
            socket,
            path,
            _dir: dir,
        }
    }

    /// The next message, within [`LIMIT`].
    fn recv(&self, daemon: &mut Daemon) -> String {
        let mut buf = [0u8; 4096];
        match self.socket.recv(&mut buf) {
            Ok(n) => String::from_utf8_lossy(&buf[..n]).into_owned(),
            Err(e) => daemon.fail(&format!("no sd_notify message in time: {e}")),
        }
    }

    /// The next message that changes the state: status-only updates (sent
    /// when the number of open connections changes) are passed over.
    fn next_state(&self, daemon: &mut Daemon) -> String {
        loop {
            let message = self.recv(daemon);
            if !message.lines().all(|l| l.starts_with("STATUS=")) {
                return message;
            }
        }
    }
}

/// True when the sd_notify `message` has `line` (`KEY=value`) as one of its lines.
fn has_line(message: &str, line: &str) -> bool {
    message.lines().any(|l| l == line)
}

#[test]
fn notify_socket_gets_ready_status_reloading_ready_and_stopping_in_order() {
    let notify = NotifySocket::bind();
    let (_dir, config) = config_dir(
        &[
            listener_at("echo", any_port(), "echo", ""),
            ping_bot_at("bot", any_port(), "one"),
        ]
        .concat(),
    );
    let mut daemon = Daemon::start_command(notified_switchboard(&config, &notify.path), &config);

    // The very first message: ready, with a status line that counts listeners.
    let ready = notify.recv(&mut daemon);
    assert!(has_line(&ready, "READY=1"), "{ready:?}");
    assert!(
        ready
            .lines()
            .any(|l| l.starts_with("STATUS=") && l.contains("2 listener(s)")),
        "{ready:?}"
    );
    let mut states = vec![ready];
    // Ready means serving.
    let mut before = bot(daemon.addr("bot"));
    assert_eq!(ask(&mut before, "ping"), "one");

    std::fs::write(
        &config,
        [
            listener_at("echo", any_port(), "echo", ""),
            ping_bot_at("bot", any_port(), "two"),
        ]
        .concat(),
    )
    .expect("rewrite config");
    daemon.signal("HUP");
    let reloading = notify.next_state(&mut daemon);
    assert!(has_line(&reloading, "RELOADING=1"), "{reloading:?}");
    let usec = reloading
        .lines()
        .find_map(|l| l.strip_prefix("MONOTONIC_USEC="))
        .unwrap_or_else(|| panic!("no MONOTONIC_USEC with RELOADING=1: {reloading:?}"));
    let usec: u64 = usec
        .parse()
        .unwrap_or_else(|e| panic!("MONOTONIC_USEC={usec:?} is not a number: {e}"));
    assert!(usec > 0, "{reloading:?}");
    states.push(reloading);
    let ready_again = notify.next_state(&mut daemon);
    assert!(has_line(&ready_again, "READY=1"), "{ready_again:?}");
    states.push(ready_again);
    // Ready again means the new config is applied.
    assert_eq!(ask(&mut bot(daemon.addr("bot")), "ping"), "two");

    daemon.signal("TERM");
    let stopping = notify.next_state(&mut daemon);
    assert!(has_line(&stopping, "STOPPING=1"), "{stopping:?}");
    states.push(stopping);
    drop(before);
    let status = daemon.wait_exit(LIMIT);
    assert_eq!(status.code(), Some(0), "{status:?}");

    // Nothing else but status lines, and no watchdog without WATCHDOG_USEC.
    notify
        .socket
        .set_nonblocking(true)
        .expect("nonblocking notify socket");
    let mut buf = [0u8; 4096];
    while let Ok(n) = notify.socket.recv(&mut buf) {
        states.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    let firsts: Vec<&str> = states
        .iter()
        .filter_map(|m| m.lines().find(|l| !l.starts_with("STATUS=")))
        .collect();
    assert_eq!(
        firsts,
        ["READY=1", "RELOADING=1", "READY=1", "STOPPING=1"],
        "{states:?}"
    );
}

#[test]
fn watchdog_pings_arrive_at_half_of_watchdog_usec() {
    let notify = NotifySocket::bind();
    let config = Path::new("tests/fixtures/valid/minimal-echo.toml");
    let mut command = notified_switchboard(config, &notify.path);
    // WatchdogSec=200ms; WATCHDOG_PID stays unset (the pid is not known before spawning).
    command.env("WATCHDOG_USEC", "200000");
    let mut daemon = Daemon::start_command(command, config);

    let mut pings = Vec::new();
    while pings.len() < 11 {
        let message = notify.recv(&mut daemon);
        if has_line(&message, "WATCHDOG=1") {
            pings.push(Instant::now());
        }
    }
    // Ten intervals of 100ms (half of 200ms), with room for a loaded machine;
    // at the full WATCHDOG_USEC they would take 2s. (No lower bound: pings
    // delayed by a busy machine come in a catch-up burst, and pinging more
    // often than asked is harmless.)
    let span = pings[10] - pings[0];
    assert!(
        span < Duration::from_millis(1700),
        "10 watchdog intervals took {span:?}, not about 1s"
    );
    daemon.signal("TERM");
    assert_eq!(daemon.wait_exit(LIMIT).code(), Some(0));
}

#[test]
fn sighup_applies_a_changed_file_and_keeps_open_connections() {
    // Port 0 everywhere: a listener whose `bind` is unchanged keeps its
    // socket, and the added one's port is read from the log.
    let (_dir, config) = config_dir(
        &[
            listener_at("keep", any_port(), "echo", ""),
            ping_bot_at("bot", any_port(), "one"),
            // Its own loopback address: its closed port is checked below,
            // and another test could be given a freed port on 127.0.0.1.
            listener_at("gone", SocketAddr::from(([127, 0, 0, 15], 0)), "echo", ""),
        ]
        .concat(),
    );
    let mut daemon = Daemon::start(&config);
    let (keep, bot_addr, gone) = (daemon.addr("keep"), daemon.addr("bot"), daemon.addr("gone"));
    let mut kept = client(keep);
    echoes(&mut kept, "before\n");
    let mut old_bot = bot(bot_addr);
    assert_eq!(ask(&mut old_bot, "ping"), "one");
    let mut dropped = client(gone);
    echoes(&mut dropped, "before\n");

    std::fs::write(
        &config,
        [
            listener_at("keep", any_port(), "echo", ""),
            ping_bot_at("bot", any_port(), "two"),
            listener_at("added", any_port(), "echo", ""),
        ]
        .concat(),
    )
    .expect("rewrite config");
    daemon.signal("HUP");
    let line = daemon.wait_for_log("reloaded:");
    assert!(
        line.ends_with("reloaded: added: added; removed: gone; changed: bot"),
        "{line}"
    );
    let added = listening_addr(&daemon, "added");

    // The unchanged listener's open connection is untouched, and its port serves.
    echoes(&mut kept, "after\n");
    echoes(&mut client(keep), "fresh\n");
    // The changed bot: the open conversation keeps its rules, a new one gets the new.
    assert_eq!(ask(&mut old_bot, "ping"), "one");
    assert_eq!(ask(&mut bot(bot_addr), "ping"), "two");
    // The added listener serves.
    echoes(&mut client(added), "hello\n");
    // The removed one closed its connection (echo finishes at once) and its port.
    let mut rest = Vec::new();
    dropped
        .read_to_end(&mut rest)
        .expect("the removed listener's connection was not closed");
    assert!(rest.is_empty(), "{rest:?}");
    refused(gone);

    // Clients gone first, so shutdown need not wait for them to close.
    drop((kept, old_bot, dropped));
    daemon.signal("TERM");
    assert_eq!(daemon.wait_exit(LIMIT).code(), Some(0));
}

/// A keyword-bot without rules starts and serves (with its default
/// reply), and the daemon logs a warning naming the file and the
/// listener's line: at start, and again on a SIGHUP reload of a file
/// that has one; a reload of a file without one logs none.
#[test]
fn a_keyword_bot_without_rules_is_logged_as_a_warning_at_start_and_on_reload() {
    const WARNING: &str = "a keyword-bot without rules";
    let echo = listener_at("echo", any_port(), "echo", "");
    let quiet = listener_at(
        "quiet",
        any_port(),
        "keyword-bot",
        "default_reply = \"no rules\"",
    );
    let (_dir, config) = config_dir(&[echo.as_str(), &quiet].concat());
    let file = config.display().to_string();
    let mut daemon = Daemon::start(&config);
    let line = daemon.wait_for_log(WARNING);
    assert!(line.contains("WARN"), "{line}");
    let row = echo.lines().count() + 1;
    assert!(
        line.contains(&format!(
            "{file}:{row}:1: key `listener[1]`: listener \"quiet\": "
        )),
        "{line}"
    );
    // A warning, not an error: the bot serves.
    assert_eq!(ask(&mut bot(daemon.addr("quiet")), "hello"), "no rules");

    // Rules given: the reload warns nothing.
    std::fs::write(
        &config,
        [echo.as_str(), &ping_bot_at("quiet", any_port(), "pong")].concat(),
    )
    .expect("rewrite config");
    daemon.signal("HUP");
    let seen = daemon.log.len();
    daemon.wait_for_log("reloaded:");
    let warned: Vec<&String> = daemon.log[seen..]
        .iter()
        .filter(|l| l.contains(WARNING))
        .collect();
    assert!(warned.is_empty(), "{warned:?}");
    assert_eq!(ask(&mut bot(daemon.addr("quiet")), "ping"), "pong");

    // A reload that adds a bot without rules warns about it.
    let added = listener_at("added", any_port(), "keyword-bot", "");
    std::fs::write(
        &config,
        [
            echo.as_str(),
            &ping_bot_at("quiet", any_port(), "pong"),
            &added,
        ]
        .concat(),
    )
    .expect("rewrite config");
    daemon.signal("HUP");
    let line = daemon.wait_for_log(WARNING);
    assert!(line.contains("WARN"), "{line}");
    let row = echo.lines().count() + ping_bot_at("quiet", any_port(), "pong").lines().count() + 1;
    assert!(
        line.contains(&format!(
            "{file}:{row}:1: key `listener[2]`: listener \"added\": "
        )),
        "{line}"
    );
    daemon.wait_for_log("reloaded:");
    daemon.signal("TERM");
    assert_eq!(daemon.wait_exit(LIMIT).code(), Some(0));
}

/// The address in the daemon's `listening` log line of listener `name`
/// (read already).
fn listening_addr(daemon: &Daemon, name: &str) -> SocketAddr {
    let line = daemon
        .log
        .iter()
        .find(|l| l.contains(" listening ") && l.contains(&format!("listener=\"{name}\" ")))
        .unwrap_or_else(|| panic!("no `listening` line for {name}:\n{}", daemon.log.join("\n")));
    let addr = line
        .split_whitespace()
        .find_map(|field| field.strip_prefix("addr="))
        .unwrap_or_else(|| panic!("no addr= in {line:?}"));
    addr.parse()
        .unwrap_or_else(|e| panic!("bad address {addr:?} in {line:?}: {e}"))
}

/// The `LINE:COLUMN` right after `file:` in `line`, if it is there.
fn position_after(line: &str, file: &str) -> Option<(usize, usize)> {
    let rest = &line[line.find(&format!("{file}:"))? + file.len() + 1..];
    let mut parts = rest.splitn(3, ':');
    let row = parts.next()?.parse().ok()?;
    let column = parts.next()?.parse().ok()?;
    Some((row, column))
}

#[test]
fn sighup_with_a_broken_file_keeps_serving_and_logs_one_error() {
    const FAILED: &str = "reload failed, still serving the previous config:";
    let good = [
        listener_at("echo", any_port(), "echo", ""),
        ping_bot_at("bot", any_port(), "one"),
    ]
    .concat();
    let (_dir, config) = config_dir(&good);
    let file = config.display().to_string();
    let mut daemon = Daemon::start(&config);
    let (echo, bot_addr) = (daemon.addr("echo"), daemon.addr("bot"));
    let mut open = client(echo);
    echoes(&mut open, "before\n");

    // Not TOML at all, then TOML that is no valid config: a new listener
    // next to one with an unknown handler. Each error names its line.
    let extra_listener = listener_at("extra", any_port(), "echo", "");
    let broken = [
        format!("{good}this is not toml\n"),
        format!(
            "{good}{extra_listener}[[listener]]\nname = \"bad\"\nbind = \"127.0.0.1:0\"\nhandler = \"telnet\"\n"
        ),
    ];
    let rows = [
        good.lines().count() + 1,
        good.lines().count() + extra_listener.lines().count() + 4,
    ];
    for (contents, row) in broken.iter().zip(rows) {
        std::fs::write(&config, contents).expect("write the broken config");
        daemon.signal("HUP");
        let line = daemon.wait_for_log(FAILED);
        assert!(line.contains("ERROR"), "{line}");
        match position_after(&line, &file) {
            Some((r, _column)) => assert_eq!(r, row, "{line}"),
            None => panic!("the error does not name {file}:LINE:COLUMN: {line}"),
        }
        // Still the old config: the open connection, new connections, the old reply.
        echoes(&mut open, "still\n");
        echoes(&mut client(echo), "new\n");
        assert_eq!(ask(&mut bot(bot_addr), "ping"), "one");
    }

    // A fixed file applies.
    std::fs::write(
        &config,
        [
            listener_at("echo", any_port(), "echo", ""),
            ping_bot_at("bot", any_port(), "two"),
        ]
        .concat(),
    )
    .expect("write the fixed config");
    daemon.signal("HUP");
    let line = daemon.wait_for_log("reloaded:");
    // Measured against the first config: the broken files applied nothing
    // (had "extra" been started, it would be removed now).
    assert!(line.ends_with("reloaded: changed: bot"), "{line}");
    assert!(
        !daemon.log.iter().any(|l| l.contains("listener=\"extra\"")),
        "{}",
        daemon.log.join("\n")
    );
    assert_eq!(ask(&mut bot(bot_addr), "ping"), "two");
    echoes(&mut open, "after\n");
    // One error line per broken file, and nothing else went wrong.
    let errors: Vec<&String> = daemon
        .log
        .iter()
        .filter(|l| l.contains("ERROR") || l.contains("reload failed"))
        .collect();
    assert_eq!(errors.len(), 2, "{errors:#?}");

    drop(open);
    daemon.signal("TERM");
    assert_eq!(daemon.wait_exit(LIMIT).code(), Some(0));
}

/// `systemd-socket-activate` from `PATH`; `None` (after saying so) when it is
/// not installed, unless `SWITCHBOARD_REQUIRE_SYSTEMD_TOOLS=1` makes that a failure.
fn systemd_socket_activate() -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("systemd-socket-activate"))
            .find(|path| path.is_file())
    });
    if found.is_none() {
        assert!(
            std::env::var_os("SWITCHBOARD_REQUIRE_SYSTEMD_TOOLS").is_none_or(|v| v != "1"),
            "systemd-socket-activate is not on PATH and SWITCHBOARD_REQUIRE_SYSTEMD_TOOLS=1"
        );
        eprintln!("skipped: systemd-socket-activate not installed");
    }
    found
}

/// `systemd-socket-activate` listening on `sockets` (address, name) and
/// exec'ing `switchboard -c config` at the first connection.
fn socket_activated(tool: &Path, sockets: &[(SocketAddr, &str)], config: &Path) -> Command {
    socket_activated_with(tool, &[], sockets, config)
}

/// [`socket_activated`] with more options of the tool (`--datagram`).
fn socket_activated_with(
    tool: &Path,
    options: &[&str],
    sockets: &[(SocketAddr, &str)],
    config: &Path,
) -> Command {
    let mut command = Command::new(tool);
    command.args(options);
    for (addr, _) in sockets {
        command.arg(format!("--listen={addr}"));
    }
    let names: Vec<&str> = sockets.iter().map(|(_, name)| *name).collect();
    command
        .arg(format!("--fdname={}", names.join(":")))
        // It passes on only the environment it is told to.
        .arg("--setenv=RUST_LOG=info")
        .arg(BIN)
        .arg("-c")
        .arg(config)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(std::process::Stdio::null());
    command
}

/// Waits until `systemd-socket-activate` listens on each of `sockets`.
fn wait_listening(daemon: &mut Daemon, sockets: &[(SocketAddr, &str)]) {
    for (addr, _) in sockets {
        daemon.wait_for_log(&format!("Listening on {addr} "));
    }
}

#[test]
fn socket_activation_hands_named_sockets_to_the_listeners_named_after_them() {
    let Some(tool) = systemd_socket_activate() else {
        return;
    };
    let (echo, bot_addr) = (free_addr(), free_addr());
    let sockets = [(echo, "echo"), (bot_addr, "bot")];
    // The config binds each listener to the other one's address: only the
    // socket names can route them right, and matching by address before
    // name would cross them.
    let (_dir, config) = config_dir(
        &[
            listener_at("echo", bot_addr, "echo", ""),
            ping_bot_at("bot", echo, "pong"),
        ]
        .concat(),
    );
    let mut daemon = Daemon::spawn(socket_activated(&tool, &sockets, &config));
    wait_listening(&mut daemon, &sockets);

    // The first connection makes systemd-socket-activate exec switchboard,
    // which then accepts it.
    let mut first = client(echo);
    first
        .write_all(b"first\n")
        .expect("send to the activated echo");
    daemon.read_table(&config);
    for line in &daemon.table {
        assert!(line.ends_with("  (socket from systemd)"), "{line:?}");
    }
    assert_eq!(daemon.addr("echo"), echo);
    assert_eq!(daemon.addr("bot"), bot_addr);
    let mut back = [0u8; 6];
    first.read_exact(&mut back).expect("no echo");
    assert_eq!(&back, b"first\n");
    echoes(&mut client(echo), "second\n");
    assert_eq!(ask(&mut bot(bot_addr), "ping"), "pong");

    let claimed = [
        daemon.wait_for_log("using the socket passed by the service manager"),
        daemon.wait_for_log("using the socket passed by the service manager"),
    ];
    for (name, addr) in [("echo", echo), ("bot", bot_addr)] {
        let line = claimed
            .iter()
            .find(|l| l.contains(&format!("listener=\"{name}\" ")))
            .unwrap_or_else(|| panic!("no socket claimed by {name}: {claimed:#?}"));
        assert!(
            line.contains(&format!("addr={addr} fd_name=\"{name}\" by=\"name\"")),
            "{line}"
        );
    }
    drop(first);
    daemon.signal("TERM");
    assert_eq!(daemon.wait_exit(LIMIT).code(), Some(0));
}

#[test]
fn an_activated_socket_that_matches_no_listener_exits_78() {
    let Some(tool) = systemd_socket_activate() else {
        return;
    };
    let stray = free_addr();
    let sockets = [(stray, "stray")];
    let (_dir, config) = config_dir(&listener_at("echo", any_port(), "echo", ""));
    let mut daemon = Daemon::spawn(socket_activated(&tool, &sockets, &config));
    wait_listening(&mut daemon, &sockets);
    let _trigger = client(stray);
    let line = daemon.wait_for_log("matches no listener");
    assert!(
        line.contains("\"stray\"") && line.contains(&stray.to_string()),
        "{line}"
    );
    let status = daemon.wait_exit(LIMIT);
    assert_eq!(status.code(), Some(EXIT_CONFIG), "{status:?}");
}

/// CPU time (user and system) used so far by process `pid`.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .unwrap_or_else(|e| panic!("read /proc/{pid}/stat: {e}"));
    // The fields after the command name (in parentheses): state is field 3,
    // utime and stime are fields 14 and 15.
    let after_name = &stat[stat.rfind(')').expect("no command name in stat") + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks = |i: usize| -> u64 {
        fields
            .get(i)
            .and_then(|f| f.parse().ok())
            .unwrap_or_else(|| panic!("bad /proc/{pid}/stat: {stat}"))
    };
    let ticks = ticks(11) + ticks(12);
    let per_second = Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|out| text(&out.stdout).trim().parse::<u64>().ok())
        .expect("cannot read CLK_TCK with getconf");
    Duration::from_secs_f64(ticks as f64 / per_second as f64)
}

#[test]
fn one_listener_flooded_to_the_budget_leaves_another_its_share() {
    let (_dir, config) = config_dir(
        &[
            listener_at(
                "flooded",
                any_port(),
                "echo",
                "max_connections = 1000\nmax_connections_per_source = 0",
            ),
            listener_at("other", any_port(), "echo", ""),
        ]
        .concat(),
    );
    // 128 descriptors: 96 for connections, 24 guaranteed to each listener
    // and 48 shared.
    let mut daemon = Daemon::start_command(with_ulimit("-n 128", &config), &config);
    let budget = daemon.wait_for_log("descriptor budget");
    assert!(budget.contains("for_connections=96"), "{budget}");
    let (flooded, other) = (daemon.addr("flooded"), daemon.addr("other"));
    let mut held = Vec::new();
    for i in 0..80 {
        let mut conn = client(flooded);
        conn.set_read_timeout(Some(Duration::from_millis(300)))
            .expect("read timeout");
        conn.write_all(b"x\n").expect("send");
        let mut back = [0u8; 2];
        let served = conn.read_exact(&mut back).is_ok();
        held.push(conn);
        if !served {
            // Its share and the shared pool: 24 + 48.
            assert_eq!(i, 72, "the flooded listener stopped at {i}");
            break;
        }
    }
    // The other listener's share is still there: served at once, several.
    let mut others = Vec::new();
    for _ in 0..10 {
        let mut conn = client(other);
        echoes(&mut conn, "mine\n");
        others.push(conn);
    }
    drop((held, others));
    daemon.signal("TERM");
    assert_eq!(daemon.wait_exit(LIMIT).code(), Some(0));
}

#[test]
fn at_the_descriptor_budget_new_clients_wait_and_no_accept_fails() {
    /// An echo that has not come back within this is a client not served.
    const UNSERVED_AFTER: Duration = Duration::from_millis(300);
    let (_dir, config) = config_dir(&listener_at(
        "echo",
        any_port(),
        "echo",
        "max_connections = 1000",
    ));
    // Soft and hard limit: the daemon cannot raise it. Its budget for
    // connections is 48 of the 64 descriptors.
    let mut daemon = Daemon::start_command(with_ulimit("-n 64", &config), &config);
    let addr = daemon.addr("echo");
    let budget = daemon.wait_for_log("descriptor budget");
    assert!(budget.contains("for_connections=48"), "{budget}");

    let mut served = Vec::new();
    let mut unserved = None;
    for _ in 0..100 {
        let mut conn = client(addr);
        conn.set_read_timeout(Some(UNSERVED_AFTER))
            .expect("read timeout");
        conn.write_all(b"x\n").expect("send");
        let mut back = [0u8; 2];
        match conn.read_exact(&mut back) {
            Ok(()) => served.push(conn),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                unserved = Some(conn);
                break;
            }
            Err(e) => daemon.fail(&format!("echo read failed: {e}")),
        }
    }
    let Some(mut unserved) = unserved else {
        daemon.fail(&format!(
            "{} clients served under 64 descriptors",
            served.len()
        ))
    };
    assert_eq!(served.len(), 48, "the budget, exactly");

    // Waiting at the budget, the listener does not spin, and no accept
    // failed: the process never ran out of descriptors.
    let pid = daemon.child.id();
    let (cpu_before, started) = (cpu_time(pid), Instant::now());
    thread::sleep(Duration::from_secs(1));
    let (cpu, wall) = (cpu_time(pid) - cpu_before, started.elapsed());
    assert!(
        cpu.as_secs_f64() < 0.3 * wall.as_secs_f64(),
        "{cpu:?} of CPU in {wall:?} while at the budget"
    );
    daemon.log.extend(daemon.stderr.try_iter());
    assert!(
        !daemon.log.iter().any(|l| l.contains("accept failed")),
        "{}",
        daemon.log.join("\n")
    );
    // The clients it serves are still served.
    served[0]
        .set_read_timeout(Some(LIMIT))
        .expect("read timeout");
    echoes(&mut served[0], "still\n");

    // A descriptor frees: the waiting client is served.
    drop(served.pop());
    unserved
        .set_read_timeout(Some(LIMIT))
        .expect("read timeout");
    let mut back = [0u8; 2];
    unserved
        .read_exact(&mut back)
        .expect("served once a descriptor freed");
    assert_eq!(&back, b"x\n");
    drop((served, unserved));

    daemon.signal("TERM");
    assert_eq!(daemon.wait_exit(LIMIT).code(), Some(0));
}

/// The four handlers, each at `addr(name)`: echo, keyword-bot, random-bot
/// (its default farewell "bye", and a history that keeps everything), download.
fn every_handler(root: &Path, addr: impl Fn(&str) -> SocketAddr) -> String {
    [
        listener_at("echo", addr("echo"), "echo", ""),
        ping_bot_at("keyword", addr("keyword"), "pong"),
        listener_at(
            "random",
            addr("random"),
            "random-bot",
            "history_limit = 100000",
        ),
        listener_at(
            "files",
            addr("files"),
            "download",
            &format!("root = '{}'", toml_literal(root)),
        ),
    ]
    .concat()
}

/// A daemon running [`every_handler`] on ports of its choosing, and the
/// config that `probe` reads: the same listeners on the ports it bound.
fn every_handler_daemon(dir: &Path) -> (Daemon, String) {
    let started = dir.join("switchboard.toml");
    std::fs::write(&started, every_handler(dir, |_| any_port())).expect("write config");
    let daemon = Daemon::start(&started);
    let served = every_handler(dir, |name| daemon.addr(name));
    (daemon, served)
}

/// Runs `switchboard -c config probe ARGS...`.
pub(crate) fn probe(config: &Path, args: &[&str]) -> (Option<i32>, String, String) {
    let out = output(switchboard().arg("-c").arg(config).arg("probe").args(args));
    (out.status.code(), text(&out.stdout), text(&out.stderr))
}

#[test]
fn probe_prints_one_line_per_listener_and_exits_0_only_if_all_answer() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut daemon, served) = every_handler_daemon(dir.path());
    let (_probe_dir, config) = config_dir(&served);

    let (code, stdout, stderr) = probe(&config, &[]);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    let lines: Vec<Vec<&str>> = stdout
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    let expected = [
        ("echo", "echoed"),
        ("keyword", "answered"),
        ("random", "answered"),
        ("files", "answered"),
    ];
    assert_eq!(lines.len(), expected.len(), "{stdout}");
    for (fields, (name, how)) in lines.iter().zip(expected) {
        assert_eq!(fields[..2], ["ok", name], "{stdout}");
        assert_eq!(fields[2], daemon.addr(name).to_string(), "{stdout}");
        assert_eq!(fields.get(3), Some(&how), "{stdout}");
    }

    // Two listeners more that do not serve: a bound port nobody listens on
    // (refused), and one that accepts into its backlog and never answers.
    let not_listening = tokio::net::TcpSocket::new_v4().expect("socket");
    not_listening
        .bind("127.0.0.1:0".parse().expect("addr"))
        .expect("bind");
    let refusing = not_listening.local_addr().expect("local addr");
    let silent = TcpListener::bind("127.0.0.1:0").expect("bind");
    let silent_addr = silent.local_addr().expect("local addr");
    let (_broken_dir, broken) = config_dir(
        &[
            served,
            listener_at("refusing", refusing, "echo", ""),
            listener_at("silent", silent_addr, "keyword-bot", ""),
        ]
        .concat(),
    );
    let (code, stdout, stderr) = probe(&broken, &["--timeout", "500ms"]);
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    let mut lines = stdout.lines();
    for (name, _) in expected {
        let line = lines.next().unwrap_or_default();
        assert!(line.starts_with("ok") && line.contains(name), "{stdout}");
    }
    let line = lines.next().unwrap_or_default();
    assert!(
        line.starts_with("FAIL") && line.contains("refusing") && line.contains("refused"),
        "{stdout}"
    );
    let line = lines.next().unwrap_or_default();
    assert!(
        line.starts_with("FAIL") && line.contains("silent") && line.contains("no answer"),
        "{stdout}"
    );
    assert_eq!(lines.next(), None, "{stdout}");
    drop((not_listening, silent));

    // A listener the config does not have is a usage mistake.
    let (code, stdout, stderr) = probe(&config, &["nosuch"]);
    assert_eq!(code, Some(2), "{stdout}{stderr}");
    assert!(stderr.contains("\"nosuch\""), "{stderr}");
    assert!(stdout.is_empty(), "{stdout}");

    // Named listeners only.
    let (code, stdout, stderr) = probe(&config, &["keyword"]);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    assert!(
        stdout.starts_with("ok") && stdout.contains("keyword"),
        "{stdout}"
    );

    daemon.signal("TERM");
    assert_eq!(daemon.wait_exit(LIMIT).code(), Some(0));
}

#[test]
fn probing_the_random_bot_leaves_its_history_empty() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut daemon, served) = every_handler_daemon(dir.path());
    let (_probe_dir, config) = config_dir(&served);
    for args in [&[][..], &["random"], &["random"]] {
        let (code, stdout, stderr) = probe(&config, args);
        assert_eq!(code, Some(0), "{stdout}{stderr}");
    }
    // The probes' farewells were not recorded: a client alone in the history
    // only ever gets its own message back. Had three been recorded, 20
    // replies would all miss them with a chance below 1e-3.
    let mut conn = bot(daemon.addr("random"));
    for i in 0..20 {
        assert_eq!(ask(&mut conn, "x"), "x", "reply {i}");
    }
    drop(conn);
    daemon.signal("TERM");
    assert_eq!(daemon.wait_exit(LIMIT).code(), Some(0));
}

/// An address on 127.0.0.1 with a UDP port that was free a moment ago.
fn free_udp_addr() -> SocketAddr {
    let probe = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    probe.local_addr().expect("local addr")
}

#[test]
fn socket_activation_hands_datagram_sockets_to_udp_listeners() {
    let Some(tool) = systemd_socket_activate() else {
        return;
    };
    let (echo, bot_addr) = (free_udp_addr(), free_udp_addr());
    let sockets = [(echo, "echo-udp"), (bot_addr, "bot-udp")];
    // Crossed binds, as in the TCP test: only the names route them right.
    let udp = "transport = \"udp\"\n";
    let (_dir, config) = config_dir(
        &[
            listener_at("echo-udp", bot_addr, "echo", udp),
            listener_at(
                "bot-udp",
                echo,
                "keyword-bot",
                &format!("{udp}[[listener.rules]]\nkeywords = [\"ping\"]\nreply = \"pong\"\n"),
            ),
        ]
        .concat(),
    );
    let mut daemon = Daemon::spawn(socket_activated_with(
        &tool,
        &["--datagram"],
        &sockets,
        &config,
    ));
    wait_listening(&mut daemon, &sockets);

    // The first datagram makes systemd-socket-activate exec switchboard,
    // which then reads it from the socket it was passed, and answers.
    let client = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    client.set_read_timeout(Some(LIMIT)).expect("timeout");
    client.send_to(b"first", echo).expect("send");
    daemon.read_table(&config);
    for line in &daemon.table {
        assert!(line.ends_with("/udp  (socket from systemd)"), "{line:?}");
    }
    assert_eq!(daemon.addr("echo-udp"), echo);
    assert_eq!(daemon.addr("bot-udp"), bot_addr);
    let mut buf = [0u8; 64];
    let (n, from) = client
        .recv_from(&mut buf)
        .expect("no echo of the first datagram");
    assert_eq!((&buf[..n], from), (&b"first"[..], echo));
    client.send_to(b"ping\n", bot_addr).expect("send");
    let (n, from) = client.recv_from(&mut buf).expect("no answer from the bot");
    assert_eq!((&buf[..n], from), (&b"pong\n"[..], bot_addr));
    daemon.signal("TERM");
    assert_eq!(daemon.wait_exit(LIMIT).code(), Some(0));
}
