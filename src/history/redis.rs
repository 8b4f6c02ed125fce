//! The history in Redis, shared by every process pointed at the same key
//! (replicas behind a load balancer).
//!
//! The key is one hash: the messages under consecutive integer fields, and
//! `#first`, `#last` and `#bytes` beside them. One Lua script records the
//! messages of a batch, trims the oldest past both limits and picks a
//! random message between `#first` and `#last` for each (`HMGET`, O(1) a
//! message), atomically for every replica, in five Redis calls whatever the
//! batch's size (Redis's own cost is mostly per call).
//!
//! The connections of a process hand their messages to one task per
//! history, which sends whatever has queued up as one batch, one round trip
//! and one script run for all (the Redis server's time and ours per call
//! are shared), and the next batch while that one is answered. The
//! connection is a `ConnectionManager`, made lazily (the daemon starts
//! while Redis is down) and reconnected by itself; every batch has the
//! timeout, and the queue is bounded ([`QUEUE`]), so nothing piles up
//! while Redis is slow.
//!
//! The manager reconnects by itself only after an I/O error: a connection
//! that failed otherwise (a wrong password, a refused `SELECT`) stays
//! failed in it for good. So a batch that fails with an error of the
//! client makes the batch task replace its manager with a fresh lazy one,
//! at most once every [`FRESH_CONNECTION_EVERY`].

use std::fmt;
use std::future::Future;
use std::time::{Duration, Instant};

use bytes::Bytes;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, RedisError, RedisResult, Script};
use tokio::sync::mpsc;

use super::batch::{self, Job};
use super::redis_url::RedisUrl;
use super::{ENTRY_OVERHEAD, Failure, Recording};
use crate::conn::text::quote;

/// Messages in one batch, at most.
const MAX_BATCH: usize = 64;
/// Oldest messages one call deletes at most, so that lowering the limits
/// never makes one call long: the history then shrinks over a few calls.
const MAX_TRIM_PER_CALL: usize = 1000;
/// The modulus of the script's generator of picks (MINSTD's, a prime):
/// its products stay below 2^47, exact in Lua's doubles (the script
/// writes it out).
const PICK_MODULUS: u32 = 2_147_483_647;
/// The most bytes of a Redis error that a failure's reason (logged) quotes.
const REASON_MAX_BYTES: usize = 1024;
/// The batch task replaces a failed connection at most this often.
const FRESH_CONNECTION_EVERY: Duration = Duration::from_secs(1);

/// KEYS[1]: the hash. ARGV: max messages, max bytes, the overhead counted
/// per message, the most to trim, a random seed (1 to [`PICK_MODULUS`] - 1,
/// new for each batch), then the messages of the batch. The picks are
/// drawn by a Lehmer generator from the seed (one multiplication a pick,
/// where a random number per message cost an argument to send, to parse
/// and to convert). Returns the picks, one per message in order, as
/// one string: each pick's length (4 bytes, little-endian) then the pick
/// (see [`split_picks`]). One string, not an array of them: the client
/// library's reply parser costs about 3 k instructions per array element,
/// more than the rest of a message's work on our side.
const RECORD_AND_PICK: &str = r"
local h = KEYS[1]
local max_messages = tonumber(ARGV[1])
local max_bytes = tonumber(ARGV[2])
local overhead = tonumber(ARGV[3])
local max_trim = tonumber(ARGV[4])
local draw = tonumber(ARGV[5])
local n = #ARGV - 5
local function field(id) return string.format('%d', id) end
local function message(i) return ARGV[5 + i] end
-- A count this script writes: a whole number from 0 to 2^50. Anything
-- else another client left there reads as absent: tonumber takes 'inf',
-- 'nan' and '1e300', and past 2^53 adding 1 changes nothing, which
-- would make the loops below over ids endless.
local function count(value)
  local x = tonumber(value)
  if x and x >= 0 and x <= 2^50 and x == math.floor(x) then return x end
end
local meta = redis.call('HMGET', h, '#first', '#last', '#bytes')
local new_first = (count(meta[2]) or 0) + 1
local last = new_first + n - 1
local first = math.min(count(meta[1]) or new_first, new_first)
local bytes = count(meta[3]) or 0
for i = 1, n do bytes = bytes + #message(i) + overhead end
local function over()
  return first < last and (last - first + 1 > max_messages or bytes > max_bytes)
