//! HTTP-dates (RFC 9110 §5.6.7): `Sun, 06 Nov 1994 08:49:37 GMT`. They
//! cover whole seconds from 1970 to the end of 9999 only; `httpdate`
//! panics on a time outside that, so every time is checked here first and
//! one outside is no date at all (`None`: no `Last-Modified`, no `Date`).
//! Also what a file's modification time is worth as a date: never later
//! than now (§8.8.2.1), and a strong validator only once a second has
//! passed since it (§8.8.2.2).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The first second that is not an HTTP-date: 10000-01-01T00:00:00Z.
const END_SECS: u64 = 253_402_300_800;

/// The whole second of a file's modification time (`st_mtime`, seconds
/// since the epoch), when it is an HTTP-date.
pub(crate) fn from_unix_seconds(secs: i64) -> Option<SystemTime> {
    let secs = u64::try_from(secs).ok().filter(|&s| s < END_SECS)?;
    Some(UNIX_EPOCH + Duration::from_secs(secs))
}

/// A file's `Last-Modified` at `now` (RFC 9110 §8.8.2.1): the whole
/// second of its modification time `mtime` (seconds since the epoch), but
/// never later than the second `now` is in, which is the response's `Date`
/// (a file dated in the future is dated now). `None` when that is not an
/// HTTP-date, or `now` is before 1970 (every date would be in its future).
pub(crate) fn last_modified(mtime: i64, now: SystemTime) -> Option<SystemTime> {
    let now_secs = now.duration_since(UNIX_EPOCH).ok()?.as_secs();
    let modified = from_unix_seconds(mtime)?;
    Some(modified.min(UNIX_EPOCH + Duration::from_secs(now_secs)))
}

/// True when a file modified at `mtime` seconds and `mtime_nsec`
/// nanoseconds since the epoch has a `Last-Modified` that is a strong
/// validator at `now` (RFC 9110 §8.8.2.2): it changed at least a second
/// before now, so no change within the second of its date can follow. A
/// file changed less than a second ago, or dated in the future, could
/// change again within its date's second without its date changing.
pub(crate) fn is_strong(mtime: i64, mtime_nsec: i64, now: SystemTime) -> bool {
    let Ok(since_epoch) = now.duration_since(UNIX_EPOCH) else {
        return false;
    };
    let modified_ns = i128::from(mtime) * 1_000_000_000 + i128::from(mtime_nsec);
    let now_ns = i128::try_from(since_epoch.as_nanos()).unwrap_or(i128::MAX);
    modified_ns.saturating_add(1_000_000_000) <= now_ns
}

/// `time` as an HTTP-date (the second it is in); `None` outside 1970-9999.
pub(crate) fn format(time: SystemTime) -> Option<String> {
    let secs = time.duration_since(UNIX_EPOCH).ok()?.as_secs();
    if secs >= END_SECS {
        return None;
    }
    Some(httpdate::fmt_http_date(
        UNIX_EPOCH + Duration::from_secs(secs),
    ))
}

