//! One `[[listener]]` table: the keys every listener has, declared once in
//! `ListenerKeys` (`keys`) and validated here, and the settings of its handler,
//! which the handler's own file declares and validates. A key that is
//! neither gets a "did you mean" from both sets.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use toml::Spanned;
use toml::de::DeTable;

use super::access::{Access, Rate, networks};
use super::datagram::{self, Transport};
use super::error::{ConfigError, ConfigWarning, Source, join_key, path_span, value_span};
use super::keys::ListenerKeys;
use super::proxy::{self, ProxyProtocol};
use super::{bounds, deserialize_table};
use crate::conn::text::{QUOTE_MAX_BYTES, TextEncoding, quote};
use crate::conn::{self};
use crate::handler::{HANDLER_NAMES, HandlerConfig};
use crate::struct_keys::struct_keys;
use crate::suggest;
use crate::tls::TlsSettings;
use crate::tls::material::{LoadError, load_certificate, load_client_roots};
use crate::tls::rotation::EXPIRY_WARNING;
use crate::tls::settings::TlsKeys;

/// One validated `[[listener]]`.
#[derive(Debug, Clone, PartialEq)]
pub struct ListenerConfig {
    /// Unique name, used in logs (and by systemd socket names).
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
    /// The first message (echo: the first bytes) must arrive within this
    /// long of the connect.
    pub first_message_timeout: Duration,
    /// A message must be complete within this long of its first byte.
    pub message_timeout: Duration,
    /// Idle time before TCP keepalive probes a silent peer (`None`: off).
    pub tcp_keepalive: Option<Duration>,
    /// Who may connect; see [`Access`].
    pub access: Access,
    /// The PROXY protocol header its balancers send (`None`: off).
    pub proxy_protocol: Option<ProxyProtocol>,
    /// Encoding of the text the handler reads and writes.
    pub encoding: TextEncoding,
    /// TCP (connections) or UDP (datagrams), with the UDP settings.
    pub transport: Transport,
    /// Which handler serves the connections, with its settings.
    pub handler: HandlerConfig,
    /// `[listener.tls]`: TLS on this TCP listener (`None`: plaintext).
    pub tls: Option<TlsSettings>,
}

impl ListenerConfig {
    /// What each of its connections needs to know.
    pub(crate) fn connection_settings(&self) -> conn::Settings {
        conn::Settings {
            listener: Arc::from(self.name.as_str()),
            idle_timeout: self.idle_timeout,
            // A datagram is a message: a random-bot keeps one whole.
            max_message_bytes: match &self.transport {
                Transport::Tcp => self.max_message_bytes,
                Transport::Udp(udp) => udp.max_datagram_bytes,
            },
            message_gap: self.message_gap,
            first_message_timeout: self.first_message_timeout,
            message_timeout: self.message_timeout,
            encoding: self.encoding,
        }
    }
}

/// Parses and validates the listener table at `prefix` (`listener[2]`),
/// adding what its handler finds doubtful to `warnings`.
pub(super) fn parse(
    src: &Source<'_>,
    prefix: &str,
    table: Spanned<DeTable<'_>>,
    warnings: &mut Vec<ConfigWarning>,
) -> Result<ListenerConfig, ConfigError> {
    let span = table.span();
    let common_keys = struct_keys::<ListenerKeys>();
    let mut common = DeTable::new();
    let mut settings = DeTable::new();
    for (key, value) in table.get_ref().iter() {
        let target = if common_keys.contains(&key.get_ref().as_ref()) {
            &mut common
        } else {
            &mut settings
        };
        target.insert(key.clone(), value.clone());
    }
    let mut keys: ListenerKeys = deserialize_table(src, prefix, Spanned::new(span.clone(), common))
        .map_err(|err| misspelled_required_key(src, err, prefix, &settings))?;
    let table = table.get_ref();
    let fail = |key: &str, message: String| {
        src.error(
            path_span(table, key).or(Some(span.clone())),
            Some(join_key(prefix, key)),
            format!(
                "listener \"{}\": {message}",
                quote(&keys.name, bounds::NAME_LEN)
            ),
        )
    };
    let bind = validate_common(&keys, table, &fail)?;

    let for_errors = settings.clone();
    let deserializer = toml::de::Deserializer::from(Spanned::new(span.clone(), settings));
    let Some(handler) = HandlerConfig::deserialize(&keys.handler, deserializer) else {
        let names: Vec<String> = HANDLER_NAMES.iter().map(|n| format!("`{n}`")).collect();
        let mut message = format!(
            "unknown variant `{}`, expected one of {}",
            keys.handler,
            names.join(", ")
        );
        if let Some(near) = suggest::closest(&keys.handler, HANDLER_NAMES.iter().copied()) {
            message.push_str(&format!("; did you mean `{near}`?"));
        }
        return Err(src.error(
            value_span(table, "handler"),
            Some(join_key(prefix, "handler")),
            message,
        ));
    };
    let mut handler = handler.map_err(|e| {
        let err = src.toml_error(&e, Some((prefix, &for_errors)));
        explain_unknown_key(err, prefix, &keys.handler, common_keys)
    })?;
    handler
        .validate()
        .map_err(|invalid| fail(&invalid.key, invalid.message))?;

    // At the listener's `[[listener]]` line.
    warnings.extend(handler.warnings().into_iter().map(|doubt| {
        let message = format!(
            "listener \"{}\": {doubt}",
            quote(&keys.name, bounds::NAME_LEN)
        );
        ConfigWarning::from(src.error(Some(span.clone()), Some(prefix.to_owned()), message))
    }));
    let transport = datagram::parse(&keys, table, &handler, &fail)?;
    let access = access(&keys, &fail)?;
    let proxy_protocol = proxy::parse(&keys, table, &fail)?;
    let tls = tls(keys.tls.take(), &transport, &fail, warnings)?;
    Ok(ListenerConfig {
        name: keys.name,
        bind,
        backlog: keys.backlog,
        max_connections: keys.max_connections,
        idle_timeout: keys.idle_timeout,
        max_message_bytes: keys.max_message_bytes,
        message_gap: keys.message_gap,
        first_message_timeout: keys.first_message_timeout,
        message_timeout: keys.message_timeout,
        tcp_keepalive: (!keys.tcp_keepalive.is_zero()).then_some(keys.tcp_keepalive),
        access,
        proxy_protocol,
        encoding: keys.encoding,
        transport,
        handler,
        tls,
    })
}

