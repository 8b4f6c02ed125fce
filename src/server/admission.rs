//! Who may connect to a listener, decided right after `accept`, before a
//! task is spawned or a handler does any work: the access lists (`deny`
//! wins over `allow`), the connections one source may hold open, and the
//! rate at which one source may open them (a token bucket per source).
//! A UDP listener uses the same lists, a bucket per source for the rate
//! of its datagrams, and another for its reply budget.
//!
//! Memory is bounded whatever the traffic: the open counts have one entry
//! per source with a connection open (at most `max_connections`), the
//! buckets at most [`MAX_BUCKETS`], pruned of full ones at most once a
//! second; a flood from more sources than that is let through the rate
//! limit (the other limits still hold) rather than lock everyone out.
//! Refusals are logged at most once a second per listener, in one line.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use ipnet::Ipv6Net;
use tokio::time::Instant;
use tracing::warn;

use crate::config::{Access, Rate};

/// Most sources with a rate bucket at once, per listener.
const MAX_BUCKETS: usize = 65_536;

/// How often, at most, full buckets are pruned, and refusals are logged.
const HOUSEKEEPING_INTERVAL: Duration = Duration::from_secs(1);

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The access lists do not let its address in.
    Denied,
    /// Its source holds `max_connections_per_source` already.
    TooMany,
    /// Its source opens connections faster than `connection_rate_per_source`.
    TooFast,
    /// A source that is not a trusted proxy, on a listener that requires
    /// the PROXY protocol header.
    Untrusted,
    /// A trusted proxy's connection without a valid PROXY protocol header
    /// (missing, malformed, too long or too slow).
    ProxyHeader,
}

impl Refusal {
    /// Every refusal, in label order.
    pub(crate) const ALL: [Refusal; 5] = [
        Refusal::Denied,
        Refusal::TooMany,
        Refusal::TooFast,
        Refusal::Untrusted,
        Refusal::ProxyHeader,
    ];

    /// The `reason` label of the refusal counter.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Refusal::Denied => "denied",
            Refusal::TooMany => "too_many",
            Refusal::TooFast => "too_fast",
            Refusal::Untrusted => "untrusted",
            Refusal::ProxyHeader => "proxy_header",
        }
    }

    /// The line the client gets before the close (a denied one gets none:
    /// it is told nothing about the listener, nor is a source that is not a
    /// trusted proxy, or a proxy that sent no valid header).
    pub(crate) fn reply(self) -> Option<&'static [u8]> {
        match self {
            Refusal::Denied | Refusal::Untrusted | Refusal::ProxyHeader => None,
            Refusal::TooMany => Some(b"ERR too many connections from your address\n"),
            Refusal::TooFast => Some(b"ERR too many connections from your address, too fast\n"),
        }
    }

    fn index(self) -> usize {
        Self::ALL.iter().position(|r| *r == self).unwrap_or(0)
    }
}

/// The per-source state of one listener; it outlives reloads, as its
/// connections do.
#[derive(Debug, Default)]
pub(crate) struct Sources {
    table: Mutex<Table>,
}

#[derive(Debug, Default)]
struct Table {
    /// Connections open, by source.
    open: HashMap<IpAddr, u32>,
    /// Rate buckets, by source (of connections, or of a UDP listener's
    /// datagrams).
    buckets: Buckets,
    /// Reply budgets of a UDP listener, by source.
    reply_budgets: Buckets,
    /// Refusals since the last log line, by reason, and the last source.
    refused: [u64; Refusal::ALL.len()],
    last_refused: Option<IpAddr>,
    last_log: Option<Instant>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    /// The tokens it holds at `now`, refilled at `rate` up to the burst.
    fn tokens_at(&self, now: Instant, rate: Rate) -> f64 {
        let refill = now.saturating_duration_since(self.at).as_secs_f64() * rate.per_second;
        (self.tokens + refill).min(f64::from(rate.burst))
    }
}

/// A connection's place in its source's count; given back when dropped.
#[derive(Debug)]
pub(crate) struct SourceSlot {
    sources: Arc<Sources>,
    source: IpAddr,
}

impl SourceSlot {
    /// The source it is counted under.
    pub(crate) fn source(&self) -> IpAddr {
        self.source
    }
}

impl Drop for SourceSlot {
    fn drop(&mut self) {
        let mut table = self.sources.table();
        // One lookup (the source's hash is keyed SipHash: a few hundred
        // instructions, paid at every connection's open and close).
        if let Entry::Occupied(mut open) = table.open.entry(self.source) {
            if *open.get() <= 1 {
                open.remove();
            } else {
                *open.get_mut() -= 1;
            }
        }
    }
}

