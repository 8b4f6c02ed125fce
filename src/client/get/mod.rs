//! `get`: fetches a file (or, with `-r`, a directory tree) from a download
//! listener, over HTTP into `FILE.part`, renamed to `FILE` only when it is
//! complete and its length is the one announced; `-c` resumes a `.part`
//! with `Range` and `If-Range`, and takes the server's 206 only when its
//! validator, start and total are those of the `.part` (kept in
//! `FILE.part.etag`, never read or written through a symlink). A server
//! whose first answer is bytes that are not HTTP (the tutorial's own) gets
//! the raw protocol, with a warning that the size cannot be verified,
//! unless it answered HTTP earlier in the run or the `.part` being resumed
//! came over HTTP; a close without a byte is an error, never a sign of
//! another protocol. `--raw` forces the raw protocol. A reset or a short
//! body is never a complete file: the `.part` stays.
//!
//! Names from a server's listing are skipped, with a warning, unless they
//! are plain relative names: no `..`, no absolute path, no control bytes,
//! no empty or `.` component, at most 255 bytes (4096 for the whole
//! path); nothing is ever followed through a symlink, so a hostile server
//! cannot make it write outside the output directory. A listed file whose
//! final name, `.part` or `.part.etag` is another of the run's paths or a
//! directory is skipped, and the mirror then ends in an error. Every run
//! has a deadline, every wait a bound, and `-r` caps files, directories
//! and depth.
//!
//! `-r` asks first for the folder as one tar stream (`NAME.tar`, one
//! connection, extracted as it arrives under the same rules; `archive`),
//! and mirrors through the listings when the server does not offer it.
//!
//! This module holds the options, the errors, one run's state and
//! `get` itself; `mirror` follows listings for `-r`, `file` fetches one
//! file, `exchange` is one HTTP request and its response head, `part`
//! is a file's `.part` and `.part.etag` on disk, and `progress` the bar.
//!
//! With an `https://` URL every connection is TLS (`client::stream`): the
//! same exchanges, through it. HTTP bodies have their length, so a close
//! without `close_notify` changes nothing there; the raw protocol's only
//! end is the close, so over TLS one without `close_notify` is an
//! incomplete file (exit status 4), never a whole one.
//!
//! A directory named without `-r` is an error (exit status 2) that says
//! to use `-r`: a name ending in `/`, or an answer that is a directory's
//! (a redirect to the name and a slash, or a listing). A server that
//! answers an HTTP request with something else and keeps the connection
//! open is not a download listener: an error within two seconds, quoting
//! what it said. Every error names the file, the path or the server it is
//! about.

mod archive;
mod claimed;
mod exchange;
mod file;
mod mirror;
mod part;
mod progress;
mod tar_resume;

use std::cell::Cell;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::time::Instant;

use super::stream::Stream;
use super::terminal::escape_bytes;
use crate::conn::text::{QUOTE_MAX_BYTES, TextEncoding};
use file::fetch_file;
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) use mirror::listing_entries;
use mirror::mirror;

/// Most warnings printed in one run; the rest are counted.
const MAX_WARNINGS: usize = 20;

/// What to fetch, and how.
#[derive(Debug, Clone)]
pub struct GetOptions {
    /// `host:port` of the download listener.
    pub addr: String,
    /// The name on the server (a file, or a directory with `recursive`).
    pub name: String,
    /// Where to write: the file, or the directory for `-r` (default: the
    /// name's last component, in the current directory).
    pub output: Option<PathBuf>,
    /// Resume a `.part` left by an earlier run.
    pub resume: bool,
    /// Fetch a directory tree through its listings.
    pub recursive: bool,
    /// Use the raw protocol (the tutorial's), without sizes or resume.
    pub raw: bool,
    /// Print nothing but errors.
    pub quiet: bool,
    /// Encoding of names in the raw protocol.
    pub encoding: TextEncoding,
    /// Bound of the connect, of each wait for data, and of each response
    /// head and listing as a whole.
    pub timeout: Duration,
    /// Bound of the whole run (every file and listing of `-r`).
    pub deadline: Duration,
    /// Talk TLS (an `https://` URL).
    pub tls: Option<super::ClientTls>,
}

