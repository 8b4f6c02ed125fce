//! `-r`: a directory tree mirrored through its listings. Names from a
//! server's listing are skipped, with a warning, unless they are plain
//! relative names: no `..`, no absolute path, no control bytes, no empty
//! or `.` component, at most [`MAX_COMPONENT`] bytes ([`MAX_PATH`] for
//! the whole path). A listed file whose final name, `.part` or
//! `.part.etag` is another of the run's paths, a directory or a symlink
//! is skipped, and the mirror then ends in an error. Files, directories
//! and depth are capped.

use std::fs;
use std::path::Path;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::timeout_at;

use super::exchange::{Accept, Framing, error_words, read_to_end_bounded, request};
use super::file::fetch_file;
use super::part::{PART_ETAG, in_the_way, part_paths};
use super::{GetError, Run, connect_by, net, server_words};
use crate::conn::text::TextEncoding;
use crate::http::response::ChunkedDecoder;

/// Longest listing read for `-r`.
const MAX_LISTING: usize = 16 * 1024 * 1024;
/// Deepest directory tree `-r` follows.
pub(super) const MAX_DEPTH: usize = 32;
/// Most files `-r` fetches in one run.
pub(super) const MAX_FILES: usize = 100_000;
/// Most directories `-r` follows (creates, or enters again) in one run.
pub(super) const MAX_DIRS: usize = 10_000;
/// Longest name (one component) taken from a listing, in bytes.
pub(super) const MAX_COMPONENT: usize = 255;
/// Longest path (from the top of the mirror) taken from a listing, in bytes.
pub(super) const MAX_PATH: usize = 4096;

/// Fetches the tree under `dir` into `into` (an existing directory);
/// `path_len` is the length of `dir` below the top of the mirror.
pub(super) async fn mirror(
    run: &mut Run<'_>,
    dir: &str,
    into: &Path,
    depth: usize,
    path_len: usize,
    written: &mut usize,
) -> Result<(), GetError> {
    if depth > MAX_DEPTH {
        // A name not saved: the mirror is incomplete (exit 1), as at the
        // other caps.
        run.skip(&format!(
            "{}: deeper than {MAX_DEPTH} levels, not followed",
            server_words(dir.as_bytes(), TextEncoding::Utf8)
        ));
        return Ok(());
    }
    let base = if dir.is_empty() || dir.ends_with('/') {
        dir.to_owned()
    } else {
        format!("{dir}/")
    };
    let listing = fetch_listing(run, &base).await?;
    for entry in listing_entries(&listing) {
        if run.stopped.is_some() {
            return Ok(());
        }
        let (entry_name, is_dir) = match entry {
            Ok(entry) => entry,
            Err(refused) => {
                run.warn(&format!(
                    "skipped the name \"{}\" from the server's listing (not a plain UTF-8 \
                     name of at most {MAX_COMPONENT} bytes)",
                    server_words(refused, TextEncoding::Utf8)
                ));
                continue;
            }
        };
        let entry_path_len = path_len + 1 + entry_name.len();
        if entry_path_len > MAX_PATH {
            run.warn(&format!(
                "skipped \"{}\" in {}: a path over {MAX_PATH} bytes",
                server_words(entry_name.as_bytes(), TextEncoding::Utf8),
                server_words(base.as_bytes(), TextEncoding::Utf8)
            ));
            continue;
        }
        let local = into.join(entry_name);
        if is_dir {
            // Every directory followed counts, new or not: a listing that
            // names one directory many times is followed at most as often.
            if run.dirs >= MAX_DIRS {
                run.stopped = Some(format!("more than {MAX_DIRS} directories"));
                return Ok(());
            }
            run.dirs += 1;
            if run.claimed.contains(&local) {
                run.skip(&format!(
                    "{} is a file of this mirror; the directory is skipped",
                    local.display()
                ));
                continue;
            }
            match fs::symlink_metadata(&local) {
                Ok(meta) if !meta.is_dir() => {
                    run.skip(&format!(
                        "{} exists and is not a directory; skipped",
                        local.display()
                    ));
                    continue;
                }
                Ok(_) => {}
                Err(_) => {
                    if let Err(e) = fs::create_dir(&local) {
                        run.skip(&format!("{}: {e}; skipped", local.display()));
                        continue;
                    }
                }
            }
            Box::pin(mirror(
                run,
                &format!("{base}{entry_name}"),
                &local,
                depth + 1,
                entry_path_len,
                written,
            ))
            .await?;
        } else {
            if *written >= MAX_FILES {
                run.stopped = Some(format!("more than {MAX_FILES} files"));
                return Ok(());
            }
            if entry_name.len() + PART_ETAG.len() > MAX_COMPONENT {
                run.skip(&format!(
                    "skipped \"{}\": a name too long for its {PART_ETAG} (over {} bytes)",
                    server_words(entry_name.as_bytes(), TextEncoding::Utf8),
                    MAX_COMPONENT - PART_ETAG.len()
                ));
                continue;
            }
            // The file's final name, its `.part` and `.part.etag` must be
            // its own: not another listed file's (`f.part` beside `f`),
            // nor a directory or a symlink.
            let (part, stored) = part_paths(&local);
            let paths = [local.as_path(), part.as_path(), stored.as_path()];
            if let Some(taken) = paths.iter().find(|p| run.claimed.contains(p)) {
                run.skip(&format!(
                    "skipped \"{}\": {} is another file of this mirror",
                    server_words(entry_name.as_bytes(), TextEncoding::Utf8),
                    taken.display()
                ));
                continue;
            }
            if let Some(why) = in_the_way(&paths) {
                run.skip(&format!(
                    "skipped \"{}\": {why}; not written through",
                    server_words(entry_name.as_bytes(), TextEncoding::Utf8)
                ));
                continue;
            }
            for path in paths {
                run.claimed.insert(path);
            }
            fetch_file(run, &format!("{base}{entry_name}"), &local).await?;
            *written += 1;
        }
    }
    Ok(())
}

