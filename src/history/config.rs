//! The `[listener.history]` table of a random-bot: its keys, checked
//! against the backend they belong to, and which history they name.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::{RedisUrl, SqliteSync};

/// How long a call to the SQLite writer or to Redis may take, by default.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);
/// The longest `timeout`.
const MAX_TIMEOUT: Duration = Duration::from_secs(60);
/// The longest memory history `name`.
const MAX_NAME_BYTES: usize = 64;
/// The longest Redis `key`.
const MAX_KEY_BYTES: usize = 256;
/// Where a history is kept.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// The process's memory: lost when it ends.
    #[default]
    Memory,
    /// An SQLite file.
    Sqlite,
    /// A Redis key.
    Redis,
}

impl Backend {
    fn name(self) -> &'static str {
        match self {
            Backend::Memory => "memory",
            Backend::Sqlite => "sqlite",
            Backend::Redis => "redis",
        }
    }
}

/// The `[listener.history]` table of a random-bot.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryConfig {
    /// `memory` (the default), `sqlite` or `redis`.
    #[serde(default)]
    pub backend: Backend,
    /// sqlite: the database file (created if missing; its directory must
    /// exist). A relative path is taken from the working directory.
    pub path: Option<PathBuf>,
    /// sqlite: what a commit waits for, `normal` (the default: survives
    /// the process) or `full` (survives a power loss).
    pub sync: Option<SqliteSync>,
    /// redis: `redis://[user:password@]host:port/db` or
    /// `redis+unix:///path?pass=password`; shown with `***` for the password.
    pub url: Option<RedisUrl>,
    /// redis: the key (default `switchboard:LISTENER`).
    pub key: Option<String>,
    /// memory: the history's name (default: the listener's name). The
    /// listeners of one process that give the same name share one history,
    /// such as a TCP and a UDP random-bot.
    pub name: Option<String>,
    /// sqlite and redis: how long one message may wait for the history
    /// (default 1s); past it the client gets `ERR history unavailable` if
    /// the backend had not taken the message yet (not stored), or `ERR
    /// history timeout` if it had (it may be stored).
    #[serde(default, with = "humantime_serde::option")]
    pub timeout: Option<Duration>,
}

