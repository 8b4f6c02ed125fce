//! The progress bar of a transfer, and its arithmetic: the rate and the
//! time left count only the bytes of this run. A resumed transfer's bar
//! starts where the `.part` ends, but the bytes already on disk came in
//! an earlier run: counted in the rate, they would show the disk's speed
//! (`644 MiB/s ETA 0s`) instead of the network's. The arithmetic is pure
//! (positions and durations in, numbers and text out); `bar` wires it into
//! an `indicatif` bar.

use std::fmt::Write;
use std::time::Duration;

use indicatif::{HumanBytes, ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};

/// Before this much time of the run has passed, no rate is shown: a few
/// bytes over a few microseconds say nothing about the link.
pub(super) const MIN_ELAPSED: Duration = Duration::from_millis(200);

/// Bytes a second in this run: the bytes past `start` (where the run began)
/// over `elapsed`; `None` before [`MIN_ELAPSED`] or before the first byte.
pub(super) fn rate(start: u64, position: u64, elapsed: Duration) -> Option<f64> {
    let this_run = position.saturating_sub(start);
    if this_run == 0 || elapsed < MIN_ELAPSED {
        return None;
    }
    Some(this_run as f64 / elapsed.as_secs_f64())
}

/// Time left at this run's rate to reach `total`; `None` without a total
/// or a rate. Zero once `position` reaches `total`.
pub(super) fn time_left(
    start: u64,
    position: u64,
    total: Option<u64>,
    elapsed: Duration,
) -> Option<Duration> {
    let left = total?.saturating_sub(position);
    if left == 0 {
        return Some(Duration::ZERO);
    }
    let rate = rate(start, position, elapsed)?;
    let secs = (left as f64 / rate).ceil();
    // A rate so low that the time is beyond any display is as good as none.
    (secs < 100.0 * 24.0 * 3600.0).then(|| Duration::from_secs(secs as u64))
}

/// A rate as shown: `12.3 MiB/s`, or `?/s` while there is none.
pub(super) fn show_rate(rate: Option<f64>) -> String {
    match rate {
        Some(rate) => format!("{}/s", HumanBytes(rate as u64)),
        None => "?/s".to_owned(),
    }
}

/// A time left as shown: `42s`, `3m 05s`, `2h 07m`, or `?` while unknown.
pub(super) fn show_time_left(left: Option<Duration>) -> String {
    let Some(left) = left else {
        return "?".to_owned();
    };
    let secs = left.as_secs();
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m {:02}s", secs / 60, secs % 60),
        _ => format!("{}h {:02}m", secs / 3600, secs / 60 % 60),
    }
}

