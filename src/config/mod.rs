//! The TOML configuration: its types, their defaults (all in [`defaults`]),
//! loading with errors that name file, line, column and key, and the
//! validation pass that runs before anything is bound.
//!
//! A file has one optional `[server]` table and one `[[listener]]` table per
//! listener. A listener table holds the keys every listener has (see
//! [`LISTENER_KEYS`]) plus the settings of its handler; each handler's
//! settings are their own struct, so a key that belongs to another handler is
//! reported as unknown, at its line.

mod error;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde::de::DeserializeOwned;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

pub use error::ConfigError;
use error::{Source, join_key, value_span};

use crate::template::{Template, TimeFormat};
use crate::text::TextEncoding;

/// The documented example config, compiled in: what `switchboard` runs with no `-c`.
pub const EMBEDDED_DEFAULT: &str = include_str!("../../config/switchboard.toml");

/// The name errors use for the embedded default config.
pub const EMBEDDED_NAME: &str = "<embedded default>";

/// Every default value of the configuration, in one place.
pub mod defaults {
    use std::time::Duration;

    /// `listen(2)` backlog, as in the seed tutorial.
    pub const BACKLOG: u32 = 128;
    /// Concurrent connections per listener.
    pub const MAX_CONNECTIONS: usize = 10_000;
    /// A connection that sends nothing for this long is closed.
    pub const IDLE_TIMEOUT: Duration = Duration::from_secs(5 * 60);
    /// Longest message a framed handler accepts.
    pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;
    /// Quiet time after which bytes with no newline count as a message.
    pub const MESSAGE_GAP: Duration = Duration::from_millis(50);
    /// How long shutdown waits for connections to finish.
    pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
    /// Log filter when neither `RUST_LOG` nor the config sets one.
    pub const LOG_LEVEL: &str = "info";
    /// Download chunk size.
    pub const CHUNK_SIZE: usize = 64 * 1024;
    /// Random-bot history length, in messages.
    pub const HISTORY_LIMIT: usize = 10_000;
    /// Random-bot history size, in bytes of message text.
    pub const HISTORY_BYTES: usize = 8 * 1024 * 1024;
    /// Keyword-bot reply when no rule matches (the seed's).
    pub const DEFAULT_REPLY: &str = "我不能明白您的意思,好尴尬啊...";
    /// A bot's last words, on farewell or shutdown.
    pub const GOODBYE_REPLY: &str = "bye";
    /// Messages that end a random-bot chat.
    pub const FAREWELL: &[&str] = &["bye"];
}

/// The range each bounded setting must be in (checked when the config loads).
pub mod bounds {
    use std::ops::RangeInclusive;
    use std::time::Duration;

    /// Longest listener name.
    pub const NAME_LEN: usize = 64;
    /// `backlog`.
    pub const BACKLOG: RangeInclusive<u32> = 1..=65_535;
    /// `max_connections` (the top is far above what one process can hold open).
    pub const MAX_CONNECTIONS: RangeInclusive<usize> = 1..=10_000_000;
    /// `max_message_bytes`.
    pub const MAX_MESSAGE_BYTES: RangeInclusive<usize> = 1..=16 * 1024 * 1024;
    /// `chunk_size` (tokio reads files at most 2 MiB at a time).
    pub const CHUNK_SIZE: RangeInclusive<usize> = 1..=2 * 1024 * 1024;
    /// Shortest `message_gap`: below it every read would be a message.
    pub const MESSAGE_GAP_MIN: Duration = Duration::from_millis(1);
    /// `worker_threads`.
    pub const WORKER_THREADS: RangeInclusive<usize> = 1..=1024;
}

/// Keys every `[[listener]]` table may have, whatever its handler.
pub const LISTENER_KEYS: &[&str] = &[
    "name",
    "bind",
    "handler",
    "backlog",
    "max_connections",
    "idle_timeout",
    "max_message_bytes",
    "message_gap",
    "encoding",
];

