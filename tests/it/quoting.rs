//! What a client or a config file says is quoted, in a log line or an
//! error, only up to a bound: a hostile name cannot make one line huge; and
//! a flood of connections cannot make the log grow faster than
//! `log_lines_per_second`.

use std::io::{Read, Write};

use crate::cli::{BIN, Daemon, EXIT_CONFIG, client, output, switchboard, text};
use crate::common::LIMIT;
use crate::deploy::{any_port, config_dir, listener_at, toml_literal};

/// Fixed fields of a log line (time, level, span, message) plus the quoted
/// field's bound and its cut marker: no line may be longer.
const LOG_LINE_MAX: usize = 1024;

/// A daemon with a download listener on an empty root (the dirs live as
/// long as the returned guards).
fn download_daemon() -> ((tempfile::TempDir, tempfile::TempDir), Daemon) {
    let dir = tempfile::tempdir().expect("tempdir");
    let toml = listener_at(
        "files",
        any_port(),
        "download",
        &format!("root = '{}'", toml_literal(dir.path())),
    );
    let (config_dir, config) = config_dir(&toml);
    let daemon = Daemon::start(&config);
    ((dir, config_dir), daemon)
}

#[test]
fn a_hostile_file_name_is_logged_in_one_bounded_line() {
    let (_dirs, mut daemon) = download_daemon();
    // 65 535 bytes of 0x01 (each escaped as 6 characters), then a newline:
    // one byte under max_message_bytes.
    let mut name = vec![1u8; 65_535];
    name.push(b'\n');
    let mut conn = client(daemon.addr("files"));
    conn.write_all(&name).expect("send");
    let mut reply = Vec::new();
    conn.read_to_end(&mut reply).expect("reply");
    assert!(text(&reply).starts_with("ERR "), "{}", text(&reply));
    let line = daemon.wait_for_log("download refused");
    assert!(line.len() < LOG_LINE_MAX, "{} bytes: {line}", line.len());
    assert!(line.contains("more bytes]"), "the cut is marked: {line}");
    daemon.signal("TERM");
    assert_eq!(daemon.wait_exit(LIMIT).code(), Some(0));
}

