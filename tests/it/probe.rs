//! `switchboard probe` checks the handler, not just the port: for every pair
//! of handlers, a probe that expects one against a listener that runs the
//! other fails, naming the listener and saying what came back.

use std::net::SocketAddr;

use crate::cli::{Daemon, output, switchboard, text};
use crate::common::LIMIT;
use crate::deploy::{any_port, config_dir, listener_at, probe, toml_literal};

/// The five handlers, and the settings each needs beside `handler`.
fn handlers(root: &str) -> [(&'static str, String); 5] {
    [
        ("echo", String::new()),
        ("download", format!("root = '{root}'")),
        ("keyword-bot", String::new()),
        ("random-bot", "history_limit = 100000".to_owned()),
        ("metrics", String::new()),
    ]
}

/// One listener of each handler, named after it, at `addr(handler)`.
fn one_of_each(root: &str, addr: impl Fn(&str) -> SocketAddr) -> String {
    handlers(root)
        .iter()
        .map(|(handler, extra)| listener_at(handler, addr(handler), handler, extra))
        .collect()
}

#[test]
fn a_probe_fails_against_a_listener_that_runs_another_handler_for_every_pair() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = toml_literal(dir.path()).to_owned();
    let config = dir.path().join("switchboard.toml");
    std::fs::write(&config, one_of_each(&root, |_| any_port())).expect("write config");
    let mut daemon = Daemon::start(&config);

    // The right handler on each port passes.
    let (_right_dir, right) = config_dir(&one_of_each(&root, |h| daemon.addr(h)));
    let (code, stdout, stderr) = probe(&right, &[]);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    let shown: Vec<(&str, &str)> = stdout
        .lines()
        .map(|l| {
            let fields: Vec<&str> = l.split_whitespace().collect();
            (fields[1], fields[3])
        })
        .collect();
    assert_eq!(
        shown,
        [
            ("echo", "echoed"),
            ("download", "answered"),
            ("keyword-bot", "answered"),
            ("random-bot", "answered"),
            ("metrics", "scraped"),
        ],
        "{stdout}"
    );

    // Each handler's probe against each other handler's port fails.
    let mut pairs = 0;
    for (expected, extra) in handlers(&root) {
        for (actual, _) in handlers(&root) {
            if expected == actual {
                continue;
            }
            let name = format!("{expected}-on-{actual}");
            let toml = listener_at(&name, daemon.addr(actual), expected, &extra);
            let (_wrong_dir, wrong) = config_dir(&toml);
            let (code, stdout, stderr) = probe(&wrong, &["--timeout", "5s"]);
            assert_eq!(code, Some(1), "{name}: {stdout}{stderr}");
            let line = stdout.lines().next().unwrap_or_default();
            assert!(
                line.starts_with("FAIL") && line.contains(&name),
                "{name}: {stdout}"
            );
            // What came back is shown, quoted; a timeout would not say it.
            assert!(
                line.contains('"') && !line.contains("no answer within"),
                "{name}: {stdout}"
            );
            pairs += 1;
        }
    }
    assert_eq!(pairs, 20);

    // None of the wrong probes disturbed the listeners.
    let (code, stdout, stderr) = probe(&right, &[]);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    daemon.signal("TERM");
    assert_eq!(daemon.wait_exit(LIMIT).code(), Some(0));
}

#[test]
fn a_zero_probe_timeout_is_a_usage_mistake() {
    let (_dir, config) = config_dir(&listener_at("echo", any_port(), "echo", ""));
    for timeout in ["0s", "0ms", "soon"] {
        let out =
            output(
                switchboard()
                    .arg("-c")
                    .arg(&config)
                    .args(["probe", "--timeout", timeout]),
            );
        assert_eq!(out.status.code(), Some(2), "--timeout {timeout}");
        assert!(out.stdout.is_empty(), "{}", text(&out.stdout));
        assert!(
            text(&out.stderr).contains("--timeout"),
            "{}",
            text(&out.stderr)
        );
    }
}

#[test]
fn a_udp_probe_sends_a_datagram_and_checks_the_handler_that_answers() {
    const UDP: [&str; 3] = ["echo", "keyword-bot", "random-bot"];
    let udp = |name: &str, addr: SocketAddr, handler: &str| {
        listener_at(name, addr, handler, "transport = \"udp\"")
    };
    let all: String = UDP.iter().map(|h| udp(h, any_port(), h)).collect();
    let (_dir, config) = config_dir(&all);
    let mut daemon = Daemon::start(&config);
    let right: String = UDP.iter().map(|h| udp(h, daemon.addr(h), h)).collect();
    let (_right_dir, right) = config_dir(&right);
    let (code, stdout, stderr) = probe(&right, &[]);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    for (line, handler) in stdout.lines().zip(UDP) {
        let expected = if handler == "echo" {
            "echoed"
        } else {
            "answered"
        };
        assert!(
            line.starts_with("ok") && line.contains("/udp") && line.contains(expected),
            "{handler}: {stdout}"
        );
    }
    // Each handler's probe against each other one's UDP port fails, saying
    // what came back.
    for expected in UDP {
        for actual in UDP.iter().filter(|a| **a != expected) {
            let name = format!("{expected}-on-{actual}");
            let (_wrong_dir, wrong) = config_dir(&udp(&name, daemon.addr(actual), expected));
            let (code, stdout, stderr) = probe(&wrong, &["--timeout", "5s"]);
            assert_eq!(code, Some(1), "{name}: {stdout}{stderr}");
            assert!(
                stdout.starts_with("FAIL") && stdout.contains('"'),
                "{name}: {stdout}"
            );
        }
    }
    daemon.signal("TERM");
    assert_eq!(daemon.wait_exit(LIMIT).code(), Some(0));
    // Nothing there now: the port is unreachable, and the probe says so
    // at once rather than at its timeout.
    let (code, stdout, stderr) = probe(&right, &["--timeout", "10s"]);
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    assert!(stdout.contains("refused"), "{stdout}");
}
