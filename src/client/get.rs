//! `get`: fetches a file (or, with `-r`, a directory tree) from a download
//! listener, over HTTP into `FILE.part`, renamed to `FILE` only when it is
//! complete and its length is the one announced; `-c` resumes a `.part`
//! with `Range` and `If-Range`, and takes the server's 206 only when its
//! validator, start and total are those of the `.part` (kept in
//! `FILE.part.etag`). A server that does not speak HTTP (the tutorial's
//! own) gets the raw protocol, with a warning that the size cannot be
//! verified; `--raw` forces it. A reset or a short body is never a
//! complete file: the `.part` stays.
//!
//! Names from a server's listing are skipped, with a warning, unless they
//! are plain relative names: no `..`, no absolute path, no control bytes,
//! no empty or `.` component, at most 255 bytes (4096 for the whole
//! path); nothing is ever followed through a symlink, so a hostile server
//! cannot make it write outside the output directory. Every run has a
//! deadline, every wait a bound, and `-r` caps files, directories and depth.

use std::fs;
use std::io::{self, IsTerminal, Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout_at};

use super::connect;
use super::terminal::escape_bytes;
use crate::conn::text::{QUOTE_MAX_BYTES, TextEncoding, percent_encode_path, quote};
use crate::http::response::{ChunkedDecoder, ResponseHead, parse_head};

/// Longest response head read.
const MAX_HEAD: usize = 16 * 1024;
/// Longest listing read for `-r`.
const MAX_LISTING: usize = 16 * 1024 * 1024;
/// Deepest directory tree `-r` follows.
const MAX_DEPTH: usize = 32;
/// Most files `-r` fetches in one run.
const MAX_FILES: usize = 100_000;
/// Most directories `-r` follows (creates, or enters again) in one run.
const MAX_DIRS: usize = 10_000;
/// Longest name (one component) taken from a listing, in bytes.
const MAX_COMPONENT: usize = 255;
/// Longest path (from the top of the mirror) taken from a listing, in bytes.
const MAX_PATH: usize = 4096;
/// Most warnings printed in one run; the rest are counted.
const MAX_WARNINGS: usize = 20;
/// Longest stored validator (`ETag` or date) sent back in `If-Range`.
const MAX_VALIDATOR: usize = 256;

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
}

impl GetError {
    /// The exit status: 1, 3 or 4.
    pub fn exit_status(&self) -> u8 {
        match self {
            GetError::Failed(_) => 1,
            GetError::NotFound(_) => 3,
            GetError::Incomplete(_) => 4,
        }
    }
}

impl From<io::Error> for GetError {
    fn from(e: io::Error) -> Self {
        GetError::Failed(e.to_string())
    }
}

