//! HTTP-dates (RFC 9110 §5.6.7): `Sun, 06 Nov 1994 08:49:37 GMT`. They
//! cover whole seconds from 1970 to the end of 9999 only; `httpdate`
//! panics on a time outside that, so every time is checked here first and
//! one outside is no date at all (`None`: no `Last-Modified`, no `Date`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The first second that is not an HTTP-date: 10000-01-01T00:00:00Z.
const END_SECS: u64 = 253_402_300_800;

/// The whole second of a file's modification time (`st_mtime`, seconds
/// since the epoch), when it is an HTTP-date.
pub(crate) fn from_unix_seconds(secs: i64) -> Option<SystemTime> {
    let secs = u64::try_from(secs).ok().filter(|&s| s < END_SECS)?;
    Some(UNIX_EPOCH + Duration::from_secs(secs))
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
        ];
        for (text, expected) in cases {
            assert_eq!(parse(text), expected, "{text:?}");
        }
    }
}
