//! The HTML index page of a directory: a table of its entries (name, size,
//! modification time in UTC), directories first, with a small inline style
//! (no asset to fetch) and a `../` row below the root. Names are escaped,
//! links percent-encoded; the page is bounded: at most [`MAX_PAGE_BYTES`],
//! after which it says where it stops (as the text listing does).

use std::fmt::Write as _;

use chrono::{DateTime, SecondsFormat};

use super::percent;

/// The largest page: 10 000 names of 255 bytes, escaped, would be about
/// 17 MB; a page stops adding names before it passes this.
pub(crate) const MAX_PAGE_BYTES: usize = 4 << 20;

/// One entry of a listing, as the page shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    /// The name, with a trailing `/` for a directory.
    pub name: String,
    pub is_dir: bool,
    /// Its length in bytes (not shown for a directory); `None` if unknown.
    pub size: Option<u64>,
    /// Its modification time, in seconds since the epoch; `None` if unknown.
    pub modified: Option<i64>,
}

/// The page's style: small, inline, light and dark.
const STYLE: &str = "body{font-family:system-ui,-apple-system,\"Segoe UI\",\"Noto Sans\",\"Noto Sans CJK SC\",sans-serif;\
margin:1.5em auto;max-width:64em;padding:0 1em;color:#1f2328;background:#fff}\
h1{font-size:1.25em;font-weight:600;overflow-wrap:anywhere}\
table{border-collapse:collapse;width:100%}\
th,td{padding:.35em .6em;text-align:left;border-bottom:1px solid #d8dee4}\
th{font-weight:600;border-bottom-width:2px}\
.s{text-align:right;white-space:nowrap}\
.m{white-space:nowrap;font-variant-numeric:tabular-nums}\
td:first-child{overflow-wrap:anywhere}\
a{color:#0969da;text-decoration:none}a:hover{text-decoration:underline}\
tr.d a{font-weight:600}tbody tr:hover{background:#f6f8fa}\
p{color:#59636e}\
@media (prefers-color-scheme:dark){body{color:#e6edf3;background:#0d1117}\
th,td{border-color:#30363d}a{color:#4493f8}tbody tr:hover{background:#161b22}p{color:#9198a1}}";

/// Escapes text for HTML (element content and quoted attribute values).
pub(crate) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A length for people: `512 B`, `1.5 KiB`, `23 MiB` (binary units; one
/// decimal below 10).
pub(crate) fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if value < 9.95 {
        format!("{value:.1} {}", UNITS[unit])
    } else {
        format!("{value:.0} {}", UNITS[unit])
    }
}

/// A modification time as a `<time>` element: RFC 3339 in UTC for
/// machines, `YYYY-MM-DD HH:MM` (UTC) for people; `-` if there is none.
fn time_element(seconds: Option<i64>) -> String {
    match seconds.and_then(|s| DateTime::from_timestamp(s, 0)) {
        Some(time) => format!(
            "<time datetime=\"{}\">{}</time>",
            time.to_rfc3339_opts(SecondsFormat::Secs, true),
            time.format("%Y-%m-%d %H:%M")
        ),
        None => "-".to_owned(),
    }
}