/// A loaded, validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the config came from (a path, or `<embedded default>`).
    pub source: String,
    /// Process-wide settings.
    pub server: ServerConfig,
    /// The listeners, in file order.
    pub listeners: Vec<ListenerConfig>,
}

/// The `[server]` table.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// How long shutdown waits for connections to finish (e.g. "10s").
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// `text` (default) or `json`.
    pub log_format: LogFormat,
    /// A tracing filter such as `info` or `switchboard=debug`; `RUST_LOG` overrides it.
    pub log_level: String,
    /// Tokio worker threads; absent means one per CPU.
    pub worker_threads: Option<usize>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            shutdown_grace: defaults::SHUTDOWN_GRACE,
            log_format: LogFormat::Text,
            log_level: defaults::LOG_LEVEL.to_owned(),
            worker_threads: None,
        }
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object a line.
    Json,
}

/// One validated `[[listener]]`.
#[derive(Debug, Clone, PartialEq)]
pub struct ListenerConfig {
    /// Unique name, used in logs (and later by systemd socket names).
    pub name: String,
    /// Address to bind; port 0 picks a free port.
    pub bind: SocketAddr,
    /// `listen(2)` backlog.
    pub backlog: u32,
    /// Connections served at once; more wait in the kernel backlog.
    pub max_connections: usize,
    /// A connection that sends nothing for this long is closed.
    pub idle_timeout: Duration,
    /// Longest message the framed handlers accept.
    pub max_message_bytes: usize,
    /// Bytes with no newline followed by this much quiet count as a message.
    pub message_gap: Duration,
    /// Encoding of the text the handler reads and writes.
    pub encoding: TextEncoding,
    /// Which handler serves the connections, with its settings.
    pub handler: HandlerConfig,
}

/// The handler of a listener and its own settings.
#[derive(Debug, Clone, PartialEq)]
pub enum HandlerConfig {
    /// Sends back every byte.
    Echo,
    /// Streams files from a confined root.
    Download(DownloadConfig),
    /// Replies by keyword rules.
    KeywordBot(KeywordBotConfig),
    /// Replies with a random earlier message.
    RandomBot(RandomBotConfig),
}

impl HandlerConfig {
    /// The handler's name as written in `handler = "..."`.
    pub fn kind(&self) -> HandlerKind {
        match self {
            HandlerConfig::Echo => HandlerKind::Echo,
            HandlerConfig::Download(_) => HandlerKind::Download,
            HandlerConfig::KeywordBot(_) => HandlerKind::KeywordBot,
            HandlerConfig::RandomBot(_) => HandlerKind::RandomBot,
        }
    }
}

/// The built-in handlers, by the name the config uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HandlerKind {
    /// `echo`
    Echo,
    /// `download`
    Download,
    /// `keyword-bot`
    KeywordBot,
    /// `random-bot`
    RandomBot,
}

impl HandlerKind {
    /// The name used in the config.
    pub fn name(self) -> &'static str {
        match self {
            HandlerKind::Echo => "echo",
            HandlerKind::Download => "download",
            HandlerKind::KeywordBot => "keyword-bot",
            HandlerKind::RandomBot => "random-bot",
        }
    }
}

/// Settings of the echo handler (it has none).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EchoSettings {}

/// Settings of the download handler.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DownloadConfig {
    /// Directory served; resolved to an absolute path without symlinks at load.
    pub root: PathBuf,
    /// Bytes sent per write.
    #[serde(default = "default_chunk_size")]
    pub chunk_size: usize,
    /// Serve names starting with `.`.
    #[serde(default)]
    pub allow_hidden: bool,
}

/// Settings of the keyword bot.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeywordBotConfig {
    /// Rules, tried in order; the first with a keyword in the message replies.
    #[serde(default)]
    pub rules: Vec<KeywordRule>,
    /// Reply when no rule matches.
    #[serde(default = "default_reply")]
    pub default_reply: Template,
    /// Format of `{time}`.
    #[serde(default = "TimeFormat::seed_default")]
    pub time_format: TimeFormat,
    /// Sent when the server shuts down while the client is connected.
    #[serde(default = "goodbye_reply")]
    pub goodbye_reply: Template,
}

