//! Conditional requests (RFC 9110 §13): the preconditions of a GET or
//! HEAD of a file or a listing, evaluated in the order of §13.2.2:
//!
//! 1. `If-Match` (strong comparison, `*`): false → 412;
//! 2. else `If-Unmodified-Since` (a valid date, and the file has one):
//!    modified after it → 412;
//! 3. `If-None-Match` (weak comparison, `*`): true → 304;
//! 4. else `If-Modified-Since` (a valid date, not in the future, and the
//!    file has one): not modified since → 304;
//! 5. `If-Range` decides whether `Range` applies: an entity tag compared
//!    strongly, or a date equal to the modification time when that date
//!    is a strong validator (the file changed at least a second ago).
//!
//! The dates compared are the file's `Last-Modified`, never later than now
//! (`etag::Validators`). A listing has no validators: only `*` matches
//! it, and date conditions are ignored.

use std::time::SystemTime;

use super::date;
use super::etag::{self, Validators};

/// The conditional header fields of a request, as sent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Preconditions<'a> {
    pub if_match: Option<&'a str>,
    pub if_unmodified_since: Option<&'a str>,
    pub if_none_match: Option<&'a str>,
    pub if_modified_since: Option<&'a str>,
    pub if_range: Option<&'a str>,
}

/// What the preconditions decide.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decision {
    /// 412 Precondition Failed.
    Failed,
    /// 304 Not Modified.
    NotModified,
    /// Answer normally; `Range` applies if `use_range`.
    Proceed { use_range: bool },
}

/// Evaluates `pre` for a GET or HEAD at `now` of the version `file` (its
/// validators taken at `now`), or of a representation that has none (a
/// listing: `None`).
pub(crate) fn evaluate(
    pre: &Preconditions<'_>,
    file: Option<&Validators>,
    now: SystemTime,
) -> Decision {
    let tag = file.map(|file| file.etag.as_str());
    let modified = file.and_then(|file| file.modified);
    if let Some(list) = pre.if_match {
        if !etag::matches_strongly(list, tag) {
            return Decision::Failed;
        }
    } else if let (Some(since), Some(modified)) =
        (pre.if_unmodified_since.and_then(date::parse), modified)
        && modified > since
    {
        return Decision::Failed;
    }
    if let Some(list) = pre.if_none_match {
        if etag::matches_weakly(list, tag) {
            return Decision::NotModified;
        }
    } else if let (Some(since), Some(modified)) =
        (pre.if_modified_since.and_then(date::parse), modified)
    {
        // A date in the future is invalid (§13.1.3): ignored.
        if since <= now && modified <= since {
            return Decision::NotModified;
        }
    }
    Decision::Proceed {
        use_range: pre
            .if_range
            .is_none_or(|validator| file.is_some_and(|file| if_range_holds(validator, file))),
    }
}

