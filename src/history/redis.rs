//! The history in Redis, shared by every process pointed at the same key
//! (replicas behind a load balancer).
//!
//! The key is one hash: the messages under consecutive integer fields, and
//! `#first`, `#last` and `#bytes` beside them. One Lua script records the
//! messages of a batch, trims the oldest past both limits and picks a
//! random message between `#first` and `#last` for each (`HMGET`, O(1) a
//! message), atomically for every replica, in at most five Redis calls
//! whatever the batch's size.
//!
//! The connections of a process hand their messages to one task per
//! history, which sends whatever has queued up as one batch, one round trip
//! and one script run for all (the Redis server's time and ours per call
//! are shared), and the next batch while that one is answered. The
//! connection is a `ConnectionManager`, made lazily (the daemon starts
//! while Redis is down) and reconnected by itself; every batch has the
//! timeout, and the queue is bounded ([`QUEUE`]), so nothing piles up
//! while Redis is slow.

use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, Script};
use serde::{Deserialize, Deserializer};
use tokio::sync::{mpsc, oneshot};

use super::{ENTRY_OVERHEAD, Limits};

/// Messages waiting for the batch task, at most, per history; a connection
/// that finds the queue full waits (within its timeout) for room.
const QUEUE: usize = 1024;
/// Messages in one batch, at most.
const MAX_BATCH: usize = 64;
/// Times the batch task lets the other tasks run before it sends a batch,
/// at most (it stops as soon as a round brings nothing).
const GATHER_ROUNDS: usize = 4;
/// Oldest messages one call deletes at most, so that lowering the limits
/// never makes one call long: the history then shrinks over a few calls.
const MAX_TRIM_PER_CALL: usize = 1000;
/// Random numbers for the pick stay below this, exact in Lua's doubles.
const RANDOM_BOUND: u64 = 1 << 48;

