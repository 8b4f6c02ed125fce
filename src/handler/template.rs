//! Reply templates of the bots: literal text with `{time}`, `{peer}`,
//! `{listener}` and `{keywords}` placeholders, parsed once when the config is
//! loaded so that a typo is a config error, not a surprise at reply time.

use std::fmt::Write as _;
use std::net::SocketAddr;

use chrono::format::{Item, StrftimeItems};
use serde::Deserialize;

/// The placeholders' names.
const PLACEHOLDERS: [&str; 4] = ["time", "peer", "listener", "keywords"];

/// One piece of a parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    Time,
    Peer,
    Listener,
    Keywords,
}

/// A reply with placeholders, validated at config load.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct Template {
    parts: Vec<Part>,
}

/// What a template's placeholders are filled with.
pub struct TemplateContext<'a> {
    /// The `strftime` format of `{time}`.
    pub time_format: &'a TimeFormat,
    /// The client's address, for `{peer}`.
    pub peer: SocketAddr,
    /// The listener's name, for `{listener}`.
    pub listener: &'a str,
    /// The bot's keywords joined with ", ", for `{keywords}`.
    pub keywords: &'a str,
}

impl Template {
    /// Parses a template; `{{` and `}}` stand for literal braces.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut rest = text;
        while let Some(i) = rest.find(['{', '}']) {
            literal.push_str(&rest[..i]);
            let brace = rest.as_bytes()[i];
            let after = &rest[i + 1..];
            if after.as_bytes().first() == Some(&brace) {
                literal.push(char::from(brace));
                rest = &after[1..];
                continue;
            }
            if brace == b'}' {
                return Err(format!(
                    "unmatched `}}` in template {text:?} (write }}}} for a literal brace)"
                ));
            }
            let end = after
                .find('}')
                .ok_or_else(|| format!("unclosed `{{` in template {text:?}"))?;
            let part = match &after[..end] {
                "time" => Part::Time,
                "peer" => Part::Peer,
                "listener" => Part::Listener,
                "keywords" => Part::Keywords,
                other => {
                    let hint = crate::suggest::closest(other, PLACEHOLDERS)
                        .map(|near| format!("; did you mean `{{{near}}}`?"))
                        .unwrap_or_default();
                    return Err(format!(
                        "unknown placeholder `{{{other}}}` in template {text:?} (known: {{time}}, {{peer}}, {{listener}}, {{keywords}}; write {{{{ for a literal brace){hint}"
                    ));
                }
            };
            if !literal.is_empty() {
                parts.push(Part::Literal(std::mem::take(&mut literal)));
            }
            parts.push(part);
            rest = &after[end + 1..];
        }
        literal.push_str(rest);
        if !literal.is_empty() {
            parts.push(Part::Literal(literal));
        }
        Ok(Template { parts })
    }

    /// A template of plain text, with no placeholders.
    pub fn literal(text: &str) -> Self {
        Template {
            parts: vec![Part::Literal(text.to_owned())],
        }
    }

    /// True when the template uses `{keywords}`.
    pub fn mentions_keywords(&self) -> bool {
        self.parts.contains(&Part::Keywords)
    }

    /// Fills the placeholders and appends the result to `out`.
    pub fn render_into(&self, ctx: &TemplateContext<'_>, out: &mut String) {
        for part in &self.parts {
            // Writing into a String cannot fail, and every time format was
            // validated when the config was loaded.
            let _ = match part {
                Part::Literal(text) => {
                    out.push_str(text);
                    Ok(())
                }
                Part::Time => write!(
                    out,
                    "{}",
                    chrono::Local::now().format_with_items(ctx.time_format.items())
                ),
                Part::Peer => write!(out, "{}", ctx.peer),
                Part::Listener => {
                    out.push_str(ctx.listener);
                    Ok(())
                }
                Part::Keywords => {
                    out.push_str(ctx.keywords);
                    Ok(())
                }
            };
        }
    }

    /// True when `text` is what this template renders to with `ctx`, for any
    /// time: `{time}` matches anything, every other part must be exact.
    pub fn matches(&self, ctx: &TemplateContext<'_>, text: &str) -> bool {
        // The rendered pieces between the `{time}`s, which must appear in order.
        let mut pieces = vec![String::new()];
        for part in &self.parts {
            if *part == Part::Time {
                pieces.push(String::new());
            } else if let Some(last) = pieces.last_mut() {
                Template {
                    parts: vec![part.clone()],
                }
                .render_into(ctx, last);
            }
        }
        let Some((first, rest)) = pieces.split_first() else {
            return text.is_empty();
        };
        let Some(mut remaining) = text.strip_prefix(first.as_str()) else {
            return false;
        };
        let Some((last, middle)) = rest.split_last() else {
            return remaining.is_empty();
        };
        for piece in middle {
            match remaining.find(piece.as_str()) {
                Some(at) => remaining = &remaining[at + piece.len()..],
                None => return false,
            }
        }
        remaining.ends_with(last.as_str())
    }

    /// Fills the placeholders into a new string, allocated once for the
    /// usual reply (with room for the line ending the bots add).
    pub fn render(&self, ctx: &TemplateContext<'_>) -> String {
        let mut out = String::with_capacity(self.usual_len() + 1);
        self.render_into(ctx, &mut out);
        out
    }

    /// About how long a rendering is: the literal text, and a guess for
    /// each placeholder (a time, an address, a name).
    fn usual_len(&self) -> usize {
        self.parts
            .iter()
            .map(|part| match part {
                Part::Literal(text) => text.len(),
                Part::Time | Part::Peer | Part::Listener | Part::Keywords => 32,
            })
            .sum()
    }
}