/// One keyword rule: any of `keywords` (case-insensitive substring) gives `reply`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeywordRule {
    /// Words that trigger the rule.
    pub keywords: Vec<String>,
    /// The reply template.
    pub reply: Template,
}

/// Settings of the random-reply bot.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RandomBotConfig {
    /// Messages kept in the shared history; the oldest are dropped.
    #[serde(default = "default_history_limit")]
    pub history_limit: usize,
    /// Bytes of message text kept in the history; the oldest are dropped.
    #[serde(default = "default_history_bytes")]
    pub history_bytes: usize,
    /// Messages that end the chat (case-insensitive, surrounding whitespace ignored).
    #[serde(default = "default_farewell")]
    pub farewell: Vec<String>,
    /// Reply to a farewell (and to everyone still connected at shutdown).
    #[serde(default = "goodbye_reply")]
    pub goodbye_reply: Template,
    /// Format of `{time}` in the goodbye reply.
    #[serde(default = "TimeFormat::seed_default")]
    pub time_format: TimeFormat,
}

fn default_chunk_size() -> usize {
    defaults::CHUNK_SIZE
}
fn default_history_limit() -> usize {
    defaults::HISTORY_LIMIT
}
fn default_history_bytes() -> usize {
    defaults::HISTORY_BYTES
}
fn default_farewell() -> Vec<String> {
    defaults::FAREWELL.iter().map(|s| (*s).to_owned()).collect()
}
fn default_reply() -> Template {
    literal_template(defaults::DEFAULT_REPLY)
}
fn goodbye_reply() -> Template {
    literal_template(defaults::GOODBYE_REPLY)
}
fn literal_template(text: &str) -> Template {
    // The defaults are plain text with no braces, which always parses.
    Template::parse(text).unwrap_or_else(|_| unreachable!("default reply {text:?} has no braces"))
}

/// The keys every listener has, as written in the file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListenerKeys {
    name: String,
    bind: String,
    handler: HandlerKind,
    #[serde(default = "default_backlog")]
    backlog: u32,
    #[serde(default = "default_max_connections")]
    max_connections: usize,
    #[serde(default = "default_idle_timeout", with = "humantime_serde")]
    idle_timeout: Duration,
    #[serde(default = "default_max_message_bytes")]
    max_message_bytes: usize,
    #[serde(default = "default_message_gap", with = "humantime_serde")]
    message_gap: Duration,
    #[serde(default)]
    encoding: TextEncoding,
}

fn default_backlog() -> u32 {
    defaults::BACKLOG
}
fn default_max_connections() -> usize {
    defaults::MAX_CONNECTIONS
}
fn default_idle_timeout() -> Duration {
    defaults::IDLE_TIMEOUT
}
fn default_max_message_bytes() -> usize {
    defaults::MAX_MESSAGE_BYTES
}
fn default_message_gap() -> Duration {
    defaults::MESSAGE_GAP
}

impl Config {
    /// The embedded default config (the seed's four programs on 127.0.0.1).
    pub fn embedded_default() -> Result<Config, ConfigError> {
        Config::from_toml(EMBEDDED_DEFAULT, EMBEDDED_NAME)
    }