impl Sources {
    /// Decides whether `peer` may connect under `access`; an admitted
    /// connection holds its slot until the slot is dropped. A refusal is
    /// the caller's to record ([`Sources::refused`]).
    pub(crate) fn admit(
        self: &Arc<Self>,
        access: &Access,
        peer: IpAddr,
    ) -> Result<SourceSlot, Refusal> {
        if !access.admits(peer) {
            return Err(Refusal::Denied);
        }
        let address = peer.to_canonical();
        let source = source_of(address, access.source_ipv6_prefix);
        let mut table = self.table();
        let Table { open, buckets, .. } = &mut *table;
        // One lookup for the check and the count (a refused source's vacant
        // entry inserts nothing).
        let open = open.entry(source);
        let count = match &open {
            Entry::Occupied(count) => *count.get(),
            Entry::Vacant(_) => 0,
        };
        if access
            .max_connections_per_source
            .is_some_and(|max| count as usize >= max)
        {
            return Err(Refusal::TooMany);
        }
        if let Some(rate) = access.connection_rate_per_source {
            take_token(buckets, source, rate)?;
        }
        *open.or_insert(0) += 1;
        Ok(SourceSlot {
            sources: self.clone(),
            source,
        })
    }

    /// Decides whether a datagram from `peer` is taken under `access` (its
    /// lists) and `rate` (datagrams per source). Takes no lock when there
    /// is no rate.
    pub(crate) fn admit_datagram(
        &self,
        access: &Access,
        rate: Option<Rate>,
        peer: IpAddr,
    ) -> Result<(), Refusal> {
        if !access.admits(peer) {
            return Err(Refusal::Denied);
        }
        let address = peer.to_canonical();
        match rate {
            None => Ok(()),
            Some(rate) => {
                let source = source_of(address, access.source_ipv6_prefix);
                take_token(&mut self.table().buckets, source, rate)
            }
        }
    }

    /// Spends `bytes` of the reply budget of `peer`'s source, which refills
    /// at `budget`; false when it holds less (and then nothing is spent).
    pub(crate) fn spend_reply_budget(
        &self,
        access: &Access,
        budget: Rate,
        peer: IpAddr,
        bytes: usize,
    ) -> bool {
        let source = source_of(peer.to_canonical(), access.source_ipv6_prefix);
        // More sources at once than buckets (a flood of spoofed sources):
        // a source without one gets no budget, so only replies no longer
        // than their requests are sent to it. Never more than that.
        self.table()
            .reply_budgets
            .take(source, budget, bytes as f64, false)
    }

    /// Counts a refusal (by [`Sources::admit`] or the PROXY protocol
    /// checks), and says so in the log at most once a second.
    pub(crate) fn refused(&self, refusal: Refusal, address: IpAddr) {
        let address = address.to_canonical();
        let mut table = self.table();
        table.refused[refusal.index()] += 1;
        table.last_refused = Some(address);
        let now = Instant::now();
        if table
            .last_log
            .is_some_and(|at| now.duration_since(at) < HOUSEKEEPING_INTERVAL)
        {
            return;
        }
        table.last_log = Some(now);
        let [denied, too_many, too_fast, untrusted, proxy_header] =
            std::mem::take(&mut table.refused);
        // The daemon's line, though a connection's task (a PROXY header's
        // client refused) may count the refusal that writes it: past the
        // log budget it would be dropped, and the counts it took lost.
        crate::log_context::outside(|| {
            warn!(
                denied,
                too_many,
                too_fast,
                untrusted,
                proxy_header,
                last_source = %address,
                "refused connections (counted since the last such line)"
            );
        });
    }

    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        // Every update leaves the table consistent: a poisoned lock is usable.
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Connections open from `address`'s source (for tests).
    #[cfg(test)]
    fn open_from(&self, source: IpAddr) -> u32 {
        self.table().open.get(&source).copied().unwrap_or(0)
    }
}

/// Takes a token from `source`'s bucket of `buckets`, refilled at `rate`.
fn take_token(buckets: &mut Buckets, source: IpAddr, rate: Rate) -> Result<(), Refusal> {
    // More sources at once than buckets: let this one through the rate
    // limit rather than refuse every new source (the other limits hold).
    if buckets.take(source, rate, 1.0, true) {
        Ok(())
    } else {
        Err(Refusal::TooFast)
    }
}

