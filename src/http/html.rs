//! The HTML index page of a directory: its names as links, escaped, and
//! bounded: at most [`MAX_PAGE_BYTES`], after which the page says where it
//! stops (as the text listing does).

use std::fmt::Write as _;

use super::percent;

/// The largest page: 10 000 names of 255 bytes, escaped, would be about
/// 17 MB; a page stops adding names before it passes this.
pub(crate) const MAX_PAGE_BYTES: usize = 4 << 20;

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

/// The index page of the directory `dir` (its path below the root, no
/// leading `/`) listing `names` (directories end in `/`). `stopped_after`
/// is where the listing itself stopped, if it did; the page may stop
/// sooner to stay under `max_bytes`.
pub(crate) fn index_page(
    dir: &str,
    names: &[String],
    stopped_after: Option<usize>,
    max_bytes: usize,
) -> String {
    const TAIL: &str = "</ul>\n</body></html>\n";
    let base = if dir.trim_matches('/').is_empty() {
        "/".to_owned()
    } else {
        format!("/{}/", dir.trim_matches('/'))
    };
    let title = escape(&base);
    let mut page = format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>Index of {title}</title></head>\n<body><h1>Index of {title}</h1>\n<ul>\n"
    );
    if base != "/" {
        page.push_str("<li><a href=\"../\">../</a></li>\n");
    }
    // Room kept for the note and the end of the page.
    let reserve = TAIL.len() + 64;
    let mut stopped = stopped_after;
    let mut item = String::new();
    for (shown, name) in names.iter().enumerate() {
        item.clear();
        let _ = writeln!(
            item,
            "<li><a href=\"{}\">{}</a></li>",
            escape(&percent::encode_path(&format!("{base}{name}"))),
            escape(name)
        );
        if page.len() + item.len() + reserve > max_bytes {
            stopped = Some(shown);
            break;
        }
        page.push_str(&item);
    }
    page.push_str("</ul>\n");
    if let Some(after) = stopped {
        let _ = writeln!(page, "<p>(listing stops after {after} entries)</p>");
    }
    page.push_str("</body></html>\n");
    page
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_escaped_in_text_and_links() {
        let names = vec!["we ird<&>\"'.txt".to_owned(), "sub/".to_owned()];
        let page = index_page("a b", &names, None, MAX_PAGE_BYTES);
        assert!(page.contains("<title>Index of /a b/</title>"), "{page}");
        assert!(page.contains("<a href=\"../\">../</a>"), "{page}");
        assert!(
            page.contains(
                "<a href=\"/a%20b/we%20ird%3C%26%3E%22%27.txt\">we ird&lt;&amp;&gt;&quot;&#39;.txt</a>"
            ),
            "{page}"
        );
        assert!(page.contains("<a href=\"/a%20b/sub/\">sub/</a>"), "{page}");
        assert!(!page.contains("listing stops"), "{page}");
        let root = index_page("", &names, None, MAX_PAGE_BYTES);
        assert!(
            root.contains("Index of /<") && !root.contains("../"),
            "{root}"
        );
    }

    #[test]
    fn a_page_stays_under_its_bound_and_says_where_it_stops() {
        let names: Vec<String> = (0..10_000)
            .map(|i| format!("{i:05}{}", "&".repeat(240)))
            .collect();
        let page = index_page("d", &names, Some(10_000), MAX_PAGE_BYTES);
        assert!(page.len() <= MAX_PAGE_BYTES, "{} bytes", page.len());
        let shown = page.matches("<li>").count() - 1;
        assert!(shown > 100 && shown < 10_000, "{shown} entries");
        assert!(
            page.ends_with(&format!(
                "<p>(listing stops after {shown} entries)</p>\n</body></html>\n"
            )),
            "{}",
            &page[page.len() - 200..]
        );
        // A listing that stopped by itself, and fits: its own count.
        let small = index_page("d", &names[..3], Some(3), MAX_PAGE_BYTES);
        assert!(small.contains("(listing stops after 3 entries)"), "{small}");
    }
}