    /// Reads and validates a config file.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: name.clone(),
            position: None,
            key: None,
            message: format!("cannot read config file: {e}"),
        })?;
        Config::from_toml(&text, &name)
    }

    /// Parses and validates config text; `name` is what errors call the file.
    pub fn from_toml(text: &str, name: &str) -> Result<Config, ConfigError> {
        let src = Source { name, text };
        let doc = DeTable::parse(text).map_err(|e| src.toml_error(&e, None))?;
        let root_span = doc.span();
        let root = doc.into_inner();

        let mut server = None;
        let mut server_table = DeTable::new();
        let mut listener_tables = Vec::new();
        for (key, value) in root {
            match key.get_ref().as_ref() {
                "server" => {
                    let table = expect_table(&src, "server", value)?;
                    server_table = table.get_ref().clone();
                    server = Some(deserialize_table::<ServerConfig>(&src, "server", table)?);
                }
                "listener" => {
                    let span = value.span();
                    match value.into_inner() {
                        DeValue::Array(items) => {
                            for (i, item) in items.into_iter().enumerate() {
                                listener_tables.push(expect_table(
                                    &src,
                                    &format!("listener[{i}]"),
                                    item,
                                )?);
                            }
                        }
                        _ => {
                            return Err(src.error(
                                Some(span),
                                Some("listener".into()),
                                "must be an array of tables: write each listener as a [[listener]] table",
                            ));
                        }
                    }
                }
                other => {
                    return Err(src.error(
                        Some(key.span()),
                        Some(other.to_owned()),
                        "unknown top-level key, expected `server` or `listener`",
                    ));
                }
            }
        }
        let server = server.unwrap_or_default();
        validate_server(&src, &server, &server_table)?;

        if listener_tables.is_empty() {
            return Err(src.error(
                Some(root_span.start..root_span.start),
                None,
                "no listeners: add at least one [[listener]] table",
            ));
        }
        let mut listeners = Vec::with_capacity(listener_tables.len());
        let mut names: HashMap<String, usize> = HashMap::new();
        for (i, table) in listener_tables.into_iter().enumerate() {
            let prefix = format!("listener[{i}]");
            let listener = parse_listener(&src, &prefix, table.clone())?;
            let span_of = |key: &str| value_span(table.get_ref(), key);
            if let Some(first) = names.insert(listener.name.clone(), i) {
                return Err(src.error(
                    span_of("name"),
                    Some(join_key(&prefix, "name")),
                    format!(
                        "duplicate listener name {:?} (also listener[{first}])",
                        listener.name
                    ),
                ));
            }
            if let Some(other) = listeners
                .iter()
                .find(|other: &&ListenerConfig| addresses_overlap(other.bind, listener.bind))
            {
                return Err(src.error(
                    span_of("bind"),
                    Some(join_key(&prefix, "bind")),
                    format!(
                        "listener {:?}: address {} overlaps {} of listener {:?}",
                        listener.name, listener.bind, other.bind, other.name
                    ),
                ));
            }
            listeners.push(listener);
        }
        Ok(Config {
            source: name.to_owned(),
            server,
            listeners,
        })
    }

    /// The listener with this name.
    pub fn listener(&self, name: &str) -> Option<&ListenerConfig> {
        self.listeners.iter().find(|l| l.name == name)
    }
}

/// True when two binds cannot both succeed: the same port (not 0) and the
/// same address, or one of them the wildcard of its family. An IPv6 wildcard
/// also takes IPv4 (Linux's dual-stack default).
fn addresses_overlap(a: SocketAddr, b: SocketAddr) -> bool {
    if a.port() == 0 || a.port() != b.port() {
        return false;
    }
    let covers = |wide: SocketAddr, other: SocketAddr| {
        wide.ip().is_unspecified() && (wide.is_ipv6() || other.is_ipv4())
    };
    a.ip() == b.ip() || covers(a, b) || covers(b, a)
}

fn expect_table<'i>(
    src: &Source<'_>,
    key: &str,
    value: Spanned<DeValue<'i>>,
) -> Result<Spanned<DeTable<'i>>, ConfigError> {
    let span = value.span();
    match value.into_inner() {
        DeValue::Table(table) => Ok(Spanned::new(span, table)),
        other => Err(src.error(
            Some(span),
            Some(key.to_owned()),
            format!("expected a table, found {}", other.type_str()),
        )),
    }
}