end
-- The oldest stored messages go first, their sizes fetched a chunk at a
-- time (the chunk: as many as the count limit drops, and at least n).
local dropped = {}
while over() and first < new_first and #dropped < max_trim do
  local chunk = math.min(new_first - first, max_trim - #dropped,
    math.max(n, last - first + 1 - max_messages))
  local fields = {}
  for id = first, first + chunk - 1 do fields[#fields + 1] = field(id) end
  local values = redis.call('HMGET', h, unpack(fields))
  for j = 1, chunk do
    if not over() then break end
    bytes = bytes - #(values[j] or '') - overhead
    dropped[#dropped + 1] = fields[j]
    first = first + 1
  end
end
while over() and first >= new_first do
  bytes = bytes - #message(first - new_first + 1) - overhead
  first = first + 1
end
if #dropped > 0 then redis.call('HDEL', h, unpack(dropped)) end
local set = {'#first', field(first), '#last', field(last), '#bytes', field(bytes)}
for id = math.max(first, new_first), last do
  set[#set + 1] = field(id)
  set[#set + 1] = message(id - new_first + 1)
end
redis.call('HSET', h, unpack(set))
local picks, stored, from = {}, {}, {}
for i = 1, n do
  draw = draw * 48271 % 2147483647
  local id = first + draw % (last - first + 1)
  if id >= new_first then
    picks[i] = message(id - new_first + 1)
  else
    stored[#stored + 1] = field(id)
    from[#from + 1] = i
  end
end
if #stored > 0 then
  local got = redis.call('HMGET', h, unpack(stored))
  -- A field another client deleted: the newest message (always kept),
  -- never an empty pick nobody sent.
  for j, i in ipairs(from) do picks[i] = got[j] or message(n) end
end
for i = 1, n do picks[i] = struct.pack('<I4c0', #picks[i], picks[i]) end
return table.concat(picks)
";

/// KEYS[1]: the hash. ARGV: the number of messages, the most bytes of each
/// returned (a longer one is cut by Redis, not sent whole).
const TAIL: &str = r"
local h = KEYS[1]
local n = tonumber(ARGV[1])
local max_bytes = tonumber(ARGV[2])
local last = tonumber(redis.call('HGET', h, '#last') or 0)
local first = tonumber(redis.call('HGET', h, '#first') or 1)
local from = math.max(first, last - n + 1)
local out = {}
for id = from, last do
  local m = redis.call('HGET', h, string.format('%d', id))
  if m then table.insert(out, string.sub(m, 1, max_bytes)) end
end
return out
";

/// A history under one Redis key. Dropping it ends its batch task once the
/// queue is empty.
pub(crate) struct RedisHistory {
    conn: ConnectionManager,
    key: String,
    queue: batch::Queue,
    /// For taking its secrets out of the client's errors.
    url: RedisUrl,
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
        let client = url.client().map_err(|e| url.scrub(&e.to_string()))?;
        let connections = Connections::new(client, timeout);
        let conn = connections.fresh().map_err(|e| url.scrub(&e.to_string()))?;
        let (queue, queued) = batch::queue();
        tokio::spawn(send_batches(
            connections,
            conn.clone(),
            url.clone(),
            key.to_owned(),
            timeout,
            queued,
        ));
        Ok(RedisHistory {
            conn,
            key: key.to_owned(),
            queue,
            url: url.clone(),
        })
    }

    /// Records `message`, trims to the limits, and returns a random
    /// message kept, all within the timeout.
    pub(crate) async fn record_and_pick(
        &self,
        message: Bytes,
        how: Recording,
    ) -> Result<Bytes, Failure> {
        batch::submit(&self.queue, message, how, "Redis").await
    }

    /// Messages kept.
    pub(crate) async fn count(&self, timeout: Duration) -> Result<u64, String> {
        let mut conn = self.conn.clone();
        let mut query = redis::cmd("HMGET");
        query.arg(&self.key).arg("#first").arg("#last");
        let (first, last): (Option<u64>, Option<u64>) =
            within(&self.url, timeout, query.query_async(&mut conn))
                .await
                .map_err(|failure| failure.to_string())?;
        Ok(match (first, last) {
            (Some(first), Some(last)) if last >= first => last - first + 1,
            _ => 0,
        })
    }

    /// The newest `n` messages, oldest first, each its first `max_bytes`
    /// at most.
    pub(crate) async fn tail(
        &self,
        n: usize,
        max_bytes: usize,
        timeout: Duration,
    ) -> Result<Vec<Vec<u8>>, String> {
        let mut conn = self.conn.clone();
        let script = Script::new(TAIL);
        let mut call = script.key(&self.key);
        call.arg(n).arg(max_bytes);
        within(&self.url, timeout, call.invoke_async(&mut conn))
            .await
            .map_err(|failure| failure.to_string())
    }
}

/// How the batch task makes its connections, and when it last made one.
struct Connections {
    client: Client,
    config: ConnectionManagerConfig,
    /// When the last fresh one was made by [`Connections::refresh`].
    replaced: Option<Instant>,
    /// Whether the last call that answered failed with an error of the
    /// client, and no fresh manager was made since.
    failed: bool,
}

impl Connections {
    fn new(client: Client, timeout: Duration) -> Connections {
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(100))
            .set_max_delay(timeout);
        Connections {
            client,
            config,
            replaced: None,
            failed: false,
        }
    }

    /// A manager that connects on its first call.
    fn fresh(&self) -> RedisResult<ConnectionManager> {
        ConnectionManager::new_lazy_with_config(self.client.clone(), self.config.clone())
    }

    /// Notes how a call that answered ended: `failed`, with an error of
    /// the client.
    fn answered(&mut self, failed: bool) {
        self.failed = failed;
    }

    /// At `now`, after a failed call (see [`Connections::answered`]):
    /// `conn` becomes a fresh manager, unless one was made less than
    /// [`FRESH_CONNECTION_EVERY`] before (then the next call does it, if
    /// that one is due). The error does not say whether it came from
    /// making the connection (which the manager would keep) or from Redis
    /// answering the script (a server error reply); a fresh manager after
    /// the latter costs one connection a second at most.
    fn refresh(&mut self, conn: &mut ConnectionManager, now: Instant) {
        let due = self
            .replaced
            .is_none_or(|at| now.duration_since(at) >= FRESH_CONNECTION_EVERY);
        if !self.failed || !due {
            return;
        }
        // Made from the config the first one was made from, so it cannot
        // fail where that one did not; if it did, the old one stays.
        if let Ok(fresh) = self.fresh() {
            *conn = fresh;
            self.replaced = Some(now);
            self.failed = false;
        }
    }
}

/// The batch task of one history: records each batch with one script
/// call, and answers each message.
async fn send_batches(
    mut connections: Connections,
    mut conn: ConnectionManager,
    url: RedisUrl,
    key: String,
    timeout: Duration,
    mut queue: mpsc::Receiver<Job>,
) {
    let script = Script::new(RECORD_AND_PICK);
    while let Some(mut batch) = batch::next(&mut queue, MAX_BATCH).await {
        batch::claim(&mut batch);
        if batch.is_empty() {
            continue;
        }
        let limits = batch::tightest(&batch);
        let mut call = script.prepare_invoke();
        call.key(&key)
            .arg(limits.messages)
            .arg(limits.bytes)
            .arg(ENTRY_OVERHEAD)
            .arg(MAX_TRIM_PER_CALL)
            .arg(rand::random_range(1..PICK_MODULUS));
        for job in &batch {
            call.arg(&job.message[..]);
        }
        // A failure less than a second after the last fresh manager is
        // made up for here, so that the first message after a quiet time
        // finds a fresh connection.
        connections.refresh(&mut conn, Instant::now());
        let answer = tokio::time::timeout(timeout, call.invoke_async::<Vec<u8>>(&mut conn)).await;
        if let Ok(result) = &answer {
            connections.answered(result.is_err());
            connections.refresh(&mut conn, Instant::now());
        }
        let picked = judged(&url, timeout, answer).and_then(|picks| {
            split_picks(Bytes::from(picks), batch.len()).map_err(|why| {
                Failure::Unknown(format!("Redis answered the script wrongly: {why}"))
            })
        });
        batch::deliver(batch::answers(batch, picked));
    }
}

/// Why the script's answer cannot be read as the picks of a batch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum PicksError {
    /// Fewer bytes than a length, or than the pick it announces.
    #[error("cut short at pick {0}")]
    Short(usize),
    /// Bytes left after the last pick.
    #[error("{0} bytes after the last pick")]
    Trailing(usize),
}

/// The `count` picks of the script's answer (each a 4-byte little-endian
/// length, then that many bytes), as slices of it: no copy. Anything else
/// (cut short, or bytes left over) is an error, never a panic.
pub(crate) fn split_picks(mut answer: Bytes, count: usize) -> Result<Vec<Bytes>, PicksError> {
    // Each pick takes 4 bytes at least: a count past that is not answered.
    let mut picks = Vec::with_capacity(count.min(answer.len() / 4));
    for i in 0..count {
        let Some((len, _)) = answer.split_first_chunk::<4>() else {
            return Err(PicksError::Short(i));
        };
        let len = usize::try_from(u32::from_le_bytes(*len)).unwrap_or(usize::MAX);
        if answer.len() - 4 < len {
            return Err(PicksError::Short(i));
        }
        let mut pick = answer.split_to(4 + len);
        bytes::Buf::advance(&mut pick, 4);
        picks.push(pick);
    }
    if !answer.is_empty() {
        return Err(PicksError::Trailing(answer.len()));
    }
    Ok(picks)
}

/// What a Redis call answers within `timeout`, or why not, without the
/// secrets of `url`.
async fn within<T>(
    url: &RedisUrl,
    timeout: Duration,
    call: impl Future<Output = RedisResult<T>>,
) -> Result<T, Failure> {
    judged(url, timeout, tokio::time::timeout(timeout, call).await)
}

/// What a Redis call answered within `timeout` (`Err`: it did not), or
/// why not, without the secrets of `url`.
fn judged<T>(
    url: &RedisUrl,
    timeout: Duration,
    answer: Result<RedisResult<T>, tokio::time::error::Elapsed>,
) -> Result<T, Failure> {
    match answer {
        Ok(answer) => answer.map_err(|e| failure(url, &e)),
        Err(_) => Err(Failure::Unknown(format!(
            "Redis did not answer within {timeout:?}"
        ))),
    }
}

/// What an error of the Redis client says of the call's messages: an
/// answer of Redis (an error reply: the call did not run) or a refused
/// connection means not stored; any other failure of the connection may
/// have come after Redis ran the call.
fn failure(url: &RedisUrl, err: &RedisError) -> Failure {
    // What the server said is its own text, of any length and bytes: the
    // log gets it escaped and cut (the secrets are out before the cut).
    let reason = quote(&url.scrub(&err.to_string()), REASON_MAX_BYTES);
    if err.is_io_error() && !err.is_connection_refusal() {
        Failure::Unknown(reason)
    } else {
        Failure::NotStored(reason)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(picks: &[&[u8]]) -> Bytes {
        let mut out = Vec::new();
        for pick in picks {
            out.extend_from_slice(&u32::try_from(pick.len()).unwrap().to_le_bytes());
            out.extend_from_slice(pick);
        }
        Bytes::from(out)
    }

    #[test]
    fn the_scripts_answer_splits_into_its_picks_or_says_what_is_wrong() {
        let picks: [&[u8]; 4] = [b"hello", b"", b"a\nb\0\xff", &[b'x'; 300]];
        let answer = framed(&picks);
        let split = split_picks(answer.clone(), 4).unwrap();
        assert_eq!(split.iter().map(|p| &p[..]).collect::<Vec<_>>(), picks);
        assert_eq!(split_picks(Bytes::new(), 0), Ok(Vec::new()));
        // Every cut of the answer is short at the pick it falls in.
        // The picks end at 9, 13, 22 and 326 bytes.
        for cut in 0..answer.len() {
            let at = match cut {
                0..9 => 0,
                9..13 => 1,
                13..22 => 2,
                _ => 3,
            };
            assert_eq!(
                split_picks(answer.slice(..cut), 4),
                Err(PicksError::Short(at)),
                "cut at {cut}"
            );
        }
        // One pick more, one fewer, a length past the end.
        assert_eq!(split_picks(answer.clone(), 5), Err(PicksError::Short(4)));
        assert_eq!(split_picks(answer, 3), Err(PicksError::Trailing(304)));
        assert_eq!(
            split_picks(Bytes::from_static(&[0xff, 0xff, 0xff, 0xff, b'a']), 1),
            Err(PicksError::Short(0))
        );
        // A huge count is refused without reserving room for it.
        assert_eq!(
            split_picks(Bytes::from_static(b"abc"), usize::MAX),
            Err(PicksError::Short(0))
        );
    }

    #[tokio::test]
    async fn a_failed_connection_is_replaced_at_most_once_a_second() {
        let url = RedisUrl::parse("redis://127.0.0.1:1/0").expect("a Redis URL");
        let client = url.client().expect("a client");
        let mut connections = Connections::new(client, Duration::from_millis(100));
        let mut conn = connections.fresh().expect("a lazy manager");
        let start = Instant::now();
        connections.refresh(&mut conn, start);
        assert_eq!(connections.replaced, None, "nothing failed yet");
        connections.answered(true);
        connections.refresh(&mut conn, start);
        assert_eq!(connections.replaced, Some(start), "the first failure");
        // Failures within the second: no fresh manager, until it is due
        // (at the next call, whether more failed or not).
        for later in [Duration::ZERO, FRESH_CONNECTION_EVERY / 2] {
            connections.answered(true);
            connections.refresh(&mut conn, start + later);
            assert_eq!(connections.replaced, Some(start), "{later:?} later");
        }
        let due = start + FRESH_CONNECTION_EVERY;
        connections.refresh(&mut conn, due);
        assert_eq!(connections.replaced, Some(due));
        // A call that worked: nothing to replace, however late.
        connections.answered(false);
        connections.refresh(&mut conn, due + 10 * FRESH_CONNECTION_EVERY);
        assert_eq!(connections.replaced, Some(due));
    }
}