/// An HTTP-date (any of the three forms RFC 9110 accepts); `None` when it
/// is not one.
pub(crate) fn parse(text: &str) -> Option<SystemTime> {
    httpdate::parse_http_date(text.trim()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_only_times_that_are_http_dates() {
        let at = |secs: u64| UNIX_EPOCH + Duration::from_secs(secs);
        let cases = [
            (at(0), Some("Thu, 01 Jan 1970 00:00:00 GMT")),
            (at(784_111_777), Some("Sun, 06 Nov 1994 08:49:37 GMT")),
            (
                at(784_111_777) + Duration::from_millis(999),
                Some("Sun, 06 Nov 1994 08:49:37 GMT"),
            ),
            (at(END_SECS - 1), Some("Fri, 31 Dec 9999 23:59:59 GMT")),
            (at(END_SECS), None),
            (at(u64::from(u32::MAX) * 1000), None),
            (UNIX_EPOCH - Duration::from_secs(1), None),
        ];
        for (time, expected) in cases {
            assert_eq!(format(time).as_deref(), expected, "{time:?}");
        }
    }

    #[test]
    fn a_file_time_outside_the_range_has_no_date() {
        let cases = [
            (0, Some(UNIX_EPOCH)),
            (
                1_700_000_000,
                Some(UNIX_EPOCH + Duration::from_secs(1_700_000_000)),
            ),
            (-1, None),
            (i64::MIN, None),
            (
                END_SECS as i64 - 1,
                Some(UNIX_EPOCH + Duration::from_secs(END_SECS - 1)),
            ),
            (END_SECS as i64, None),
            (i64::MAX, None),
        ];
        for (secs, expected) in cases {
            assert_eq!(from_unix_seconds(secs), expected, "{secs}");
        }
    }

    #[test]
    fn last_modified_is_never_later_than_now() {
        let at = |secs: u64| UNIX_EPOCH + Duration::from_secs(secs);
        let now = at(1_700_000_000) + Duration::from_millis(300);
        let year_3000 = 32_503_680_000;
        let cases = [
            ("long ago", 784_111_777, now, Some(at(784_111_777))),
            ("a second ago", 1_699_999_999, now, Some(at(1_699_999_999))),
            ("this second", 1_700_000_000, now, Some(at(1_700_000_000))),
            ("next second", 1_700_000_001, now, Some(at(1_700_000_000))),
            ("year 3000", year_3000, now, Some(at(1_700_000_000))),
            (
                "year 9999",
                END_SECS as i64 - 1,
                now,
                Some(at(1_700_000_000)),
            ),
            ("past 9999", END_SECS as i64, now, None),
            ("before 1970", -1, now, None),
            (
                "now before 1970",
                0,
                UNIX_EPOCH - Duration::from_secs(1),
                None,
            ),
            ("now past 9999", 5, at(END_SECS + 10), Some(at(5))),
            ("at the epoch", 0, UNIX_EPOCH, Some(UNIX_EPOCH)),
        ];
        for (name, mtime, now, expected) in cases {
            assert_eq!(last_modified(mtime, now), expected, "{name}");
        }
    }

    #[test]
    fn a_date_is_strong_a_second_after_the_change() {
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000) + Duration::from_millis(300);
        // (mtime, nanoseconds, strong at now)
        let cases = [
            (784_111_777, 0, true),
            (1_699_999_999, 300_000_000, true),
            (1_699_999_999, 300_000_001, false),
            (1_699_999_999, 900_000_000, false),
            (1_700_000_000, 0, false),
            (1_700_000_000, 299_999_999, false),
            (1_700_000_001, 0, false),
            (32_503_680_000, 0, false),
            (i64::MAX, 999_999_999, false),
            (i64::MIN, 0, true),
        ];
        for (mtime, nsec, strong) in cases {
            assert_eq!(is_strong(mtime, nsec, now), strong, "{mtime}.{nsec}");
        }
        assert!(!is_strong(0, 0, UNIX_EPOCH - Duration::from_secs(5)));
    }

    #[test]
    fn parses_the_three_forms_and_nothing_else() {
        let nov_6 = Some(UNIX_EPOCH + Duration::from_secs(784_111_777));
        let cases = [
            ("Sun, 06 Nov 1994 08:49:37 GMT", nov_6),
            ("Sunday, 06-Nov-94 08:49:37 GMT", nov_6),
            ("Sun Nov  6 08:49:37 1994", nov_6),
            (" Sun, 06 Nov 1994 08:49:37 GMT ", nov_6),
            ("Sun, 06 Nov 1994 08:49:37", None),
            ("yesterday", None),
            ("", None),
            ("Sun, 99 Nov 1994 08:49:37 GMT", None),
            // The same field twice, joined: not a date (ignored).
            (
                "Sun, 06 Nov 1994 08:49:37 GMT, Sun, 06 Nov 1994 08:49:37 GMT",
                None,
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(parse(text), expected, "{text:?}");
        }
    }
}
