//! Logging: `tracing` lines on stderr through a buffered, non-blocking writer
//! (a slow terminal or journal never stalls a connection), filtered by
//! `RUST_LOG` or the config's `log_level`, as text or JSON, without ANSI
//! colours when stderr is not a terminal, and without a timestamp of its own
//! when stderr is the systemd journal (which stamps every line itself).

use std::io::{BufWriter, IsTerminal};

use tracing_appender::non_blocking::WorkerGuard;
use tracing_subscriber::EnvFilter;

use crate::config::{LogFormat, ServerConfig};

/// Bytes of log lines gathered into one write to stderr.
const LOG_WRITE_BUFFER: usize = 64 * 1024;

/// Installs the global subscriber. Keep the guard alive until exit: dropping
/// it flushes the lines still buffered.
pub fn init(server: &ServerConfig) -> anyhow::Result<WorkerGuard> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(directives) if !directives.trim().is_empty() => EnvFilter::builder()
            .parse(&directives)
            .map_err(|e| anyhow::anyhow!("invalid RUST_LOG {directives:?}: {e}"))?,
        _ => EnvFilter::builder().parse(&server.log_level)?,
    };
    // The writer thread drains every line queued, then flushes: buffered,
    // a burst of lines costs one write(2), not one each (and stderr is
    // unbuffered). A lone line is still written at once.
    let stderr = BufWriter::with_capacity(LOG_WRITE_BUFFER, std::io::stderr());
    let (writer, guard) = tracing_appender::non_blocking(stderr);
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(std::io::stderr().is_terminal());
    let installed = match (server.log_format, stderr_is_journal()) {
        (LogFormat::Text, false) => builder.try_init(),
        (LogFormat::Text, true) => builder.without_time().try_init(),
        (LogFormat::Json, _) => builder.json().try_init(),
    };
    installed.map_err(|e| anyhow::anyhow!("cannot install the logger: {e}"))?;
    Ok(guard)
}

/// True when systemd connected stderr to the journal: `JOURNAL_STREAM`
/// names the device and inode of the stream it passed (systemd.exec(5)).
fn stderr_is_journal() -> bool {
    use std::os::unix::fs::MetadataExt;
    let Some(stream) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Ok(stderr) = std::fs::metadata("/proc/self/fd/2") else {
        return false;
    };
    stream.to_string_lossy() == format!("{}:{}", stderr.dev(), stderr.ino())
}
