//! What the right form looks like: the one place that turns a config
//! mistake into an example the user can copy. A value of the wrong type
//! (`idle_timeout = 30`) gets the line written right (`idle_timeout =
//! "30s"`), made from what the file says where it can be; a table header
//! written twice with single brackets (`[listener]`) gets "write each
//! listener as a [[listener]] table".

use toml::de::{DeTable, DeValue};

use super::defaults;

/// The longest value of the file an example quotes; a longer one gets the
/// generic example instead (messages stay short).
const QUOTED_MAX_CHARS: usize = 40;

/// The units a duration may have, for a duration that did not parse.
const DURATION_UNITS: &str = "a number and a unit: ms, s, m, h, d";

/// What serde said it expected, in the terms of a config file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expected {
    Duration,
    WholeNumber,
    Boolean,
    List,
    Text,
}

impl Expected {
    /// From the `expected ...` of a serde message (`a duration`, `u32`).
    fn from_serde(expected: &str) -> Option<Expected> {
        Some(match expected {
            "a duration" => Expected::Duration,
            "u8" | "u16" | "u32" | "u64" | "u128" | "usize" | "i8" | "i16" | "i32" | "i64"
            | "i128" | "isize" => Expected::WholeNumber,
            "a boolean" => Expected::Boolean,
            "a sequence" => Expected::List,
            "a string" => Expected::Text,
            _ => return None,
        })
    }
}

/// Serde's message about a value of the wrong type or form at `key` (a
/// dotted key such as `listener[0].idle_timeout` or `listener[0].allow[1]`),
/// with an example of the right one: `invalid type: integer `30`, expected
/// a duration such as idle_timeout = "30s"`. `found` is the value as the
/// file has it. `None` when there is nothing to add.
pub(super) fn wrong_type(message: &str, key: &str, found: Option<&DeValue<'_>>) -> Option<String> {
    let invalid_value = message.starts_with("invalid value: ");
    if !invalid_value && !message.starts_with("invalid type: ") {
        return None;
    }
    let (head, expected) = message.rsplit_once(", expected ")?;
    let kind = Expected::from_serde(expected)?;
    // `allow[1]`: an item of the list `allow`.
    let last = key.rsplit('.').next().unwrap_or(key);
    // A negative number for a count: serde's "expected usize" says it in
    // Rust's words; a count is 0 or more.
    if invalid_value
        && kind == Expected::WholeNumber
        && expected.starts_with('u')
        && integer(found).is_some_and(|n| n < 0)
    {
        let name = last.split('[').next().unwrap_or(last);
        return Some(format!(
            "{head}, expected a whole number of 0 or more, such as {name} = {}",
            example_number(name)
        ));
    }
    // A value of the right type out of range (too big for its type) is
    // not a matter of form; a duration that does not parse is.
    if invalid_value && kind != Expected::Duration {
        return None;
    }
    let (name, in_list) = match last.split_once('[') {
        Some((name, _)) => (name, true),
        None => (last, false),
    };
    if name.is_empty() {
        return None;
    }
    // The value of the right type (an item of the list, for a list item).
    let value = match kind {
        Expected::Duration => duration(found),
        Expected::WholeNumber => whole_number(name, found),
        Expected::Boolean => boolean(found).to_owned(),
        Expected::List => list(name, found)?,
        Expected::Text => text(name, found)?,
    };
    let example = if in_list {
        format!("{name} = [{value}]")
    } else {
        format!("{name} = {value}")
    };
    let what = match kind {
        Expected::Duration => "a duration",
        Expected::WholeNumber if is_size(name) => "a number of bytes, without quotes,",
        Expected::WholeNumber => "a whole number, without quotes,",
        Expected::Boolean => "true or false, without quotes,",
        Expected::List => "a list in brackets",
        Expected::Text => "text in quotes",
    };
    let mut hinted = format!("{head}, expected {what} such as {example}");
    if invalid_value && kind == Expected::Duration {
        hinted.push_str(&format!(" ({DURATION_UNITS})"));
    }
    Some(hinted)
}