/// Deserializes one table, mapping errors to file positions and keys.
fn deserialize_table<T: DeserializeOwned>(
    src: &Source<'_>,
    prefix: &str,
    table: Spanned<DeTable<'_>>,
) -> Result<T, ConfigError> {
    let for_errors = table.get_ref().clone();
    T::deserialize(toml::de::Deserializer::from(table))
        .map_err(|e| src.toml_error(&e, Some((prefix, &for_errors))))
}

fn parse_listener(
    src: &Source<'_>,
    prefix: &str,
    table: Spanned<DeTable<'_>>,
) -> Result<ListenerConfig, ConfigError> {
    let span = table.span();
    let mut common = DeTable::new();
    let mut settings = DeTable::new();
    for (key, value) in table.get_ref().iter() {
        let target = if LISTENER_KEYS.contains(&key.get_ref().as_ref()) {
            &mut common
        } else {
            &mut settings
        };
        target.insert(key.clone(), value.clone());
    }
    let keys: ListenerKeys = deserialize_table(src, prefix, Spanned::new(span.clone(), common))?;
    let table = table.get_ref();
    let at = |key: &str| {
        (
            value_span(table, key).or(Some(span.clone())),
            Some(join_key(prefix, key)),
        )
    };
    let fail = |key: &str, message: String| {
        let (span, key) = at(key);
        src.error(span, key, format!("listener {:?}: {message}", keys.name))
    };

    let valid_name = (1..=bounds::NAME_LEN).contains(&keys.name.len())
        && keys
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !valid_name {
        return Err(fail(
            "name",
            format!(
                "name must be 1 to {} characters of A-Z a-z 0-9 - _ .",
                bounds::NAME_LEN
            ),
        ));
    }
    let bind: SocketAddr = keys.bind.parse().map_err(|_| {
        fail(
            "bind",
            format!("invalid address {:?}: write IP:PORT, e.g. 127.0.0.1:10010 or [::1]:10010 (port 0 picks a free port)", keys.bind),
        )
    })?;
    in_range(&fail, "backlog", keys.backlog, &bounds::BACKLOG)?;
    in_range(
        &fail,
        "max_connections",
        keys.max_connections,
        &bounds::MAX_CONNECTIONS,
    )?;
    in_range(
        &fail,
        "max_message_bytes",
        keys.max_message_bytes,
        &bounds::MAX_MESSAGE_BYTES,
    )?;
    if keys.idle_timeout.is_zero() {
        return Err(fail(
            "idle_timeout",
            "idle_timeout must be longer than 0s".into(),
        ));
    }
    if keys.message_gap < bounds::MESSAGE_GAP_MIN {
        return Err(fail(
            "message_gap",
            format!(
                "message_gap must be at least {}",
                humantime::format_duration(bounds::MESSAGE_GAP_MIN)
            ),
        ));
    }
    if keys.message_gap >= keys.idle_timeout {
        // Blame the key that was written, when only one of them was.
        let key = if value_span(table, "message_gap").is_some() {
            "message_gap"
        } else {
            "idle_timeout"
        };
        return Err(fail(
            key,
            format!(
                "message_gap ({}) must be shorter than idle_timeout ({})",
                humantime::format_duration(keys.message_gap),
                humantime::format_duration(keys.idle_timeout)
            ),
        ));
    }

    let settings = Spanned::new(span.clone(), settings);
    let handler = match keys.handler {
        HandlerKind::Echo => {
            deserialize_table::<EchoSettings>(src, prefix, settings)
                .map_err(|e| not_for_handler(e, prefix, keys.handler))?;
            HandlerConfig::Echo
        }
        HandlerKind::Download => {
            let mut download: DownloadConfig = deserialize_table(src, prefix, settings)
                .map_err(|e| not_for_handler(e, prefix, keys.handler))?;
            download.root = std::fs::canonicalize(&download.root)
                .map_err(|e| fail("root", format!("download root {:?}: {e}", download.root)))?;
            if !download.root.is_dir() {
                return Err(fail(
                    "root",
                    format!("download root {:?} is not a directory", download.root),
                ));
            }
            in_range(
                &fail,
                "chunk_size",
                download.chunk_size,
                &bounds::CHUNK_SIZE,
            )?;
            HandlerConfig::Download(download)
        }
        HandlerKind::KeywordBot => {
            let bot: KeywordBotConfig = deserialize_table(src, prefix, settings)
                .map_err(|e| not_for_handler(e, prefix, keys.handler))?;
            for (i, rule) in bot.rules.iter().enumerate() {
                if rule.keywords.is_empty() || rule.keywords.iter().any(|k| k.trim().is_empty()) {
                    return Err(src.error(
                        rule_keywords_span(table, i).or(Some(span.clone())),
                        Some(join_key(prefix, &format!("rules[{i}].keywords"))),
                        format!(
                            "listener {:?}: every rule needs at least one keyword, and no keyword may be empty",
                            keys.name
                        ),
                    ));
                }
            }
            HandlerConfig::KeywordBot(bot)
        }
        HandlerKind::RandomBot => {
            let bot: RandomBotConfig = deserialize_table(src, prefix, settings)
                .map_err(|e| not_for_handler(e, prefix, keys.handler))?;
            if bot.history_limit == 0 {
                return Err(fail(
                    "history_limit",
                    "history_limit must be at least 1".into(),
                ));
            }
            if bot.history_bytes == 0 {
                return Err(fail(
                    "history_bytes",
                    "history_bytes must be at least 1".into(),
                ));
            }
            if bot.goodbye_reply.mentions_keywords() {
                return Err(fail(
                    "goodbye_reply",
                    "{keywords} is a keyword-bot placeholder; a random-bot has no keywords".into(),
                ));
            }
            if bot.farewell.iter().any(|f| f.trim().is_empty()) {
                return Err(fail(
                    "farewell",
                    "farewell messages must not be empty".into(),
                ));
            }
            HandlerConfig::RandomBot(bot)
        }
    };

    Ok(ListenerConfig {
        name: keys.name,
        bind,
        backlog: keys.backlog,
        max_connections: keys.max_connections,
        idle_timeout: keys.idle_timeout,
        max_message_bytes: keys.max_message_bytes,
        message_gap: keys.message_gap,
        encoding: keys.encoding,
        handler,
    })
}

