//! The history in Redis, shared by every process pointed at the same key
//! (replicas behind a load balancer).
//!
//! The key is one hash: the messages under consecutive integer fields, and
//! `#first`, `#last` and `#bytes` beside them. One Lua script records a
//! message, trims the oldest past both limits and picks a random message
//! between `#first` and `#last` (an O(1) `HGET`), atomically for every
//! replica. The connection is a `ConnectionManager`, made lazily (the
//! daemon starts while Redis is down) and reconnected by itself; every call
//! has a timeout, and at most [`MAX_IN_FLIGHT`] wait at once per history,
//! so nothing queues without bound while Redis is slow.

use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, Script};
use serde::{Deserialize, Deserializer};
use tokio::sync::Semaphore;

use super::{ENTRY_OVERHEAD, Limits};

/// Calls waiting for Redis at once, per history; more fail at their timeout.
const MAX_IN_FLIGHT: usize = 256;
/// Oldest messages one call deletes at most, so that lowering the limits
/// never makes one call long: the history then shrinks over a few calls.
const MAX_TRIM_PER_CALL: usize = 1000;
/// Random numbers for the pick stay below this, exact in Lua's doubles.
const RANDOM_BOUND: u64 = 1 << 48;

const RECORD_AND_PICK: &str = r"
local h = KEYS[1]
local message = ARGV[1]
local max_messages = tonumber(ARGV[2])
local max_bytes = tonumber(ARGV[3])
local overhead = tonumber(ARGV[4])
local random = tonumber(ARGV[5])
local max_trim = tonumber(ARGV[6])
local function field(id) return string.format('%d', id) end
local last = redis.call('HINCRBY', h, '#last', 1)
local first = tonumber(redis.call('HGET', h, '#first') or last)
redis.call('HSET', h, field(last), message)
local bytes = redis.call('HINCRBY', h, '#bytes', #message + overhead)
local trimmed = 0
while first < last and trimmed < max_trim
    and (last - first + 1 > max_messages or bytes > max_bytes) do
  local len = redis.call('HSTRLEN', h, field(first))
  redis.call('HDEL', h, field(first))
  bytes = redis.call('HINCRBY', h, '#bytes', -(len + overhead))
  first = first + 1
  trimmed = trimmed + 1
end
redis.call('HSET', h, '#first', field(first))
return redis.call('HGET', h, field(first + random % (last - first + 1)))
";

const TAIL: &str = r"
local h = KEYS[1]
local n = tonumber(ARGV[1])
local last = tonumber(redis.call('HGET', h, '#last') or 0)
local first = tonumber(redis.call('HGET', h, '#first') or 1)
local from = math.max(first, last - n + 1)
local out = {}
for id = from, last do
  local m = redis.call('HGET', h, string.format('%d', id))
  if m then table.insert(out, m) end
end
return out
";

/// A Redis URL (`redis://[user:password@]host:port/db`), checked when the
/// config is read. It shows without its password.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct RedisUrl(String);

impl RedisUrl {
    /// Checks that `url` is one the Redis client takes (nothing is
    /// connected).
    pub fn parse(url: &str) -> Result<RedisUrl, String> {
        // The client's own message is generic, and could one day show the
        // URL: only what it expects is said.
        Client::open(url).map_err(|_| {
            "not a Redis URL; expected redis://[user:password@]host[:port][/db] \
             or redis+unix:///path/to/socket"
                .to_owned()
        })?;
        Ok(RedisUrl(url.to_owned()))
    }

    fn client(&self) -> redis::RedisResult<Client> {
        Client::open(self.0.as_str())
    }
}

impl<'de> Deserialize<'de> for RedisUrl {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        RedisUrl::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// The URL with its password, if any, replaced by `***`.
impl fmt::Display for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let url = &self.0;
        let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
            return f.write_str(url);
        };
        let authority_end = url[scheme_end..]
            .find('/')
            .map_or(url.len(), |i| scheme_end + i);
        let Some(at) = url[scheme_end..authority_end]
            .rfind('@')
            .map(|i| scheme_end + i)
        else {
            return f.write_str(url);
        };
        let userinfo = &url[scheme_end..at];
        let user = userinfo.split_once(':').map_or("", |(user, _)| user);
        write!(f, "{}{user}:***{}", &url[..scheme_end], &url[at..])
    }
}

impl fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RedisUrl({self})")
    }
}

