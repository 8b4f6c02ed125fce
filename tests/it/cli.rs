//! The `switchboard` binary end to end: exit statuses, `check`, `default-config`, `--help`, and a real daemon stopped by signals.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use switchboard::Config;

use crate::common::LIMIT;
use crate::config::{assert_matches_expectation, fixtures};

/// The binary under test, built by cargo for this test run.
pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_switchboard");
/// What the binary prints before every config error.
const CONFIG_ERROR_PREFIX: &str = "switchboard: config error: ";
/// Exit status of a config mistake (EX_CONFIG).
pub(crate) const EXIT_CONFIG: i32 = 78;
/// Exit status when a second signal cut the shutdown short.
const EXIT_FORCED: i32 = 130;
/// Interval of the process-exit poll below.
const POLL: Duration = Duration::from_millis(10);

/// A command running the binary from the crate root (where the fixtures'
/// relative download roots point), with no inherited `RUST_LOG`.
pub(crate) fn switchboard() -> Command {
    let mut cmd = Command::new(BIN);
    cmd.current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("RUST_LOG")
        .stdin(Stdio::null());
    cmd
}

/// Reads a child's pipe to the end on a thread, so a full pipe never blocks it.
fn drain(mut pipe: impl Read + Send + 'static) -> JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut all = Vec::new();
        let _ = pipe.read_to_end(&mut all);
        all
    })
}

/// Waits for `child` to exit, polling up to `limit`; `None` if it is still running.
fn wait_within(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("cannot poll the child") {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(POLL);
    }
}

/// Collects a started child's output (its stdout and stderr piped), which
/// must finish within `limit`.
pub(crate) fn wait_output(mut child: Child, limit: Duration) -> Output {
    let stdout = drain(child.stdout.take().expect("stdout is piped"));
    let stderr = drain(child.stderr.take().expect("stderr is piped"));
    let Some(status) = wait_within(&mut child, limit) else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("the command did not finish within {limit:?}");
    };
    Output {
        status,
        stdout: stdout.join().expect("stdout thread"),
        stderr: stderr.join().expect("stderr thread"),
    }
}

/// Runs a command that must finish on its own, within [`LIMIT`].
pub(crate) fn output(cmd: &mut Command) -> Output {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot start switchboard");
    let stdout = drain(child.stdout.take().expect("stdout is piped"));
    let stderr = drain(child.stderr.take().expect("stderr is piped"));
    let Some(status) = wait_within(&mut child, LIMIT) else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("{cmd:?} did not exit within {LIMIT:?}");
    };
    Output {
        status,
        stdout: stdout.join().expect("stdout reader panicked"),
        stderr: stderr.join().expect("stderr reader panicked"),
    }
}

pub(crate) fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).expect("output is not UTF-8")
}

/// Asserts that a run failed with exit 78 and exactly one stderr line, a
/// config error; returns that line without its `switchboard: config error: ` prefix.
fn one_config_error(out: &Output) -> String {
    let stderr = text(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(EXIT_CONFIG),
        "status {:?}, stderr: {stderr}",
        out.status
    );
    assert!(
        out.stdout.is_empty(),
        "nothing belongs on stdout: {}",
        text(&out.stdout)
    );
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "stderr is not one line: {stderr:?}");
    lines[0]
        .strip_prefix(CONFIG_ERROR_PREFIX)
        .unwrap_or_else(|| panic!("missing {CONFIG_ERROR_PREFIX:?}: {stderr:?}"))
        .to_owned()
}

#[test]
fn every_invalid_fixture_exits_78_with_one_line_naming_file_line_and_column() {
    for path in fixtures("invalid") {
        // `check`, the explicit `run`, and the default command all validate first.
        for command in [&["check"][..], &["run"], &[]] {
            let out = output(switchboard().args(command).arg("-c").arg(&path));
            let error = one_config_error(&out);
            assert_matches_expectation(&path, &error);
        }
    }
}