/// A server's words (a reason phrase, an `ERR` line) fit to quote: bounded
/// and escaped for a terminal.
fn server_words(bytes: &[u8], encoding: TextEncoding) -> String {
    let cut = &bytes[..bytes.len().min(QUOTE_MAX_BYTES)];
    let mut words = escape_bytes(cut, encoding);
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

/// Fetches what `options` names; returns the paths written.
pub async fn get(options: &GetOptions) -> Result<Vec<PathBuf>, GetError> {
    let mut run = Run {
        options,
        deadline: super::after(options.deadline),
        dirs: 0,
        warnings: 0,
        stopped: None,
    };
    let name = options.name.trim_start_matches('/').to_owned();
    let last = name
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .filter(|n| !n.is_empty())
        .unwrap_or("download")
        .to_owned();
    let output = options
        .output
        .clone()
        .unwrap_or_else(|| PathBuf::from(&last));
    if options.recursive {
        let mut written = Vec::new();
        fs::create_dir_all(&output)?;
        mirror(&mut run, &name, &output, 0, 0, &mut written).await?;
        if run.warnings > MAX_WARNINGS {
            eprintln!("{} warnings in all", run.warnings);
        }
        if let Some(why) = run.stopped {
            return Err(GetError::Failed(format!(
                "the mirror is incomplete: {why} ({} file(s) written into {})",
                written.len(),
                output.display()
            )));
        }
        if !options.quiet {
            eprintln!("{} file(s) into {}", written.len(), output.display());
        }
        return Ok(written);
    }
    fetch_file(&mut run, &name, &output).await.map(|p| vec![p])
}

/// Fetches the tree under `dir` into `into` (an existing directory);
/// `path_len` is the length of `dir` below the top of the mirror.
async fn mirror(
    run: &mut Run<'_>,
    dir: &str,
    into: &Path,
    depth: usize,
    path_len: usize,
    written: &mut Vec<PathBuf>,
) -> Result<(), GetError> {
    if depth > MAX_DEPTH {
        run.warn(&format!(
            "{}: deeper than {MAX_DEPTH} levels, not followed",
            quote(dir, QUOTE_MAX_BYTES)
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
                    "skipped the name \"{}\" from the server's listing (not a plain name of at \
                     most {MAX_COMPONENT} bytes)",
                    quote(refused, QUOTE_MAX_BYTES)
                ));
                continue;
            }
        };
        let entry_path_len = path_len + 1 + entry_name.len();
        if entry_path_len > MAX_PATH {
            run.warn(&format!(
                "skipped \"{}\" in {}: a path over {MAX_PATH} bytes",
                quote(entry_name, QUOTE_MAX_BYTES),
                quote(&base, QUOTE_MAX_BYTES)
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
            match fs::symlink_metadata(&local) {
                Ok(meta) if !meta.is_dir() => {
                    run.warn(&format!(
                        "{} exists and is not a directory; skipped",
                        local.display()
                    ));
                    continue;
                }
                Ok(_) => {}
                Err(_) => {
                    if let Err(e) = fs::create_dir(&local) {
                        run.warn(&format!("{}: {e}; skipped", local.display()));
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
            if written.len() >= MAX_FILES {
                run.stopped = Some(format!("more than {MAX_FILES} files"));
                return Ok(());
            }
            if fs::symlink_metadata(&local).is_ok_and(|m| m.file_type().is_symlink()) {
                run.warn(&format!(
                    "{} is a symlink; not written through",
                    local.display()
                ));
                continue;
            }
            written.push(fetch_file(run, &format!("{base}{entry_name}"), &local).await?);
        }
    }
    Ok(())
}

/// The entries of a listing (one name a line, a directory with a trailing
/// `/`): each a plain name and whether it is a directory, or the line
/// refused as unsafe. Blank lines are skipped.
pub(crate) fn listing_entries(listing: &str) -> impl Iterator<Item = Result<(&str, bool), &str>> {
    listing.lines().filter(|line| !line.is_empty()).map(|line| {
        let (name, is_dir) = match line.strip_suffix('/') {
            Some(dir) => (dir, true),
            None => (line, false),
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
pub(crate) fn safe_component(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_COMPONENT
        && name != "."
        && name != ".."
        && !name.contains(['/', '\\'])
        && !name.chars().any(char::is_control)
}

/// A listing's text (one name a line, directories with a trailing `/`),
/// read whole within the timeout.
async fn fetch_listing(run: &Run<'_>, dir: &str) -> Result<String, GetError> {
    let options = run.options;
    let until = run.wait_until();
    let late = || GetError::Incomplete(format!("{dir}: the listing was not read in time"));
    if options.raw {
        let mut stream = connect_by(run, until).await?;
        let mut request = options.encoding.encode(dir).into_owned();
        request.push(b'\n');
        timeout_at(until, stream.write_all(&request))
            .await
            .map_err(|_| late())??;
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
        return Ok(options.encoding.decode(&body).into_owned());
    }
    let (mut stream, head, rest) = request(run, dir, None).await?;
    match head.status {
        200 => {}
        404 | 403 => {
            return Err(GetError::NotFound(format!(
                "{dir}: {} {}",
                head.status,
                server_words(head.reason.as_bytes(), TextEncoding::Utf8)
            )));
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
    let mut body = Vec::new();
    let mut framing = Framing::of(&head);
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
                Ok(0) if framing.ends_at_close() => return Ok(()),
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
    String::from_utf8(body)
        .map_err(|_| GetError::Failed(format!("{dir}: a listing that is not UTF-8")))
}

impl GetError {
    /// The same error, its message prefixed with `what: `.
    fn context(self, what: &str) -> GetError {
        match self {
            GetError::Failed(m) => GetError::Failed(format!("{what}: {m}")),
            GetError::NotFound(m) => GetError::NotFound(format!("{what}: {m}")),
            GetError::Incomplete(m) => GetError::Incomplete(format!("{what}: {m}")),
        }
    }
}

/// Reads until the server closes, at most `max` bytes; a reset is an error.
async fn read_to_end_bounded(stream: &mut TcpStream, max: usize) -> Result<Vec<u8>, GetError> {
    let mut body = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = stream
            .read(&mut buf)
            .await
            .map_err(|e| GetError::Incomplete(format!("broke off: {e}")))?;
        if n == 0 {
            return Ok(body);
        }
        if body.len() + n > max {
            return Err(GetError::Failed(format!("more than {max} bytes")));
        }
        body.extend_from_slice(&buf[..n]);
    }
}

/// Connects by `until`.
async fn connect_by(run: &Run<'_>, until: Instant) -> Result<TcpStream, GetError> {
    let limit = until.saturating_duration_since(Instant::now());
    Ok(connect(&run.options.addr, limit).await?)
}

/// How a response body ends.
enum Framing {
    /// After `Content-Length` bytes (this many still to come).
    Length(u64),
    /// At the last chunk.
    Chunked(ChunkedDecoder),
    /// When the server closes (no length: only for a listing, whose
    /// completeness nothing else can tell).
    Close,
}

impl Framing {
    fn of(head: &ResponseHead) -> Framing {
        if head.chunked {
            Framing::Chunked(ChunkedDecoder::new())
        } else if let Some(length) = head.content_length {
            Framing::Length(length)
        } else {
            Framing::Close
        }
    }

    /// Appends the body's bytes in `input` to `out`; true once the body is
    /// complete (bytes after its end are ignored).
    fn take(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<bool, GetError> {
        match self {
            Framing::Length(left) => {
                let take = usize::try_from(*left).map_or(input.len(), |l| l.min(input.len()));
                out.extend_from_slice(&input[..take]);
                *left -= take as u64;
                Ok(*left == 0)
            }
            Framing::Chunked(decoder) => {
                decoder
                    .feed(input, out)
                    .map_err(|e| GetError::Failed(format!("a bad chunked body: {e}")))?;
                Ok(decoder.is_done())
            }
            Framing::Close => {
                out.extend_from_slice(input);
                Ok(false)
            }
        }
    }

    fn ends_at_close(&self) -> bool {
        matches!(self, Framing::Close)
    }
}

/// Why a request did not get an HTTP response.
enum NotHttp {
    /// The server answered something else: it speaks the raw protocol.
    Raw,
    Error(GetError),
}

impl From<GetError> for NotHttp {
    fn from(e: GetError) -> Self {
        NotHttp::Error(e)
    }
}

/// Sends `GET /name` (with a range from `resume_from` and its validator)
/// and reads the response head; returns the stream, the head and the body
/// bytes read with it.
async fn request(
    run: &Run<'_>,
    name: &str,
    resume: Option<(u64, &str)>,
) -> Result<(TcpStream, ResponseHead, Vec<u8>), GetError> {
    match try_request(run, name, resume).await {
        Ok(done) => Ok(done),
        Err(NotHttp::Raw) => Err(GetError::Failed(format!(
            "{}: the server does not speak HTTP (try --raw)",
            run.options.addr
        ))),
        Err(NotHttp::Error(e)) => Err(e),
    }
}

/// The request and its response head, all within the timeout.
async fn try_request(
    run: &Run<'_>,
    name: &str,
    resume: Option<(u64, &str)>,
) -> Result<(TcpStream, ResponseHead, Vec<u8>), NotHttp> {
    let options = run.options;
    let until = run.wait_until();
    let mut stream = connect_by(run, until).await?;
    let mut request = format!(
        "GET /{} HTTP/1.1\r\nHost: {}\r\nUser-Agent: switchboard/{}\r\nAccept: */*\r\n\
         Accept-Encoding: identity\r\nConnection: close\r\n",
        percent_encode_path(name),
        options.addr,
        env!("CARGO_PKG_VERSION")
    );
    if let Some((from, validator)) = resume {
        request.push_str(&format!(
            "Range: bytes={from}-\r\nIf-Range: {validator}\r\n"
        ));
    }
    request.push_str("\r\n");
    let late = || {
        NotHttp::Error(GetError::Failed(format!(
            "no response head in time ({})",
            run.why_late()
        )))
    };
    match timeout_at(until, stream.write_all(request.as_bytes())).await {
        Ok(written) => written.map_err(|e| NotHttp::Error(e.into()))?,
        Err(_) => return Err(late()),
    }
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    loop {
        let n = match timeout_at(until, stream.read(&mut chunk)).await {
            Ok(Ok(n)) => n,
            Ok(Err(e)) => return Err(NotHttp::Error(e.into())),
            Err(_) => return Err(late()),
        };
        buf.extend_from_slice(&chunk[..n]);
        // An HTTP server always answers with a status line; anything else
        // (another answer, or a close without a byte) is the raw protocol.
        let could_be_http = if buf.len() >= 5 {
            buf.starts_with(b"HTTP/")
        } else {
            !buf.is_empty() && b"HTTP/".starts_with(&buf)
        };
        if !could_be_http && (n == 0 || !buf.is_empty()) {
            return Err(NotHttp::Raw);
        }
        match parse_head(&buf) {
            Ok(Some((head, len))) => {
                let rest = buf.get(len..).unwrap_or_default().to_vec();
                return Ok((stream, head, rest));
            }
            Ok(None) if n == 0 => {
                return Err(GetError::Failed("the response ended inside its head".into()).into());
            }
            Ok(None) if buf.len() > MAX_HEAD => {
                return Err(
                    GetError::Failed(format!("a response head over {MAX_HEAD} bytes")).into(),
                );
            }
            Ok(None) => {}
            Err(e) => {
                return Err(GetError::Failed(format!("{name}: refused the response: {e}")).into());
            }
        }
    }
}

/// `FILE.part` and `FILE.part.etag` beside `target`.
fn part_paths(target: &Path) -> (PathBuf, PathBuf) {
    let mut part = target.as_os_str().to_owned();
    part.push(".part");
    let mut etag = part.clone();
    etag.push(".etag");
    (PathBuf::from(part), PathBuf::from(etag))
}

/// What identifies the version a `.part` holds a piece of: its validator
/// (a strong `ETag`, or else the `Last-Modified` date) and its whole
/// length, kept in `FILE.part.etag` as two lines.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stored {
    validator: String,
    total: u64,
}

impl Stored {
    /// The validator of a response: its strong `ETag`, or its date.
    fn of(head: &ResponseHead, total: u64) -> Option<Stored> {
        let strong = head.etag.as_deref().filter(|e| e.starts_with('"'));
        let validator = strong.or(head.last_modified.as_deref())?;
        plain_validator(validator).then(|| Stored {
            validator: validator.to_owned(),
            total,
        })
    }

    /// Reads `FILE.part.etag`; `None` if it is missing or not two such lines.
    fn read(path: &Path) -> Option<Stored> {
        let text = fs::read(path).ok().filter(|t| t.len() <= 1024)?;
        let text = String::from_utf8(text).ok()?;
        let mut lines = text.lines();
        let validator = lines.next().filter(|v| plain_validator(v))?;
        let total = lines.next()?.parse().ok()?;
        Some(Stored {
            validator: validator.to_owned(),
            total,
        })
    }

    fn write(&self, path: &Path) -> io::Result<()> {
        fs::write(path, format!("{}\n{}\n", self.validator, self.total))
    }

    /// True when `head` (a 206) is of the stored version.
    fn is_version_of(&self, head: &ResponseHead) -> bool {
        let theirs = if self.validator.starts_with('"') {
            head.etag.as_deref()
        } else {
            head.last_modified.as_deref()
        };
        theirs == Some(self.validator.as_str())
    }
}

/// A validator fit to send back in `If-Range`: printable ASCII, bounded.
fn plain_validator(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= MAX_VALIDATOR
        && text.bytes().all(|b| (b' '..=b'~').contains(&b))
}

/// Fetches one file into `target` (through `target.part`).
async fn fetch_file(run: &mut Run<'_>, name: &str, target: &Path) -> Result<PathBuf, GetError> {
    let options = run.options;
    if options.raw {
        return fetch_raw(run, name, target).await;
    }
    let (part, stored_path) = part_paths(target);
    let have = if options.resume {
        fs::symlink_metadata(&part)
            .ok()
            .filter(|m| m.is_file())
            .map_or(0, |m| m.len())
    } else {
        0
    };
    let stored = Stored::read(&stored_path);
    let resume = match (&stored, have) {
        (_, 0) => None,
        (Some(stored), have) => Some((have, stored)),
        (None, _) => {
            run.warn(&format!(
                "{}: no validator kept for the .part; starting over",
                part.display()
            ));
            None
        }
    };
    let (stream, head, rest) =
        match try_request(run, name, resume.map(|(h, s)| (h, s.validator.as_str()))).await {
            Ok(done) => done,
            Err(NotHttp::Raw) => {
                run.warn(&format!(
                    "{} does not speak HTTP; using the raw protocol (the size cannot be verified)",
                    options.addr
                ));
                return fetch_raw(run, name, target).await;
            }
            Err(NotHttp::Error(e)) => return Err(e),
        };
    let refuse = |why: String| {
        GetError::Failed(format!(
            "{name}: refused the server's answer to the resume: {why}; {} is kept as it was \
             (remove it to start over)",
            part.display()
        ))
    };
    let (start, total) = match head.status {
        200 => {
            if resume.is_some() {
                run.warn(&format!(
                    "{name} changed on the server (or cannot resume); starting over"
                ));
            }
            (0, head.content_length)
        }
        206 => {
            let (Some((have, stored)), Some(range)) = (resume, head.content_range) else {
                return Err(refuse("a 206 to a request without a range".into()));
            };
            if !stored.is_version_of(&head) {
                return Err(refuse(format!(
                    "another version of the file (validator {} instead of {})",
                    server_words(
                        head.etag
                            .as_deref()
                            .or(head.last_modified.as_deref())
                            .unwrap_or("none")
                            .as_bytes(),
                        TextEncoding::Utf8
                    ),
                    stored.validator
                )));
            }
            if range.first != have {
                return Err(refuse(format!(
                    "a range from byte {} where the .part has {have}",
                    range.first
                )));
            }
            if range.total != stored.total || range.last + 1 != range.total {
                return Err(refuse(format!(
                    "a range {}-{}/{} of a file of {} bytes",
                    range.first, range.last, range.total, stored.total
                )));
            }
            if head.content_length.is_some_and(|l| l != range.len()) {
                return Err(refuse(format!(
                    "a Content-Length of {} for {} bytes of range",
                    head.content_length.unwrap_or_default(),
                    range.len()
                )));
            }
            (have, Some(range.total))
        }
        416 if resume.is_some() => {
            run.warn(&format!(
                "{name}: the .part is longer than the file on the server; starting over"
            ));
            let _ = fs::remove_file(&part);
            let _ = fs::remove_file(&stored_path);
            let fresh = GetOptions {
                resume: false,
                ..options.clone()
            };
            let mut again = Run {
                options: &fresh,
                deadline: run.deadline,
                dirs: run.dirs,
                warnings: run.warnings,
                stopped: None,
            };
            let done = Box::pin(fetch_file(&mut again, name, target)).await;
            run.warnings = again.warnings;
            return done;
        }
        404 | 403 => {
            return Err(GetError::NotFound(format!(
                "{name}: {} {}",
                head.status,
                server_words(head.reason.as_bytes(), TextEncoding::Utf8)
            )));
        }
        other => {
            return Err(GetError::Failed(format!(
                "{name}: HTTP {other} {}",
                server_words(head.reason.as_bytes(), TextEncoding::Utf8)
            )));
        }
    };
    if total.is_none() && !head.chunked {
        return Err(GetError::Failed(format!("{name}: no Content-Length")));
    }
    match total.and_then(|total| Stored::of(&head, total)) {
        Some(version) if start == 0 => version.write(&stored_path)?,
        Some(_) => {}
        None => {
            let _ = fs::remove_file(&stored_path);
        }
    }
    let mut file = open_part(&part, start)?;
    let framing = if head.chunked {
        Framing::Chunked(ChunkedDecoder::new())
    } else {
        Framing::Length(total.unwrap_or_default() - start)
    };
    let got = copy_body(run, name, stream, rest, &mut file, start, total, framing).await;
    file.sync_all()?;
    let have = got.map_err(|e| {
        let kept = fs::metadata(&part).map_or(0, |m| m.len());
        let resumable = if fs::metadata(&stored_path).is_ok() {
            "the rest can be resumed with -c"
        } else {
            "no validator: -c will start over"
        };
        e.context(name).with_suffix(&format!(
            "; {kept} bytes kept in {} ({resumable})",
            part.display()
        ))
    })?;
    if let Some(total) = total
        && have != total
    {
        return Err(GetError::Incomplete(format!(
            "{name}: {have} of {total} bytes; the rest can be resumed with -c ({})",
            part.display()
        )));
    }
    fs::rename(&part, target)?;
    let _ = fs::remove_file(&stored_path);
    Ok(target.to_owned())
}

impl GetError {
    /// The same error, `suffix` added to its message.
    fn with_suffix(self, suffix: &str) -> GetError {
        match self {
            GetError::Failed(m) => GetError::Failed(m + suffix),
            GetError::NotFound(m) => GetError::NotFound(m + suffix),
            GetError::Incomplete(m) => GetError::Incomplete(m + suffix),
        }
    }
}

/// Opens the `.part` for writing at `start` (truncated there); never
/// through a symlink.
fn open_part(part: &Path, start: u64) -> io::Result<fs::File> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(start == 0)
        .custom_flags(libc::O_NOFOLLOW)
        .open(part)?;
    file.set_len(start)?;
    file.seek(io::SeekFrom::Start(start))?;
    Ok(file)
}

/// Copies the body into `file` until `framing` says it is complete, with a
/// progress bar on a terminal; returns the length now. A close, a reset,
/// a stall or the deadline before the end is an error, and so is a
/// decoded body longer than `total`.
#[allow(clippy::too_many_arguments)]
async fn copy_body(
    run: &Run<'_>,
    name: &str,
    mut stream: TcpStream,
    first: Vec<u8>,
    file: &mut fs::File,
    start: u64,
    total: Option<u64>,
    mut framing: Framing,
) -> Result<u64, GetError> {
    let options = run.options;
    let started = std::time::Instant::now();
    let bar = (!options.quiet && io::stderr().is_terminal()).then(|| {
        let bar = match total {
            Some(total) => indicatif::ProgressBar::new(total),
            None => indicatif::ProgressBar::no_length(),
        };
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar.set_message(super::escape_text(name).into_owned());
        bar.set_position(start);
        bar
    });
    let mut have = start;
    let mut pending = first;
    let mut data = Vec::with_capacity(256 * 1024);
    let mut buf = vec![0u8; 256 * 1024];
    let outcome = loop {
        data.clear();
        let done = match framing.take(&pending, &mut data) {
            Ok(done) => done,
            Err(e) => break Err(e),
        };
        have += data.len() as u64;
        if total.is_some_and(|total| have > total) {
            break Err(GetError::Failed(format!(
                "a body longer than the {} bytes announced",
                total.unwrap_or_default()
            )));
        }
        if let Err(e) = file.write_all(&data) {
            break Err(e.into());
        }
        if let Some(bar) = &bar {
            bar.set_position(have);
        }
        if done {
            break Ok(have);
        }
        match timeout_at(run.wait_until(), stream.read(&mut buf)).await {
            Ok(Ok(0)) => {
                break Err(GetError::Incomplete(format!(
                    "the server closed the connection after {have} bytes"
                )));
            }
            Ok(Ok(n)) => pending = buf[..n].to_vec(),
            Ok(Err(e)) => {
                break Err(GetError::Incomplete(format!(
                    "the connection broke off after {have} bytes ({e})"
                )));
            }
            Err(_) => {
                break Err(GetError::Incomplete(format!(
                    "{} after {have} bytes",
                    run.why_late()
                )));
            }
        }
    };
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let have = outcome?;
    if !options.quiet {
        let secs = started.elapsed().as_secs_f64().max(1e-6);
        eprintln!(
            "{}: {} bytes in {:.2} s ({:.1} MB/s){}",
            super::escape_text(name),
            have,
            secs,
            (have - start) as f64 / secs / 1e6,
            if start > 0 {
                format!(", resumed at {start}")
            } else {
                String::new()
            }
        );
    }
    Ok(have)
}

/// The raw protocol: the name, a newline, and the file until the server
/// closes. The size cannot be verified, but a reset (how a server cuts a
/// transfer short) is an error, never an end; an `ERR ...` line alone is a
/// refusal.
async fn fetch_raw(run: &mut Run<'_>, name: &str, target: &Path) -> Result<PathBuf, GetError> {
    let options = run.options;
    let (part, _) = part_paths(target);
    let mut stream = connect_by(run, run.wait_until()).await?;
    let mut request = options.encoding.encode(name).into_owned();
    request.push(b'\n');
    match timeout_at(run.wait_until(), stream.write_all(&request)).await {
        Ok(written) => written?,
        Err(_) => {
            return Err(GetError::Failed(format!(
                "{name}: the server does not read"
            )));
        }
    }
    let mut file = open_part(&part, 0)?;
    let mut buf = vec![0u8; 256 * 1024];
    let mut first = Vec::new();
    let mut total = 0u64;
    loop {
        let n = match timeout_at(run.wait_until(), stream.read(&mut buf)).await {
            Ok(Ok(n)) => n,
            Ok(Err(e)) => {
                return Err(GetError::Incomplete(format!(
                    "{name}: {e} after {total} bytes; {} is kept",
                    part.display()
                )));
            }
            Err(_) => {
                return Err(GetError::Incomplete(format!(
                    "{name}: {} after {total} bytes; {} is kept",
                    run.why_late(),
                    part.display()
                )));
            }
        };
        if n == 0 {
            break;
        }
        if first.len() < 512 {
            first.extend_from_slice(&buf[..n.min(512 - first.len())]);
        }
        file.write_all(&buf[..n])?;
        total += n as u64;
    }
    if first.starts_with(b"ERR ") && first.ends_with(b"\n") && total == first.len() as u64 {
        let _ = fs::remove_file(&part);
        let reason = first[4..].strip_suffix(b"\n").unwrap_or(&first[4..]);
        let reason = reason.strip_suffix(b"\r").unwrap_or(reason);
        return Err(GetError::NotFound(format!(
            "{name}: {}",
            server_words(reason, options.encoding)
        )));
    }
    file.sync_all()?;
    fs::rename(&part, target)?;
    if !options.quiet {
        eprintln!(
            "{}: {total} bytes (raw protocol: the size could not be verified)",
            super::escape_text(name)
        );
    }
    Ok(target.to_owned())
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

    fn head_with(etag: Option<&str>, date: Option<&str>) -> ResponseHead {
        ResponseHead {
            status: 200,
            reason: "OK".into(),
            content_length: Some(10),
            content_range: None,
            etag: etag.map(str::to_owned),
            last_modified: date.map(str::to_owned),
            chunked: false,
        }
    }

    #[test]
    fn the_stored_validator_is_a_strong_etag_or_else_the_date() {
        let date = "Sun, 06 Dec 2026 07:00:00 GMT";
        let strong = Stored::of(&head_with(Some("\"v1\""), Some(date)), 10).unwrap();
        assert_eq!(strong.validator, "\"v1\"");
        assert!(strong.is_version_of(&head_with(Some("\"v1\""), None)));
        assert!(!strong.is_version_of(&head_with(Some("\"v2\""), Some(date))));
        assert!(!strong.is_version_of(&head_with(None, Some(date))));
        let by_date = Stored::of(&head_with(Some("W/\"weak\""), Some(date)), 10).unwrap();
        assert_eq!(by_date.validator, date);
        assert!(by_date.is_version_of(&head_with(None, Some(date))));
        assert_eq!(Stored::of(&head_with(None, None), 10), None);
        assert_eq!(
            Stored::of(&head_with(Some("\"a\r\nX: y\""), None), 10),
            None
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.part.etag");
        strong.write(&path).unwrap();
        assert_eq!(Stored::read(&path), Some(strong));
        fs::write(&path, "\"only a validator\"").unwrap();
        assert_eq!(Stored::read(&path), None);
    }
}
