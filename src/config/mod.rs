//! The TOML configuration: loading a file, the `[server]` table, the keys
//! every `[[listener]]` has, their defaults (all in [`defaults`]) and
//! bounds, and errors that name file, line, column and key (with a "did you
//! mean" for a misspelled key). Each handler's own settings are declared and
//! validated in the handler's file; this module only hands them their part
//! of a listener table.

mod access;
mod datagram;
mod error;
mod hint;
mod keys;
mod listener;
mod proxy;
mod server;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;

use serde::de::DeserializeOwned;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

pub use access::{Access, Rate};
pub use datagram::{Datagrams, Transport};
pub use error::{ConfigError, ConfigWarning};
use error::{Source, join_key, value_span};
pub use listener::ListenerConfig;
pub use proxy::ProxyProtocol;
pub(crate) use server::log_filter;
pub use server::{LogFormat, ServerConfig};

pub use crate::handler::{
    DownloadConfig, EchoConfig, HandlerConfig, KeywordBotConfig, KeywordRule, MetricsConfig,
    RandomBotConfig,
};

/// The documented example config, compiled in: what `switchboard` runs with no `-c`.
pub const EMBEDDED_DEFAULT: &str = include_str!("../../config/switchboard.toml");

/// The name errors use for the embedded default config.
pub const EMBEDDED_NAME: &str = "<embedded default>";

/// Every default of the `[server]` table and the common listener keys, in
/// one place (a handler's defaults are in its own file).
pub mod defaults {
    use std::time::Duration;

    /// `listen(2)` backlog, as in the seed tutorial.
    pub const BACKLOG: u32 = 128;
    /// Concurrent connections per listener: at most about 8 200 descriptors
    /// for a download listener, which the descriptor budget of a host with
    /// the common 20 000 open-file limit can give without a warning.
    pub const MAX_CONNECTIONS: usize = 4096;
    /// A connection that sends nothing for this long is closed.
    pub const IDLE_TIMEOUT: Duration = Duration::from_secs(5 * 60);
    /// Longest message a framed handler accepts.
    pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;
    /// Quiet time after which bytes with no newline count as a message.
    pub const MESSAGE_GAP: Duration = Duration::from_millis(50);
    /// The first message must be complete within this long of the connect:
    /// long enough for a person at the tutorial's clients to type a first
    /// question, short enough that silent connections do not pile up.
    pub const FIRST_MESSAGE_TIMEOUT: Duration = Duration::from_secs(30);
    /// A message must be complete within this long of its first byte.
    pub const MESSAGE_TIMEOUT: Duration = Duration::from_secs(30);
    /// Idle time before TCP keepalive probes a silent peer.
    pub const TCP_KEEPALIVE: Duration = Duration::from_secs(60);
    /// Connections one source may hold open on one listener: one host
    /// cannot take a listener's whole `max_connections`.
    pub const MAX_CONNECTIONS_PER_SOURCE: usize = 1000;
    /// IPv6 sources are grouped by this prefix (a host usually has a /64).
    pub const SOURCE_IPV6_PREFIX: u8 = 64;
    /// A PROXY protocol header must be complete within this long of the
    /// connect (a balancer sends it at once).
    pub const PROXY_HEADER_TIMEOUT: Duration = Duration::from_secs(3);
    /// How long shutdown waits for connections to finish.
    pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
    /// Log filter when neither `RUST_LOG` nor the config sets one.
    pub const LOG_LEVEL: &str = "info";
    /// Longest datagram a UDP listener takes: the payload of one IPv4
    /// packet on an Ethernet network (1500 bytes less the IP and UDP
    /// headers); a bigger datagram is fragmented, which is where UDP loses.
    pub const MAX_DATAGRAM_BYTES: usize = 1472;
    /// What UDP replies may add, per source, to the bytes it sent: enough
    /// for a person's chat, too little for a reflection attack.
    pub const REPLY_BYTES_PER_SOURCE: &str = "4096/s";
    /// Most log lines a second (about 250 KB/s of text lines).
    pub const LOG_LINES_PER_SECOND: u64 = 1000;
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
    /// Shortest `message_gap`: below it every read would be a message.
    pub const MESSAGE_GAP_MIN: Duration = Duration::from_millis(1);
    /// Shortest `tcp_keepalive` that is not 0 (off): the kernel counts it in
    /// whole seconds.
    pub const TCP_KEEPALIVE_MIN: Duration = Duration::from_secs(1);
    /// Longest `tcp_keepalive` (the kernel's TCP_MAX_KEEPIDLE).
    pub const TCP_KEEPALIVE_MAX: Duration = Duration::from_secs(32_767);
    /// `proxy_header_timeout`'s range.
    pub const PROXY_HEADER_TIMEOUT: RangeInclusive<Duration> =
        Duration::from_millis(1)..=Duration::from_secs(60);
    /// Longest of every other duration: a deadline this far away is as good
    /// as none, and one much further would overflow the clock.
    pub const DURATION_MAX: Duration = Duration::from_secs(366 * 24 * 60 * 60);
    /// `max_datagram_bytes`: up to one byte less than an IPv4 UDP datagram
    /// holds (65 507), so that a bot's reply to the longest message (the
    /// message and its newline, from a random-bot) still fits in one.
    pub const MAX_DATAGRAM_BYTES: RangeInclusive<usize> = 1..=65_506;
    /// `receive_buffer_bytes` (the kernel doubles it, and caps it at
    /// `net.core.rmem_max` unless the process may raise it).
    pub const RECEIVE_BUFFER_BYTES: RangeInclusive<usize> = 4096..=1 << 30;
    /// `worker_threads`.
    pub const WORKER_THREADS: RangeInclusive<usize> = 1..=1024;
    /// `log_lines_per_second`.
    pub const LOG_LINES_PER_SECOND: RangeInclusive<u64> = 1..=1_000_000;
}

