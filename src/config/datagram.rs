//! The transport of a `[[listener]]` table: TCP (the default) or UDP, and
//! the keys only a UDP listener has. A key of the other transport is a
//! mistake named at its line, as is a handler that cannot answer datagrams.

use toml::de::DeTable;

use super::access::Rate;
use super::error::{ConfigError, value_span};
use super::keys::ListenerKeys;
use super::{bounds, defaults};
use crate::handler::HandlerConfig;

/// How a listener talks to its clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transport {
    /// TCP connections, one task each (the default).
    Tcp,
    /// UDP datagrams: one datagram is one message, answered to its sender.
    Udp(Datagrams),
}

impl Transport {
    /// `"tcp"` or `"udp"`, as written in the config.
    pub fn name(&self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::Udp(_) => "udp",
        }
    }

    /// True for UDP.
    pub fn is_udp(&self) -> bool {
        matches!(self, Transport::Udp(_))
    }
}

/// The settings of a UDP listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Datagrams {
    /// Longest datagram taken; longer ones are dropped and counted, never
    /// cut short.
    pub max_datagram_bytes: usize,
    /// `SO_RCVBUF` of the socket (`None`: the kernel's default).
    pub receive_buffer_bytes: Option<usize>,
    /// Datagrams one source may send, on average and in a burst (`None`:
    /// no limit).
    pub datagram_rate_per_source: Option<Rate>,
    /// Bytes a second, per source, that replies may add to what the
    /// source sent: a reply no longer than its request is always sent, a
    /// longer one only while its source's budget holds the difference.
    pub reply_bytes_per_source: Rate,
}

/// Keys that make sense for TCP connections only, and what to use instead
/// on a UDP listener (if anything).
const TCP_ONLY: &[(&str, &str)] = &[
    ("backlog", ""),
    ("max_connections", ""),
    ("idle_timeout", ""),
    ("message_gap", ""),
    ("first_message_timeout", ""),
    ("message_timeout", ""),
    ("tcp_keepalive", ""),
    ("max_message_bytes", "max_datagram_bytes"),
    ("max_connections_per_source", ""),
    ("connection_rate_per_source", "datagram_rate_per_source"),
    ("proxy_protocol", ""),
    ("trusted_proxies", ""),
    ("proxy_protocol_required", ""),
    ("proxy_header_timeout", ""),
];

/// Keys that only a UDP listener has.
const UDP_ONLY: &[&str] = &[
    "max_datagram_bytes",
    "receive_buffer_bytes",
    "datagram_rate_per_source",
    "reply_bytes_per_source",
];

/// The transport of a listener's keys, checked against its handler.
pub(super) fn parse(
    keys: &ListenerKeys,
    table: &DeTable<'_>,
    handler: &HandlerConfig,
    fail: &impl Fn(&str, String) -> ConfigError,
) -> Result<Transport, ConfigError> {
    let written = |key: &str| value_span(table, key).is_some();
    match keys.transport.as_str() {
        "tcp" => {
            if let Some(key) = UDP_ONLY.iter().find(|k| written(k)) {
                return Err(fail(
                    key,
                    format!("{key} is a setting of UDP listeners (transport = \"udp\")"),
                ));
            }
            Ok(Transport::Tcp)
        }
        "udp" => {
            if !handler.serves_datagrams() {
                return Err(fail(
                    "transport",
                    format!(
                        "handler `{}` does not serve UDP: transport = \"udp\" takes {}",
                        handler.name(),
                        crate::handler::datagram_handlers().join(", ")
                    ),
                ));
            }
            if let Some((key, instead)) = TCP_ONLY.iter().find(|(k, _)| written(k)) {
                let instead = if instead.is_empty() {
                    String::new()
                } else {
                    format!(" (use {instead})")
                };
                return Err(fail(
                    key,
                    format!(
                        "{key} applies to TCP connections, and this listener serves UDP{instead}"
                    ),
                ));
            }
            let max = keys
                .max_datagram_bytes
                .unwrap_or(defaults::MAX_DATAGRAM_BYTES);
            if !bounds::MAX_DATAGRAM_BYTES.contains(&max) {
                return Err(fail(
                    "max_datagram_bytes",
                    format!(
                        "max_datagram_bytes must be between {} and {} (one less than a UDP datagram holds over IPv4, for a reply's newline)",
                        bounds::MAX_DATAGRAM_BYTES.start(),
                        bounds::MAX_DATAGRAM_BYTES.end()
                    ),
                ));
            }
            if let Some(size) = keys.receive_buffer_bytes
                && !bounds::RECEIVE_BUFFER_BYTES.contains(&size)
            {
                return Err(fail(
                    "receive_buffer_bytes",
                    format!(
                        "receive_buffer_bytes must be between {} and {}",
                        bounds::RECEIVE_BUFFER_BYTES.start(),
                        bounds::RECEIVE_BUFFER_BYTES.end()
                    ),
                ));
            }
            let rate = match keys.datagram_rate_per_source.as_deref() {
                None | Some("0") | Some("") => None,
                Some(text) => {
                    Some(Rate::parse(text).map_err(|e| fail("datagram_rate_per_source", e))?)
                }
            };
            let budget = keys
                .reply_bytes_per_source
                .as_deref()
                .unwrap_or(defaults::REPLY_BYTES_PER_SOURCE);
            let budget = Rate::parse(budget).map_err(|e| fail("reply_bytes_per_source", e))?;
            Ok(Transport::Udp(Datagrams {
                max_datagram_bytes: max,
                receive_buffer_bytes: keys.receive_buffer_bytes,
                datagram_rate_per_source: rate,
                reply_bytes_per_source: budget,
            }))
        }
        other => Err(fail(
            "transport",
            format!(
                "unknown transport \"{}\": write \"tcp\" (the default) or \"udp\"",
                crate::conn::text::quote(other, crate::conn::text::QUOTE_MAX_BYTES)
            ),
        )),
    }
}