/// The index page of the directory `dir` (its path below the root, no
/// leading `/`) listing `entries` in the order given (directories first).
/// `stopped_after` is where the listing itself stopped, if it did; the
/// page may stop sooner to stay under `max_bytes`.
pub(crate) fn index_page(
    dir: &str,
    entries: &[Entry],
    stopped_after: Option<usize>,
    max_bytes: usize,
) -> String {
    const TAIL: &str = "</tbody>\n</table>\n</body>\n</html>\n";
    let base = if dir.trim_matches('/').is_empty() {
        "/".to_owned()
    } else {
        format!("/{}/", dir.trim_matches('/'))
    };
    let title = escape(&base);
    let mut page = format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>Index of {title}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n\
         <h1>Index of {title}</h1>\n<table>\n<thead><tr><th>Name</th><th class=\"s\">Size</th>\
         <th class=\"m\">Modified (UTC)</th></tr></thead>\n<tbody>\n"
    );
    if base != "/" {
        page.push_str(
            "<tr class=\"d\"><td><a href=\"../\">../</a></td><td class=\"s\"></td><td class=\"m\"></td></tr>\n",
        );
    }
    // Room kept for the note and the end of the page.
    let reserve = TAIL.len() + 64;
    let mut stopped = stopped_after;
    let mut row = String::new();
    for (shown, entry) in entries.iter().enumerate() {
        row.clear();
        let size = match entry.size {
            Some(bytes) if !entry.is_dir => format!(
                "<td class=\"s\" title=\"{bytes} byte{}\">{}</td>",
                if bytes == 1 { "" } else { "s" },
                human_size(bytes)
            ),
            _ => "<td class=\"s\">-</td>".to_owned(),
        };
        let _ = writeln!(
            row,
            "<tr{}><td><a href=\"{}\">{}</a></td>{size}<td class=\"m\">{}</td></tr>",
            if entry.is_dir { " class=\"d\"" } else { "" },
            escape(&percent::encode_path(&format!("{base}{}", entry.name))),
            escape(&entry.name),
            time_element(entry.modified),
        );
        if page.len() + row.len() + reserve > max_bytes {
            stopped = Some(shown);
            break;
        }
        page.push_str(&row);
    }
    page.push_str("</tbody>\n</table>\n");
    if let Some(after) = stopped {
        let _ = writeln!(page, "<p>(listing stops after {after} entries)</p>");
    }
    page.push_str("</body>\n</html>\n");
    page
}