/// Why a fetch failed; each has its exit status.
#[derive(Debug, thiserror::Error)]
pub enum GetError {
    /// The network or the server failed, or the server's answer was refused
    /// (exit status 1).
    #[error("{0}")]
    Failed(String),
    /// The server does not have it or refused it (exit status 3).
    #[error("{0}")]
    NotFound(String),
    /// The transfer ended early; the `.part` is kept for `-c` (exit status 4).
    #[error("{0}")]
    Incomplete(String),
    /// The command cannot do what it was asked as asked: a directory
    /// without `-r` (exit status 2, as for a command-line mistake).
    #[error("{0}")]
    Usage(String),
}

impl GetError {
    /// The exit status: 1, 2, 3 or 4.
    pub fn exit_status(&self) -> u8 {
        match self {
            GetError::Failed(_) => 1,
            GetError::Usage(_) => 2,
            GetError::NotFound(_) => 3,
            GetError::Incomplete(_) => 4,
        }
    }

    /// The same error, its message prefixed with `what: `.
    fn context(self, what: &str) -> GetError {
        match self {
            GetError::Failed(m) => GetError::Failed(format!("{what}: {m}")),
            GetError::NotFound(m) => GetError::NotFound(format!("{what}: {m}")),
            GetError::Incomplete(m) => GetError::Incomplete(format!("{what}: {m}")),
            GetError::Usage(m) => GetError::Usage(format!("{what}: {m}")),
        }
    }

    /// The same error, `suffix` added to its message.
    fn with_suffix(self, suffix: &str) -> GetError {
        match self {
            GetError::Failed(m) => GetError::Failed(m + suffix),
            GetError::NotFound(m) => GetError::NotFound(m + suffix),
            GetError::Incomplete(m) => GetError::Incomplete(m + suffix),
            GetError::Usage(m) => GetError::Usage(m + suffix),
        }
    }
}

/// The error of a directory asked for without `-r`: `name` as typed.
fn is_a_directory(name: &str) -> GetError {
    let shown = if name.trim_matches('/').is_empty() {
        "/"
    } else {
        name
    };
    GetError::Usage(format!(
        "{shown} is a directory on the server; use get -r {shown} to fetch the tree"
    ))
}

/// A server's words (a reason phrase, an `ERR` line) fit to quote: bounded
/// and escaped for a terminal.
fn server_words(bytes: &[u8], encoding: TextEncoding) -> String {
    let cut = &bytes[..bytes.len().min(QUOTE_MAX_BYTES)];
    // An error is one line: the line breaks of what the server said are
    // shown, not obeyed.
    let mut words = escape_bytes(cut, encoding).replace('\n', "\\n");
    if cut.len() < bytes.len() {
        words.push_str("...");
    }
    words
}

/// One run of `get`: its options, deadline, and what `-r` has counted.
struct Run<'a> {
    options: &'a GetOptions,
    deadline: Instant,
    dirs: usize,
    warnings: usize,
    /// Why `-r` stopped before the end of the tree, if it did.
    stopped: Option<String>,
    /// The server answered over HTTP in this run: an answer that is not
    /// HTTP is then refused, never taken for the raw protocol.
    spoke_http: Cell<bool>,
    /// The paths `-r` has written or is writing (each file's final name,
    /// `.part` and `.part.etag`): a listed name that would use one again
    /// is skipped. Bounded by `-r`'s cap on files (`mirror::MAX_FILES`),
    /// 8 bytes a path.
    claimed: claimed::Claimed,
    /// Listed names `-r` could not save (they collide with another's paths
    /// or a directory, or a symlink is in the way).
    skipped: usize,
}