/// A history under one Redis key.
pub(crate) struct RedisHistory {
    conn: ConnectionManager,
    key: String,
    record_and_pick: Script,
    tail: Script,
    in_flight: Semaphore,
}

impl fmt::Debug for RedisHistory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisHistory")
            .field("key", &self.key)
            .finish()
    }
}

impl RedisHistory {
    /// A history under `key` at `url`. Nothing is connected yet: the first
    /// call connects, and a lost connection is made again by the next.
    /// Must be called inside a tokio runtime.
    pub(crate) fn open(
        url: &RedisUrl,
        key: &str,
        timeout: Duration,
    ) -> Result<RedisHistory, String> {
        let client = url.client().map_err(|e| e.to_string())?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(100))
            .set_max_delay(timeout)
            .set_pipeline_buffer_size(MAX_IN_FLIGHT);
        let conn =
            ConnectionManager::new_lazy_with_config(client, config).map_err(|e| e.to_string())?;
        Ok(RedisHistory {
            conn,
            key: key.to_owned(),
            record_and_pick: Script::new(RECORD_AND_PICK),
            tail: Script::new(TAIL),
            in_flight: Semaphore::new(MAX_IN_FLIGHT),
        })
    }

    /// Records `message`, trims to `limits`, and returns a random message
    /// kept, all within `timeout`.
    pub(crate) async fn record_and_pick(
        &self,
        message: Bytes,
        limits: Limits,
        timeout: Duration,
    ) -> Result<Bytes, String> {
        let call = async {
            let _slot = self.in_flight.acquire().await.map_err(|e| e.to_string())?;
            let mut conn = self.conn.clone();
            let picked: Option<Vec<u8>> = self
                .record_and_pick
                .key(&self.key)
                .arg(&message[..])
                .arg(limits.messages)
                .arg(limits.bytes)
                .arg(ENTRY_OVERHEAD)
                .arg(rand::random_range(0..RANDOM_BOUND))
                .arg(MAX_TRIM_PER_CALL)
                .invoke_async(&mut conn)
                .await
                .map_err(|e| e.to_string())?;
            // The newest message is always kept, so a pick is never missing.
            Ok(Bytes::from(picked.unwrap_or_default()))
        };
        tokio::time::timeout(timeout, call)
            .await
            .unwrap_or_else(|_| Err(format!("no answer within {timeout:?}")))
    }

    /// Messages kept.
    pub(crate) async fn count(&self, timeout: Duration) -> Result<u64, String> {
        let call = async {
            let mut conn = self.conn.clone();
            let (first, last): (Option<u64>, Option<u64>) = redis::cmd("HMGET")
                .arg(&self.key)
                .arg("#first")
                .arg("#last")
                .query_async(&mut conn)
                .await
                .map_err(|e| e.to_string())?;
            Ok(match (first, last) {
                (Some(first), Some(last)) if last >= first => last - first + 1,
                _ => 0,
            })
        };
        tokio::time::timeout(timeout, call)
            .await
            .unwrap_or_else(|_| Err(format!("no answer within {timeout:?}")))
    }

    /// The newest `n` messages, oldest first.
    pub(crate) async fn tail(&self, n: usize, timeout: Duration) -> Result<Vec<Vec<u8>>, String> {
        let call = async {
            let mut conn = self.conn.clone();
            self.tail
                .key(&self.key)
                .arg(n)
                .invoke_async(&mut conn)
                .await
                .map_err(|e| e.to_string())
        };
        tokio::time::timeout(timeout, call)
            .await
            .unwrap_or_else(|_| Err(format!("no answer within {timeout:?}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_shows_without_its_password() {
        let shown = |url: &str| RedisUrl::parse(url).unwrap().to_string();
        assert_eq!(
            shown("redis://127.0.0.1:6379/0"),
            "redis://127.0.0.1:6379/0"
        );
        assert_eq!(
            shown("redis://app:s3cret@127.0.0.1:6379/0"),
            "redis://app:***@127.0.0.1:6379/0"
        );
        assert_eq!(
            shown("redis://:s3cret@localhost/2"),
            "redis://:***@localhost/2"
        );
        let debug = format!("{:?}", RedisUrl::parse("redis://u:p%40ss@h:1/0").unwrap());
        assert!(!debug.contains("p%40ss"), "{debug}");
    }

    #[test]
    fn a_url_the_client_cannot_use_is_refused() {
        assert!(RedisUrl::parse("http://127.0.0.1:6379").is_err());
        assert!(RedisUrl::parse("not a url").is_err());
    }
}