/// A progress bar for `name`, whose run begins at `start` (a resumed
/// `.part`'s length) of `total`, drawn on `target`: the bytes of the
/// whole file, its rate and time left counted over this run only.
pub(super) fn bar(
    name: &str,
    start: u64,
    total: Option<u64>,
    target: ProgressDrawTarget,
) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(total, target);
    let template = if total.is_some() {
        "{msg} [{bar:30}] {bytes}/{total_bytes} {run_rate} ETA {run_left}"
    } else {
        "{msg} {bytes} {run_rate}"
    };
    let style = ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ")
        .with_key(
            "run_rate",
            move |state: &ProgressState, out: &mut dyn Write| {
                let _ = out.write_str(&show_rate(rate(start, state.pos(), state.elapsed())));
            },
        )
        .with_key(
            "run_left",
            move |state: &ProgressState, out: &mut dyn Write| {
                let left = time_left(start, state.pos(), state.len(), state.elapsed());
                let _ = out.write_str(&show_time_left(left));
            },
        );
    bar.set_style(style);
    bar.set_message(name.to_owned());
    bar.set_position(start);
    bar
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    const MIB: u64 = 1024 * 1024;

    #[test]
    fn the_rate_and_the_time_left_count_only_this_runs_bytes() {
        let second = Duration::from_secs(1);
        // Resumed at 600 MiB of 1000: 2 MiB in this run's first second.
        assert_eq!(rate(600 * MIB, 602 * MIB, second), Some(2.0 * MIB as f64));
        assert_eq!(
            time_left(600 * MIB, 602 * MIB, Some(1000 * MIB), second),
            Some(Duration::from_secs(199))
        );
        // A fresh run is the same arithmetic from 0.
        assert_eq!(rate(0, 10 * MIB, 2 * second), Some(5.0 * MIB as f64));
        assert_eq!(
            time_left(0, 10 * MIB, Some(20 * MIB), 2 * second),
            Some(2 * second)
        );
        // Nothing yet in this run, or too soon to tell: no rate, no time.
        assert_eq!(rate(600 * MIB, 600 * MIB, 10 * second), None);
        assert_eq!(rate(0, MIB, Duration::from_millis(10)), None);
        assert_eq!(
            time_left(600 * MIB, 600 * MIB, Some(1000 * MIB), second),
            None
        );
        // Without a total there is no time left; at the end, none is left.
        assert_eq!(time_left(0, MIB, None, second), None);
        assert_eq!(
            time_left(5, 1000, Some(1000), Duration::ZERO),
            Some(Duration::ZERO)
        );
        // A position before the start (never, but) is no negative rate.
        assert_eq!(rate(10, 5, second), None);
        // A crawl: no absurd time.
        assert_eq!(time_left(0, 1, Some(u64::MAX), second), None);
    }

    #[test]
    fn rates_and_times_are_shown_briefly() {
        assert_eq!(show_rate(Some(2.0 * MIB as f64)), "2.00 MiB/s");
        assert_eq!(show_rate(Some(512.0)), "512 B/s");
        assert_eq!(show_rate(None), "?/s");
        assert_eq!(show_time_left(Some(Duration::from_secs(42))), "42s");
        assert_eq!(show_time_left(Some(Duration::from_secs(185))), "3m 05s");
        assert_eq!(show_time_left(Some(Duration::from_secs(7620))), "2h 07m");
        assert_eq!(show_time_left(Some(Duration::ZERO)), "0s");
        assert_eq!(show_time_left(None), "?");
    }

    /// A terminal that keeps what is written on it.
    #[derive(Debug, Clone, Default)]
    struct Screen(Arc<Mutex<Vec<String>>>);

    impl Screen {
        fn lines(&self) -> Vec<String> {
            self.0.lock().unwrap().clone()
        }
    }

    impl indicatif::TermLike for Screen {
        fn width(&self) -> u16 {
            160
        }
        fn move_cursor_up(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn move_cursor_down(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn move_cursor_right(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn move_cursor_left(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn write_line(&self, s: &str) -> std::io::Result<()> {
            self.write_str(s)
        }
        fn write_str(&self, s: &str) -> std::io::Result<()> {
            if !s.trim().is_empty() {
                self.0.lock().unwrap().push(s.to_owned());
            }
            Ok(())
        }
        fn clear_line(&self) -> std::io::Result<()> {
            Ok(())
        }
        fn flush(&self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// The number before `unit` in `line` (`12.5` of `12.5 MiB/s`).
    fn number_before(line: &str, unit: &str) -> Option<f64> {
        let at = line.find(unit)?;
        line[..at].split_whitespace().last()?.parse().ok()
    }

    #[test]
    fn a_resumed_bar_shows_the_rate_and_time_of_this_run() {
        // 600 MiB were on disk; this run brings 1 MiB in about a quarter
        // of a second: about 4 MiB/s, some 100 s to go. Counting the
        // 600 MiB on disk would say gigabytes a second and 0s.
        let screen = Screen::default();
        let target = ProgressDrawTarget::term_like_with_hz(Box::new(screen.clone()), 100);
        let bar = bar("big.iso", 600 * MIB, Some(1024 * MIB), target);
        bar.tick();
        std::thread::sleep(Duration::from_millis(250));
        bar.set_position(601 * MIB);
        bar.tick();
        let elapsed = bar.elapsed().as_secs_f64();
        let lines = screen.lines();
        let last = lines.last().cloned().unwrap_or_default();
        assert!(last.starts_with("big.iso ["), "{lines:?}");
        assert!(last.contains("601.00 MiB/1.00 GiB"), "{last}");
        let shown = number_before(&last, "MiB/s")
            .or_else(|| number_before(&last, "KiB/s").map(|k| k / 1024.0));
        let most = 1.0 / 0.25 * 1.01;
        assert!(
            shown.is_some_and(|r| r > 0.0 && r <= most),
            "rate of {elapsed:.3} s: {last}"
        );
        let left = last.rsplit("ETA ").next().unwrap_or_default();
        assert!(left.contains('m'), "ETA of about 100 s: {last}");
    }
}