/// For serde's "missing field `root`": the line that would be there, for
/// the keys a table must have. `None` for any other message.
pub(super) fn missing_field(message: &str) -> Option<&'static str> {
    let field = message.strip_prefix("missing field `")?.strip_suffix('`')?;
    Some(match field {
        "name" => "name = \"files\" (unique in the file)",
        "bind" => "bind = \"127.0.0.1:1111\"",
        "handler" => "handler = \"download\"",
        "root" => "root = \"/srv/files\" (the directory to serve)",
        "keywords" => "keywords = [\"hello\"]",
        "reply" => "reply = \"hi\"",
        _ => return None,
    })
}

/// True for a key that counts bytes (`max_message_bytes`, `chunk_size`,
/// `send_buffer`).
fn is_size(name: &str) -> bool {
    name.ends_with("_bytes") || name.ends_with("_size") || name.ends_with("_buffer")
}

/// An integer of the file, if it fits.
fn integer(found: Option<&DeValue<'_>>) -> Option<i128> {
    let int = found?.as_integer()?;
    i128::from_str_radix(int.as_str(), int.radix()).ok()
}

/// A plain decimal number (`"30"`, `"1.5"`), such as one written in quotes.
fn plain_number(text: &str) -> Option<&str> {
    let text = text.trim();
    let digits = text.strip_prefix(['-', '+']).unwrap_or(text);
    let mut parts = digits.splitn(2, '.');
    let whole = parts.next().unwrap_or_default();
    let fraction = parts.next().unwrap_or("0");
    let all_digits = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_digit());
    (all_digits(whole) && all_digits(fraction)).then_some(text)
}

/// `"30s"` for 30, 1.5 or `"30"`, and `"30s"` for whatever else.
fn duration(found: Option<&DeValue<'_>>) -> String {
    let number = match found {
        Some(DeValue::Integer(_)) => integer(found).filter(|n| *n >= 0).map(|n| n.to_string()),
        Some(DeValue::Float(f)) => plain_number(f.as_str())
            .filter(|n| !n.starts_with('-'))
            .map(str::to_owned),
        // "5 parsecs": its number, with a unit that is one.
        Some(DeValue::String(s)) => {
            let leading: String = s
                .trim()
                .chars()
                .take_while(|c| c.is_ascii_digit() || *c == '.')
                .collect();
            plain_number(&leading).map(str::to_owned)
        }
        _ => None,
    };
    format!("\"{}s\"", number.unwrap_or_else(|| "30".to_owned()))
}

/// The number a string meant (`"128"`, `"64KB"` is 65536), or an example.
fn whole_number(name: &str, found: Option<&DeValue<'_>>) -> String {
    let meant = match found {
        Some(DeValue::String(s)) => written_number(s),
        Some(DeValue::Float(f)) => plain_number(f.as_str())
            .and_then(|n| n.split('.').next())
            .and_then(|n| n.parse::<i128>().ok())
            .map(|n| n.to_string()),
        _ => None,
    };
    meant.unwrap_or_else(|| example_number(name))
}

/// A number a key takes: its default where it has one.
fn example_number(name: &str) -> String {
    match name {
        "backlog" => defaults::BACKLOG.to_string(),
        "max_connections" => defaults::MAX_CONNECTIONS.to_string(),
        "max_connections_per_source" => defaults::MAX_CONNECTIONS_PER_SOURCE.to_string(),
        "max_message_bytes" => defaults::MAX_MESSAGE_BYTES.to_string(),
        "max_datagram_bytes" => defaults::MAX_DATAGRAM_BYTES.to_string(),
        "source_ipv6_prefix" => defaults::SOURCE_IPV6_PREFIX.to_string(),
        "log_lines_per_second" => defaults::LOG_LINES_PER_SECOND.to_string(),
        "worker_threads" => "4".to_owned(),
        name if is_size(name) => "65536".to_owned(),
        _ => "10".to_owned(),
    }
}

