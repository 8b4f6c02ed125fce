//! The process's own figures, under the names Prometheus's client libraries
//! use (`process_*`), plus the server's uptime: read when scraped.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use prometheus::{Counter, Gauge, IntGauge, Registry};

use super::register;

/// Figures read from the process at scrape time.
pub(super) struct ProcessFigures {
    /// Held while the figures are refreshed, so that two scrapes at once do
    /// not both add the same CPU time.
    refreshing: Mutex<()>,
    started: Instant,
    open_fds: IntGauge,
    max_fds: IntGauge,
    resident_memory: IntGauge,
    cpu_seconds: Counter,
    uptime: Gauge,
}

impl ProcessFigures {
    /// Registers the figures in `registry`; the start time is now.
    pub(super) fn register(registry: &Registry) -> Self {
        let int_gauge = |name: &str, help: &str| {
            register(registry, IntGauge::new(name, help).expect("valid metric"))
        };
        let gauge = |name: &str, help: &str| {
            register(registry, Gauge::new(name, help).expect("valid metric"))
        };
        let start_time = gauge(
            "process_start_time_seconds",
            "When the server started, in seconds since the Unix epoch.",
        );
        let since_epoch = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        start_time.set(since_epoch.as_secs_f64());
        ProcessFigures {
            refreshing: Mutex::new(()),
            started: Instant::now(),
            open_fds: int_gauge("process_open_fds", "Open file descriptors."),
            max_fds: int_gauge(
                "process_max_fds",
                "The soft limit on open file descriptors.",
            ),
            resident_memory: int_gauge("process_resident_memory_bytes", "Resident memory size."),
            cpu_seconds: register(
                registry,
                Counter::new(
                    "process_cpu_seconds_total",
                    "User and system CPU time spent, in seconds.",
                )
                .expect("valid metric"),
            ),
            uptime: gauge(
                "switchboard_uptime_seconds",
                "Seconds since the server started.",
            ),
        }
    }

    /// Reads the figures anew. Lists `/proc/self/fd`: call it off the async
    /// workers.
    pub(super) fn refresh(&self) {
        let _one_at_a_time = self
            .refreshing
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        self.uptime.set(self.started.elapsed().as_secs_f64());
        if let Some(open) = open_descriptors() {
            self.open_fds.set(saturating_i64(open));
        }
        let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile);
        self.max_fds
            .set(limit.current.map_or(i64::MAX, saturating_i64));
        if let Some(pages) = std::fs::read_to_string("/proc/self/statm")
            .ok()
            .and_then(|statm| statm.split_whitespace().nth(1)?.parse::<u64>().ok())
        {
            let bytes = pages.saturating_mul(rustix::param::page_size() as u64);
            self.resident_memory.set(saturating_i64(bytes));
        }
        if let Some(cpu) = cpu_time() {
            // A counter only goes up: add what was spent since the last scrape.
            let more = cpu.as_secs_f64() - self.cpu_seconds.get();
            if more > 0.0 {
                self.cpu_seconds.inc_by(more);
            }
        }
    }
}

/// Descriptors open in this process. Linux 6.2 and later give the count as
/// the size of `/proc/self/fd`, at once; before, the directory is listed,
/// which under a flood of connections (thousands of descriptors) made a
/// scrape take tens of milliseconds.
fn open_descriptors() -> Option<u64> {
    match rustix::fs::stat("/proc/self/fd") {
        Ok(stat) if stat.st_size > 0 => u64::try_from(stat.st_size).ok(),
        _ => {
            let entries = std::fs::read_dir("/proc/self/fd").ok()?;
            // The directory's own descriptor is counted too: take it off.
            Some(entries.count().saturating_sub(1) as u64)
        }
    }
}

fn saturating_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// User plus system CPU time of this process.
fn cpu_time() -> Option<Duration> {
    let now = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    Some(Duration::new(
        u64::try_from(now.tv_sec).ok()?,
        u32::try_from(now.tv_nsec).ok()?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_count_of_open_descriptors_follows_what_is_opened() {
        let before = open_descriptors().expect("a count");
        let files: Vec<std::fs::File> = (0..50)
            .map(|_| std::fs::File::open("/proc/self/status").expect("open"))
            .collect();
        let during = open_descriptors().expect("a count");
        drop(files);
        // Other tests of this process open and close descriptors too: the
        // 50 must show, give or take what they do meanwhile.
        assert!(during >= before + 40, "{before} then {during}");
    }
}