#[test]
fn the_config_option_works_before_and_after_the_command() {
    let path = Path::new("tests/fixtures/invalid/duplicate-name.toml");
    // `check FILE`, without -c, is what a new user types first.
    for args in [&["check", "-c"][..], &["-c"], &["--config"], &["check"]] {
        let mut cmd = switchboard();
        cmd.args(args).arg(path);
        if args[0] != "check" {
            cmd.arg("check");
        }
        let error = one_config_error(&output(&mut cmd));
        // The file is named as it was given on the command line.
        assert!(
            error.starts_with(
                "tests/fixtures/invalid/duplicate-name.toml:8:8: key `listener[1].name`: "
            ),
            "{args:?}: {error}"
        );
    }
}

#[test]
fn a_missing_config_file_exits_78_and_says_so() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("no-such-config.toml");
    for command in [&["check"][..], &[]] {
        let error = one_config_error(&output(switchboard().args(command).arg("-c").arg(&missing)));
        let file = missing.display().to_string();
        assert!(error.starts_with(&format!("{file}: ")), "{error}");
        assert!(error.contains("cannot read config file"), "{error}");
        assert!(error.contains("No such file or directory"), "{error}");
    }
    // A directory is not a config file either.
    let error = one_config_error(&output(switchboard().args(["check", "-c"]).arg(dir.path())));
    assert!(error.contains("cannot read config file"), "{error}");
}

/// A config that is valid but doubtful (a keyword-bot without rules):
/// `check` says so on stderr, in one line naming file, line and column,
/// and still exits 0 with its report on stdout.
#[test]
fn check_prints_a_warning_on_stderr_and_exits_0() {
    for path in fixtures("warning") {
        let out = output(switchboard().arg("check").arg("-c").arg(&path));
        let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
        assert!(
            out.status.success(),
            "{}: {:?}\n{stderr}",
            path.display(),
            out.status
        );
        assert!(
            stdout.starts_with(&format!("{}: OK, ", path.display())),
            "{stdout}"
        );
        let lines: Vec<&str> = stderr.lines().collect();
        let [line] = lines[..] else {
            panic!("{}: expected one stderr line: {stderr:?}", path.display());
        };
        let warning = line
            .strip_prefix("switchboard: warning: ")
            .unwrap_or_else(|| panic!("not a warning: {line:?}"));
        assert_matches_expectation(&path, warning);
    }
}

#[test]
fn check_prints_every_listener_of_a_valid_config() {
    for path in fixtures("valid") {
        let config = Config::from_file(&path).unwrap_or_else(|e| panic!("{e}"));
        let out = output(switchboard().arg("check").arg("-c").arg(&path));
        let stdout = text(&out.stdout);
        assert!(
            out.status.success(),
            "{}: {:?}\n{stdout}{}",
            path.display(),
            out.status,
            text(&out.stderr)
        );
        assert!(
            out.stderr.is_empty(),
            "{}: {}",
            path.display(),
            text(&out.stderr)
        );
        let mut lines = stdout.lines();
        let header = lines.next().unwrap_or_default();
        let n = config.listeners.len();
        assert_eq!(header, format!("{}: OK, {n} listener(s)", path.display()));
        let printed: Vec<&str> = lines
            .map(|line| line.split_whitespace().next().unwrap_or_default())
            .collect();
        let names: Vec<&str> = config.listeners.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(
            printed,
            names,
            "{}: one line per listener, in order:\n{stdout}",
            path.display()
        );
        for (line, listener) in stdout.lines().skip(1).zip(&config.listeners) {
            assert!(line.contains(listener.handler.name()), "{line}");
            assert!(line.contains(&listener.bind.to_string()), "{line}");
        }
    }
}

#[test]
fn check_without_a_config_checks_the_embedded_default() {
    let out = output(switchboard().arg("check"));
    let stdout = text(&out.stdout);
    assert!(
        out.status.success(),
        "{:?}: {}",
        out.status,
        text(&out.stderr)
    );
    assert!(
        stdout.starts_with("<embedded default>: OK, 7 listener(s)\n"),
        "{stdout}"
    );
    for (name, addr) in [
        ("echo", "127.0.0.1:10010"),
        ("download", "127.0.0.1:1111"),
        ("keyword-bot", "127.0.0.1:10086"),
        ("random-bot", "127.0.0.1:10087"),
        ("echo-udp", "127.0.0.1:10010/udp"),
        ("keyword-bot-udp", "127.0.0.1:10086/udp"),
        ("random-bot-udp", "127.0.0.1:10087/udp"),
    ] {
        assert!(
            stdout
                .lines()
                .any(|l| l.split_whitespace().next() == Some(name) && l.contains(addr)),
            "{name} on {addr} not listed:\n{stdout}"
        );
    }
}