/// The entries of a listing (one name a line, a directory with a trailing
/// `/`, lines ended by LF or CRLF): each a plain name and whether it is a
/// directory, or the line refused as unsafe or not UTF-8. Blank lines are
/// skipped.
pub(crate) fn listing_entries(listing: &[u8]) -> impl Iterator<Item = Result<(&str, bool), &[u8]>> {
    listing
        .split(|&b| b == b'\n')
        .map(|line| line.strip_suffix(b"\r").unwrap_or(line))
        .filter(|line| !line.is_empty())
        .map(|line| {
            let text = std::str::from_utf8(line).map_err(|_| line)?;
            let (name, is_dir) = match text.strip_suffix('/') {
                Some(dir) => (dir, true),
                None => (text, false),
            };
            if safe_component(name) {
                Ok((name, is_dir))
            } else {
                Err(line)
            }
        })
}

/// True for a name that is one plain path component of at most
/// [`MAX_COMPONENT`] bytes: not empty, `.` or `..`, no `/`, `\` or
/// control characters (C0, DEL, C1).
pub(super) fn safe_component(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_COMPONENT
        && name != "."
        && name != ".."
        && !name.contains(['/', '\\'])
        && !name.chars().any(char::is_control)
}

/// A listing's bytes (one name a line, directories with a trailing `/`;
/// a raw listing decoded to UTF-8), read whole within the timeout. An
/// HTTP listing must say where it ends (`Content-Length` or chunked).
async fn fetch_listing(run: &Run<'_>, dir: &str) -> Result<Vec<u8>, GetError> {
    let options = run.options;
    let until = run.wait_until();
    let late = || GetError::Incomplete(format!("{dir}: the listing was not read in time"));
    if options.raw {
        let mut stream = connect_by(run, until).await?;
        let mut request = options.encoding.encode(dir).into_owned();
        request.push(b'\n');
        timeout_at(until, stream.write_all(&request))
            .await
            .map_err(|_| late())?
            .map_err(|e| net(run, &format!("{dir}: sending the name"), e))?;
        let body = match timeout_at(until, read_to_end_bounded(&mut stream, MAX_LISTING)).await {
            Ok(body) => body.map_err(|e| e.context(dir))?,
            Err(_) => return Err(late()),
        };
        if let Some(reason) = body.strip_prefix(b"ERR ") {
            let reason = reason.strip_suffix(b"\n").unwrap_or(reason);
            return Err(GetError::NotFound(format!(
                "{dir}: {}",
                server_words(reason, options.encoding)
            )));
        }
        return Ok(match options.encoding {
            TextEncoding::Utf8 => body,
            _ => options.encoding.decode(&body).into_owned().into_bytes(),
        });
    }
    let (mut stream, head, rest) = request(run, dir, None, Accept::Text).await?;
    match head.status {
        // Asked for text, a server may still send its HTML page: its
        // lines are not names.
        200 if head.media_type().is_some_and(|t| t == "text/html") => {
            return Err(GetError::Failed(format!(
                "{dir}: the server sent its listing as HTML, though text/plain was asked for; \
                 get -r reads the text listing only"
            )));
        }
        200 => {}
        404 | 403 => {
            let words = error_words(run, &mut stream, &head, &rest).await;
            // The folder named on the command line (no other was listed
            // yet) is not there: perhaps it is a file.
            let hint = if head.status == 404 && run.dirs == 0 && !dir.trim_matches('/').is_empty() {
                format!(
                    " (get -r fetches a folder; if {} is a file, get without -r saves it)",
                    dir.trim_end_matches('/')
                )
            } else {
                String::new()
            };
            return Err(GetError::NotFound(format!("{dir}: {words}{hint}")));
        }
        other => {
            return Err(GetError::Failed(format!(
                "{dir}: HTTP {other} {}",
                server_words(head.reason.as_bytes(), TextEncoding::Utf8)
            )));
        }
    }
    if head.content_length.is_some_and(|l| l > MAX_LISTING as u64) {
        return Err(GetError::Failed(format!(
            "{dir}: a listing over {MAX_LISTING} bytes"
        )));
    }
    let mut framing = match (head.chunked, head.content_length) {
        (true, _) => Framing::Chunked(ChunkedDecoder::new()),
        (false, Some(length)) => Framing::Length(length),
        (false, None) => {
            // A listing cut by a close would look whole: names would be
            // missed without a word.
            return Err(GetError::Failed(format!(
                "{dir}: a listing without Content-Length or chunked framing: cannot tell \
                 whether the listing is whole"
            )));
        }
    };
    let mut body = Vec::new();
    let read = async {
        let mut pending = rest;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            if framing.take(&pending, &mut body)? {
                return Ok(());
            }
            if body.len() > MAX_LISTING {
                return Err(GetError::Failed(format!(
                    "a listing over {MAX_LISTING} bytes"
                )));
            }
            match stream.read(&mut buf).await {
                Ok(0) => {
                    return Err(GetError::Incomplete(
                        "the listing ended before its length".into(),
                    ));
                }
                Ok(n) => pending = buf[..n].to_vec(),
                Err(e) => return Err(GetError::Incomplete(format!("the listing broke off: {e}"))),
            }
        }
    };
    match timeout_at(until, read).await {
        Ok(done) => done.map_err(|e| e.context(dir))?,
        Err(_) => return Err(late()),
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_names_are_safe() {
        for good in [
            "a.txt",
            "名字.txt",
            "with space",
            ".hidden",
            &"n".repeat(255),
        ] {
            assert!(safe_component(good), "{good}");
        }
        for bad in [
            "",
            ".",
            "..",
            "a/b",
            "/etc",
            "a\\b",
            "a\nb",
            "\u{1b}[2J",
            "c1\u{9b}",
            "del\u{7f}",
            &"n".repeat(256),
        ] {
            assert!(!safe_component(bad), "{bad:?}");
        }
    }
}