/// Parses `text` as a reply template and, if it parses, checks that it
/// matches its own rendering (for the fuzz target of templates).
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) fn template_for_fuzzing(text: &str) {
    if let Ok(template) = Template::parse(text) {
        let time_format = TimeFormat::seed_default();
        let ctx = TemplateContext {
            time_format: &time_format,
            peer: SocketAddr::from(([127, 0, 0, 1], 9)),
            listener: "l",
            keywords: "k",
        };
        let rendered = template.render(&ctx);
        assert!(
            template.matches(&ctx, &rendered),
            "a template matches its own rendering"
        );
    }
}

impl TryFrom<String> for Template {
    type Error = String;
    fn try_from(text: String) -> Result<Self, String> {
        Template::parse(&text)
    }
}

/// A `strftime`-style time format (chrono's syntax), validated at load.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct TimeFormat(String);

impl TimeFormat {
    /// The format the seed tutorial uses: `2024-01-31 23:59:59`.
    pub fn seed_default() -> Self {
        TimeFormat("%Y-%m-%d %H:%M:%S".to_owned())
    }

    /// The format as written in the config.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    fn items(&self) -> StrftimeItems<'_> {
        StrftimeItems::new(&self.0)
    }
}

impl TryFrom<String> for TimeFormat {
    type Error = String;
    fn try_from(text: String) -> Result<Self, String> {
        if StrftimeItems::new(&text).any(|item| matches!(item, Item::Error)) {
            return Err(format!(
                "invalid time format {text:?} (chrono strftime syntax, e.g. \"%Y-%m-%d %H:%M:%S\")"
            ));
        }
        Ok(TimeFormat(text))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(fmt: &TimeFormat) -> TemplateContext<'_> {
        TemplateContext {
            time_format: fmt,
            peer: "127.0.0.1:4000".parse().unwrap(),
            listener: "bot",
            keywords: "a, b",
        }
    }

    #[test]
    fn renders_placeholders_and_escapes() {
        let fmt = TimeFormat::try_from("%Y".to_owned()).unwrap();
        let t = Template::parse("{listener} {peer} [{keywords}] {{x}} {time}").unwrap();
        let out = t.render(&ctx(&fmt));
        let year = chrono::Local::now().format("%Y").to_string();
        assert_eq!(out, format!("bot 127.0.0.1:4000 [a, b] {{x}} {year}"));
    }

    #[test]
    fn unicode_literals_survive() {
        let fmt = TimeFormat::seed_default();
        let t = Template::parse("当前时间是:{time}!").unwrap();
        let out = t.render(&ctx(&fmt));
        assert!(
            out.starts_with("当前时间是:") && out.ends_with('!'),
            "{out}"
        );
        assert_eq!(out.chars().count(), "当前时间是:".chars().count() + 19 + 1);
    }

    #[test]
    fn rejects_bad_templates() {
        assert!(
            Template::parse("{nope}")
                .unwrap_err()
                .contains("unknown placeholder `{nope}`")
        );
        assert!(Template::parse("a {time").unwrap_err().contains("unclosed"));
        assert!(Template::parse("a } b").unwrap_err().contains("unmatched"));
    }

    #[test]
    fn matches_any_time_and_exact_everything_else() {
        let fmt = TimeFormat::seed_default();
        let t = Template::parse("at {time} for {peer} on {listener}").unwrap();
        let c = ctx(&fmt);
        assert!(t.matches(&c, &t.render(&c)));
        assert!(t.matches(&c, "at noon for 127.0.0.1:4000 on bot"));
        assert!(!t.matches(&c, "at noon for 127.0.0.1:4001 on bot"));
        assert!(!t.matches(&c, "at noon for 127.0.0.1:4000 on bot!"));
        let plain = Template::parse("bye").unwrap();
        assert!(plain.matches(&c, "bye"));
        assert!(!plain.matches(&c, "bye bye"));
        let two = Template::parse("{time}-{time}").unwrap();
        assert!(two.matches(&c, "a-b"));
        assert!(!two.matches(&c, "ab"));
    }

    #[test]
    fn rejects_bad_time_format() {
        assert!(TimeFormat::try_from("%Q".to_owned()).is_err());
        assert!(TimeFormat::try_from("%H:%M".to_owned()).is_ok());
    }
}