#[test]
fn default_config_prints_the_documented_example() {
    let out = output(switchboard().arg("default-config"));
    assert!(out.status.success(), "{:?}", out.status);
    assert!(out.stderr.is_empty(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        include_str!("../../config/switchboard.toml")
    );
}

#[test]
fn help_documents_commands_config_option_and_exit_statuses() {
    let out = output(switchboard().arg("--help"));
    assert!(out.status.success(), "{:?}", out.status);
    let help = text(&out.stdout);
    for needle in [
        "check",
        "default-config",
        "run",
        "-c, --config <FILE>",
        "78",
        "130",
    ] {
        assert!(
            help.contains(needle),
            "--help does not mention {needle:?}:\n{help}"
        );
    }
    let out = output(switchboard().arg("--version"));
    assert!(out.status.success(), "{:?}", out.status);
    assert_eq!(
        text(&out.stdout).trim(),
        format!("switchboard {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn a_command_line_mistake_exits_2() {
    for args in [
        &["no-such-command"][..],
        &["--no-such-option"],
        &["check", "-c"],
    ] {
        let out = output(switchboard().args(args));
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            text(&out.stderr)
        );
        assert!(
            !out.stderr.is_empty(),
            "{args:?}: a usage error explains itself"
        );
    }
}

#[test]
fn a_port_in_use_exits_1_naming_the_listener() {
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind a port to occupy");
    let addr = taken.local_addr().expect("local addr");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("busy.toml");
    let config = format!("[[listener]]\nname = \"busy\"\nbind = \"{addr}\"\nhandler = \"echo\"\n");
    std::fs::write(&path, config).expect("write config");
    // It is a valid config: the port is only found taken when binding.
    assert!(
        output(switchboard().arg("check").arg("-c").arg(&path))
            .status
            .success()
    );
    let out = output(switchboard().arg("-c").arg(&path));
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("listener \"busy\": cannot listen on {addr}")),
        "{stderr}"
    );
    // The cause is said once, not repeated by the error chain, and what
    // to do follows it.
    assert_eq!(stderr.matches("in use").count(), 1, "{stderr}");
    assert!(
        stderr.contains("another program (another switchboard?) listens there")
            && stderr.contains("switchboard default-config > my.toml"),
        "{stderr}"
    );
    drop(taken);
}

/// A running `switchboard` daemon; killed if a test ends while it still runs.
pub(crate) struct Daemon {
    pub(crate) child: Child,
    stdout: Receiver<String>,
    pub(crate) stderr: Receiver<String>,
    /// stderr lines read so far, for failure messages.
    pub(crate) log: Vec<String>,
    listeners: HashMap<String, SocketAddr>,
    /// The listener lines of the table printed at start, as printed.
    pub(crate) table: Vec<String>,
}

/// Sends each line of a pipe to a channel, from a thread.
fn lines_of(pipe: impl Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(pipe).split(b'\n') {
            let Ok(line) = line else { break };
            if tx
                .send(String::from_utf8_lossy(&line).into_owned())
                .is_err()
            {
                break;
            }
        }
    });
    rx
}

impl Daemon {
    /// Starts `switchboard -c config` (logging at `info`) and reads the
    /// listener table it prints once every listener is bound. The SIGINT and
    /// SIGTERM handlers are installed before binding: once the table is read,
    /// a signal shuts the daemon down instead of killing it.
    pub(crate) fn start(config: &Path) -> Daemon {
        let mut command = switchboard();
        command.arg("-c").arg(config);
        Daemon::start_command(command, config)
    }

    /// Like [`Daemon::start`], with a command that ends up exec'ing
    /// `switchboard -c config` (a shell that sets limits first, say).
    pub(crate) fn start_command(command: Command, config: &Path) -> Daemon {
        let mut daemon = Daemon::spawn(command);
        daemon.read_table(config);
        daemon
    }

