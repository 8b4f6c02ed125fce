//! Conditional requests (RFC 9110 §13): the preconditions of a GET or
//! HEAD of a file, evaluated in the order of §13.2.2:
//!
//! 1. `If-Match` (strong comparison, `*`): false → 412;
//! 2. else `If-Unmodified-Since` (a valid date, and the file has one):
//!    modified after it → 412;
//! 3. `If-None-Match` (weak comparison, `*`): true → 304;
//! 4. else `If-Modified-Since` (a valid date, not in the future, and the
//!    file has one): not modified since → 304;
//! 5. `If-Range` decides whether `Range` applies: an entity tag compared
//!    strongly, or a date equal to the modification time.

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

/// Evaluates `pre` for a GET or HEAD of the version `file` at `now`.
pub(crate) fn evaluate(pre: &Preconditions<'_>, file: &Validators, now: SystemTime) -> Decision {
    if let Some(list) = pre.if_match {
        if !etag::matches_strongly(list, &file.etag) {
            return Decision::Failed;
        }
    } else if let (Some(since), Some(modified)) =
        (pre.if_unmodified_since.and_then(date::parse), file.modified)
    {
        if modified > since {
            return Decision::Failed;
        }
    }
    if let Some(list) = pre.if_none_match {
        if etag::matches_weakly(list, &file.etag) {
            return Decision::NotModified;
        }
    } else if let (Some(since), Some(modified)) =
        (pre.if_modified_since.and_then(date::parse), file.modified)
    {
        // A date in the future is invalid (§13.1.3): ignored.
        if since <= now && modified <= since {
            return Decision::NotModified;
        }
    }
    Decision::Proceed {
        use_range: pre
            .if_range
            .is_none_or(|validator| if_range_holds(validator, file)),
    }
}

/// `If-Range`: the strong tag itself, or exactly the modification date.
fn if_range_holds(validator: &str, file: &Validators) -> bool {
    let validator = validator.trim();
    if validator.starts_with('"') {
        return validator == file.etag;
    }
    if validator.starts_with("W/") {
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
            assert_eq!(evaluate(&pre, &file(), now()), expected, "{name}");
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
            assert_eq!(evaluate(&pre, &undated, now()), expected, "{pre:?}");
        }
    }
}
