//! Config errors that point at the mistake: file, line, column and key.

use std::fmt;
use std::ops::Range;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::hint;
use crate::suggest;

/// A configuration mistake, printed as one line:
/// `FILE:LINE:COLUMN: key `KEY`: WHAT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file the config came from (or `<embedded default>`, `<string>`).
    pub file: String,
    /// 1-based line and column of the mistake, when it has a place in the file.
    pub position: Option<(usize, usize)>,
    /// The dotted key the mistake is in (`listener[2].bind`), when known.
    pub key: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigError {
    /// `FILE:LINE:COLUMN: key `KEY`: WHAT`, on one line whatever the
    /// message looked like.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.file)?;
        if let Some((line, column)) = self.position {
            write!(f, ":{line}:{column}")?;
        }
        f.write_str(": ")?;
        if let Some(key) = &self.key {
            write!(f, "key `{key}`: ")?;
        }
        let mut lines = self
            .message
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty());
        if let Some(first) = lines.next() {
            f.write_str(first)?;
        }
        for more in lines {
            write!(f, "; {more}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// Something in a valid config that is likely not what was meant (a
/// keyword-bot without rules): a place and a text like a [`ConfigError`]'s,
/// printed the same way, `FILE:LINE:COLUMN: key `KEY`: WHAT`. `check`
/// prints it, the daemon logs it at start and on each reload; it stops
/// neither.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigWarning(pub ConfigError);

impl From<ConfigError> for ConfigWarning {
    fn from(e: ConfigError) -> Self {
        ConfigWarning(e)
    }
}

impl std::ops::Deref for ConfigWarning {
    type Target = ConfigError;

    /// Its file, position, key and message.
    fn deref(&self) -> &ConfigError {
        &self.0
    }
}

impl fmt::Display for ConfigWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The text of one config file, for turning byte offsets into positions and keys.
pub(crate) struct Source<'a> {
    pub(crate) name: &'a str,
    pub(crate) text: &'a str,
}

impl Source<'_> {
    /// An error at `span` of the file, naming `key` if given.
    pub(crate) fn error(
        &self,
        span: Option<Range<usize>>,
        key: Option<String>,
        message: impl Into<String>,
    ) -> ConfigError {
        // A key or a message may quote what the file says, whatever its
        // length: both are bounded (a 100 000-byte name is not echoed).
        ConfigError {
            file: self.name.to_owned(),
            position: span.map(|s| self.line_column(s.start)),
            key: key.map(|key| bounded(&key, KEY_MAX_BYTES)),
            message: bounded(&message.into(), MESSAGE_MAX_BYTES),
        }
    }

    /// Converts a parse or deserialize error of the `toml` crate, finding the
    /// key its span falls in below `table` (whose keys are prefixed with `prefix`).
    pub(crate) fn toml_error(
        &self,
        err: &toml::de::Error,
        table: Option<(&str, &DeTable<'_>)>,
    ) -> ConfigError {
        let span = err.span();
        let found = match (&span, table) {
            (Some(span), Some((_, table))) => key_at(table, span.start),
            _ => None,
        };
        let mut key = match (&found, table) {
            (Some(key), Some((prefix, _))) => Some(join_key(prefix, key)),
            // A missing field points at its table: name the field it lacks.
            (None, Some((prefix, _))) => Some(match missing_field(err.message()) {
                Some(field) => join_key(prefix, field),
                None => prefix.to_owned(),
            })
            .filter(|key| !key.is_empty()),
            (_, None) => None,
        };
        let mut message = err.message().to_owned();
        // A table header written twice: which table, and how to write it.
        let duplicate = match (&span, table) {
            (Some(span), None) if message == "duplicate key" => {
                hint::duplicate_table(self.text, span.start)
            }
            _ => None,
        };
        if let Some((table_key, fix)) = duplicate {
            key = Some(table_key);
            message = fix;
        }
        // A value of the wrong type: an example of the right one.
        let value = match (&found, table) {
            (Some(found), Some((_, table))) => value_at(table, found),
            _ => None,
        };
        if let Some(hinted) = key
            .as_deref()
            .and_then(|key| hint::wrong_type(&message, key, value))
        {
            message = hinted;
        }
        if let Some(example) = hint::missing_field(&message) {
            message = format!("{message}; add it, for example {example}");
        }
        if message.starts_with("invalid type: map, expected a sequence") {
            message.push_str(
                "; write an array of tables with double brackets, one [[...]] table per item",
            );
        }
        if let Some(near) = suggest::unknown_name(&message)
            .and_then(|name| suggest::closest(name, suggest::expected_names(&message)))
        {
            message = format!("{message}; did you mean `{near}`?");
        }
        self.error(span, key, message)
    }

    /// 1-based line and column (in characters) of a byte offset.
    fn line_column(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let before = self.text.get(..offset).unwrap_or(self.text);
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = before[line_start..].chars().count() + 1;
        (line, column)
    }
}

/// The most bytes of a key an error names.
const KEY_MAX_BYTES: usize = 256;
/// The most bytes of an error's message.
const MESSAGE_MAX_BYTES: usize = 1024;

/// `text`, cut at a character boundary to about `max` bytes, with a marker.
fn bounded(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...[{} more bytes]", &text[..end], text.len() - end)
}

/// The field named by serde's "missing field `x`" message.
fn missing_field(message: &str) -> Option<&str> {
    message.strip_prefix("missing field `")?.split('`').next()
}

/// Joins a key prefix (`listener[0]`) and a key (`bind`) with a dot.
pub(crate) fn join_key(prefix: &str, key: &str) -> String {
    match (prefix.is_empty(), key.is_empty()) {
        (true, _) => key.to_owned(),
        (_, true) => prefix.to_owned(),
        _ => format!("{prefix}.{key}"),
    }
}

/// The span of `key`'s value in `table`, if the key is there.
pub(crate) fn value_span(table: &DeTable<'_>, key: &str) -> Option<Range<usize>> {
    table
        .iter()
        .find(|(k, _)| k.get_ref() == key)
        .map(|(_, v)| v.span())
}

/// The span of the value at a key path relative to `table`, such as `root`
/// or `rules[1].keywords`; if the path is only partly there, the span of
/// the deepest part that is.
pub(crate) fn path_span(table: &DeTable<'_>, path: &str) -> Option<Range<usize>> {
    walk(table, path).1
}

/// The value at a key path relative to `table` (`rules[1].keywords`), if
/// it is there.
fn value_at<'a, 'i>(table: &'a DeTable<'i>, path: &str) -> Option<&'a DeValue<'i>> {
    walk(table, path).0
}

/// The value at a key path relative to `table`, if it is there, and the
/// span of the deepest part of the path that is.
fn walk<'a, 'i>(
    table: &'a DeTable<'i>,
    path: &str,
) -> (Option<&'a DeValue<'i>>, Option<Range<usize>>) {
    let mut found = None;
    let mut current = Some(table);
    let mut segments = path.split('.').peekable();
    while let Some(segment) = segments.next() {
        let (name, index) = match segment.split_once('[') {
            Some((name, rest)) => (name, rest.trim_end_matches(']').parse::<usize>().ok()),
            None => (segment, None),
        };
        let Some(table) = current else {
            break;
        };
        let Some((_, mut value)) = table.iter().find(|(k, _)| k.get_ref() == name) else {
            break;
        };
        if let Some(i) = index {
            found = Some(value.span());
            match value.get_ref().as_array().and_then(|items| items.get(i)) {
                Some(item) => value = item,
                None => break,
            }
        }
        found = Some(value.span());
        if segments.peek().is_none() {
            return (Some(value.get_ref()), found);
        }
        current = value.get_ref().as_table();
    }
    (None, found)
}

/// The deepest dotted key whose key or value covers `offset`.
fn key_at(table: &DeTable<'_>, offset: usize) -> Option<String> {
    for (key, value) in table.iter() {
        let name = key.get_ref().to_string();
        if key.span().contains(&offset) {
            return Some(name);
        }
        if let Some(inner) = key_in_value(value, offset) {
            return Some(if inner.starts_with('[') {
                format!("{name}{inner}")
            } else {
                join_key(&name, &inner)
            });
        }
    }
    None
}

fn key_in_value(value: &Spanned<DeValue<'_>>, offset: usize) -> Option<String> {
    let covers = value.span().contains(&offset);
    match value.get_ref() {
        DeValue::Table(table) => key_at(table, offset).or_else(|| covers.then(String::new)),
        DeValue::Array(array) => {
            for (i, item) in array.iter().enumerate() {
                if let Some(inner) = key_in_value(item, offset) {
                    return Some(if inner.is_empty() {
                        format!("[{i}]")
                    } else {
                        format!("[{i}].{inner}")
                    });
                }
            }
            covers.then(String::new)
        }
        _ => covers.then(String::new),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_count_lines_and_characters() {
        let src = Source {
            name: "f.toml",
            text: "a = 1\n名字 = 2\n",
        };
        assert_eq!(src.line_column(0), (1, 1));
        assert_eq!(src.line_column(6), (2, 1));
        // "名字" is 6 bytes, 2 characters.
        assert_eq!(src.line_column(6 + 7), (2, 4));
    }

    #[test]
    fn display_is_one_line() {
        let e = ConfigError {
            file: "x.toml".into(),
            position: Some((3, 7)),
            key: Some("listener[0].bind".into()),
            message: "bad\n  thing\n".into(),
        };
        assert_eq!(
            e.to_string(),
            "x.toml:3:7: key `listener[0].bind`: bad; thing"
        );
    }

    #[test]
    fn finds_the_span_of_a_key_path() {
        let text = "[[listener]]\nname = \"a\"\n[[listener.rules]]\nkeywords = []\n";
        let doc = DeTable::parse(text).unwrap();
        let listener = doc
            .get_ref()
            .iter()
            .next()
            .unwrap()
            .1
            .get_ref()
            .as_array()
            .unwrap()[0]
            .get_ref()
            .as_table()
            .unwrap()
            .clone();
        let span = path_span(&listener, "rules[0].keywords").unwrap();
        assert_eq!(&text[span], "[]");
        let span = path_span(&listener, "name").unwrap();
        assert_eq!(&text[span], "\"a\"");
        // A rule that is not there: the deepest part that is.
        assert!(path_span(&listener, "rules[5].keywords").is_some());
        assert!(path_span(&listener, "nothing").is_none());
    }

    #[test]
    fn finds_nested_keys() {
        let text = "[[listener]]\nname = \"a\"\n[[listener.rules]]\nreply = 5\n";
        let doc = DeTable::parse(text).unwrap();
        let offset = text.find('5').unwrap();
        assert_eq!(
            key_at(doc.get_ref(), offset).as_deref(),
            Some("listener[0].rules[0].reply")
        );
    }
}