/// Checks that a number is within its bounds, naming the key if not.
fn in_range<T: PartialOrd + std::fmt::Display>(
    fail: &impl Fn(&str, String) -> ConfigError,
    key: &str,
    value: T,
    range: &std::ops::RangeInclusive<T>,
) -> Result<(), ConfigError> {
    if range.contains(&value) {
        return Ok(());
    }
    Err(fail(
        key,
        format!(
            "{key} must be between {} and {}",
            range.start(),
            range.end()
        ),
    ))
}

/// The span of `rules[i].keywords` in a listener table.
fn rule_keywords_span(table: &DeTable<'_>, i: usize) -> Option<std::ops::Range<usize>> {
    let (_, rules) = table.iter().find(|(k, _)| k.get_ref() == "rules")?;
    let rule = rules.get_ref().as_array()?.get(i)?;
    rule.get_ref()
        .as_table()
        .and_then(|t| value_span(t, "keywords"))
        .or(Some(rule.span()))
}

/// Makes "unknown field" errors say which handler the key does not belong to.
/// Only keys directly in the listener table are rewritten, not nested ones
/// (an unknown key in a rule is the rule's mistake).
fn not_for_handler(mut err: ConfigError, prefix: &str, handler: HandlerKind) -> ConfigError {
    let direct = err
        .key
        .as_deref()
        .and_then(|k| k.strip_prefix(prefix))
        .and_then(|k| k.strip_prefix('.'));
    if err.message.starts_with("unknown field") && direct.is_some_and(|k| !k.contains(['.', '['])) {
        err.message = format!(
            "not a setting of handler `{}`: {}",
            handler.name(),
            err.message
        );
    }
    err
}