    /// Starts `command` (logging at `info`) without waiting for anything:
    /// for a daemon that prints its table only later (under
    /// `systemd-socket-activate`, after the first connection), or never.
    pub(crate) fn spawn(mut command: Command) -> Daemon {
        let mut child = command
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cannot start switchboard");
        let stdout = lines_of(child.stdout.take().expect("stdout is piped"));
        let stderr = lines_of(child.stderr.take().expect("stderr is piped"));
        Daemon {
            child,
            stdout,
            stderr,
            log: Vec::new(),
            listeners: HashMap::new(),
            table: Vec::new(),
        }
    }

    /// Reads the listener table printed once every listener of `config` is
    /// bound: a header, then one line per listener (name, handler, address,
    /// and `(socket from systemd)` when the socket was passed to it).
    pub(crate) fn read_table(&mut self, config: &Path) {
        let expected = Config::from_file(config)
            .unwrap_or_else(|e| panic!("{e}"))
            .listeners
            .len();
        let header = self.stdout_line();
        if !(header.starts_with("switchboard ") && header.contains(" serving (")) {
            self.fail(&format!("unexpected header {header:?}"));
        }
        for _ in 0..expected {
            let line = self.stdout_line();
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (name, addr) = match fields[..] {
                [name, _handler, addr] | [name, _handler, addr, "(socket", "from", "systemd)"] => {
                    (name, addr)
                }
                _ => self.fail(&format!("unexpected listener line {line:?}")),
            };
            // A UDP listener's address is shown with `/udp` after it, a
            // TLS listener's with `/tls` or `/tls+plain`.
            let addr = ["/udp", "/tls", "/tls+plain"]
                .iter()
                .find_map(|suffix| addr.strip_suffix(suffix))
                .unwrap_or(addr);
            let addr: SocketAddr = addr
                .parse()
                .unwrap_or_else(|e| panic!("bad address in {line:?}: {e}"));
            assert_ne!(addr.port(), 0, "the table shows the bound port: {line:?}");
            self.listeners.insert(name.to_owned(), addr);
            self.table.push(line);
        }
    }

    /// The next line of stdout, within [`LIMIT`].
    pub(crate) fn stdout_line(&mut self) -> String {
        match self.stdout.recv_timeout(LIMIT) {
            Ok(line) => line,
            Err(e) => self.fail(&format!("no stdout line ({e:?})")),
        }
    }

    pub(crate) fn addr(&self, name: &str) -> SocketAddr {
        *self
            .listeners
            .get(name)
            .unwrap_or_else(|| panic!("no listener {name:?} in {:?}", self.listeners))
    }

    /// Kills the daemon and panics with what it logged.
    pub(crate) fn fail(&mut self, why: &str) -> ! {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.log.extend(self.stderr.try_iter());
        panic!("{why}; switchboard's stderr:\n{}", self.log.join("\n"));
    }

    /// Sends a signal (`TERM`, `INT`) with kill(1): the crate forbids unsafe code.
    pub(crate) fn signal(&mut self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("cannot run kill");
        if !status.success() {
            self.fail(&format!("kill -{name} failed: {status:?}"));
        }
    }