/// A name with spaces cannot pass for fields of its line (attacker's pass
/// of issue 21: `hello.txt status=200 outcome=complete` read as fields).
#[test]
fn a_name_with_spaces_is_logged_in_quotes_and_adds_no_fields() {
    let (_dirs, mut daemon) = download_daemon();
    let mut conn = client(daemon.addr("files"));
    conn.write_all(b"x.txt status=200 bytes=1 outcome=complete\n")
        .expect("send");
    let mut reply = Vec::new();
    conn.read_to_end(&mut reply).expect("reply");
    let line = daemon.wait_for_log("download refused");
    assert!(
        line.contains(r#"name="x.txt status=200 bytes=1 outcome=complete" reason="#),
        "{line}"
    );
    daemon.signal("TERM");
    assert_eq!(daemon.wait_exit(LIMIT).code(), Some(0));
}

#[test]
fn a_huge_name_in_the_config_is_quoted_only_in_part() {
    let name = "n".repeat(100_000);
    let (_dir, config) = config_dir(&listener_at(&name, any_port(), "echo", ""));
    let out = output(switchboard().arg("check").arg("-c").arg(&config));
    assert_eq!(out.status.code(), Some(EXIT_CONFIG));
    let error = text(&out.stderr);
    assert!(error.contains("name must be 1 to 64 characters"), "{error}");
    assert!(error.len() < 2048, "{} bytes of error", error.len());
    // A huge unknown key, too.
    let key = "k".repeat(100_000);
    let (_dir, config) = config_dir(&listener_at(
        "echo",
        any_port(),
        "echo",
        &format!("{key} = 1"),
    ));
    let out = output(switchboard().arg("check").arg("-c").arg(&config));
    assert_eq!(out.status.code(), Some(EXIT_CONFIG));
    let error = text(&out.stderr);
    assert!(
        error.contains("unknown field"),
        "{}",
        &error[..error.len().min(300)]
    );
    assert!(error.len() < 2048, "{} bytes of error", error.len());
}

#[test]
fn a_flood_of_connections_writes_at_most_the_lines_a_second_it_allows() {
    let toml = format!(
        "[server]\nlog_lines_per_second = 20\n{}",
        listener_at("echo", any_port(), "echo", "")
    );
    let (_dir, config) = config_dir(&toml);
    let mut daemon = Daemon::start(&config);
    let addr = daemon.addr("echo");
    // 400 connections, each a "closed" line at info, as fast as they go.
    let started = std::time::Instant::now();
    for _ in 0..400 {
        let mut conn = client(addr);
        conn.write_all(b"x").expect("send");
        let mut back = [0u8; 1];
        conn.read_exact(&mut back).expect("echo");
    }
    let flood = started.elapsed();
    // The daemon's own lines are not the connections' budget: a reload
    // while connections keep using it up is still logged.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let more = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            for _ in 0..20_000 {
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                let mut conn = client(addr);
                let _ = conn.write_all(b"x");
                let mut back = [0u8; 1];
                let _ = conn.read_exact(&mut back);
            }
        })
    };
    daemon.signal("HUP");
    daemon.wait_for_log("reloaded");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    more.join().expect("the second flood");
    let summary = daemon.wait_for_log("log lines dropped");
    assert!(summary.contains("suppressed="), "{summary}");
    daemon.signal("TERM");
    assert_eq!(daemon.wait_exit(LIMIT).code(), Some(0));
    daemon.log.extend(daemon.stderr.try_iter());
    let closed = daemon.log.iter().filter(|l| l.contains(" closed")).count();
    // 20 a second over the floods' seconds (and the one they started in).
    let seconds = started.elapsed().as_secs() as usize + 2;
    assert!(
        closed <= 20 * seconds && closed < 400,
        "{closed} connection lines in {seconds} s, the first flood {flood:?}"
    );
}

#[test]
fn a_flood_of_datagrams_logged_at_debug_writes_at_most_the_lines_a_second_it_allows() {
    let toml = format!(
        "[server]\nlog_lines_per_second = 20\nlog_level = \"debug\"\n{}",
        listener_at(
            "echo-udp",
            any_port(),
            "echo",
            "transport = \"udp\"\nmax_datagram_bytes = 10"
        )
    );
    let (_dir, config) = config_dir(&toml);
    // The config's log_level, not the tests' RUST_LOG=info.
    let mut command = std::process::Command::new("env");
    command
        .arg("-u")
        .arg("RUST_LOG")
        .arg(BIN)
        .arg("-c")
        .arg(&config);
    let mut daemon = Daemon::start_command(command, &config);
    let addr = daemon.addr("echo-udp");
    // Each datagram is one line at debug ("dropped: longer than ..."):
    // 5 000 as fast as they go, then one answered, so that all were read.
    let started = std::time::Instant::now();
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    for _ in 0..5_000 {
        socket.send_to(&[b'x'; 11], addr).expect("send");
    }
    socket
        .set_read_timeout(Some(std::time::Duration::from_millis(200)))
        .expect("timeout");
    let mut buf = [0u8; 16];
    let answered = (0..100)
        .any(|_| socket.send_to(b"ok", addr).expect("send") == 2 && socket.recv(&mut buf).is_ok());
    assert!(answered, "the echo never answered after the flood");
    let summary = daemon.wait_for_log("log lines dropped");
    assert!(summary.contains("suppressed="), "{summary}");
    daemon.signal("TERM");
    assert_eq!(daemon.wait_exit(LIMIT).code(), Some(0));
    daemon.log.extend(daemon.stderr.try_iter());
    let per_datagram = daemon
        .log
        .iter()
        .filter(|l| l.contains("longer than max_datagram_bytes"))
        .count();
    let seconds = started.elapsed().as_secs() as usize + 2;
    assert!(
        per_datagram <= 20 * seconds && per_datagram < 5_000,
        "{per_datagram} lines about datagrams in {seconds} s"
    );
}