/// Token buckets by source: at most [`MAX_BUCKETS`], pruned of full ones.
#[derive(Debug, Default)]
struct Buckets {
    by_source: HashMap<IpAddr, Bucket>,
    last_prune: Option<Instant>,
}

impl Buckets {
    /// Takes `amount` tokens from `source`'s bucket; false when it holds
    /// fewer (and then takes none). When there are more sources at once
    /// than buckets, a source without one gets `when_full`.
    fn take(&mut self, source: IpAddr, rate: Rate, amount: f64, when_full: bool) -> bool {
        let now = Instant::now();
        // The length first: the lookup (a hash) only when the map is full.
        if self.by_source.len() >= MAX_BUCKETS && !self.by_source.contains_key(&source) {
            self.prune(now, rate);
            if self.by_source.len() >= MAX_BUCKETS {
                return when_full;
            }
        }
        let bucket = self.by_source.entry(source).or_insert(Bucket {
            tokens: f64::from(rate.burst),
            at: now,
        });
        let tokens = bucket.tokens_at(now, rate);
        if tokens < amount {
            return false;
        }
        *bucket = Bucket {
            tokens: tokens - amount,
            at: now,
        };
        true
    }

    /// Drops the buckets that have refilled (a new one would be the same),
    /// at most once per [`HOUSEKEEPING_INTERVAL`].
    fn prune(&mut self, now: Instant, rate: Rate) {
        if self
            .last_prune
            .is_some_and(|at| now.duration_since(at) < HOUSEKEEPING_INTERVAL)
        {
            return;
        }
        self.last_prune = Some(now);
        let full = f64::from(rate.burst);
        self.by_source
            .retain(|_, bucket| bucket.tokens_at(now, rate) < full);
    }
}

