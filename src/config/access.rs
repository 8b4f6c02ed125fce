//! Who may connect to a listener: the `allow` and `deny` networks and the
//! per-source limits of a `[[listener]]` table, parsed and checked.

use std::net::IpAddr;

use ipnet::{IpNet, Ipv4Net};

use crate::conn::text::{QUOTE_MAX_BYTES, quote};

/// Who may connect to a listener, checked right after `accept`, before any
/// handler work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Access {
    /// When not empty, only sources in these networks may connect.
    pub allow: Vec<IpNet>,
    /// Sources in these networks may not connect (this wins over `allow`).
    pub deny: Vec<IpNet>,
    /// Connections one source may hold open at once (`None`: no limit).
    pub max_connections_per_source: Option<usize>,
    /// New connections one source may open, on average and in a burst.
    pub connection_rate_per_source: Option<Rate>,
    /// IPv6 sources are one source per network of this prefix length.
    pub source_ipv6_prefix: u8,
}

impl Access {
    /// True when `deny` lists `ip` (IPv4-mapped IPv6 as IPv4).
    pub fn denies(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.deny.iter().any(|net| net.contains(&ip))
    }

    /// True when the lists let `ip` in: `allow` is empty or lists it, and
    /// `deny` does not (IPv4-mapped IPv6 as IPv4).
    pub fn admits(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        (self.allow.is_empty() || self.allow.iter().any(|net| net.contains(&ip)))
            && !self.deny.iter().any(|net| net.contains(&ip))
    }
}

/// A rate with a burst: `per_second` on average, `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    /// Events per second, on average.
    pub per_second: f64,
    /// Events at once after a quiet spell.
    pub burst: u32,
}

impl Eq for Rate {}

impl std::fmt::Display for Rate {
    /// As written in a config: `N/s`, `N/m` or `N/h` (the unit that makes
    /// N whole), and the burst when it is not N.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (count, unit) = [(1.0, "s"), (60.0, "m"), (3600.0, "h")]
            .iter()
            .map(|(seconds, unit)| (self.per_second * seconds, *unit))
            .find(|(count, _)| (count - count.round()).abs() < 1e-6)
            .unwrap_or((self.per_second, "s"));
        write!(f, "{}/{unit}", count.round())?;
        if f64::from(self.burst) != count.round() {
            write!(f, " burst {}", self.burst)?;
        }
        Ok(())
    }
}

impl Rate {
    /// Parses `N/s`, `N/m` or `N/h`, with an optional burst `N/s burst M`
    /// (the burst is N, at least 1, when not given).
    pub(super) fn parse(text: &str) -> Result<Rate, String> {
        let bad = || {
            format!(
                "invalid rate \"{}\": write N/s, N/m or N/h, optionally with a burst, e.g. \"20/s\" or \"100/m burst 20\"",
                quote(text, QUOTE_MAX_BYTES)
            )
        };
        let mut words = text.split_whitespace();
        let (count, unit) = words
            .next()
            .and_then(|r| r.split_once('/'))
            .ok_or_else(bad)?;
        let count: u32 = count.parse().map_err(|_| bad())?;
        let seconds = match unit {
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad()),
        };
        let burst = match (words.next(), words.next(), words.next()) {
            (None, _, _) => count.max(1),
            (Some("burst"), Some(burst), None) => burst.parse().map_err(|_| bad())?,
            _ => return Err(bad()),
        };
        if count == 0 || burst == 0 {
            return Err(format!(
                "{}: the count and the burst must be at least 1",
                bad()
            ));
        }
        Ok(Rate {
            per_second: f64::from(count) / seconds,
            burst,
        })
    }
}

/// Parses `allow`/`deny` entries: networks (`10.0.0.0/8`, `2001:db8::/32`)
/// or single addresses; IPv4-mapped IPv6 (`::ffff:10.0.0.0/104`) is
/// written as the IPv4 network it is.
pub(super) fn networks(entries: &[String]) -> Result<Vec<IpNet>, (usize, String)> {
    entries
        .iter()
        .enumerate()
        .map(|(i, entry)| {
            let net = entry
                .parse::<IpNet>()
                .or_else(|_| entry.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| {
                    (
                        i,
                        format!(
                            "invalid network \"{}\": write an address (\"192.0.2.7\", \"::1\") or a network (\"10.0.0.0/8\", \"2001:db8::/32\")",
                            quote(entry, QUOTE_MAX_BYTES)
                        ),
                    )
                })?;
            Ok(canonical_network(net))
        })
        .collect()
}

/// An IPv4-mapped IPv6 network as the IPv4 network it stands for.
fn canonical_network(net: IpNet) -> IpNet {
    match net {
        IpNet::V6(v6) if v6.prefix_len() >= 96 => match v6.addr().to_ipv4_mapped() {
            Some(v4) => {
                Ipv4Net::new(v4, v6.prefix_len() - 96).map_or(net, |v4| IpNet::V4(v4).trunc())
            }
            None => net,
        },
        other => other.trunc(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse_with_and_without_a_burst() {
        assert_eq!(
            Rate::parse("20/s"),
            Ok(Rate {
                per_second: 20.0,
                burst: 20
            })
        );
        assert_eq!(
            Rate::parse("120/m burst 5"),
            Ok(Rate {
                per_second: 2.0,
                burst: 5
            })
        );
        for bad in [
            "20",
            "20/d",
            "x/s",
            "0/s",
            "5/s burst 0",
            "5/s burst",
            "5/s bust 3",
        ] {
            assert!(Rate::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn networks_are_addresses_or_prefixes_and_mapped_ipv6_is_ipv4() {
        let parsed = networks(&[
            "10.1.2.3/8".to_owned(),
            "::1".to_owned(),
            "192.0.2.7".to_owned(),
            "::ffff:192.0.2.0/120".to_owned(),
        ])
        .unwrap();
        let shown: Vec<String> = parsed.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            ["10.0.0.0/8", "::1/128", "192.0.2.7/32", "192.0.2.0/24"]
        );
        assert_eq!(networks(&["nope".to_owned()]).unwrap_err().0, 0);
    }
}