/// A mistake in a `[listener.history]` table: the key and what is wrong.
pub type Mistake = (&'static str, String);

impl HistoryConfig {
    /// Checks that each key belongs to the backend and is in range, and
    /// makes `path` absolute.
    pub fn validate(&mut self) -> Result<(), Mistake> {
        let backend = self.backend;
        let not_for = |key: &'static str, owners: &str| -> Mistake {
            (
                key,
                format!(
                    "`{key}` is a setting of the {owners} backend, and this history's backend is {}",
                    backend.name()
                ),
            )
        };
        if backend != Backend::Sqlite {
            if self.path.is_some() {
                return Err(not_for("path", "sqlite"));
            }
            if self.sync.is_some() {
                return Err(not_for("sync", "sqlite"));
            }
        }
        if backend != Backend::Redis {
            if self.url.is_some() {
                return Err(not_for("url", "redis"));
            }
            if self.key.is_some() {
                return Err(not_for("key", "redis"));
            }
        }
        if backend != Backend::Memory && self.name.is_some() {
            return Err(not_for("name", "memory"));
        }
        if let Some(name) = &self.name {
            let valid = (1..=MAX_NAME_BYTES).contains(&name.len())
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
            if !valid {
                return Err((
                    "name",
                    format!("name must be 1 to {MAX_NAME_BYTES} characters of A-Z a-z 0-9 - _ ."),
                ));
            }
        }
        if backend == Backend::Memory && self.timeout.is_some() {
            return Err(not_for("timeout", "sqlite and redis"));
        }
        if let Some(timeout) = self.timeout
            && (timeout < Duration::from_millis(1) || timeout > MAX_TIMEOUT)
        {
            return Err((
                "timeout",
                format!("timeout must be between 1ms and {MAX_TIMEOUT:?}"),
            ));
        }
        match backend {
            Backend::Memory => {}
            Backend::Sqlite => {
                let Some(path) = &self.path else {
                    return Err((
                        "backend",
                        "the sqlite backend needs `path`, the database file".to_owned(),
                    ));
                };
                self.path = Some(absolute_file(path).map_err(|message| ("path", message))?);
            }
            Backend::Redis => {
                if self.url.is_none() {
                    return Err((
                        "backend",
                        "the redis backend needs `url`, such as \"redis://127.0.0.1:6379/0\""
                            .to_owned(),
                    ));
                }
                if let Some(key) = &self.key
                    && (key.is_empty()
                        || key.len() > MAX_KEY_BYTES
                        || key.chars().any(char::is_control))
                {
                    return Err((
                        "key",
                        format!(
                            "key must be 1 to {MAX_KEY_BYTES} bytes, with no control characters"
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    /// How long one message may wait for the history.
    pub(crate) fn timeout(&self) -> Duration {
        self.timeout.unwrap_or(DEFAULT_TIMEOUT)
    }

    /// What a commit waits for (sqlite).
    pub(crate) fn sync(&self) -> SqliteSync {
        self.sync.unwrap_or_default()
    }

    /// The Redis key of `listener`'s history.
    fn redis_key(&self, listener: &str) -> String {
        self.key
            .clone()
            .unwrap_or_else(|| format!("switchboard:{listener}"))
    }

    /// Which history this is: two listeners naming the same one share it.
    pub(super) fn identity(&self, listener: &str) -> Identity {
        match (self.backend, &self.path, &self.url) {
            (Backend::Sqlite, Some(path), _) => Identity::Sqlite(path.clone()),
            (Backend::Redis, _, Some(url)) => Identity::Redis {
                url: url.clone(),
                key: self.redis_key(listener),
            },
            _ => Identity::Memory(self.name.clone().unwrap_or_else(|| listener.to_owned())),
        }
    }

    /// Where `listener`'s history is, for the logs (no password).
    pub fn describe(&self, listener: &str) -> String {
        self.identity(listener).to_string()
    }

    /// The backend and where it keeps the history, for `check` (no password).
    pub fn summary(&self) -> String {
        match (self.backend, &self.path, &self.url) {
            (Backend::Sqlite, Some(path), _) => format!(
                "sqlite:{} sync={}",
                path.display(),
                match self.sync() {
                    SqliteSync::Normal => "normal",
                    SqliteSync::Full => "full",
                }
            ),
            (Backend::Redis, _, Some(url)) => match &self.key {
                Some(key) => format!("redis:{url} key={key:?}"),
                None => format!("redis:{url}"),
            },
            _ => match &self.name {
                Some(name) => format!("memory name={name:?}"),
                None => "memory".to_owned(),
            },
        }
    }
}

/// `path` made absolute through its directory, which must exist (the file
/// need not).
fn absolute_file(path: &Path) -> Result<PathBuf, String> {
    let name = path
        .file_name()
        .ok_or_else(|| format!("{path:?} does not name a file"))?;
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let dir = std::fs::canonicalize(dir)
        .map_err(|e| format!("the directory of {path:?}: {e} (it must exist)"))?;
    let absolute = dir.join(name);
    if absolute.is_dir() {
        return Err(format!(
            "{absolute:?} is a directory; name the database file"
        ));
    }
    Ok(absolute)
}

/// Which history a config names.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) enum Identity {
    /// A listener's own, in memory.
    Memory(String),
    Sqlite(PathBuf),
    Redis {
        url: RedisUrl,
        key: String,
    },
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Identity::Memory(_) => f.write_str("memory"),
            Identity::Sqlite(path) => write!(f, "sqlite {}", path.display()),
            Identity::Redis { url, key } => write!(f, "redis {url} key {key}"),
        }
    }
}

/// A `[listener.history]` table read and checked, or the mistake as
/// `key: message` (tests).
#[cfg(test)]
pub(super) fn parse(toml_text: &str) -> Result<HistoryConfig, String> {
    let mut config: HistoryConfig = toml::from_str(toml_text).map_err(|e| e.to_string())?;
    config
        .validate()
        .map_err(|(key, message)| format!("{key}: {message}"))?;
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_key_belongs_to_its_backend() {
        assert_eq!(parse("").unwrap(), HistoryConfig::default());
        let err = parse("backend = \"sqlite\"").unwrap_err();
        assert!(
            err.starts_with("backend: the sqlite backend needs `path`"),
            "{err}"
        );
        let err = parse("backend = \"redis\"").unwrap_err();
        assert!(err.contains("needs `url`"), "{err}");
        let err = parse("path = \"h.db\"").unwrap_err();
        assert!(
            err.starts_with("path: `path` is a setting of the sqlite backend"),
            "{err}"
        );
        let err = parse("backend = \"sqlite\"\npath = \"h.db\"\nurl = \"redis://127.0.0.1/0\"")
            .unwrap_err();
        assert!(err.starts_with("url:"), "{err}");
        let err = parse("timeout = \"1s\"").unwrap_err();
        assert!(err.starts_with("timeout:"), "{err}");
        let err = parse("backend = \"redis\"\nurl = \"redis://127.0.0.1/0\"\ntimeout = \"2m\"")
            .unwrap_err();
        assert!(err.contains("between 1ms and"), "{err}");
        let err = parse("backend = \"sqlite\"\npath = \"/no/such/dir/h.db\"").unwrap_err();
        assert!(err.starts_with("path: the directory of"), "{err}");
        let err = parse("backend = \"postgres\"").unwrap_err();
        assert!(err.contains("unknown variant `postgres`"), "{err}");
        let err = parse("backend = \"redis\"\nurl = \"http://x\"").unwrap_err();
        assert!(err.contains("not a Redis URL"), "{err}");
    }

    #[test]
    fn a_relative_path_is_made_absolute_and_identities_name_the_history() {
        let config = parse("backend = \"sqlite\"\npath = \"h.db\"").unwrap();
        let path = config.path.clone().unwrap();
        assert!(path.is_absolute() && path.ends_with("h.db"), "{path:?}");
        assert_eq!(config.describe("bot"), format!("sqlite {}", path.display()));
        let redis = parse("backend = \"redis\"\nurl = \"redis://u:pw@127.0.0.1:6379/0\"").unwrap();
        assert_eq!(
            redis.describe("bot"),
            "redis redis://u:***@127.0.0.1:6379/0 key switchboard:bot"
        );
        // Two listeners share a file or a key, and a memory history only
        // when they give it the same name.
        assert_eq!(config.identity("a"), config.identity("b"));
        assert_ne!(redis.identity("a"), redis.identity("b"));
        let memory = HistoryConfig::default();
        assert_ne!(memory.identity("a"), memory.identity("b"));
        let named = parse("name = \"chat\"").unwrap();
        assert_eq!(named.identity("a"), named.identity("b"));
        assert_eq!(named.identity("a"), memory.identity("chat"));
        assert_eq!(named.summary(), "memory name=\"chat\"");
    }

    #[test]
    fn a_memory_history_name_is_checked_and_belongs_to_memory() {
        let err =
            parse("backend = \"redis\"\nurl = \"redis://127.0.0.1/0\"\nname = \"x\"").unwrap_err();
        assert!(
            err.starts_with("name: `name` is a setting of the memory backend"),
            "{err}"
        );
        for bad in ["", "a b", "ü", &"x".repeat(65)] {
            let err = parse(&format!("name = {bad:?}")).unwrap_err();
            assert!(
                err.starts_with("name: name must be 1 to 64"),
                "{bad:?}: {err}"
            );
        }
    }
}