/// The source an address counts as: itself, or for IPv6 its network of
/// `ipv6_prefix` bits (one host usually has a whole /64).
fn source_of(address: IpAddr, ipv6_prefix: u8) -> IpAddr {
    match address {
        IpAddr::V6(v6) => {
            IpAddr::V6(Ipv6Net::new(v6, ipv6_prefix.min(128)).map_or(v6, |net| net.trunc().addr()))
        }
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The refusal summary written by a connection's task is the daemon's
    /// line: outside the connection's log context, so the budget never
    /// drops it (with the counts it took).
    #[tokio::test]
    async fn the_refusal_summary_is_written_outside_the_connection_s_context() {
        use tracing_subscriber::layer::SubscriberExt;

        use crate::log_capture::Logged;
        use crate::log_context::{self, LogContext};

        let seen = Logged::default();
        let _guard =
            tracing::subscriber::set_default(tracing_subscriber::registry().with(seen.clone()));
        let sources = Sources::default();
        let address: IpAddr = "192.0.2.7".parse().expect("an address");
        log_context::scope(LogContext::connection("px".into(), None, 1), async {
            sources.refused(Refusal::ProxyHeader, address);
            tracing::info!("a line of the connection's");
        })
        .await;
        let seen: Vec<bool> = seen
            .lines()
            .iter()
            .map(|(_, kind)| kind.is_some())
            .collect();
        assert_eq!(seen, [false, true]);
    }

    fn access(extra: impl FnOnce(&mut Access)) -> Access {
        let mut access = Access {
            allow: Vec::new(),
            deny: Vec::new(),
            max_connections_per_source: None,
            connection_rate_per_source: None,
            source_ipv6_prefix: 64,
        };
        extra(&mut access);
        access
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("address")
    }

    /// The IPv4-mapped IPv6 address of an IPv4 address.
    fn mapped(v4: &str) -> IpAddr {
        let v4: std::net::Ipv4Addr = v4.parse().expect("IPv4");
        IpAddr::V6(v4.to_ipv6_mapped())
    }

    #[test]
    fn deny_wins_over_allow_and_allow_admits_only_what_it_lists() {
        let sources = Arc::new(Sources::default());
        let access = access(|a| {
            a.allow = vec!["127.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()];
            a.deny = vec!["127.0.0.3/32".parse().unwrap()];
        });
        assert!(sources.admit(&access, ip("127.0.0.2")).is_ok());
        assert!(sources.admit(&access, ip("::1")).is_ok());
        assert_eq!(
            sources.admit(&access, ip("127.0.0.3")).unwrap_err(),
            Refusal::Denied
        );
        assert_eq!(
            sources.admit(&access, ip("192.0.2.1")).unwrap_err(),
            Refusal::Denied
        );
        // An IPv4-mapped IPv6 peer (a dual-stack socket) is its IPv4 address.
        assert_eq!(
            sources.admit(&access, mapped("127.0.0.3")).unwrap_err(),
            Refusal::Denied
        );
        assert!(sources.admit(&access, mapped("127.0.0.9")).is_ok());
    }

    #[test]
    fn a_source_holds_at_most_its_share_and_gets_it_back_on_close() {
        let sources = Arc::new(Sources::default());
        let access = access(|a| a.max_connections_per_source = Some(2));
        let first = sources.admit(&access, ip("127.0.0.2")).unwrap();
        let _second = sources.admit(&access, ip("127.0.0.2")).unwrap();
        assert_eq!(
            sources.admit(&access, ip("127.0.0.2")).unwrap_err(),
            Refusal::TooMany
        );
        // Another source is not affected.
        assert!(sources.admit(&access, ip("127.0.0.3")).is_ok());
        drop(first);
        let third = sources.admit(&access, ip("127.0.0.2")).unwrap();
        assert_eq!(sources.open_from(ip("127.0.0.2")), 2);
        // A source whose last connection closed leaves no entry behind.
        drop((third, _second));
        assert_eq!(sources.open_from(ip("127.0.0.2")), 0);
        assert!(sources.table().open.is_empty(), "no connection is open");
    }

    #[test]
    fn ipv6_sources_are_grouped_by_their_prefix() {
        let sources = Arc::new(Sources::default());
        let access = access(|a| a.max_connections_per_source = Some(1));
        let _one = sources.admit(&access, ip("2001:db8:1:2::1")).unwrap();
        assert_eq!(
            sources
                .admit(&access, ip("2001:db8:1:2::ffff"))
                .unwrap_err(),
            Refusal::TooMany
        );
        assert!(sources.admit(&access, ip("2001:db8:1:3::1")).is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn the_rate_allows_a_burst_then_refills() {
        let sources = Arc::new(Sources::default());
        let access = access(|a| {
            a.connection_rate_per_source = Some(Rate {
                per_second: 2.0,
                burst: 3,
            });
        });
        let mut slots = Vec::new();
        for _ in 0..3 {
            slots.push(sources.admit(&access, ip("127.0.0.2")).unwrap());
        }
        assert_eq!(
            sources.admit(&access, ip("127.0.0.2")).unwrap_err(),
            Refusal::TooFast
        );
        assert!(sources.admit(&access, ip("127.0.0.3")).is_ok());
        tokio::time::advance(Duration::from_millis(500)).await;
        assert!(sources.admit(&access, ip("127.0.0.2")).is_ok());
        assert_eq!(
            sources.admit(&access, ip("127.0.0.2")).unwrap_err(),
            Refusal::TooFast
        );
    }

    #[tokio::test(start_paused = true)]
    async fn buckets_stay_bounded_under_a_flood_from_many_sources() {
        let sources = Arc::new(Sources::default());
        let access = access(|a| {
            a.connection_rate_per_source = Some(Rate {
                per_second: 1.0,
                burst: 1,
            });
        });
        for i in 0..(MAX_BUCKETS as u32 + 1000) {
            let address = IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            let _ = sources.admit(&access, address);
        }
        assert!(sources.table().buckets.by_source.len() <= MAX_BUCKETS);
        // Once refilled, the buckets are pruned to make room.
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(sources.admit(&access, ip("192.0.2.1")).is_ok());
        assert!(sources.table().buckets.by_source.len() < 10);
    }

    #[tokio::test(start_paused = true)]
    async fn a_reply_budget_is_spent_per_source_and_none_is_given_when_the_table_is_full() {
        let sources = Sources::default();
        let access = access(|_| {});
        let budget = Rate {
            per_second: 100.0,
            burst: 100,
        };
        // A source spends its burst, then waits for the refill.
        assert!(sources.spend_reply_budget(&access, budget, ip("127.0.0.2"), 60));
        assert!(!sources.spend_reply_budget(&access, budget, ip("127.0.0.2"), 60));
        assert!(sources.spend_reply_budget(&access, budget, ip("127.0.0.3"), 60));
        tokio::time::advance(Duration::from_millis(200)).await;
        assert!(sources.spend_reply_budget(&access, budget, ip("127.0.0.2"), 60));
        // A flood of (spoofed) sources that fills the table, spending little
        // each: a source new to it then gets no budget at all, where a rate
        // limit would let it through.
        let spent = (0..MAX_BUCKETS as u32)
            .filter(|i| {
                let address = IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i));
                sources.spend_reply_budget(&access, budget, address, 1)
            })
            .count();
        // (Two buckets were there already.)
        assert_eq!(spent, MAX_BUCKETS - 2);
        assert!(!sources.spend_reply_budget(&access, budget, ip("192.0.2.1"), 1));
        assert!(sources.table().reply_budgets.by_source.len() <= MAX_BUCKETS);
        // Once they refill, they are pruned, and a new source has its budget.
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(sources.spend_reply_budget(&access, budget, ip("192.0.2.1"), 60));
    }

    /// Opens and closes from a few sources, interleaved, some refused: the
    /// counts always match a model of the open slots (a closed source
    /// leaves no entry, a refusal inserts none), and no source ever holds
    /// more than its share.
    #[test]
    fn open_counts_follow_every_open_close_and_refusal() {
        let sources = Arc::new(Sources::default());
        let access = access(|a| a.max_connections_per_source = Some(3));
        let addresses = ["127.0.0.2", "127.0.0.3", "127.0.0.4", "::ffff:127.0.0.5"].map(ip);
        let mut slots: Vec<Vec<SourceSlot>> = addresses.iter().map(|_| Vec::new()).collect();
        // A fixed xorshift: the same sequence every run.
        let mut state: u32 = 0x9e37_79b9;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state
        };
        for step in 0..5000 {
            let pick = next();
            let which = pick as usize % addresses.len();
            let held = &mut slots[which];
            if pick & 0x100 != 0 {
                match sources.admit(&access, addresses[which]) {
                    Ok(slot) => {
                        assert!(held.len() < 3, "step {step}: a fourth slot");
                        held.push(slot);
                    }
                    Err(refusal) => {
                        assert_eq!(refusal, Refusal::TooMany, "step {step}");
                        assert_eq!(held.len(), 3, "step {step}: refused under the share");
                    }
                }
            } else if !held.is_empty() {
                let at = (pick >> 9) as usize % held.len();
                drop(held.swap_remove(at));
            }
            let expected: HashMap<IpAddr, u32> = addresses
                .iter()
                .zip(&slots)
                .filter(|(_, held)| !held.is_empty())
                .map(|(address, held)| (address.to_canonical(), held.len() as u32))
                .collect();
            assert_eq!(sources.table().open, expected, "step {step}");
        }
        drop(slots);
        assert!(sources.table().open.is_empty(), "no connection is open");
    }

    /// A source refused (too many, too fast) with none of its connections
    /// open leaves no open count behind.
    #[tokio::test(start_paused = true)]
    async fn a_refused_source_leaves_no_open_count_behind() {
        let sources = Arc::new(Sources::default());
        let none = access(|a| a.max_connections_per_source = Some(0));
        assert_eq!(
            sources.admit(&none, ip("127.0.0.2")).unwrap_err(),
            Refusal::TooMany
        );
        assert!(sources.table().open.is_empty());
        let slow = access(|a| {
            a.connection_rate_per_source = Some(Rate {
                per_second: 0.001,
                burst: 1,
            });
        });
        drop(sources.admit(&slow, ip("127.0.0.2")).unwrap());
        assert_eq!(
            sources.admit(&slow, ip("127.0.0.2")).unwrap_err(),
            Refusal::TooFast
        );
        assert!(sources.table().open.is_empty());
    }

    /// With the bucket table full, a source that has a bucket is still
    /// held to it (only a source without one is let through).
    #[tokio::test(start_paused = true)]
    async fn a_source_with_a_bucket_keeps_its_rate_when_the_table_is_full() {
        let sources = Arc::new(Sources::default());
        let access = access(|a| {
            a.connection_rate_per_source = Some(Rate {
                per_second: 0.001,
                burst: 1,
            });
        });
        assert!(sources.admit(&access, ip("192.0.2.1")).is_ok());
        for i in 0..(MAX_BUCKETS as u32 - 1) {
            let address = IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            assert!(sources.admit(&access, address).is_ok());
        }
        assert_eq!(sources.table().buckets.by_source.len(), MAX_BUCKETS);
        // New: let through, with no bucket made.
        assert!(sources.admit(&access, ip("192.0.2.2")).is_ok());
        assert!(sources.admit(&access, ip("192.0.2.2")).is_ok());
        // Known: its own empty bucket.
        assert_eq!(
            sources.admit(&access, ip("192.0.2.1")).unwrap_err(),
            Refusal::TooFast
        );
        assert_eq!(sources.table().buckets.by_source.len(), MAX_BUCKETS);
    }
}
