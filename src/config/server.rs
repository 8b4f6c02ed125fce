//! The `[server]` table: process-wide settings, and their validation.

use std::time::Duration;

use serde::Deserialize;
use toml::de::DeTable;

use super::error::{ConfigError, Source, join_key, value_span};
use super::{bounds, defaults};

/// The `[server]` table.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// How long shutdown waits for connections to finish (e.g. "10s").
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// `text` (default) or `json`.
    pub log_format: LogFormat,
    /// A tracing filter such as `info` or `switchboard=debug`; `RUST_LOG` overrides it.
    pub log_level: String,
    /// Tokio worker threads; absent means one per CPU.
    pub worker_threads: Option<usize>,
    /// Most log lines written a second; the rest are dropped and counted.
    pub log_lines_per_second: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            shutdown_grace: defaults::SHUTDOWN_GRACE,
            log_format: LogFormat::Text,
            log_level: defaults::LOG_LEVEL.to_owned(),
            worker_threads: None,
            log_lines_per_second: defaults::LOG_LINES_PER_SECOND,
        }
    }
}

impl ServerConfig {
    /// The keys whose change a reload cannot apply (they are read once, at
    /// start), of those that differ between `self` and `new`.
    pub(crate) fn restart_keys(&self, new: &ServerConfig) -> Vec<&'static str> {
        let mut keys = Vec::new();
        if self.log_format != new.log_format {
            keys.push("server.log_format");
        }
        if self.log_level != new.log_level {
            keys.push("server.log_level");
        }
        if self.worker_threads != new.worker_threads {
            keys.push("server.worker_threads");
        }
        if self.log_lines_per_second != new.log_lines_per_second {
            keys.push("server.log_lines_per_second");
        }
        keys
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object a line.
    Json,
}

/// The longest log filter (`log_level`, or `RUST_LOG`).
const MAX_LOG_FILTER_BYTES: usize = 1024;

/// Parses a log filter (`log_level`, or `RUST_LOG`). Span field values are
/// compared as text, never compiled as regular expressions: a value made
/// to explode a regex compiler took minutes (found by the config fuzz
/// target), and a filter is bounded in length.
pub(crate) fn log_filter(directives: &str) -> Result<tracing_subscriber::EnvFilter, String> {
    if directives.len() > MAX_LOG_FILTER_BYTES {
        return Err(format!(
            "longer than {MAX_LOG_FILTER_BYTES} bytes ({} bytes)",
            directives.len()
        ));
    }
    tracing_subscriber::EnvFilter::builder()
        .with_regex(false)
        .parse(directives)
        .map_err(|e| e.to_string())
}

/// Checks what serde cannot: the log filter parses, the thread count is sane.
pub(super) fn validate(
    src: &Source<'_>,
    server: &ServerConfig,
    table: &DeTable<'_>,
) -> Result<(), ConfigError> {
    let at = |key: &str| (value_span(table, key), Some(join_key("server", key)));
    if let Err(e) = log_filter(&server.log_level) {
        let (span, key) = at("log_level");
        return Err(src.error(
            span,
            key,
            format!(
                "invalid log filter \"{}\": {e}",
                crate::conn::text::quote(&server.log_level, 80)
            ),
        ));
    }
    if server.shutdown_grace > bounds::DURATION_MAX {
        let (span, key) = at("shutdown_grace");
        return Err(src.error(
            span,
            key,
            format!(
                "shutdown_grace must be at most {}",
                humantime::format_duration(bounds::DURATION_MAX)
            ),
        ));
    }
    if !bounds::LOG_LINES_PER_SECOND.contains(&server.log_lines_per_second) {
        let (span, key) = at("log_lines_per_second");
        return Err(src.error(
            span,
            key,
            format!(
                "log_lines_per_second must be between {} and {}",
                bounds::LOG_LINES_PER_SECOND.start(),
                bounds::LOG_LINES_PER_SECOND.end()
            ),
        ));
    }
    if let Some(threads) = server.worker_threads
        && !bounds::WORKER_THREADS.contains(&threads)
    {
        let (span, key) = at("worker_threads");
        return Err(src.error(
            span,
            key,
            format!(
                "worker_threads must be between {} and {} (leave it out for one per CPU)",
                bounds::WORKER_THREADS.start(),
                bounds::WORKER_THREADS.end()
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_filter_never_compiles_a_field_value_as_a_regex() {
        // The config fuzz target's input that took over a minute: a span
        // field value that a regex compiler blows up on. Parsed in a thread
        // so that a return of the bug fails here instead of hanging.
        let slow = include_str!("../../fuzz/corpus/config/timeout-log-filter-regex.toml")
            .lines()
            .find_map(|l| l.strip_prefix("log_level =\""))
            .and_then(|l| l.strip_suffix('"'))
            .expect("the fuzz input's log_level")
            .to_owned();
        let (done, finished) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = done.send(log_filter(&slow).is_err());
        });
        let refused = finished
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("parsing the filter took more than 10 s");
        assert!(refused);
        // A regex-looking value is taken as text, and parses.
        assert!(log_filter("info,[conn{peer=127.0.0.1.*}]=debug").is_ok());
        assert!(
            log_filter(&"a,".repeat(600))
                .unwrap_err()
                .contains("longer than 1024")
        );
    }
}