/// KEYS[1]: the hash. ARGV: max messages, max bytes, the overhead counted
/// per message, the most to trim, then (message, random number) per
/// message of the batch. Returns a pick per message.
const RECORD_AND_PICK: &str = r"
local h = KEYS[1]
local max_messages = tonumber(ARGV[1])
local max_bytes = tonumber(ARGV[2])
local overhead = tonumber(ARGV[3])
local max_trim = tonumber(ARGV[4])
local n = (#ARGV - 4) / 2
local function field(id) return string.format('%d', id) end
local function message(i) return ARGV[3 + 2 * i] end
local last = redis.call('HINCRBY', h, '#last', n)
local new_first = last - n + 1
local meta = redis.call('HMGET', h, '#first', '#bytes')
local first = tonumber(meta[1]) or new_first
local bytes = tonumber(meta[2]) or 0
for i = 1, n do bytes = bytes + #message(i) + overhead end
local dropped = {}
while first < last and #dropped < max_trim
    and (last - first + 1 > max_messages or bytes > max_bytes) do
  if first >= new_first then
    bytes = bytes - #message(first - new_first + 1) - overhead
  else
    bytes = bytes - redis.call('HSTRLEN', h, field(first)) - overhead
    dropped[#dropped + 1] = field(first)
  end
  first = first + 1
end
if #dropped > 0 then redis.call('HDEL', h, unpack(dropped)) end
local set = {'#first', field(first), '#bytes', field(bytes)}
for id = math.max(first, new_first), last do
  set[#set + 1] = field(id)
  set[#set + 1] = message(id - new_first + 1)
end
redis.call('HSET', h, unpack(set))
local picks, stored, from = {}, {}, {}
for i = 1, n do
  local id = first + tonumber(ARGV[4 + 2 * i]) % (last - first + 1)
  if id >= new_first then
    picks[i] = message(id - new_first + 1)
  else
    stored[#stored + 1] = field(id)
    from[#from + 1] = i
  end
end
if #stored > 0 then
  local got = redis.call('HMGET', h, unpack(stored))
  for j, i in ipairs(from) do picks[i] = got[j] or '' end
end
return picks
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
        let scheme = url.split_once("://").map_or("", |(scheme, _)| scheme);
        if scheme.eq_ignore_ascii_case("rediss") || scheme.eq_ignore_ascii_case("valkeys") {
            return Err(
                "TLS to Redis (rediss://) is not built into switchboard; use \
                        redis:// on a trusted network, redis+unix:///path, or a TLS tunnel"
                    .to_owned(),
            );
        }
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

/// One message for the batch task, and where its pick goes.
struct Job {
    message: Bytes,
    limits: Limits,
    reply: oneshot::Sender<Result<Bytes, String>>,
}

/// A history under one Redis key. Dropping it ends its batch task once the
/// queue is empty.
pub(crate) struct RedisHistory {
    conn: ConnectionManager,
    key: String,
    jobs: mpsc::Sender<Job>,
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
            .set_max_delay(timeout);
        let conn =
            ConnectionManager::new_lazy_with_config(client, config).map_err(|e| e.to_string())?;
        let (jobs, queue) = mpsc::channel(QUEUE);
        tokio::spawn(send_batches(conn.clone(), key.to_owned(), timeout, queue));
        Ok(RedisHistory {
            conn,
            key: key.to_owned(),
            jobs,
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
        let deadline = tokio::time::Instant::now() + timeout;
        let (reply, picked) = oneshot::channel();
        let job = Job {
            message,
            limits,
            reply,
        };
        match tokio::time::timeout_at(deadline, self.jobs.send(job)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return Err("its batch task has stopped".to_owned()),
            Err(_) => return Err(format!("the queue stayed full for {timeout:?}")),
        }
        match tokio::time::timeout_at(deadline, picked).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err("its batch task has stopped".to_owned()),
            Err(_) => Err(format!("no answer within {timeout:?}")),
        }
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
            Script::new(TAIL)
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

/// The batch task of one history: takes what has queued up (after letting
/// the other ready connections queue theirs), records it with one script
/// call, and answers each message.
async fn send_batches(
    mut conn: ConnectionManager,
    key: String,
    timeout: Duration,
    mut queue: mpsc::Receiver<Job>,
) {
    let script = Script::new(RECORD_AND_PICK);
    let mut batch: Vec<Job> = Vec::with_capacity(MAX_BATCH);
    while let Some(job) = queue.recv().await {
        batch.push(job);
        // Let the other connections that are ready queue theirs first,
        // while that brings more (a few rounds at most).
        for _ in 0..GATHER_ROUNDS {
            tokio::task::yield_now().await;
            let before = batch.len();
            while batch.len() < MAX_BATCH {
                match queue.try_recv() {
                    Ok(job) => batch.push(job),
                    Err(_) => break,
                }
            }
            if batch.len() == before || batch.len() == MAX_BATCH {
                break;
            }
        }
        // A connection that gave up (its timeout passed) got no reply: its
        // message is not recorded either.
        batch.retain(|job| !job.reply.is_closed());
        if batch.is_empty() {
            continue;
        }
        let limits = Limits {
            messages: batch.iter().map(|j| j.limits.messages).min().unwrap_or(1),
            bytes: batch.iter().map(|j| j.limits.bytes).min().unwrap_or(1),
        };
        let mut call = script.prepare_invoke();
        call.key(&key)
            .arg(limits.messages)
            .arg(limits.bytes)
            .arg(ENTRY_OVERHEAD)
            .arg(MAX_TRIM_PER_CALL);
        for job in &batch {
            call.arg(&job.message[..])
                .arg(rand::random_range(0..RANDOM_BOUND));
        }
        let picked: Result<Vec<Vec<u8>>, String> =
            match tokio::time::timeout(timeout, call.invoke_async(&mut conn)).await {
                Ok(Ok(picks)) => Ok(picks),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err(format!("no answer within {timeout:?}")),
            };
        match picked {
            Ok(picks) if picks.len() == batch.len() => {
                for (job, pick) in batch.drain(..).zip(picks) {
                    let _ = job.reply.send(Ok(Bytes::from(pick)));
                }
            }
            Ok(picks) => {
                let reason = format!("{} picks for {} messages", picks.len(), batch.len());
                for job in batch.drain(..) {
                    let _ = job.reply.send(Err(reason.clone()));
                }
            }
            Err(reason) => {
                for job in batch.drain(..) {
                    let _ = job.reply.send(Err(reason.clone()));
                }
            }
        }
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
        let tls = RedisUrl::parse("rediss://u:pw@10.0.0.1:6380/0").unwrap_err();
        assert!(tls.contains("TLS") && !tls.contains("pw"), "{tls}");
        assert!(RedisUrl::parse("redis://127.0.0.1:6379/notanumber").is_err());
        assert!(RedisUrl::parse("redis+unix:///run/redis.sock").is_ok());
    }
}