    /// Reads stderr until a line contains `needle`, within [`LIMIT`].
    pub(crate) fn wait_for_log(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + LIMIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stderr.recv_timeout(left) {
                Ok(line) => {
                    self.log.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    self.fail(&format!("no log line with {needle:?} in time"))
                }
                Err(RecvTimeoutError::Disconnected) => {
                    self.fail(&format!("stderr closed before a log line with {needle:?}"))
                }
            }
        }
    }

    /// Every stderr line read so far, with those printed since the last
    /// read (not waiting for more).
    pub(crate) fn log_now(&mut self) -> &[String] {
        while let Ok(line) = self.stderr.try_recv() {
            self.log.push(line);
        }
        &self.log
    }

    /// Waits for the process to exit within `limit`.
    pub(crate) fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        match wait_within(&mut self.child, limit) {
            Some(status) => status,
            None => self.fail(&format!("switchboard did not exit within {limit:?}")),
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A std client with every read and write bounded by [`LIMIT`].
pub(crate) fn client(addr: SocketAddr) -> TcpStream {
    let stream =
        TcpStream::connect_timeout(&addr, LIMIT).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    stream.set_read_timeout(Some(LIMIT)).expect("read timeout");
    stream
        .set_write_timeout(Some(LIMIT))
        .expect("write timeout");
    stream
}

#[test]
fn serves_the_config_and_sigterm_shuts_down_with_status_0() {
    let mut daemon = Daemon::start(Path::new("tests/fixtures/valid/echo-pair-gbk-bot.toml"));
    let mut names: Vec<&String> = daemon.listeners.keys().collect();
    names.sort();
    assert_eq!(names, ["bot.gbk", "echo-a", "echo-b"]);

    let mut conn = client(daemon.addr("echo-a"));
    let message = "hello, switchboard 你好\n".as_bytes();
    conn.write_all(message).expect("send");
    let mut back = vec![0; message.len()];
    conn.read_exact(&mut back).expect("no echo");
    assert_eq!(back, message);

    daemon.signal("TERM");
    // The echo client still connected is closed by the shutdown ...
    let mut rest = Vec::new();
    match conn.read_to_end(&mut rest) {
        Ok(_) => assert!(rest.is_empty(), "unexpected bytes after shutdown: {rest:?}"),
        Err(e) => daemon.fail(&format!(
            "the echo connection was not closed cleanly at shutdown: {e}"
        )),
    }
    // ... and the process exits cleanly, well before the 2s grace would run out.
    let status = daemon.wait_exit(LIMIT);
    assert_eq!(status.code(), Some(0), "{status:?}");
}

#[test]
fn a_connection_logs_one_line_at_info_when_it_closes() {
    let mut daemon = Daemon::start(Path::new("tests/fixtures/valid/minimal-echo.toml"));
    let mut conn = client(daemon.addr("echo"));
    conn.write_all(b"ping\n").expect("send");
    let mut back = [0u8; 5];
    conn.read_exact(&mut back).expect("no echo");
    drop(conn);
    // The line arrives while the daemon runs: buffered log writes are
    // flushed as soon as the writer has nothing more queued.
    let closed = daemon.wait_for_log("closed");
    for field in [
        "conn{",
        "listener=echo",
        "peer=127.0.0.1:",
        "id=",
        "bytes_in=5",
        "bytes_out=5",
        "reason=",
    ] {
        assert!(closed.contains(field), "{field:?} missing from {closed:?}");
    }
    daemon.signal("TERM");
    let status = daemon.wait_exit(LIMIT);
    assert_eq!(status.code(), Some(0), "{status:?}");
    let deadline = Instant::now() + LIMIT;
    while let Ok(line) = daemon
        .stderr
        .recv_timeout(deadline.saturating_duration_since(Instant::now()))
    {
        daemon.log.push(line);
    }
    let per_connection: Vec<&String> = daemon.log.iter().filter(|l| l.contains("conn{")).collect();
    assert_eq!(
        per_connection.len(),
        1,
        "one line per connection at info: {per_connection:#?}"
    );
}

#[test]
fn sigint_shuts_down_an_idle_server_with_status_0() {
    let mut daemon = Daemon::start(Path::new("tests/fixtures/valid/minimal-echo.toml"));
    daemon.signal("INT");
    let status = daemon.wait_exit(LIMIT);
    assert_eq!(status.code(), Some(0), "{status:?}");
}

#[test]
fn a_second_signal_during_a_slow_shutdown_exits_at_once_with_130() {
    // A download the client does not read keeps its connection busy: the
    // server finishes downloads at shutdown, and the write only gives up
    // after idle_timeout (10m), so the server sits in its 30s grace period.
    let dir = tempfile::tempdir().expect("tempdir");
    let big = std::fs::File::create(dir.path().join("big.bin")).expect("create big.bin");
    // Sparse: far more than the socket buffers hold, at no disk cost.
    big.set_len(512 << 20).expect("size big.bin");
    drop(big);
    let root = dir.path().to_str().expect("temp path is UTF-8");
    assert!(
        !root.contains('\'') && !root.contains('\n'),
        "temp path {root:?} does not fit a TOML literal string"
    );
    let config = dir.path().join("slow-shutdown.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nshutdown_grace = \"30s\"\n\n[[listener]]\nname = \"files\"\nbind = \"127.0.0.1:0\"\n\
             handler = \"download\"\nidle_timeout = \"10m\"\nroot = '{root}'\n"
        ),
    )
    .expect("write config");

    let mut daemon = Daemon::start(&config);
    let mut download = client(daemon.addr("files"));
    download.write_all(b"big.bin\n").expect("send the name");
    let mut first = [0u8; 1024];
    download
        .read_exact(&mut first)
        .expect("the download did not start");
    assert!(first.iter().all(|&b| b == 0), "big.bin is all zeros");
    // From here on the client reads nothing.

    daemon.signal("TERM");
    let waiting = daemon.wait_for_log("waiting for connections to finish");
    assert!(waiting.contains("connections=1"), "{waiting}");
    if let Some(status) = daemon.child.try_wait().expect("cannot poll the child") {
        daemon.fail(&format!("exited during the grace period: {status:?}"));
    }

    let started = Instant::now();
    daemon.signal("TERM");
    // Far less than the 30s grace: a second signal that did nothing would fail here.
    let status = daemon.wait_exit(Duration::from_secs(10));
    assert_eq!(status.code(), Some(EXIT_FORCED), "{status:?}");
    assert!(started.elapsed() < Duration::from_secs(10));
    drop(download);
}

