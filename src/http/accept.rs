//! `Accept` (RFC 9110 §12.5.1), as far as a listing needs it: whether the
//! client ranks `text/plain` strictly above `text/html`. A listing is HTML
//! unless it does, as nginx's autoindex and other file servers answer: a
//! missing `Accept`, `*/*` (curl, wget) and a tie all get HTML.

/// A `qvalue`: `0` to `1` with at most three decimals; `None` if malformed.
fn qvalue(text: &str) -> Option<f32> {
    let text = text.trim();
    let valid = match text.split_once('.') {
        Some((whole, frac)) => {
            (whole == "0" || whole == "1")
                && frac.len() <= 3
                && frac.bytes().all(|b| b.is_ascii_digit())
        }
        None => text == "0" || text == "1",
    };
    let q: f32 = text.parse().ok().filter(|_| valid)?;
    (q <= 1.0).then_some(q)
}

/// How specific a media range is (RFC 9110 §12.5.1: the most specific
/// range that matches a type decides its weight): `*/*`, `text/*`, exact.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Specificity {
    Any,
    Text,
    Exact,
}

/// The weight `Accept` gives a media type, with the specificity of the
/// range it came from; `(None, 0)` until a range matches.
#[derive(Debug, Clone, Copy)]
struct Weight {
    by: Option<Specificity>,
    q: f32,
}

impl Weight {
    const NONE: Weight = Weight { by: None, q: 0.0 };

    /// Takes `q` from a range of specificity `by` if it is at least as
    /// specific as the one so far (of two alike, the higher `q`).
    fn offer(&mut self, by: Specificity, q: f32) {
        match self.by {
            Some(seen) if seen > by => {}
            Some(seen) if seen == by => self.q = self.q.max(q),
            _ => *self = Weight { by: Some(by), q },
        }
    }
}

/// True when `Accept` ranks `text/plain` strictly above `text/html`: only
/// then is a listing sent as text. No `Accept` (any type is acceptable),
/// `*/*`, ties and malformed items (left out) leave it HTML. Parameters
/// other than `q` are not matched on: `text/plain;charset=utf-8` counts as
/// `text/plain`.
pub(crate) fn prefers_plain(accept: Option<&str>) -> bool {
    let Some(accept) = accept else {
        return false;
    };
    let (mut html, mut plain) = (Weight::NONE, Weight::NONE);
    for item in accept.split(',') {
        let mut parts = item.split(';');
        let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        let q = parts
            .map(str::trim)
            .find_map(|p| p.strip_prefix("q=").or_else(|| p.strip_prefix("Q=")))
            .map_or(Some(1.0), qvalue);
        let Some(q) = q else {
            continue;
        };
        match media.as_str() {
            "text/html" => html.offer(Specificity::Exact, q),
            "text/plain" => plain.offer(Specificity::Exact, q),
            "text/*" | "*/*" => {
                let by = if media == "*/*" {
                    Specificity::Any
                } else {
                    Specificity::Text
                };
                html.offer(by, q);
                plain.offer(by, q);
            }
            _ => {}
        }
    }
    plain.q > html.q
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_only_when_plain_is_ranked_strictly_above_html() {
        let cases = [
            // Browsers, and clients that take anything: HTML.
            (None, false),
            (Some(""), false),
            (Some("*/*"), false),
            (Some("text/*"), false),
            (Some("text/html"), false),
            (
                Some("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"),
                false,
            ),
            (Some("application/json"), false),
            // A tie is HTML.
            (Some("text/plain, text/html"), false),
            (Some("text/plain;q=0.5, text/html;q=0.5"), false),
            // Text when plain ranks above HTML.
            (Some("text/plain"), true),
            (Some("TEXT/PLAIN"), true),
            (Some("text/plain;charset=utf-8"), true),
            (Some("text/plain, */*;q=0.9"), true),
            (Some("text/html;q=0.5, text/plain;q=0.6"), true),
            (Some("text/html;q=0, */*"), true),
            (Some("text/plain;q=0.001"), true),
            (Some("text/plain;q=0"), false),
        ];
        for (accept, expected) in cases {
            assert_eq!(prefers_plain(accept), expected, "{accept:?}");
        }
    }

    #[test]
    fn the_most_specific_range_decides() {
        let cases = [
            // `text/html;q=0.1` is more specific than `*/*`: HTML gets 0.1.
            ("text/html;q=0.1, */*", true),
            ("*/*, text/html;q=0.1", true),
            // `text/*` is more specific than `*/*`, whatever the order.
            ("text/*;q=0.2, */*, text/plain", true),
            ("*/*;q=0.1, text/*;q=0.9", false),
            ("text/*;q=0.2, text/plain;q=0.3", true),
            ("text/plain;q=0.3, text/*;q=0.9", false),
        ];
        for (accept, expected) in cases {
            assert_eq!(prefers_plain(Some(accept)), expected, "{accept:?}");
        }
    }

    #[test]
    fn malformed_qvalues_leave_their_item_out() {
        let cases = [
            ("text/plain;q=NaN", false),
            ("text/plain;q=inf", false),
            ("text/plain;q=2", false),
            ("text/plain;q=0.0001", false),
            ("text/plain;q=-1", false),
            ("text/plain;q=1.000", true),
            ("text/plain;Q=0.5", true),
            ("text/html;q=bad, text/plain;q=0.1", true),
        ];
        for (accept, expected) in cases {
            assert_eq!(prefers_plain(Some(accept)), expected, "{accept:?}");
        }
    }
}
