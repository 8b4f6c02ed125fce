//! The keys every `[[listener]]` table has, as written in the file, with
//! their defaults (from `defaults`): the one list of them, which the
//! listener's validation, the PROXY protocol keys and the transport keys
//! read.

use std::time::Duration;

use serde::Deserialize;

use super::defaults;
use crate::conn::text::TextEncoding;

/// The keys every listener has, as written in the file: the one list of
/// them (see [`crate::struct_keys`]).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ListenerKeys {
    pub(super) name: String,
    pub(super) bind: String,
    pub(super) handler: String,
    #[serde(default = "default_backlog")]
    pub(super) backlog: u32,
    #[serde(default = "default_max_connections")]
    pub(super) max_connections: usize,
    #[serde(default = "default_idle_timeout", with = "humantime_serde")]
    pub(super) idle_timeout: Duration,
    #[serde(default = "default_max_message_bytes")]
    pub(super) max_message_bytes: usize,
    #[serde(default = "default_message_gap", with = "humantime_serde")]
    pub(super) message_gap: Duration,
    #[serde(default = "default_first_message_timeout", with = "humantime_serde")]
    pub(super) first_message_timeout: Duration,
    #[serde(default = "default_message_timeout", with = "humantime_serde")]
    pub(super) message_timeout: Duration,
    #[serde(default = "default_tcp_keepalive", with = "humantime_serde")]
    pub(super) tcp_keepalive: Duration,
    #[serde(default)]
    pub(super) allow: Vec<String>,
    #[serde(default)]
    pub(super) deny: Vec<String>,
    #[serde(default = "default_max_connections_per_source")]
    pub(super) max_connections_per_source: usize,
    #[serde(default)]
    pub(super) connection_rate_per_source: Option<String>,
    #[serde(default = "default_source_ipv6_prefix")]
    pub(super) source_ipv6_prefix: u8,
    #[serde(default = "default_proxy_protocol")]
    pub(super) proxy_protocol: String,
    #[serde(default)]
    pub(super) trusted_proxies: Vec<String>,
    #[serde(default)]
    pub(super) proxy_protocol_required: bool,
    #[serde(default = "default_proxy_header_timeout", with = "humantime_serde")]
    pub(super) proxy_header_timeout: Duration,
    #[serde(default)]
    pub(super) encoding: TextEncoding,
    #[serde(default = "default_transport")]
    pub(super) transport: String,
    #[serde(default)]
    pub(super) max_datagram_bytes: Option<usize>,
    #[serde(default)]
    pub(super) receive_buffer_bytes: Option<usize>,
    #[serde(default)]
    pub(super) datagram_rate_per_source: Option<String>,
    #[serde(default)]
    pub(super) reply_bytes_per_source: Option<String>,
    /// `[listener.tls]`.
    #[serde(default)]
    pub(super) tls: Option<crate::tls::settings::TlsKeys>,
}

fn default_transport() -> String {
    "tcp".into()
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
fn default_first_message_timeout() -> Duration {
    defaults::FIRST_MESSAGE_TIMEOUT
}
fn default_message_timeout() -> Duration {
    defaults::MESSAGE_TIMEOUT
}
fn default_tcp_keepalive() -> Duration {
    defaults::TCP_KEEPALIVE
}
fn default_max_connections_per_source() -> usize {
    defaults::MAX_CONNECTIONS_PER_SOURCE
}
fn default_source_ipv6_prefix() -> u8 {
    defaults::SOURCE_IPV6_PREFIX
}
fn default_proxy_protocol() -> String {
    "off".into()
}
fn default_proxy_header_timeout() -> Duration {
    defaults::PROXY_HEADER_TIMEOUT
}
