//! The Redis URL of a history, and its secrets kept out of every text a
//! user or an operator sees: `check`, the logs, the errors (the Redis
//! client's own included). A password shows as `***` in each form the
//! Redis client takes one: `redis://:pw@host`, `redis://user:pw@host`,
//! and the `pass` query of `redis+unix:` and `unix:` URLs; and in forms it
//! does not take, in case one is ever written (the value of any query key
//! but the few harmless ones the client reads, a user name alone, text
//! that is not a URL at all).

use std::fmt;

use redis::Client;
use serde::{Deserialize, Deserializer};

/// What a masked secret shows as.
const MASK: &str = "***";
/// The query keys whose values show: those the Redis client reads that
/// hold no secret (it reads `pass` too, and nothing else). Any other key's
/// value is masked, whatever its name: a list of secret-looking names
/// always misses one (`apikey`, `pw`, `sessionid`, ...).
const SHOWN_QUERY_KEYS: [&str; 3] = ["db", "user", "protocol"];

/// A Redis URL (`redis://[user:password@]host:port/db`), checked when the
/// config is read. It shows without its password.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct RedisUrl(String);

impl RedisUrl {
    /// Checks that `url` is one the Redis client takes (nothing is
    /// connected). An error never quotes the URL.
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
             or redis+unix:///path/to/socket?pass=PASSWORD"
                .to_owned()
        })?;
        Ok(RedisUrl(url.to_owned()))
    }

    /// The Redis client for this URL.
    pub(super) fn client(&self) -> redis::RedisResult<Client> {
        Client::open(self.0.as_str())
    }

    /// `text` (an error of the Redis client, say) with every secret of
    /// this URL, and anything that looks like a URL's password, as `***`.
    pub(crate) fn scrub(&self, text: &str) -> String {
        let mut scrubbed = text.to_owned();
        let mut secrets = self.secrets();
        // The longest first, so that one secret inside another goes whole.
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        for secret in secrets {
            if !secret.is_empty() && scrubbed.contains(&secret) {
                scrubbed = scrubbed.replace(&secret, MASK);
            }
        }
        mask(&scrubbed, Scope::InText)
    }

    /// The secrets the URL holds, as written and as decoded.
    fn secrets(&self) -> Vec<String> {
        let url = &self.0;
        let mut secrets = Vec::new();
        if let Some((start, at)) = userinfo(url, Scope::WholeUrl) {
            let info = &url[start..at];
            let secret = info.split_once(':').map_or(info, |(_, password)| password);
            secrets.push(secret.to_owned());
            secrets.push(percent_decode(secret, false));
        }
        let mut query_values = Vec::new();
        for_each_secret_value(url, Scope::WholeUrl, |range| query_values.push(range));
        for range in query_values {
            if let Some(value) = url.get(range) {
                secrets.push(value.to_owned());
                secrets.push(percent_decode(value, true));
            }
        }
        secrets
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
        f.write_str(&mask(&self.0, Scope::WholeUrl))
    }
}

impl fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RedisUrl({self})")
    }
}

/// What a text to mask is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    /// One URL the Redis client took: its parts end where the URL
    /// parser ends them.
    WholeUrl,
    /// Any text, URLs in it or not: a URL ends at a space or a quote, and
    /// when in doubt, everything between `://` and the last `@` goes.
    InText,
}

/// `text` with each password (a URL's user info, a query value but those
/// of [`SHOWN_QUERY_KEYS`]) replaced by `***`.
fn mask(text: &str, scope: Scope) -> String {
    let mut masked = String::with_capacity(text.len());
    let mut rest = text;
    while let Some((start, at)) = userinfo(rest, scope) {
        let info = &rest[start..at];
        masked.push_str(&rest[..start]);
        match info.split_once(':') {
            // A user name is shown when it is plainly one.
            Some((user, _)) if user.chars().all(is_user_char) => {
                masked.push_str(user);
                masked.push(':');
            }
            _ => {}
        }
        masked.push_str(MASK);
        rest = &rest[at..];
    }
    masked.push_str(rest);
    let mut values = Vec::new();
    for_each_secret_value(&masked, scope, |range| values.push(range));
    for range in values.into_iter().rev() {
        masked.replace_range(range, MASK);
    }
    masked
}