/// The small page of a redirect to `location` (already percent-encoded).
pub(crate) fn moved_page(location: &str) -> String {
    let location = escape(location);
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head><meta charset=\"utf-8\"><title>301 Moved Permanently</title></head>\n\
         <body><p>Moved to <a href=\"{location}\">{location}</a>.</p></body>\n</html>\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(name: &str, size: u64, modified: i64) -> Entry {
        Entry {
            name: name.to_owned(),
            is_dir: false,
            size: Some(size),
            modified: Some(modified),
        }
    }

    fn dir(name: &str) -> Entry {
        Entry {
            name: format!("{name}/"),
            is_dir: true,
            size: Some(4096),
            modified: Some(0),
        }
    }

    #[test]
    fn names_are_escaped_in_text_and_links() {
        let entries = vec![
            dir("sub"),
            file("we ird<&>\"'.txt", 3, 0),
            file("日本語 ファイル.txt", 2, 0),
        ];
        let page = index_page("a b", &entries, None, MAX_PAGE_BYTES);
        assert!(page.contains("<title>Index of /a b/</title>"), "{page}");
        assert!(page.contains("<a href=\"../\">../</a>"), "{page}");
        assert!(
            page.contains(
                "<a href=\"/a%20b/we%20ird%3C%26%3E%22%27.txt\">we ird&lt;&amp;&gt;&quot;&#39;.txt</a>"
            ),
            "{page}"
        );
        assert!(page.contains("<a href=\"/a%20b/sub/\">sub/</a>"), "{page}");
        assert!(
            page.contains(
                "<a href=\"/a%20b/%E6%97%A5%E6%9C%AC%E8%AA%9E%20%E3%83%95%E3%82%A1%E3%82%A4%E3%83%AB.txt\">日本語 ファイル.txt</a>"
            ),
            "{page}"
        );
        assert!(!page.contains("listing stops"), "{page}");
        let root = index_page("", &entries, None, MAX_PAGE_BYTES);
        assert!(
            root.contains("Index of /<") && !root.contains("../"),
            "{root}"
        );
    }

    #[test]
    fn a_page_has_its_head_style_and_a_table() {
        let page = index_page("", &[], None, MAX_PAGE_BYTES);
        for part in [
            "<!DOCTYPE html>",
            "<meta charset=\"utf-8\">",
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">",
            "<style>",
            "<th>Name</th><th class=\"s\">Size</th><th class=\"m\">Modified (UTC)</th>",
            "</table>",
        ] {
            assert!(page.contains(part), "{part} not in {page}");
        }
        // Nothing to fetch: no stylesheet, script, image or font.
        for asset in ["<link", "<script", "<img", "url(", "@import"] {
            assert!(!page.contains(asset), "{asset} in {page}");
        }
    }

    #[test]
    fn rows_have_sizes_and_times_and_keep_their_order() {
        let entries = vec![
            dir("zeta"),
            file("a.bin", 1536, 1_700_000_000),
            file("b.txt", 12, -1),
        ];
        let page = index_page("", &entries, None, MAX_PAGE_BYTES);
        assert!(
            page.contains(
                "<tr class=\"d\"><td><a href=\"/zeta/\">zeta/</a></td><td class=\"s\">-</td>\
                 <td class=\"m\"><time datetime=\"1970-01-01T00:00:00Z\">1970-01-01 00:00</time></td></tr>"
            ),
            "{page}"
        );
        assert!(
            page.contains(
                "<tr><td><a href=\"/a.bin\">a.bin</a></td><td class=\"s\" title=\"1536 bytes\">1.5 KiB</td>\
                 <td class=\"m\"><time datetime=\"2023-11-14T22:13:20Z\">2023-11-14 22:13</time></td></tr>"
            ),
            "{page}"
        );
        assert!(
            page.contains(
                "<td class=\"s\" title=\"12 bytes\">12 B</td><td class=\"m\"><time datetime=\"1969-12-31T23:59:59Z\">"
            ),
            "{page}"
        );
        let (zeta, a, b) = (
            page.find("zeta/<").unwrap(),
            page.find("a.bin<").unwrap(),
            page.find("b.txt<").unwrap(),
        );
        assert!(zeta < a && a < b, "{page}");
        // A time out of range, or unknown: no <time>.
        let unknown = Entry {
            modified: Some(i64::MAX),
            size: None,
            ..file("c", 0, 0)
        };
        let page = index_page("", &[unknown], None, MAX_PAGE_BYTES);
        assert!(
            page.contains("<td class=\"s\">-</td><td class=\"m\">-</td>"),
            "{page}"
        );
    }

    #[test]
    fn sizes_are_for_people() {
        let cases = [
            (0, "0 B"),
            (1023, "1023 B"),
            (1024, "1.0 KiB"),
            (1536, "1.5 KiB"),
            (10 * 1024, "10 KiB"),
            (1024 * 1024 - 1, "1024 KiB"),
            (1024 * 1024, "1.0 MiB"),
            (5 << 30, "5.0 GiB"),
            (u64::MAX, "16 EiB"),
        ];
        for (bytes, shown) in cases {
            assert_eq!(human_size(bytes), shown, "{bytes}");
        }
    }

    #[test]
    fn a_page_stays_under_its_bound_and_says_where_it_stops() {
        let entries: Vec<Entry> = (0..10_000)
            .map(|i| file(&format!("{i:05}{}", "&".repeat(240)), 1, 0))
            .collect();
        let page = index_page("d", &entries, Some(10_000), MAX_PAGE_BYTES);
        assert!(page.len() <= MAX_PAGE_BYTES, "{} bytes", page.len());
        let shown = page.matches("<tr><td>").count();
        assert!(shown > 100 && shown < 10_000, "{shown} entries");
        assert!(
            page.ends_with(&format!(
                "<p>(listing stops after {shown} entries)</p>\n</body>\n</html>\n"
            )),
            "{}",
            &page[page.len() - 200..]
        );
        // A listing that stopped by itself, and fits: its own count.
        let small = index_page("d", &entries[..3], Some(3), MAX_PAGE_BYTES);
        assert!(small.contains("(listing stops after 3 entries)"), "{small}");
    }

    #[test]
    fn a_moved_page_links_to_its_location() {
        let page = moved_page("/a%20b/");
        assert!(page.contains("<a href=\"/a%20b/\">/a%20b/</a>"), "{page}");
    }
}