/// The `[listener.tls]` table, validated, with its files read once to
/// check them (they are read again when the listener starts).
fn tls(
    keys: Option<TlsKeys>,
    transport: &Transport,
    fail: &impl Fn(&str, String) -> ConfigError,
    warnings: &mut Vec<ConfigWarning>,
) -> Result<Option<TlsSettings>, ConfigError> {
    let Some(keys) = keys else {
        return Ok(None);
    };
    if transport.is_udp() {
        return Err(fail(
            "tls",
            "TLS is for TCP listeners: a UDP listener cannot have a [listener.tls] table \
             (DTLS is not supported)"
                .into(),
        ));
    }
    let settings = keys
        .validate()
        .map_err(|invalid| fail(&format!("tls.{}", invalid.key), invalid.message))?;
    let at = |e: &LoadError| format!("tls.{}", e.part().key());
    let served = load_certificate(&settings).map_err(|e| fail(&at(&e), e.to_string()))?;
    if let Some((ca, _)) = &settings.client_ca {
        load_client_roots(ca).map_err(|e| fail(&at(&e), e.to_string()))?;
    }
    let now = SystemTime::now();
    if let Some(expires) = served.not_after {
        let when = httpdate::fmt_http_date(expires);
        let doubt = if served.expired(now) {
            Some(format!(
                "the certificate {} expired on {when}; clients will refuse it",
                settings.cert.display()
            ))
        } else if expires.duration_since(now).unwrap_or_default() < EXPIRY_WARNING {
            Some(format!(
                "the certificate {} expires on {when}, in less than 14 days",
                settings.cert.display()
            ))
        } else {
            None
        };
        warnings.extend(doubt.map(|doubt| ConfigWarning::from(fail("tls.cert", doubt))));
    }
    Ok(Some(settings))
}

/// A required key that is missing may be there misspelled (`hndler`):
/// then the misspelling is the mistake to report, at its own position.
fn misspelled_required_key(
    src: &Source<'_>,
    err: ConfigError,
    prefix: &str,
    others: &DeTable<'_>,
) -> ConfigError {
    let Some(missing) = err
        .message
        .strip_prefix("missing field `")
        .and_then(|rest| rest.split('`').next())
    else {
        return err;
    };
    let typo = others
        .iter()
        .find(|(key, _)| suggest::closest(key.get_ref(), [missing]).is_some());
    match typo {
        Some((key, _)) => src.error(
            Some(key.span()),
            Some(join_key(prefix, key.get_ref())),
            format!("unknown key `{}`; did you mean `{missing}`?", key.get_ref()),
        ),
        None => err,
    }
}