/// "Max open files" soft and hard limits of a process, from /proc/PID/limits.
fn open_file_limits(pid: &str) -> (u64, u64) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("read limits");
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("no open-files line");
    let numbers: Vec<u64> = line
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    match numbers[..] {
        [soft, hard] => (soft, hard),
        _ => panic!("unexpected limits line {line:?}"),
    }
}

/// `switchboard -c config` started by a shell that first runs `ulimit`.
pub(crate) fn with_ulimit(ulimit: &str, config: &Path) -> Command {
    let mut command = Command::new("bash");
    command
        .arg("-c")
        .arg(format!("ulimit {ulimit} && exec \"$0\" -c \"$1\""))
        .arg(BIN)
        .arg(config);
    command
}

#[test]
fn the_open_file_limit_is_raised_to_the_hard_limit() {
    let config = Path::new("tests/fixtures/valid/minimal-echo.toml");
    let (_, hard) = open_file_limits("self");
    assert!(
        hard > 256,
        "this test needs a hard open-file limit above 256, not {hard}"
    );
    let mut daemon = Daemon::start_command(with_ulimit("-Sn 256", config), config);
    let pid = daemon.child.id().to_string();
    assert_eq!(
        open_file_limits(&pid),
        (hard, hard),
        "soft limit not raised"
    );
    daemon.signal("TERM");
    assert!(daemon.wait_exit(LIMIT).success());
}

#[test]
fn a_warning_says_when_max_connections_exceeds_the_open_file_limit() {
    // minimal-echo.toml keeps the default max_connections = 10000.
    let config = Path::new("tests/fixtures/valid/minimal-echo.toml");
    let mut daemon = Daemon::start_command(with_ulimit("-n 512", config), config);
    let line = daemon.wait_for_log("open-file limit is below");
    assert!(line.contains("WARN") && line.contains("512"), "{line}");
    daemon.signal("TERM");
    assert!(daemon.wait_exit(LIMIT).success());
}