impl Run<'_> {
    /// When the current wait must end: after the timeout, and never after
    /// the deadline.
    fn wait_until(&self) -> Instant {
        super::after(self.options.timeout).min(self.deadline)
    }

    /// What a wait that ended at [`Run::wait_until`] means.
    fn why_late(&self) -> &'static str {
        if Instant::now() >= self.deadline {
            "the deadline passed"
        } else {
            "stalled"
        }
    }

    /// Warns that a listed name is not saved, and counts it: the mirror
    /// is then incomplete.
    fn skip(&mut self, text: &str) {
        self.skipped += 1;
        self.warn(text);
    }

    /// Prints a warning (at most [`MAX_WARNINGS`] of them, then a count).
    fn warn(&mut self, text: &str) {
        self.warnings += 1;
        if self.warnings <= MAX_WARNINGS {
            eprintln!("warning: {}", super::escape_text(text));
        } else if self.warnings == MAX_WARNINGS + 1 {
            eprintln!("warning: more warnings follow; they are not shown");
        }
    }
}

/// Fetches what `options` names; returns how many files it wrote (a
/// count, not their paths: a hostile server's tree of 100 000 names of
/// 4 KB must not be held for the run's end).
pub async fn get(options: &GetOptions) -> Result<usize, GetError> {
    let mut run = Run {
        options,
        deadline: super::after(options.deadline),
        dirs: 0,
        warnings: 0,
        stopped: None,
        spoke_http: Cell::new(false),
        claimed: claimed::Claimed::default(),
        skipped: 0,
    };
    let name = options.name.trim_start_matches('/').to_owned();
    let output = options
        .output
        .clone()
        .unwrap_or_else(|| PathBuf::from(default_output(&name)));
    if !options.recursive && (name.is_empty() || name.ends_with('/')) {
        return Err(is_a_directory(&options.name));
    }
    if options.recursive {
        let mut written = 0usize;
        if fs::symlink_metadata(&output).is_ok_and(|m| !m.is_dir()) {
            return Err(GetError::Failed(format!(
                "{} exists and is not a directory, so the tree cannot go into it; remove it, \
                 or name another directory with -o DIR",
                output.display()
            )));
        }
        // What this run makes: the output and the parents it lacks.
        let made = missing_dirs(&output);
        fs::create_dir_all(&output).map_err(|e| at(&output, e))?;
        // One tar stream when the server offers the folder as one; the
        // listings otherwise (and always over the raw protocol).
        let fetched = async {
            let streamed =
                !options.raw && archive::fetch_tree(&mut run, &name, &output, &mut written).await?;
            if !streamed {
                mirror(&mut run, &name, &output, 0, 0, &mut written).await?;
            }
            Ok::<(), GetError>(())
        }
        .await;
        if let Err(e) = fetched {
            // Nothing is left behind for a tree that never came: the
            // empty folders it made, the output and its parents (a
            // folder that is not empty stays; a cut tree stays whole for
            // -c).
            if !made.is_empty() && written == 0 && !matches!(e, GetError::Incomplete(_)) {
                remove_empty_tree(&output, mirror::MAX_DEPTH + 2);
                for dir in &made {
                    let _ = fs::remove_dir(dir);
                }
            }
            return Err(e);
        }
        if run.warnings > MAX_WARNINGS {
            eprintln!("{} warnings in all", run.warnings);
        }
        let why = match (run.stopped, run.skipped) {
            (Some(why), _) => Some(why),
            (None, 0) => None,
            (None, n) => Some(format!("{n} name(s) skipped")),
        };
        if let Some(why) = why {
            return Err(GetError::Failed(format!(
                "the mirror is incomplete: {why} ({} file(s) written into {})",
                written,
                output.display()
            )));
        }
        if !options.quiet {
            eprintln!("{written} file(s) into {}", output.display());
        }
        return Ok(written);
    }
    fetch_file(&mut run, &name, &output).await.map(|_| 1)
}

/// `path` and those of its parents that do not exist, deepest first: what
/// `create_dir_all` would make.
fn missing_dirs(path: &Path) -> Vec<PathBuf> {
    let mut missing = Vec::new();
    let mut at = Some(path);
    while let Some(dir) = at {
        if dir.as_os_str().is_empty() || fs::symlink_metadata(dir).is_ok() {
            break;
        }
        missing.push(dir.to_owned());
        at = dir.parent();
    }
    missing
}

