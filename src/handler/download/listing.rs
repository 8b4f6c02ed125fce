//! Directory listings of the download handler: the names a client could
//! request back, sorted, one a line, directories with a `/`, at most
//! [`MAX_LISTING_ENTRIES`] of them.

use std::collections::BinaryHeap;
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use super::paths::{Policy, check_confined, descriptor_path};
use crate::conn::text::TextEncoding;

/// A listing stops after this many entries, so a huge directory costs bounded memory.
const MAX_LISTING_ENTRIES: usize = 10_000;

/// The listing of an opened directory: the entries a client could request
/// back, sorted, one a line, directories with "/". At most
/// [`MAX_LISTING_ENTRIES`] (the first ones in sort order) are kept in memory.
pub(super) fn listing(
    root: &Path,
    dir: &fs::File,
    policy: Policy,
    encoding: TextEncoding,
) -> io::Result<String> {
    let allow_hidden = policy.allow_hidden;
    let mut names = BinaryHeap::new();
    let mut truncated = false;
    // Read through the descriptor, so the directory checked is the one listed.
    for entry in fs::read_dir(descriptor_path(dir))? {
        let entry = entry?;
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue; // not UTF-8: no client could ask for it by name
        };
        if !requestable(&name, allow_hidden, encoding) {
            continue;
        }
        // An entry that vanished or cannot be inspected is left out, not fatal.
        let Ok(mut kind) = entry.file_type() else {
            continue;
        };
        if kind.is_symlink() {
            // Listed only if it resolves to something servable inside the root.
            let real = match fs::canonicalize(entry.path()) {
                Ok(real) if check_confined(root, &real, allow_hidden).is_ok() => real,
                _ => continue,
            };
            let Ok(meta) = fs::metadata(&real) else {
                continue;
            };
            kind = meta.file_type();
        }
        if kind.is_dir() {
            names.push(format!("{name}/"));
        } else if kind.is_file() {
            // A file that would be refused is not listed either.
            let hard_linked = !policy.allow_hard_links
                && fs::metadata(entry.path()).is_ok_and(|meta| meta.nlink() > 1);
            if hard_linked {
                continue;
            }
            names.push(name);
        } else {
            continue;
        }
        if names.len() > MAX_LISTING_ENTRIES {
            names.pop(); // the last in sort order
            truncated = true;
        }
    }
    let mut text = String::new();
    for name in names.into_sorted_vec() {
        text.push_str(&name);
        text.push('\n');
    }
    if truncated {
        text.push_str(&format!(
            "(listing stops after {MAX_LISTING_ENTRIES} entries)\n"
        ));
    }
    Ok(text)
}

/// True when a client could send `name` back and get this entry: not hidden
/// (unless allowed), no control characters, no surrounding white space
/// (requests are trimmed), and representable in the listener's encoding.
fn requestable(name: &str, allow_hidden: bool, encoding: TextEncoding) -> bool {
    (allow_hidden || !name.starts_with('.'))
        && !name.chars().any(char::is_control)
        && name.trim() == name
        && encoding.decode(&encoding.encode(name)) == name
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handler::download::paths::resolve;

    const STRICT: Policy = Policy {
        allow_hidden: false,
        allow_hard_links: false,
    };

    fn refused(root: &Path, name: &str) -> &'static str {
        match resolve(root, name, STRICT) {
            Err(reason) => reason,
            Ok(target) => panic!("{name:?} was not refused: {target:?}"),
        }
    }

    #[test]
    fn listing_shows_only_what_can_be_downloaded() {
        let dir = tempfile::tempdir().unwrap();
        let root = fs::canonicalize(dir.path()).unwrap();
        fs::write(root.join(".secret"), b"s").unwrap();
        fs::write(root.join("plain"), b"p").unwrap();
        std::os::unix::fs::symlink(".secret", root.join("to-secret")).unwrap();
        std::os::unix::fs::symlink("plain", root.join("to-plain")).unwrap();
        std::os::unix::fs::symlink("/etc/hostname", root.join("to-outside")).unwrap();
        fs::write(root.join(" padded"), b"x").unwrap();
        fs::write(root.join("new\nline"), b"x").unwrap();
        fs::write(root.join("😀"), b"x").unwrap();
        let dir = fs::File::open(&root).unwrap();
        let list = |hidden, encoding| {
            let policy = Policy {
                allow_hidden: hidden,
                allow_hard_links: false,
            };
            listing(&root, &dir, policy, encoding).unwrap()
        };
        assert_eq!(list(false, TextEncoding::Utf8), "plain\nto-plain\n😀\n");
        assert_eq!(refused(&root, "to-secret"), "hidden files are not served");
        assert_eq!(
            list(true, TextEncoding::Utf8),
            ".secret\nplain\nto-plain\nto-secret\n😀\n"
        );
        // GBK has no emoji: a GBK client could not ask for it.
        assert_eq!(list(false, TextEncoding::Gbk), "plain\nto-plain\n");
    }

    #[test]
    fn a_long_listing_keeps_the_first_entries_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let root = fs::canonicalize(dir.path()).unwrap();
        for i in (0..MAX_LISTING_ENTRIES + 5).rev() {
            fs::write(root.join(format!("f{i:06}")), b"").unwrap();
        }
        let handle = fs::File::open(&root).unwrap();
        let text = listing(&root, &handle, STRICT, TextEncoding::Utf8).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), MAX_LISTING_ENTRIES + 1);
        assert_eq!(lines[0], "f000000");
        let last = format!("f{:06}", MAX_LISTING_ENTRIES - 1);
        assert_eq!(lines[MAX_LISTING_ENTRIES - 1], last);
        assert!(lines[MAX_LISTING_ENTRIES].starts_with("(listing stops"));
    }
}