/// A loaded, validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the config came from (a path, or `<embedded default>`).
    pub source: String,
    /// Process-wide settings.
    pub server: ServerConfig,
    /// The listeners, in file order.
    pub listeners: Vec<ListenerConfig>,
    /// What is valid but likely not meant, in file order (see
    /// [`ConfigWarning`]).
    pub warnings: Vec<ConfigWarning>,
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
                    let mut message =
                        "unknown top-level key, expected `server` or `listener`".to_owned();
                    if let Some(near) = crate::suggest::closest(other, ["server", "listener"]) {
                        message.push_str(&format!("; did you mean `{near}`?"));
                    }
                    return Err(src.error(Some(key.span()), Some(other.to_owned()), message));
                }
            }
        }
        let server = server.unwrap_or_default();
        server::validate(&src, &server, &server_table)?;

        if listener_tables.is_empty() {
            return Err(src.error(
                Some(root_span.start..root_span.start),
                None,
                "no listeners: add at least one [[listener]] table",
            ));
        }
        let mut listeners = Vec::with_capacity(listener_tables.len());
        let mut names: HashMap<String, usize> = HashMap::new();
        let mut warnings = Vec::new();
        for (i, table) in listener_tables.into_iter().enumerate() {
            let prefix = format!("listener[{i}]");
            let listener = listener::parse(&src, &prefix, table.clone(), &mut warnings)?;
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
            if let Some(other) = listeners.iter().find(|other: &&ListenerConfig| {
                // A UDP and a TCP socket may share a port number.
                other.transport.is_udp() == listener.transport.is_udp()
                    && addresses_overlap(other.bind, listener.bind)
            }) {
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
            warnings,
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn embedded_default_is_valid_and_matches_the_seed() {
        let config = Config::embedded_default().unwrap();
        let ports: Vec<(String, &str, u16)> = config
            .listeners
            .iter()
            .map(|l| (l.name.clone(), l.transport.name(), l.bind.port()))
            .collect();
        assert_eq!(
            ports,
            [
                ("echo".to_owned(), "tcp", 10010),
                ("download".to_owned(), "tcp", 1111),
                ("keyword-bot".to_owned(), "tcp", 10086),
                ("random-bot".to_owned(), "tcp", 10087),
                ("echo-udp".to_owned(), "udp", 10010),
                ("keyword-bot-udp".to_owned(), "udp", 10086),
                ("random-bot-udp".to_owned(), "udp", 10087),
            ]
        );
        assert!(config.listeners.iter().all(|l| l.bind.ip().is_loopback()));
        assert!(config.listeners.iter().all(|l| l.backlog == 128));
        assert_eq!(config.warnings, []);
        // The UDP robots answer as the TCP ones do, and share the TCP
        // random-bot's history.
        let (tcp, udp) = (
            config.listener("keyword-bot").unwrap(),
            config.listener("keyword-bot-udp").unwrap(),
        );
        assert_eq!(tcp.handler, udp.handler);
        let history = |name: &str| match &config.listener(name).unwrap().handler {
            HandlerConfig::RandomBot(bot) => bot.history.describe(name),
            other => panic!("{other:?}"),
        };
        assert_eq!(history("random-bot"), history("random-bot-udp"));
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