/// Where the user info of the first URL in `text` is (after `://`, up to
/// its `@`), if it has one. A URL's authority ends at `/`, `?` or `#`;
/// in any other text, the URL ends at a space or a quote, and its user
/// info at its last `@`.
fn userinfo(text: &str, scope: Scope) -> Option<(usize, usize)> {
    let mut from = 0;
    loop {
        let start = from + text.get(from..)?.find("://")? + 3;
        let tail = &text[start..];
        let end = match scope {
            Scope::WholeUrl => tail.find(['/', '?', '#']),
            Scope::InText => tail.find(ends_url_in_text),
        }
        .unwrap_or(tail.len());
        if let Some(at) = tail[..end].rfind('@')
            && at > 0
        {
            return Some((start, start + at));
        }
        from = start;
    }
}

/// Whether `c` ends a URL inside some text.
fn ends_url_in_text(c: char) -> bool {
    c.is_whitespace() || c.is_control() || matches!(c, '"' | '\'' | '`' | '<' | '>')
}

/// Characters of a plain user name, shown beside a masked password.
fn is_user_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '~' | '%')
}

/// Calls `found` with the byte range of each value of a query key in
/// `text` that may be a secret (any key but [`SHOWN_QUERY_KEYS`]). A value runs to the next `&` (the query's separator); inside
/// some text, also to a space or a quote.
fn for_each_secret_value(text: &str, scope: Scope, mut found: impl FnMut(std::ops::Range<usize>)) {
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if !matches!(bytes[i], b'?' | b'&' | b'#' | b';') {
            i += 1;
            continue;
        }
        let key_start = i + 1;
        let key_len = text[key_start..]
            .find(|c: char| matches!(c, '=' | '&' | '#' | ';' | '?') || ends_url_in_text(c))
            .unwrap_or(text.len() - key_start);
        let key_end = key_start + key_len;
        if bytes.get(key_end) != Some(&b'=') || !is_secret_key(&text[key_start..key_end]) {
            i = key_end.max(i + 1);
            continue;
        }
        let value_start = key_end + 1;
        let value_len = text[value_start..]
            .find(|c: char| c == '&' || (scope == Scope::InText && ends_url_in_text(c)))
            .unwrap_or(text.len() - value_start);
        if value_len > 0 {
            found(value_start..value_start + value_len);
        }
        i = value_start + value_len;
    }
}

/// Whether the value of a query key (as written) may be a secret: unless
/// the key is, decoded as the client decodes it, one of
/// [`SHOWN_QUERY_KEYS`] (exactly: the client does not read `DB` as `db`).
fn is_secret_key(key: &str) -> bool {
    !SHOWN_QUERY_KEYS.contains(&percent_decode(key, true).as_str())
}