/// Checks the keys every listener has; returns the parsed `bind`.
fn validate_common(
    keys: &ListenerKeys,
    table: &DeTable<'_>,
    fail: &impl Fn(&str, String) -> ConfigError,
) -> Result<SocketAddr, ConfigError> {
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
            format!("invalid address \"{}\": write IP:PORT, e.g. 127.0.0.1:10010 or [::1]:10010 (port 0 picks a free port)", quote(&keys.bind, QUOTE_MAX_BYTES)),
        )
    })?;
    in_range(fail, "backlog", keys.backlog, &bounds::BACKLOG)?;
    in_range(
        fail,
        "max_connections",
        keys.max_connections,
        &bounds::MAX_CONNECTIONS,
    )?;
    in_range(
        fail,
        "max_message_bytes",
        keys.max_message_bytes,
        &bounds::MAX_MESSAGE_BYTES,
    )?;
    for (key, value) in [
        ("idle_timeout", keys.idle_timeout),
        ("message_gap", keys.message_gap),
        ("first_message_timeout", keys.first_message_timeout),
        ("message_timeout", keys.message_timeout),
    ] {
        if value > bounds::DURATION_MAX {
            return Err(fail(
                key,
                format!(
                    "{key} must be at most {}",
                    humantime::format_duration(bounds::DURATION_MAX)
                ),
            ));
        }
    }
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
    if keys.first_message_timeout.is_zero() {
        return Err(fail(
            "first_message_timeout",
            "first_message_timeout must be longer than 0s".into(),
        ));
    }
    if keys.message_timeout <= keys.message_gap {
        return Err(fail(
            "message_timeout",
            format!(
                "message_timeout ({}) must be longer than message_gap ({})",
                humantime::format_duration(keys.message_timeout),
                humantime::format_duration(keys.message_gap)
            ),
        ));
    }
    let keepalive = bounds::TCP_KEEPALIVE_MIN..=bounds::TCP_KEEPALIVE_MAX;
    if !keys.tcp_keepalive.is_zero() && !keepalive.contains(&keys.tcp_keepalive) {
        return Err(fail(
            "tcp_keepalive",
            format!(
                "tcp_keepalive must be \"0s\" (off) or between {} and {}",
                humantime::format_duration(bounds::TCP_KEEPALIVE_MIN),
                humantime::format_duration(bounds::TCP_KEEPALIVE_MAX)
            ),
        ));
    }
    Ok(bind)
}

/// The access rules of the listener's keys.
fn access(
    keys: &ListenerKeys,
    fail: &impl Fn(&str, String) -> ConfigError,
) -> Result<Access, ConfigError> {
    let allow = networks(&keys.allow).map_err(|(i, e)| fail(&format!("allow[{i}]"), e))?;
    let deny = networks(&keys.deny).map_err(|(i, e)| fail(&format!("deny[{i}]"), e))?;
    let rate = match keys.connection_rate_per_source.as_deref() {
        None | Some("0") | Some("") => None,
        Some(text) => Some(Rate::parse(text).map_err(|e| fail("connection_rate_per_source", e))?),
    };
    if !(1..=128).contains(&keys.source_ipv6_prefix) {
        return Err(fail(
            "source_ipv6_prefix",
            "source_ipv6_prefix must be between 1 and 128".into(),
        ));
    }
    Ok(Access {
        allow,
        deny,
        max_connections_per_source: (keys.max_connections_per_source > 0)
            .then_some(keys.max_connections_per_source),
        connection_rate_per_source: rate,
        source_ipv6_prefix: keys.source_ipv6_prefix,
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

/// Rewrites serde's "unknown field" for a key directly in the listener
/// table (not a nested one: an unknown key in a rule is the rule's
/// mistake, and serde's message names the rule's keys). The key is neither
/// a common key nor one of the handler's: suggest the nearest of both, or
/// name the handlers it belongs to.
fn explain_unknown_key(
    mut err: ConfigError,
    prefix: &str,
    handler: &str,
    common_keys: &[&str],
) -> ConfigError {
    let direct = err
        .key
        .as_deref()
        .and_then(|k| k.strip_prefix(prefix))
        .and_then(|k| k.strip_prefix('.'))
        .filter(|k| !k.contains(['.', '[']));
    let (Some(key), true) = (direct, err.message.starts_with("unknown field")) else {
        return err;
    };
    let handler_keys = HandlerConfig::keys(handler);
    let candidates = common_keys.iter().chain(handler_keys).copied();
    err.message = match suggest::closest(key, candidates) {
        Some(near) if common_keys.contains(&near) => {
            format!("unknown key `{key}`; did you mean `{near}`?")
        }
        Some(near) => format!(
            "not a setting of handler `{handler}`: unknown field `{key}`; did you mean `{near}`?"
        ),
        None => {
            let owners: Vec<&str> = HANDLER_NAMES
                .iter()
                .copied()
                .filter(|h| HandlerConfig::keys(h).contains(&key))
                .collect();
            let settings = if handler_keys.is_empty() {
                "none".to_owned()
            } else {
                handler_keys.join(", ")
            };
            let belongs = if owners.is_empty() {
                String::new()
            } else {
                format!(" (a setting of {})", owners.join(", "))
            };
            format!(
                "not a setting of handler `{handler}`: unknown field `{key}`{belongs}; \
                 every listener has {}, and `{handler}` adds {settings}",
                common_keys.join(", ")
            )
        }
    };
    err
}