/// `If-Range`: the strong tag itself, or exactly the modification date
/// when that date is a strong validator (RFC 9110 §13.1.5). A date of a
/// file changed less than a second ago (or dated in the future) may be
/// the date of an older version changed within the same second: the
/// whole file is sent rather than a range of one version spliced onto
/// another.
fn if_range_holds(validator: &str, file: &Validators) -> bool {
    let validator = validator.trim();
    if validator.starts_with('"') {
        return validator == file.etag;
    }
    if validator.starts_with("W/") || !file.modified_is_strong {
        return false;
    }
    match (date::parse(validator), file.modified) {
        (Some(date), Some(modified)) => date == modified,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    const TAG: &str = "\"1-2-3-4\"";
    /// The file's modification time (1994-11-06 08:49:37), and the dates around it.
    const MODIFIED: &str = "Sun, 06 Nov 1994 08:49:37 GMT";
    const BEFORE: &str = "Sun, 06 Nov 1994 08:49:36 GMT";
    const AFTER: &str = "Mon, 07 Nov 1994 08:49:37 GMT";
    const FUTURE: &str = "Fri, 31 Dec 9999 23:59:59 GMT";

    fn file() -> Validators {
        Validators {
            etag: TAG.to_owned(),
            modified: Some(UNIX_EPOCH + Duration::from_secs(784_111_777)),
            modified_is_strong: true,
        }
    }

    fn now() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_000_000_000)
    }

    const GO: Decision = Decision::Proceed { use_range: true };
    const WHOLE: Decision = Decision::Proceed { use_range: false };

    #[test]
    fn preconditions_in_rfc_9110_order() {
        let p = Preconditions::default;
        let cases: Vec<(&str, Preconditions<'_>, Decision)> = vec![
            ("none", p(), GO),
            (
                "if-match same",
                Preconditions {
                    if_match: Some(TAG),
                    ..p()
                },
                GO,
            ),
            (
                "if-match star",
                Preconditions {
                    if_match: Some("*"),
                    ..p()
                },
                GO,
            ),
            (
                "if-match other",
                Preconditions {
                    if_match: Some("\"x\""),
                    ..p()
                },
                Decision::Failed,
            ),
            (
                "if-match weak",
                Preconditions {
                    if_match: Some("W/\"1-2-3-4\""),
                    ..p()
                },
                Decision::Failed,
            ),
            (
                "if-match garbage",
                Preconditions {
                    if_match: Some("junk"),
                    ..p()
                },
                Decision::Failed,
            ),
            (
                "ius after",
                Preconditions {
                    if_unmodified_since: Some(AFTER),
                    ..p()
                },
                GO,
            ),
            (
                "ius same",
                Preconditions {
                    if_unmodified_since: Some(MODIFIED),
                    ..p()
                },
                GO,
            ),
            (
                "ius before",
                Preconditions {
                    if_unmodified_since: Some(BEFORE),
                    ..p()
                },
                Decision::Failed,
            ),
            (
                "ius invalid",
                Preconditions {
                    if_unmodified_since: Some("soon"),
                    ..p()
                },
                GO,
            ),
            // If-Match present: If-Unmodified-Since is not evaluated.
            (
                "if-match wins over ius",
                Preconditions {
                    if_match: Some(TAG),
                    if_unmodified_since: Some(BEFORE),
                    ..p()
                },
                GO,
            ),
            // 412 comes before 304.
            (
                "412 before 304",
                Preconditions {
                    if_match: Some("\"x\""),
                    if_none_match: Some(TAG),
                    ..p()
                },
                Decision::Failed,
            ),
            (
                "inm same",
                Preconditions {
                    if_none_match: Some(TAG),
                    ..p()
                },
                Decision::NotModified,
            ),
            (
                "inm weak",
                Preconditions {
                    if_none_match: Some("W/\"1-2-3-4\""),
                    ..p()
                },
                Decision::NotModified,
            ),
            (
                "inm star",
                Preconditions {
                    if_none_match: Some("*"),
                    ..p()
                },
                Decision::NotModified,
            ),
            (
                "inm other",
                Preconditions {
                    if_none_match: Some("\"x\""),
                    ..p()
                },
                GO,
            ),
            // If-None-Match present: If-Modified-Since is not evaluated.
            (
                "inm wins over ims",
                Preconditions {
                    if_none_match: Some("\"x\""),
                    if_modified_since: Some(AFTER),
                    ..p()
                },
                GO,
            ),
            (
                "ims after",
                Preconditions {
                    if_modified_since: Some(AFTER),
                    ..p()
                },
                Decision::NotModified,
            ),
            (
                "ims same",
                Preconditions {
                    if_modified_since: Some(MODIFIED),
                    ..p()
                },
                Decision::NotModified,
            ),
            (
                "ims before",
                Preconditions {
                    if_modified_since: Some(BEFORE),
                    ..p()
                },
                GO,
            ),
            (
                "ims in the future",
                Preconditions {
                    if_modified_since: Some(FUTURE),
                    ..p()
                },
                GO,
            ),
            (
                "ims invalid",
                Preconditions {
                    if_modified_since: Some("x"),
                    ..p()
                },
                GO,
            ),
            (
                "if-range tag",
                Preconditions {
                    if_range: Some(TAG),
                    ..p()
                },
                GO,
            ),
            (
                "if-range weak tag",
                Preconditions {
                    if_range: Some("W/\"1-2-3-4\""),
                    ..p()
                },
                WHOLE,
            ),
            (
                "if-range other",
                Preconditions {
                    if_range: Some("\"x\""),
                    ..p()
                },
                WHOLE,
            ),
            (
                "if-range date",
                Preconditions {
                    if_range: Some(MODIFIED),
                    ..p()
                },
                GO,
            ),
            (
                "if-range later date",
                Preconditions {
                    if_range: Some(AFTER),
                    ..p()
                },
                WHOLE,
            ),
            (
                "if-range garbage",
                Preconditions {
                    if_range: Some("x"),
                    ..p()
                },
                WHOLE,
            ),
        ];
        for (name, pre, expected) in cases {
            assert_eq!(evaluate(&pre, Some(&file()), now()), expected, "{name}");
        }
    }

    #[test]
    fn a_file_without_a_date_ignores_date_conditions() {
        let undated = Validators {
            modified: None,
            ..file()
        };
        let p = Preconditions::default;
        let cases: Vec<(Preconditions<'_>, Decision)> = vec![
            (
                Preconditions {
                    if_unmodified_since: Some(BEFORE),
                    ..p()
                },
                GO,
            ),
            (
                Preconditions {
                    if_modified_since: Some(AFTER),
                    ..p()
                },
                GO,
            ),
            (
                Preconditions {
                    if_range: Some(MODIFIED),
                    ..p()
                },
                WHOLE,
            ),
            (
                Preconditions {
                    if_range: Some(TAG),
                    ..p()
                },
                GO,
            ),
            (
                Preconditions {
                    if_match: Some(TAG),
                    ..p()
                },
                GO,
            ),
        ];
        for (pre, expected) in cases {
            assert_eq!(evaluate(&pre, Some(&undated), now()), expected, "{pre:?}");
        }
    }

    #[test]
    fn an_if_range_date_needs_a_strong_date() {
        let p = Preconditions::default;
        // Changed within the last second: the date could be an older
        // version's, so it never matches; the tag still does.
        let fresh = Validators {
            modified_is_strong: false,
            ..file()
        };
        let cases: Vec<(&str, Preconditions<'_>, Decision)> = vec![
            (
                "date",
                Preconditions {
                    if_range: Some(MODIFIED),
                    ..p()
                },
                WHOLE,
            ),
            (
                "tag",
                Preconditions {
                    if_range: Some(TAG),
                    ..p()
                },
                GO,
            ),
            (
                "ims same",
                Preconditions {
                    if_modified_since: Some(MODIFIED),
                    ..p()
                },
                Decision::NotModified,
            ),
        ];
        for (name, pre, expected) in cases {
            assert_eq!(evaluate(&pre, Some(&fresh), now()), expected, "{name}");
        }
    }

    #[test]
    fn a_file_dated_in_the_future_is_compared_as_dated_now() {
        let p = Preconditions::default;
        // Dated year 3000 on disk, served (and compared) as dated now.
        let now = UNIX_EPOCH + Duration::from_millis(1_000_000_000_500);
        let future = Validators::of(1, 2, 3, 32_503_680_000, 0, now);
        const NOW: &str = "Sun, 09 Sep 2001 01:46:40 GMT";
        const YEAR_3000: &str = "Wed, 01 Jan 3000 00:00:00 GMT";
        const BEFORE_NOW: &str = "Sun, 09 Sep 2001 01:46:39 GMT";
        assert_eq!(future.last_modified().as_deref(), Some(NOW));
        let cases: Vec<(&str, Preconditions<'_>, Decision)> = vec![
            (
                "if-range its own date",
                Preconditions {
                    if_range: Some(YEAR_3000),
                    ..p()
                },
                WHOLE,
            ),
            // Equal to what was served, but not strong: it is "now".
            (
                "if-range the date served",
                Preconditions {
                    if_range: Some(NOW),
                    ..p()
                },
                WHOLE,
            ),
            (
                "ims the date served",
                Preconditions {
                    if_modified_since: Some(NOW),
                    ..p()
                },
                Decision::NotModified,
            ),
            (
                "ims before now",
                Preconditions {
                    if_modified_since: Some(BEFORE_NOW),
                    ..p()
                },
                GO,
            ),
            (
                "ius the date served",
                Preconditions {
                    if_unmodified_since: Some(NOW),
                    ..p()
                },
                GO,
            ),
            (
                "ius before now",
                Preconditions {
                    if_unmodified_since: Some(BEFORE_NOW),
                    ..p()
                },
                Decision::Failed,
            ),
        ];
        for (name, pre, expected) in cases {
            assert_eq!(evaluate(&pre, Some(&future), now), expected, "{name}");
        }
    }

    #[test]
    fn a_listing_without_validators_matches_only_a_star() {
        let p = Preconditions::default;
        let cases: Vec<(&str, Preconditions<'_>, Decision)> = vec![
            ("none", p(), GO),
            (
                "if-none-match star",
                Preconditions {
                    if_none_match: Some("*"),
                    ..p()
                },
                Decision::NotModified,
            ),
            (
                "if-none-match a tag",
                Preconditions {
                    if_none_match: Some(TAG),
                    ..p()
                },
                GO,
            ),
            (
                "if-match star",
                Preconditions {
                    if_match: Some("*"),
                    ..p()
                },
                GO,
            ),
            (
                "if-match a tag",
                Preconditions {
                    if_match: Some(TAG),
                    ..p()
                },
                Decision::Failed,
            ),
            (
                "ims",
                Preconditions {
                    if_modified_since: Some(AFTER),
                    ..p()
                },
                GO,
            ),
            (
                "ius",
                Preconditions {
                    if_unmodified_since: Some(BEFORE),
                    ..p()
                },
                GO,
            ),
            (
                "if-range",
                Preconditions {
                    if_range: Some(TAG),
                    ..p()
                },
                WHOLE,
            ),
        ];
        for (name, pre, expected) in cases {
            assert_eq!(evaluate(&pre, None, now()), expected, "{name}");
        }
    }

    #[test]
    fn the_same_field_twice_is_not_a_valid_value() {
        // Joined by the request parser (RFC 9110 §5.3): a field that is
        // not a list is then no valid value, and is ignored or false.
        let twice = |v: &str| format!("{v}, {v}");
        let (ius, ims, range_date, range_tag) =
            (twice(BEFORE), twice(AFTER), twice(MODIFIED), twice(TAG));
        let p = Preconditions::default;
        let cases: Vec<(&str, Preconditions<'_>, Decision)> = vec![
            (
                "ius",
                Preconditions {
                    if_unmodified_since: Some(&ius),
                    ..p()
                },
                GO,
            ),
            (
                "ims",
                Preconditions {
                    if_modified_since: Some(&ims),
                    ..p()
                },
                GO,
            ),
            (
                "if-range date",
                Preconditions {
                    if_range: Some(&range_date),
                    ..p()
                },
                WHOLE,
            ),
            (
                "if-range tag",
                Preconditions {
                    if_range: Some(&range_tag),
                    ..p()
                },
                WHOLE,
            ),
        ];
        for (name, pre, expected) in cases {
            assert_eq!(evaluate(&pre, Some(&file()), now()), expected, "{name}");
        }
    }
}