/// A whole number written as text: `"128"`, `"1_000"`, or a size with a
/// binary unit (`"64KB"`, `"64 KiB"`, `"1m"`: 65536, 65536, 1048576),
/// shown with its sum (`65536 (64 × 1024)`).
fn written_number(text: &str) -> Option<String> {
    let text = text.trim().replace('_', "");
    if let Ok(n) = text.parse::<u64>() {
        return Some(n.to_string());
    }
    let split = text.find(|c: char| !c.is_ascii_digit())?;
    let (digits, unit) = text.split_at(split);
    let n: u64 = digits.parse().ok()?;
    let (power, shown) = match unit.trim().to_ascii_lowercase().as_str() {
        "b" => return Some(n.to_string()),
        "k" | "kb" | "kib" => (1, "1024"),
        "m" | "mb" | "mib" => (2, "1024 × 1024"),
        "g" | "gb" | "gib" => (3, "1024 × 1024 × 1024"),
        _ => return None,
    };
    let bytes = n.checked_mul(1024u64.checked_pow(power)?)?;
    Some(format!("{bytes} ({n} × {shown})"))
}

/// `true` or `false`, as the file's value meant it (`"yes"`, `"off"`, 1).
fn boolean(found: Option<&DeValue<'_>>) -> &'static str {
    let meant_false = match found {
        Some(DeValue::String(s)) => matches!(
            s.trim().to_ascii_lowercase().as_str(),
            "false" | "no" | "off" | "0" | "n"
        ),
        Some(DeValue::Integer(_)) => integer(found) == Some(0),
        _ => false,
    };
    if meant_false { "false" } else { "true" }
}

/// A list holding the file's single value: `allow = ["10.0.0.0/8"]`.
fn list(name: &str, found: Option<&DeValue<'_>>) -> Option<String> {
    let item = match found? {
        // A table where a list of tables goes has its own message.
        DeValue::Table(_) => return None,
        DeValue::String(s) => quoted(s).unwrap_or_else(|| example_text(name)),
        other => scalar(other).unwrap_or_else(|| example_text(name)),
    };
    Some(format!("[{item}]"))
}

/// Text in quotes: the file's number or word quoted, a port made an
/// address, a number of a rate made a rate.
fn text(name: &str, found: Option<&DeValue<'_>>) -> Option<String> {
    let found = found?;
    if matches!(found, DeValue::Table(_)) {
        return None;
    }
    let number = integer(Some(found));
    Some(match (name, number) {
        ("bind", Some(port @ 0..=65_535)) => format!("\"127.0.0.1:{port}\""),
        (name, Some(n)) if name.ends_with("_per_source") && n >= 0 => format!("\"{n}/s\""),
        // A list with one item where one value goes: that item.
        _ => match found {
            DeValue::Array(items) if items.len() == 1 => match items[0].get_ref() {
                DeValue::String(s) => quoted(s).unwrap_or_else(|| example_text(name)),
                _ => example_text(name),
            },
            DeValue::Array(_) => example_text(name),
            other => scalar(other)
                .and_then(|s| quoted(&s))
                .unwrap_or_else(|| example_text(name)),
        },
    })
}

/// The text of a number, boolean or date of the file, unquoted.
fn scalar(value: &DeValue<'_>) -> Option<String> {
    let text = match value {
        DeValue::Integer(_) => integer(Some(value))?.to_string(),
        DeValue::Float(f) => f.as_str().to_owned(),
        DeValue::Boolean(b) => b.to_string(),
        DeValue::Datetime(d) => d.to_string(),
        DeValue::String(s) => quoted(s)?,
        DeValue::Array(_) | DeValue::Table(_) => return None,
    };
    (text.chars().count() <= QUOTED_MAX_CHARS).then_some(text)
}

/// An example of the text a key takes, quoted.
fn example_text(name: &str) -> String {
    let example = match name {
        "bind" => "127.0.0.1:10010",
        "allow" | "deny" | "trusted_proxies" => "10.0.0.0/8",
        n if n.ends_with("_per_source") => "10/s",
        "keywords" | "farewell" => "bye",
        _ => "...",
    };
    format!("\"{example}\"")
}

/// `text` as a TOML basic string, if it is short enough to show.
fn quoted(text: &str) -> Option<String> {
    if text.chars().count() > QUOTED_MAX_CHARS {
        return None;
    }
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    Some(out)
}

/// A table header written where the file already has that table, which
/// TOML calls a duplicate key: `[listener]` twice, `[listener]` after
/// `[[listener]]` (or the other way round), `[listener.rules]` twice. The
/// key it names (`listener`, `listener[1].rules`) and what to write
/// instead; `None` for a duplicate that is not a table header (a key set
/// twice). `text` is the whole file, `offset` where the duplicate is.
pub(super) fn duplicate_table(text: &str, offset: usize) -> Option<(String, String)> {
    let offset = offset.min(text.len());
    let before = text.get(..offset)?;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line_end = text[line_start..]
        .find('\n')
        .map_or(text.len(), |i| line_start + i);
    let line = text[line_start..line_end].trim();
    if !line.starts_with('[') {
        return None;
    }
    let doubled = line.starts_with("[[");
    // The header alone is a TOML document: its keys, unescaped as TOML does.
    let header = DeTable::parse(line).ok()?;
    let path = single_path(header.get_ref())?;
    let path: Vec<&str> = path.iter().map(String::as_str).collect();
    // What the file says up to this header (a prefix of a TOML document,
    // read as far as it is valid): the listeners so far, and what the
    // header's table was before.
    let (earlier, _) = DeTable::parse_recoverable(&text[..line_start]);
    let earlier = earlier.get_ref();
    let listeners = match lookup(earlier, &["listener"]) {
        Some(DeValue::Array(items)) => Some(items.len()),
        _ => None,
    };
    let written = |doubled: bool| {
        if doubled {
            format!("[[{}]]", path.join("."))
        } else {
            format!("[{}]", path.join("."))
        }
    };
    let what = match (doubled, lookup(earlier, &path)) {
        (true, Some(DeValue::Table(_))) => {
            format!("{} after a {} table", written(true), written(false))
        }
        (false, Some(DeValue::Array(_))) => format!("{} after {}", written(false), written(true)),
        (false, Some(DeValue::Table(_))) => format!("a second {} table", written(false)),
        _ => format!("{} is written twice", written(doubled)),
    };
    let fix = match (&path[..], listeners) {
        (["listener"], _) => "write each listener as a [[listener]] table",
        (["listener", "rules"], Some(_)) => "write each rule as a [[listener.rules]] table",
        (["listener", "rules"], None) => {
            "write each listener as a [[listener]] table, and each rule as a [[listener.rules]] table"
        }
        _ => "a table is written once",
    };
    // `listener[1].rules`: in the listener being written.
    let key = match (&path[..], listeners) {
        (["listener", rest @ ..], Some(n)) if !rest.is_empty() => {
            format!("listener[{}].{}", n.saturating_sub(1), rest.join("."))
        }
        _ => path.join("."),
    };
    Some((key, format!("{what}: {fix}")))
}

/// The value at a header's path in a document: through a list of tables,
/// its last table (where a header's keys go).
fn lookup<'a, 'i>(table: &'a DeTable<'i>, path: &[&str]) -> Option<&'a DeValue<'i>> {
    let (first, rest) = path.split_first()?;
    let value = table
        .iter()
        .find(|(k, _)| k.get_ref() == first)
        .map(|(_, v)| v.get_ref())?;
    if rest.is_empty() {
        return Some(value);
    }
    let inner = match value {
        DeValue::Table(inner) => inner,
        DeValue::Array(items) => items.last()?.get_ref().as_table()?,
        _ => return None,
    };
    lookup(inner, rest)
}

/// The keys of a document that holds one table header and nothing else:
/// `[a.b]` is `{a = {b = {}}}`, `[[a.b]]` is `{a = {b = [{}]}}`.
fn single_path(table: &DeTable<'_>) -> Option<Vec<String>> {
    let mut path = Vec::new();
    let mut current = table;
    loop {
        let mut entries = current.iter();
        let (key, value) = entries.next()?;
        if entries.next().is_some() {
            return None;
        }
        path.push(key.get_ref().to_string());
        current = match value.get_ref() {
            DeValue::Table(inner) if inner.is_empty() => return Some(path),
            DeValue::Table(inner) => inner,
            DeValue::Array(items) if items.len() == 1 => {
                return match items[0].get_ref() {
                    DeValue::Table(inner) if inner.is_empty() => Some(path),
                    _ => None,
                };
            }
            _ => return None,
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hint for `key = value` (TOML), as serde words the mistake.
    fn hint(message: &str, key: &str, value: &str) -> Option<String> {
        let text = format!("v = {value}");
        let doc = DeTable::parse(&text).unwrap();
        let found = doc.get_ref().iter().next().unwrap().1.get_ref().clone();
        wrong_type(message, key, Some(&found))
    }

    #[test]
    fn a_number_for_a_duration_gets_seconds() {
        assert_eq!(
            hint(
                "invalid type: integer `30`, expected a duration",
                "listener[0].idle_timeout",
                "30"
            )
            .as_deref(),
            Some("invalid type: integer `30`, expected a duration such as idle_timeout = \"30s\"")
        );
        assert_eq!(
            hint(
                "invalid type: floating point `1.5`, expected a duration",
                "server.shutdown_grace",
                "1.5"
            )
            .as_deref(),
            Some(
                "invalid type: floating point `1.5`, expected a duration such as shutdown_grace = \"1.5s\""
            )
        );
        let unit = hint(
            "invalid value: string \"5 parsecs\", expected a duration",
            "listener[0].idle_timeout",
            "\"5 parsecs\"",
        )
        .unwrap();
        assert!(
            unit.ends_with("expected a duration such as idle_timeout = \"5s\" (a number and a unit: ms, s, m, h, d)"),
            "{unit}"
        );
    }

    #[test]
    fn text_for_a_number_gets_the_number_it_meant() {
        let h = |key: &str, value: &str| {
            hint(
                &format!("invalid type: string {value}, expected u32"),
                key,
                value,
            )
            .unwrap()
        };
        assert!(
            h("listener[0].backlog", "\"128\"")
                .ends_with("expected a whole number, without quotes, such as backlog = 128"),
        );
        assert!(
            h("listener[0].backlog", "\"lots\"")
                .ends_with("expected a whole number, without quotes, such as backlog = 128"),
        );
        assert!(
            h("listener[0].max_message_bytes", "\"64KB\"").ends_with(
                "expected a number of bytes, without quotes, such as max_message_bytes = 65536 (64 × 1024)"
            ),
        );
        assert!(
            h("listener[0].chunk_size", "\"1 MiB\"")
                .ends_with("such as chunk_size = 1048576 (1 × 1024 × 1024)"),
        );
        assert!(
            h("listener[0].max_message_bytes", "\"lots\"")
                .ends_with("such as max_message_bytes = 65536"),
        );
        assert!(h("listener[0].send_buffer", "true").ends_with("such as send_buffer = 65536"));
        assert!(h("server.worker_threads", "\"four\"").ends_with("such as worker_threads = 4"));
        assert!(h("listener[0].min_send_rate", "\"fast\"").ends_with("such as min_send_rate = 10"));
    }

    #[test]
    fn booleans_lists_addresses_and_rates() {
        let h = |expected: &str, key: &str, value: &str| {
            hint(&format!("invalid type: x, expected {expected}"), key, value).unwrap()
        };
        assert!(
            h("a boolean", "listener[0].allow_hidden", "\"yes\"")
                .ends_with("expected true or false, without quotes, such as allow_hidden = true")
        );
        assert!(h("a boolean", "a.allow_hidden", "\"off\"").ends_with("allow_hidden = false"));
        assert!(h("a boolean", "a.allow_hidden", "0").ends_with("allow_hidden = false"));
        assert!(
            h("a sequence", "listener[0].allow", "\"10.0.0.0/8\"")
                .ends_with("expected a list in brackets such as allow = [\"10.0.0.0/8\"]")
        );
        assert!(
            h("a sequence", "listener[0].rules[0].keywords", "\"hi\"")
                .ends_with("such as keywords = [\"hi\"]")
        );
        assert!(
            h("a string", "listener[0].bind", "10010")
                .ends_with("expected text in quotes such as bind = \"127.0.0.1:10010\"")
        );
        assert!(
            h("a string", "listener[0].connection_rate_per_source", "10")
                .ends_with("such as connection_rate_per_source = \"10/s\"")
        );
        assert!(h("a string", "listener[0].name", "5").ends_with("such as name = \"5\""));
        assert!(h("a string", "listener[0].name", "[\"a\"]").ends_with("such as name = \"a\""));
        // An item of a list is shown in its list.
        assert!(h("a string", "listener[0].allow[0]", "1").ends_with("such as allow = [\"1\"]"));
    }

    #[test]
    fn long_or_odd_values_get_the_generic_example() {
        let long = format!("\"{}\"", "x".repeat(200));
        let h = hint(
            "invalid type: string, expected a sequence",
            "listener[0].allow",
            &long,
        )
        .unwrap();
        assert!(h.ends_with("such as allow = [\"10.0.0.0/8\"]"), "{h}");
        let h = hint(
            "invalid type: string, expected a sequence",
            "listener[0].keywords",
            "\"a\\\"b\"",
        )
        .unwrap();
        assert!(h.ends_with("such as keywords = [\"a\\\"b\"]"), "{h}");
        // A negative count: said in a config's words, not Rust's.
        assert_eq!(
            hint(
                "invalid value: integer `-1`, expected usize",
                "listener[0].max_connections",
                "-1"
            )
            .as_deref(),
            Some(
                "invalid value: integer `-1`, expected a whole number of 0 or more, \
                 such as max_connections = 4096"
            )
        );
        // Not a wrong type, or no kind it knows, or out of range: nothing added.
        assert_eq!(
            hint(
                "invalid value: integer `300`, expected u8",
                "listener[0].source_ipv6_prefix",
                "300"
            ),
            None
        );
        assert_eq!(hint("missing field `name`", "listener[0]", "1"), None);
        assert_eq!(
            missing_field("missing field `root`"),
            Some("root = \"/srv/files\" (the directory to serve)")
        );
        assert_eq!(missing_field("missing field `color`"), None);
        assert_eq!(missing_field("unknown field `root`"), None);
        assert_eq!(
            hint(
                "invalid type: integer `1`, expected struct HistoryKeys",
                "a.history",
                "1"
            ),
            None
        );
        // A table where a list of tables goes has its own message.
        assert_eq!(
            hint(
                "invalid type: map, expected a sequence",
                "listener[0].rules",
                "{ a = 1 }"
            ),
            None
        );
    }

    #[test]
    fn duplicate_table_headers() {
        let at = |text: &str, needle: &str| {
            let line = text.rfind(needle).unwrap();
            duplicate_table(text, line + 1)
        };
        let two = "[listener]\nname = \"a\"\n\n[listener]\nname = \"b\"\n";
        assert_eq!(
            at(two, "[listener]"),
            Some((
                "listener".into(),
                "a second [listener] table: write each listener as a [[listener]] table".into()
            ))
        );
        let after = "[[listener]]\nname = \"a\"\n[ listener ] # one bracket\nname = \"b\"\n";
        assert_eq!(
            at(after, "[ listener ]").unwrap().1,
            "[listener] after [[listener]]: write each listener as a [[listener]] table"
        );
        let before = "[listener]\nname = \"a\"\n[[listener]]\nname = \"b\"\n";
        assert_eq!(
            at(before, "[[listener]]").unwrap().1,
            "[[listener]] after a [listener] table: write each listener as a [[listener]] table"
        );
        let rules = "[[listener]]\nname = \"a\"\n[[listener]]\nname = \"b\"\n\
                     [listener.rules]\nreply = \"x\"\n[listener.\"rules\"]\nreply = \"y\"\n";
        assert_eq!(
            at(rules, "[listener.\"rules\"]"),
            Some((
                "listener[1].rules".into(),
                "a second [listener.rules] table: write each rule as a [[listener.rules]] table"
                    .into()
            ))
        );
        let history = "[[listener]]\n[listener.history]\n[listener.history]\n";
        assert_eq!(
            at(history, "[listener.history]"),
            Some((
                "listener[0].history".into(),
                "a second [listener.history] table: a table is written once".into()
            ))
        );
        let after_list = "[[listener]]\n[[listener.rules]]\nreply = \"x\"\n[listener.rules]\n";
        assert_eq!(
            at(after_list, "[listener.rules]"),
            Some((
                "listener[0].rules".into(),
                "[listener.rules] after [[listener.rules]]: write each rule as a [[listener.rules]] table"
                    .into()
            ))
        );
        let single = "[listener]\nname = \"a\"\n[listener.rules]\n[listener.rules]\n";
        assert_eq!(
            at(single, "[listener.rules]"),
            Some((
                "listener.rules".into(),
                "a second [listener.rules] table: write each listener as a [[listener]] table, \
                 and each rule as a [[listener.rules]] table"
                    .into()
            ))
        );
        // A key set twice is not a table header.
        assert_eq!(at("a = 1\na = 2\n", "a = 2"), None);
    }
}