/// `history --tail` writes stored messages decoded from the listener's
/// encoding with every control character escaped, and `--raw` writes
/// their bytes as stored; in UTF-8 and in GBK.
#[tokio::test]
async fn history_tail_escapes_stored_messages_unless_raw() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let gbk_hello = encoding_rs::GBK.encode("你好").0.into_owned();
    let cases: [(&str, Vec<u8>, &str); 2] = [
        (
            "utf-8",
            b"hi \x1b]52;c;ZXZpbA==\x07 \xc2\x9b2J \x9b \x7f".to_vec(),
            "hi \\x1b]52;c;ZXZpbA==\\x07 \\u{9b}2J \\x9b \\x7f\n",
        ),
        (
            "gbk",
            [gbk_hello.as_slice(), b" \x1b]0;owned\x07\x1b[2J"].concat(),
            "你好 \\x1b]0;owned\\x07\\x1b[2J\n",
        ),
    ];
    for (encoding, message, shown) in cases {
        let dir = tempfile::tempdir().expect("tempdir");
        let toml = format!(
            "[[listener]]\nname = \"bot\"\nbind = \"127.0.0.1:0\"\nhandler = \"random-bot\"\n\
             encoding = \"{encoding}\"\n[listener.history]\nbackend = \"sqlite\"\npath = \"{}\"\n",
            dir.path().join("h.db").display()
        );
        let config = dir.path().join("c.toml");
        std::fs::write(&config, &toml).expect("config");
        let server = crate::common::TestServer::start(&toml);
        let mut conn = tokio::net::TcpStream::connect(server.addr("bot"))
            .await
            .expect("connect");
        conn.write_all(&[message.as_slice(), b"\n"].concat())
            .await
            .expect("send");
        // The reply (the message itself, the only one kept) says it is stored.
        let mut reply = Vec::new();
        let read = async {
            let mut byte = [0u8; 1];
            while reply.len() < 4096 && conn.read(&mut byte).await.unwrap_or(0) == 1 {
                if byte[0] == b'\n' {
                    break;
                }
                reply.push(byte[0]);
            }
        };
        tokio::time::timeout(LIMIT, read).await.expect("a reply");
        assert_eq!(reply, message, "{encoding}");
        drop(conn);
        server.shutdown().await;
        let tail = |raw: bool| {
            let mut cmd = switchboard();
            cmd.arg("history")
                .arg("-c")
                .arg(&config)
                .args(["bot", "--tail", "5"]);
            if raw {
                cmd.arg("--raw");
            }
            output(&mut cmd)
        };
        let out = tail(false);
        assert!(out.status.success(), "{encoding}: {out:?}");
        assert_eq!(String::from_utf8_lossy(&out.stdout), shown, "{encoding}");
        let raw = tail(true);
        assert!(raw.status.success(), "{encoding}: {raw:?}");
        assert_eq!(
            raw.stdout,
            [message.as_slice(), b"\n"].concat(),
            "{encoding}"
        );
    }
}

#[test]
fn history_tail_cuts_a_huge_message_and_reads_one_stored_as_text() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("history.db");
    {
        // Hostile stored data: one message of 1 MiB, one stored as TEXT.
        let conn = rusqlite::Connection::open(&db).expect("open");
        conn.execute_batch(
            "CREATE TABLE messages (id INTEGER PRIMARY KEY, body BLOB NOT NULL);\
             INSERT INTO messages (body) VALUES (CAST('first' AS BLOB));\
             INSERT INTO messages (body) VALUES (zeroblob(1048576));\
             INSERT INTO messages (body) VALUES ('stored as text');",
        )
        .expect("fill");
    }
    let config = crate::history::bot_config(
        dir.path(),
        "switchboard.toml",
        "127.0.0.1:0",
        "",
        &format!("backend = \"sqlite\"\npath = \"{}\"", db.display()),
    );
    let tail = crate::history::history_cli(&config, &["--tail", "10"]);
    let lines: Vec<&str> = tail.lines().collect();
    assert_eq!(lines.len(), 3, "{} bytes", tail.len());
    assert_eq!(lines[0], "first");
    let cut = format!("{}...(cut)", "\\x00".repeat(64 * 1024));
    assert!(lines[1] == cut, "{} bytes", lines[1].len());
    assert_eq!(lines[2], "stored as text");
}

#[test]
fn history_tail_from_redis_cuts_a_huge_message() {
    if !crate::history::have_redis() {
        return;
    }
    let redis = crate::history::Redis::start(&[]);
    let filled = redis.command(
        "EVAL \"redis.call('HSET', KEYS[1], '#first', 1, '#last', 2, '1', 'hello', '2', \
         string.rep('x', 100000)) return 1\" 1 test:big",
    );
    assert_eq!(filled.as_deref(), Some(":1"));
    let dir = tempfile::tempdir().expect("tempdir");
    let config = crate::history::bot_config(
        dir.path(),
        "switchboard.toml",
        "127.0.0.1:0",
        "",
        &format!(
            "backend = \"redis\"\nurl = \"redis://127.0.0.1:{}/0\"\nkey = \"test:big\"",
            redis.port
        ),
    );
    let tail = crate::history::history_cli(&config, &["--tail", "10"]);
    assert_eq!(tail, format!("hello\n{}...(cut)\n", "x".repeat(64 * 1024)));
}