/// Removes the empty folders under `dir` and `dir` itself if it is left
/// empty, `depth` levels down at most; never through a symlink, and
/// nothing that is not an empty folder.
fn remove_empty_tree(dir: &Path, depth: usize) {
    if depth == 0 {
        return;
    }
    if let Ok(entries) = fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                remove_empty_tree(&entry.path(), depth - 1);
            }
        }
    }
    let _ = fs::remove_dir(dir);
}

/// Where `get` saves `name` when no `-o` is given, in the current
/// directory: its last component; for a folder's own archive
/// (`docs/.tar`) the folder's name with `.tar`, never a hidden `.tar`; and
/// `download` (or `download.tar`) for the root, which has no name.
fn default_output(name: &str) -> String {
    // The path as the server resolves it: no empty or `.` parts, and a
    // `..` undoing the part before it.
    let mut parts: Vec<&str> = Vec::new();
    for part in name.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            part => parts.push(part),
        }
    }
    match parts.as_slice() {
        [.., folder, ".tar"] => format!("{folder}.tar"),
        [".tar"] => "download.tar".to_owned(),
        [.., last] => (*last).to_owned(),
        [] => "download".to_owned(),
    }
}

/// An error of the file system, naming the path it is about.
fn at(path: &Path, e: io::Error) -> GetError {
    GetError::Failed(format!("{}: {e}", path.display()))
}

/// An error of the network, naming the server and what was being done.
fn net(run: &Run<'_>, doing: &str, e: io::Error) -> GetError {
    GetError::Failed(format!("{doing} ({}): {e}", run.options.addr))
}

/// What to try against a port that does not speak TLS.
const PLAIN_HINT: &str = "try http://";

/// Connects by `until` (with the TLS handshake, by `until` too, for
/// `https://`).
async fn connect_by(run: &Run<'_>, until: Instant) -> Result<Stream, GetError> {
    // `Stream::open` names the address in its errors.
    Stream::open(
        &run.options.addr,
        run.options.tls.as_ref(),
        until,
        PLAIN_HINT,
    )
    .await
    .map_err(|e| GetError::Failed(e.to_string()))
}

#[cfg(test)]
mod server_words_tests {
    use super::*;

    #[test]
    fn the_default_output_is_the_last_name_and_never_a_hidden_tar() {
        let cases = [
            ("big.iso", "big.iso"),
            ("docs/nested/a.txt", "a.txt"),
            ("docs/", "docs"),
            ("docs.tar", "docs.tar"),
            ("docs/.tar", "docs.tar"),
            ("docs/nested/.tar", "nested.tar"),
            (".tar", "download.tar"),
            ("", "download"),
            // Never a hidden `..tar` or `...tar` (attack5).
            ("docs/./.tar", "docs.tar"),
            ("./.tar", "download.tar"),
            ("a/../.tar", "download.tar"),
            ("docs//.tar", "docs.tar"),
            ("docs/nested/../.tar", "docs.tar"),
            ("..", "download"),
        ];
        for (name, output) in cases {
            assert_eq!(default_output(name), output, "{name:?}");
        }
    }

    #[test]
    fn server_words_are_one_bounded_line() {
        let cases: [(&[u8], &str); 3] = [
            (b"hello", "hello"),
            (b"a\nb\r\nc", "a\\nb\\x0d\\nc"),
            (b"\x1b[2J", "\\x1b[2J"),
        ];
        for (said, shown) in cases {
            assert_eq!(server_words(said, TextEncoding::Utf8), shown);
        }
        let long = vec![b'x'; 10 * QUOTE_MAX_BYTES];
        let shown = server_words(&long, TextEncoding::Utf8);
        assert!(shown.len() <= QUOTE_MAX_BYTES + 3 && shown.ends_with("..."));
    }
}
