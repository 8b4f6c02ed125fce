//! A closed stdout is not a crash: the daemon, `check` and `probe` write
//! what they print and go on (or exit as they would) when nobody reads it,
//! as in `switchboard -c FILE | true` or `switchboard check | head -0`.

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::cli::{switchboard, text};
use crate::common::LIMIT;
use crate::deploy::{config_dir, free_addr, listener_at};

/// Runs `command` with its stdout a pipe whose reading end is already
/// closed; returns its exit code and stderr.
fn with_closed_stdout(command: &mut Command) -> (Option<i32>, String) {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot start switchboard");
    drop(child.stdout.take());
    let mut stderr = child.stderr.take().expect("stderr is piped");
    let reader = std::thread::spawn(move || {
        let mut text = Vec::new();
        let _ = stderr.read_to_end(&mut text);
        text
    });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if started.elapsed() > LIMIT {
            let _ = child.kill();
            panic!("switchboard did not exit within {LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    (status.code(), text(&reader.join().expect("stderr reader")))
}

#[test]
fn check_and_default_config_with_a_closed_stdout_do_not_panic() {
    let (_dir, config) = config_dir(&listener_at("echo", free_addr(), "echo", ""));
    for args in [&["check"][..], &["default-config"]] {
        let (code, stderr) = with_closed_stdout(switchboard().arg("-c").arg(&config).args(args));
        assert_eq!(code, Some(0), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}

#[test]
fn the_daemon_serves_with_a_closed_stdout_and_stops_cleanly() {
    let addr = free_addr();
    let (_dir, config) = config_dir(&listener_at("echo", addr, "echo", ""));
    let mut child = switchboard()
        .arg("-c")
        .arg(&config)
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("cannot start switchboard");
    drop(child.stdout.take());
    // It serves once it is up: retry the connect until it is, bounded.
    let started = Instant::now();
    let mut conn = loop {
        if let Ok(conn) = std::net::TcpStream::connect_timeout(&addr, LIMIT) {
            break conn;
        }
        if let Some(status) = child.try_wait().expect("wait") {
            panic!("switchboard exited with {status} instead of serving");
        }
        assert!(
            started.elapsed() < LIMIT,
            "switchboard never listened on {addr}"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    conn.set_read_timeout(Some(LIMIT)).expect("timeout");
    conn.write_all(b"still here\n").expect("send");
    let mut back = [0u8; 11];
    conn.read_exact(&mut back).expect("echo");
    assert_eq!(&back, b"still here\n");
    drop(conn);
    let pid = child.id().to_string();
    let killed = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(killed.success());
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        assert!(started.elapsed() < LIMIT, "no exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(
        status.code(),
        Some(0),
        "exit status after SIGTERM: {status}"
    );
}
