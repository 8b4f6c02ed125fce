//! The PROXY protocol keys of a `[[listener]]` table: which header versions
//! it takes, from which balancers, and what the other sources get.

use std::net::IpAddr;
use std::time::Duration;

use ipnet::IpNet;
use toml::de::DeTable;

use super::access::networks;
use super::bounds;
use super::error::{ConfigError, value_span};
use super::keys::ListenerKeys;
use crate::conn::proxy_header::Versions;
use crate::conn::text::{QUOTE_MAX_BYTES, quote};
use crate::suggest;

/// A listener behind load balancers that send the PROXY protocol header.
///
/// A connection from a source in `trusted` must start with a header (of
/// `versions`, complete within `header_timeout`), or it is closed; the
/// client address in it is the connection's address from then on (logs,
/// `{peer}`, metrics, access lists, per-source limits). Other sources are
/// served with their socket address and any header they send is only data,
/// or, when `required`, closed without a byte.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyProtocol {
    /// The header versions taken.
    pub versions: Versions,
    /// The balancers' addresses.
    pub trusted: Vec<IpNet>,
    /// Refuse sources that are not balancers.
    pub required: bool,
    /// The header must be complete within this long of the connect.
    pub header_timeout: Duration,
}

impl ProxyProtocol {
    /// True when connections from `ip` must carry a header.
    pub fn trusts(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.trusted.iter().any(|net| net.contains(&ip))
    }
}

const VERSION_NAMES: [&str; 4] = ["off", "v1", "v2", "any"];

/// The PROXY protocol settings of a listener's keys (`None`: off).
pub(super) fn parse(
    keys: &ListenerKeys,
    table: &DeTable<'_>,
    fail: &impl Fn(&str, String) -> ConfigError,
) -> Result<Option<ProxyProtocol>, ConfigError> {
    let versions = match keys.proxy_protocol.as_str() {
        "off" => None,
        "v1" => Some(Versions::V1),
        "v2" => Some(Versions::V2),
        "any" => Some(Versions::Any),
        other => {
            let mut message = format!(
                "invalid proxy_protocol \"{}\": write \"off\", \"v1\" (nginx), \"v2\" (AWS NLB) or \"any\" (HAProxy either way)",
                quote(other, QUOTE_MAX_BYTES)
            );
            if let Some(near) = suggest::closest(other, VERSION_NAMES) {
                message.push_str(&format!("; did you mean \"{near}\"?"));
            }
            return Err(fail("proxy_protocol", message));
        }
    };
    let trusted = networks(&keys.trusted_proxies)
        .map_err(|(i, e)| fail(&format!("trusted_proxies[{i}]"), e))?;
    let Some(versions) = versions else {
        for key in [
            "trusted_proxies",
            "proxy_protocol_required",
            "proxy_header_timeout",
        ] {
            if value_span(table, key).is_some() {
                return Err(fail(
                    key,
                    format!("{key} needs proxy_protocol = \"v1\", \"v2\" or \"any\""),
                ));
            }
        }
        return Ok(None);
    };
    if trusted.is_empty() {
        return Err(fail(
            "proxy_protocol",
            "proxy_protocol needs trusted_proxies: the addresses or networks of the \
             load balancers that send the header (only their connections must carry one)"
                .into(),
        ));
    }
    if !bounds::PROXY_HEADER_TIMEOUT.contains(&keys.proxy_header_timeout) {
        return Err(fail(
            "proxy_header_timeout",
            format!(
                "proxy_header_timeout must be between {} and {}",
                humantime::format_duration(*bounds::PROXY_HEADER_TIMEOUT.start()),
                humantime::format_duration(*bounds::PROXY_HEADER_TIMEOUT.end())
            ),
        ));
    }
    Ok(Some(ProxyProtocol {
        versions,
        trusted,
        required: keys.proxy_protocol_required,
        header_timeout: keys.proxy_header_timeout,
    }))
}
