//! Config loading against the fixture files: every valid one loads, every invalid one fails with one line naming file, line, column and key, and every warning one loads with its one warning.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use switchboard::Config;
use switchboard::TextEncoding;
use switchboard::config::{EMBEDDED_DEFAULT, HandlerConfig, LogFormat};

/// The fixture directory `kind` (`valid` or `invalid`) of the crate.
fn fixture_dir(kind: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(kind)
}

/// The `.toml` files of a fixture directory, sorted, never empty.
pub fn fixtures(kind: &str) -> Vec<PathBuf> {
    let dir = fixture_dir(kind);
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|entry| entry.expect("cannot read a directory entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "toml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no fixtures in {}", dir.display());
    files
}

/// One valid fixture, loaded.
fn load_valid(name: &str) -> Config {
    let path = fixture_dir("valid").join(name);
    Config::from_file(&path).unwrap_or_else(|e| panic!("{e}"))
}

/// What an invalid fixture's first line says its error must be.
pub struct Expectation {
    /// `LINE:COLUMN`.
    pub position: String,
    /// Text the rest of the message must contain.
    pub message: String,
}

/// Reads the `# expect: LINE:COLUMN: <substring>` line that starts an invalid fixture.
pub fn expectation(path: &Path) -> Expectation {
    let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let first = text.lines().next().unwrap_or_default();
    let spec = first.strip_prefix("# expect: ").unwrap_or_else(|| {
        panic!(
            "{}: first line must be `# expect: LINE:COLUMN: <message>`",
            path.display()
        )
    });
    let mut parts = spec.splitn(3, ':');
    let (line, column, message) = match (parts.next(), parts.next(), parts.next()) {
        (Some(line), Some(column), Some(message)) => (line, column, message),
        _ => panic!("{}: malformed expect line {first:?}", path.display()),
    };
    for number in [line, column] {
        assert!(
            number.parse::<usize>().is_ok_and(|n| n > 0),
            "{}: bad position in {first:?}",
            path.display()
        );
    }
    let message = message.strip_prefix(' ').unwrap_or(message);
    assert!(
        !message.trim().is_empty(),
        "{}: the expect line needs a message",
        path.display()
    );
    Expectation {
        position: format!("{line}:{column}"),
        message: message.to_owned(),
    }
}

/// Checks one line of error text (without any `switchboard: config error: `
/// prefix) against the fixture it came from.
pub fn assert_matches_expectation(path: &Path, error: &str) {
    let expected = expectation(path);
    let file = path.display().to_string();
    assert!(
        !error.contains('\n'),
        "{file}: error is not one line: {error:?}"
    );
    let rest = error
        .strip_prefix(&file)
        .unwrap_or_else(|| panic!("error does not start with the file name {file:?}: {error}"));
    let rest = rest
        .strip_prefix(&format!(":{}: ", expected.position))
        .unwrap_or_else(|| {
            panic!(
                "{file}: expected position {} in: {error}",
                expected.position
            )
        });
    assert!(
        rest.contains(&expected.message),
        "{file}: expected {:?} after the position in: {error}",
        expected.message
    );
}

#[test]
fn every_valid_fixture_loads() {
    for path in fixtures("valid") {
        let config = Config::from_file(&path)
            .unwrap_or_else(|e| panic!("{} should be valid: {e}", path.display()));
        assert_eq!(config.source, path.display().to_string());
        assert!(!config.listeners.is_empty(), "{}", path.display());
        assert!(
            config.warnings.is_empty(),
            "{}: a valid fixture warns nothing (see fixtures/warning): {:?}",
            path.display(),
            config.warnings
        );
    }
}

#[test]
fn every_warning_fixture_loads_with_one_warning_at_its_position() {
    for path in fixtures("warning") {
        let config = Config::from_file(&path)
            .unwrap_or_else(|e| panic!("{} should be valid: {e}", path.display()));
        let [warning] = &config.warnings[..] else {
            panic!(
                "{}: expected one warning, got {:?}",
                path.display(),
                config.warnings
            );
        };
        assert_eq!(warning.file, path.display().to_string());
        assert_matches_expectation(&path, &warning.to_string());
    }
}

#[test]
fn every_invalid_fixture_fails_with_one_line_at_its_position() {
    let files = fixtures("invalid");
    for path in &files {
        let err = match Config::from_file(path) {
            Ok(_) => panic!("{} loaded, but it should be invalid", path.display()),
            Err(e) => e,
        };
        assert_eq!(err.file, path.display().to_string());
        assert!(
            err.position.is_some(),
            "{}: no position in {err:?}",
            path.display()
        );
        assert_matches_expectation(path, &err.to_string());
    }
}

#[test]
fn invalid_fixtures_cover_every_documented_mistake() {
    let names: Vec<String> = fixtures("invalid")
        .iter()
        .map(|p| {
            p.file_stem()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    for required in [
        "syntax-error",
        "unknown-listener-key",
        "unknown-server-key",
        "unknown-top-level-key",
        "wrong-type",
        "duplicate-name",
        "duplicate-bind",
        "missing-download-root",
        "bad-duration",
        "bad-placeholder",
        "bad-time-format",
        "bad-bind",
        "root-on-echo",
        "zero-max-connections",
        "zero-backlog",
        "zero-idle-timeout",
        "zero-max-message-bytes",
        "zero-chunk-size",
        "zero-history-limit",
        "no-listeners",
        "bad-encoding",
        "misspelled-common-key-on-download",
        "misspelled-common-key-on-echo",
        "misspelled-handler-key",
        "misspelled-handler",
        "misspelled-server-key",
        "zero-request-timeout",
        "listener-table-twice",
        "listener-table-after-array",
        "listener-array-after-table",
        "rules-table-twice",
        "wrong-type-duration",
        "wrong-type-server-duration",
        "wrong-type-size",
        "wrong-type-address",
        "wrong-type-list",
        "wrong-type-keywords",
        "wrong-type-boolean",
    ] {
        assert!(
            names.iter().any(|n| n == required),
            "missing fixture invalid/{required}.toml"
        );
    }
}

#[test]
fn the_same_text_fails_the_same_way_from_a_string() {
    for path in fixtures("invalid") {
        let text = fs::read_to_string(&path).expect("fixture is readable");
        let name = path.display().to_string();
        let from_string =
            Config::from_toml(&text, &name).expect_err("invalid fixture loaded from a string");
        let from_file = Config::from_file(&path).expect_err("invalid fixture loaded from its file");
        assert_eq!(from_string, from_file, "{name}");
    }
}

#[test]
fn embedded_default_is_the_documented_example() {
    assert_eq!(
        EMBEDDED_DEFAULT,
        include_str!("../../config/switchboard.toml")
    );
    let config = Config::embedded_default().expect("the embedded default is valid");
    assert_eq!(config.source, switchboard::config::EMBEDDED_NAME);
    let names: Vec<&str> = config.listeners.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "echo",
            "download",
            "keyword-bot",
            "random-bot",
            "echo-udp",
            "keyword-bot-udp",
            "random-bot-udp"
        ]
    );
}

#[test]
fn minimal_config_takes_the_documented_defaults() {
    use switchboard::config::defaults;
    let config = load_valid("minimal-echo.toml");
    assert_eq!(config.server.shutdown_grace, defaults::SHUTDOWN_GRACE);
    assert_eq!(config.server.log_format, LogFormat::Text);
    assert_eq!(config.server.log_level, defaults::LOG_LEVEL);
    assert_eq!(config.server.worker_threads, None);
    let echo = config.listener("echo").expect("listener echo");
    assert_eq!(echo.bind, "127.0.0.1:0".parse().unwrap());
    assert_eq!(echo.backlog, defaults::BACKLOG);
    assert_eq!(echo.max_connections, defaults::MAX_CONNECTIONS);
    assert_eq!(echo.idle_timeout, defaults::IDLE_TIMEOUT);
    assert_eq!(echo.max_message_bytes, defaults::MAX_MESSAGE_BYTES);
    assert_eq!(echo.message_gap, defaults::MESSAGE_GAP);
    assert_eq!(echo.encoding, TextEncoding::Utf8);
    assert!(matches!(echo.handler, HandlerConfig::Echo(_)));
}

#[test]
fn every_key_set_in_a_fixture_is_kept() {
    let config = load_valid("echo-pair-gbk-bot.toml");
    assert_eq!(config.server.shutdown_grace, Duration::from_secs(2));
    assert_eq!(config.server.log_format, LogFormat::Json);
    assert_eq!(config.server.log_level, "switchboard=debug,warn");
    assert_eq!(config.server.worker_threads, Some(2));
    let names: Vec<&str> = config.listeners.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(
        names,
        ["echo-a", "echo-b", "bot.gbk"],
        "listeners keep file order"
    );

    let echo_b = config.listener("echo-b").expect("listener echo-b");
    assert_eq!((echo_b.backlog, echo_b.max_connections), (16, 4));
    assert_eq!(echo_b.idle_timeout, Duration::from_secs(90));

    let bot = config.listener("bot.gbk").expect("listener bot.gbk");
    assert_eq!(bot.encoding, TextEncoding::Gbk);
    assert_eq!(bot.max_message_bytes, 1024);
    assert_eq!(bot.message_gap, Duration::from_millis(20));
    let HandlerConfig::KeywordBot(rules) = &bot.handler else {
        panic!("bot.gbk is not a keyword bot: {:?}", bot.handler);
    };
    assert_eq!(rules.time_format.as_str(), "%H:%M");
    assert_eq!(rules.rules.len(), 2);
    assert_eq!(rules.rules[0].keywords, ["你好", "hello"]);

    let random = load_valid("random-bot-farewell.toml");
    let random = &random.listeners[0];
    assert_eq!(
        random.encoding,
        TextEncoding::Utf8,
        "`utf8` is an alias of `utf-8`"
    );
    let HandlerConfig::RandomBot(bot) = &random.handler else {
        panic!("not a random bot: {:?}", random.handler);
    };
    assert_eq!((bot.history_limit, bot.history_bytes), (5, 65536));
    assert_eq!(bot.farewell, ["bye", "再见", "Goodbye!"]);
}

#[test]
fn download_root_is_resolved_to_an_absolute_directory() {
    // Relative roots are resolved against the working directory, which
    // `cargo test` sets to the crate root.
    let config = load_valid("download-and-ipv6.toml");
    let files = config.listener("files").expect("listener files");
    let HandlerConfig::Download(download) = &files.handler else {
        panic!("files is not a download listener: {:?}", files.handler);
    };
    assert!(download.root.is_absolute(), "{}", download.root.display());
    let expected =
        fs::canonicalize(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")).unwrap();
    assert_eq!(download.root, expected);
    assert_eq!(download.chunk_size, 4096);
    assert!(download.allow_hidden);
    assert_eq!(config.server.shutdown_grace, Duration::from_millis(500));
    let ipv6 = config.listener("echo6").expect("listener echo6");
    assert!(ipv6.bind.is_ipv6());
}

#[test]
fn a_udp_listener_keeps_its_keys_and_shares_a_port_number_with_a_tcp_one() {
    use switchboard::config::{Rate, Transport};
    let config = load_valid("udp-beside-tcp.toml");
    let tcp = config.listener("echo").expect("echo");
    let udp = config.listener("echo-udp").expect("echo-udp");
    assert_eq!(tcp.transport, Transport::Tcp);
    assert_eq!(tcp.bind, udp.bind);
    let Transport::Udp(settings) = &udp.transport else {
        panic!("echo-udp is {:?}", udp.transport);
    };
    assert_eq!(settings.max_datagram_bytes, 512);
    assert_eq!(settings.receive_buffer_bytes, Some(262_144));
    assert_eq!(
        settings.datagram_rate_per_source,
        Some(Rate {
            per_second: 100.0,
            burst: 20
        })
    );
    assert_eq!(
        settings.reply_bytes_per_source.to_string(),
        "1000/s burst 2000"
    );
    assert_eq!(udp.encoding, TextEncoding::Gbk);
    // The defaults of a UDP listener's own keys.
    let Transport::Udp(defaults) = &config.listener("bot-udp").expect("bot-udp").transport else {
        panic!("bot-udp is not UDP");
    };
    assert_eq!(defaults.max_datagram_bytes, 1472);
    assert_eq!(defaults.receive_buffer_bytes, None);
    assert_eq!(defaults.datagram_rate_per_source, None);
    assert_eq!(defaults.reply_bytes_per_source.to_string(), "4096/s");
}
