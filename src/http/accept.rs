//! `Accept` (RFC 9110 §12.5.1), as far as a listing needs it: whether the
//! client ranks `text/html` above `text/plain`.

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

/// True when `Accept` ranks `text/html` above `text/plain`. Items with a
/// malformed `q` are left out.
pub(crate) fn prefers_html(accept: Option<&str>) -> bool {
    let Some(accept) = accept else {
        return false;
    };
    let (mut html, mut plain) = (0.0f32, 0.0f32);
    let (mut html_exact, mut plain_exact) = (false, false);
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
            "text/html" => (html, html_exact) = (q, true),
            "text/plain" => (plain, plain_exact) = (q, true),
            "text/*" | "*/*" => {
                if !html_exact {
                    html = html.max(q);
                }
                if !plain_exact {
                    plain = plain.max(q);
                }
            }
            _ => {}
        }
    }
    html > plain
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_only_when_ranked_above_plain() {
        let cases = [
            (None, false),
            (Some("*/*"), false),
            (Some("text/html"), true),
            (
                Some("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"),
                true,
            ),
            (Some("text/plain, text/html"), false),
            (Some("text/html;q=0.5, text/plain;q=0.6"), false),
            (Some("text/html;q=0.7, */*;q=0.5"), true),
            (Some("text/html;q=NaN"), false),
            (Some("text/html;q=inf"), false),
            (Some("text/html;q=2"), false),
            (Some("text/html;q=0.0001"), false),
            (Some("text/html;q=1.000"), true),
        ];
        for (accept, expected) in cases {
            assert_eq!(prefers_html(accept), expected, "{accept:?}");
        }
    }
}