fn validate_server(
    src: &Source<'_>,
    server: &ServerConfig,
    table: &DeTable<'_>,
) -> Result<(), ConfigError> {
    let at = |key: &str| (value_span(table, key), Some(join_key("server", key)));
    if let Err(e) = tracing_subscriber::EnvFilter::builder().parse(&server.log_level) {
        let (span, key) = at("log_level");
        return Err(src.error(
            span,
            key,
            format!("invalid log filter {:?}: {e}", server.log_level),
        ));
    }
    if let Some(threads) = server.worker_threads {
        if !bounds::WORKER_THREADS.contains(&threads) {
            let (span, key) = at("worker_threads");
            return Err(src.error(
                span,
                key,
                format!(
                    "worker_threads must be between {} and {} (leave it out for one per CPU)",
                    bounds::WORKER_THREADS.start(),
                    bounds::WORKER_THREADS.end()
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_default_is_valid_and_matches_the_seed() {
        let config = Config::embedded_default().unwrap();
        let ports: Vec<(String, u16)> = config
            .listeners
            .iter()
            .map(|l| (l.name.clone(), l.bind.port()))
            .collect();
        assert_eq!(
            ports,
            [
                ("echo".to_owned(), 10010),
                ("download".to_owned(), 1111),
                ("keyword-bot".to_owned(), 10086),
                ("random-bot".to_owned(), 10087)
            ]
        );
        assert!(config.listeners.iter().all(|l| l.bind.ip().is_loopback()));
        assert!(config.listeners.iter().all(|l| l.backlog == 128));
    }

    fn err(text: &str) -> String {
        Config::from_toml(text, "t.toml").unwrap_err().to_string()
    }

    #[test]
    fn unknown_key_names_position_and_key() {
        let e = err(
            "[[listener]]\nname = \"e\"\nbind = \"127.0.0.1:0\"\nhandler = \"echo\"\nbogus = 1\n",
        );
        assert!(
            e.starts_with("t.toml:5:1: key `listener[0].bogus`: not a setting of handler `echo`"),
            "{e}"
        );
    }

    #[test]
    fn wrong_type_names_key() {
        let e = err(
            "[[listener]]\nname = \"e\"\nbind = \"127.0.0.1:0\"\nhandler = \"echo\"\nbacklog = \"lots\"\n",
        );
        assert!(
            e.starts_with("t.toml:5:11: key `listener[0].backlog`:"),
            "{e}"
        );
    }

    #[test]
    fn overlapping_addresses() {
        let addr = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert!(addresses_overlap(addr("0.0.0.0:80"), addr("127.0.0.1:80")));
        assert!(addresses_overlap(addr("127.0.0.1:80"), addr("0.0.0.0:80")));
        assert!(addresses_overlap(addr("[::]:80"), addr("127.0.0.1:80")));
        assert!(addresses_overlap(addr("[::1]:80"), addr("[::1]:80")));
        assert!(!addresses_overlap(addr("0.0.0.0:80"), addr("[::1]:80")));
        assert!(!addresses_overlap(
            addr("127.0.0.1:80"),
            addr("127.0.0.2:80")
        ));
        assert!(!addresses_overlap(addr("127.0.0.1:0"), addr("127.0.0.1:0")));
        assert!(!addresses_overlap(addr("0.0.0.0:80"), addr("0.0.0.0:81")));
    }

    #[test]
    fn humane_durations() {
        let c = Config::from_toml(
            "[server]\nshutdown_grace = \"1m 30s\"\n[[listener]]\nname = \"e\"\nbind = \"127.0.0.1:0\"\nhandler = \"echo\"\nidle_timeout = \"2h\"\n",
            "t",
        )
        .unwrap();
        assert_eq!(c.server.shutdown_grace, Duration::from_secs(90));
        assert_eq!(c.listeners[0].idle_timeout, Duration::from_secs(7200));
    }
}