/// `text` with `%XX` escapes decoded (and `+` as a space, in a query), as
/// the Redis client's URL parser reads it; invalid UTF-8 is replaced.
fn percent_decode(text: &str, query: bool) -> String {
    // `+` first, so that an escaped `%2B` stays a plus; a `%` without two
    // hex digits stays as it is, as in the URL parser.
    let text = if query {
        std::borrow::Cow::Owned(text.replace('+', " "))
    } else {
        std::borrow::Cow::Borrowed(text)
    };
    percent_encoding::percent_decode_str(&text)
        .decode_utf8_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each form a Redis URL can give a password in, as `check` and the
    /// logs show it.
    #[test]
    fn every_form_of_url_shows_without_its_password() {
        let table = [
            ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
            (
                "redis://app:s3cret@127.0.0.1:6379/0",
                "redis://app:***@127.0.0.1:6379/0",
            ),
            ("redis://:s3cret@localhost/2", "redis://:***@localhost/2"),
            ("redis://s3cret@localhost/2", "redis://***@localhost/2"),
            ("redis://u:p%40ss@h:1/0", "redis://u:***@h:1/0"),
            ("redis://u:p@ss@h:1/0", "redis://u:***@h:1/0"),
            ("valkey://:s3cret@h", "valkey://:***@h"),
            (
                "redis+unix:///run/redis.sock?pass=s3cret",
                "redis+unix:///run/redis.sock?pass=***",
            ),
            (
                "redis+unix:///run/redis.sock?db=1&user=app&pass=s3cret&protocol=3",
                "redis+unix:///run/redis.sock?db=1&user=app&pass=***&protocol=3",
            ),
            (
                "unix:///run/redis.sock?pass=s3cret&db=1",
                "unix:///run/redis.sock?pass=***&db=1",
            ),
            (
                "unix:/run/redis.sock?pass=s3cret",
                "unix:/run/redis.sock?pass=***",
            ),
            (
                "valkey+unix:///run/v.sock?PASS=s3cret",
                "valkey+unix:///run/v.sock?PASS=***",
            ),
            // The key percent-encoded, as the client's parser decodes it.
            (
                "redis+unix:///run/redis.sock?p%61ss=s3cret",
                "redis+unix:///run/redis.sock?p%61ss=***",
            ),
            (
                "redis+unix:///run/redis.sock?pass=s3%26cret+x",
                "redis+unix:///run/redis.sock?pass=***",
            ),
            (
                "redis+unix:///run/redis.sock?pass=s3cret#frag",
                "redis+unix:///run/redis.sock?pass=***",
            ),
            // Not read by the client, masked all the same: every key's
            // value but those of the harmless keys the client reads.
            ("redis://h/0?password=s3cret", "redis://h/0?password=***"),
            (
                "redis://h/0?apikey=s3a&api_key=s3b&credential=s3c&credentials=s3d",
                "redis://h/0?apikey=***&api_key=***&credential=***&credentials=***",
            ),
            (
                "redis://h/0?key=s3e&pw=s3f&private=s3g&sessionid=s3h",
                "redis://h/0?key=***&pw=***&private=***&sessionid=***",
            ),
            (
                "redis+unix:///r.sock?user=app&x=s3i&DB=s3j&d%62=1&protocol=3&=s3k",
                "redis+unix:///r.sock?user=app&x=***&DB=***&d%62=1&protocol=3&=***",
            ),
            (
                "redis+unix:///run/redis.sock?pass=a@b",
                "redis+unix:///run/redis.sock?pass=***",
            ),
        ];
        for (url, shown) in table {
            let parsed = RedisUrl::parse(url).unwrap_or_else(|e| panic!("{url}: {e}"));
            assert_eq!(parsed.to_string(), shown, "{url}");
            let debug = format!("{parsed:?}");
            assert!(!debug.contains("s3") && !debug.contains("ss@"), "{debug}");
        }
    }

    #[test]
    fn a_url_the_client_cannot_use_is_refused_without_being_quoted() {
        assert!(RedisUrl::parse("http://127.0.0.1:6379").is_err());
        assert!(RedisUrl::parse("not a url").is_err());
        assert!(RedisUrl::parse("redis://127.0.0.1:6379/notanumber").is_err());
        assert!(RedisUrl::parse("redis+unix:///run/redis.sock").is_ok());
        for bad in [
            "rediss://u:s3cret@10.0.0.1:6380/0",
            "valkeys://:s3cret@h",
            "redis://u:s3cret@h:notaport/0",
            "redis://:s3/cret@h/0",
            "redis:s3cret@h",
            "redis://:s3cret@0.0.0.0/0",
        ] {
            let err = RedisUrl::parse(bad).unwrap_err();
            assert!(!err.contains("s3"), "{bad}: {err}");
        }
    }

    #[test]
    fn text_from_the_client_loses_every_secret_of_the_url() {
        let url = RedisUrl::parse("redis://app:p%40ss%20w@127.0.0.1:1/0").unwrap();
        let text = "WRONGPASS for p@ss w at redis://app:p%40ss%20w@127.0.0.1:1/0 (p%40ss%20w)";
        let scrubbed = url.scrub(text);
        assert!(
            !scrubbed.contains("p@ss") && !scrubbed.contains("p%40ss"),
            "{scrubbed}"
        );
        assert!(
            scrubbed.contains("redis://app:***@127.0.0.1:1/0"),
            "{scrubbed}"
        );
        let unix = RedisUrl::parse("redis+unix:///x.sock?pass=s3+cret&db=1").unwrap();
        let scrubbed = unix.scrub("auth with 's3 cret' and s3+cret failed");
        assert_eq!(scrubbed, "auth with '***' and *** failed");
        // URLs of other histories, or not a URL at all: masked by their
        // look, a space or a quote ending them.
        let scrubbed = unix.scrub(
            "see \"redis://u:other-pw@h/0\" and redis+unix:///y?db=2&password=other-pw2 done",
        );
        assert_eq!(
            scrubbed,
            "see \"redis://u:***@h/0\" and redis+unix:///y?db=2&password=*** done"
        );
        assert_eq!(
            unix.scrub("at redis://h/0?db=2&apikey=k3y&user=u ok"),
            "at redis://h/0?db=2&apikey=***&user=u ok"
        );
        // When in doubt, all between `://` and the last `@`.
        assert_eq!(
            unix.scrub("bad redis://:pw/with?slash@h/0"),
            "bad redis://:***@h/0"
        );
    }

    #[test]
    fn percent_decoding_reads_what_the_client_reads() {
        assert_eq!(percent_decode("p%40ss", false), "p@ss");
        assert_eq!(percent_decode("a+b%2", true), "a b%2");
        assert_eq!(percent_decode("%zz%4", false), "%zz%4");
        assert_eq!(percent_decode("%ff", false), "\u{fffd}");
    }
}
