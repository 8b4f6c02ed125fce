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

use std::cell::Cell;
use std::collections::HashSet;
use std::fs;
use std::io::{self, IsTerminal, Read, Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout_at};

use super::connect;
use super::terminal::escape_bytes;
use crate::conn::text::{QUOTE_MAX_BYTES, TextEncoding, percent_encode_path};
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
/// What `FILE.part.etag` adds to a file's name.
const PART_ETAG: &str = ".part.etag";
/// Most interim (1xx) response heads skipped before the real one.
const MAX_INTERIM: usize = 8;
/// Longest `FILE.part.etag` read.
const MAX_STORED: u64 = 1024;

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
    /// The server answered over HTTP in this run: an answer that is not
    /// HTTP is then refused, never taken for the raw protocol.
    spoke_http: Cell<bool>,
    /// The paths `-r` has written or is writing (each file's final name,
    /// `.part` and `.part.etag`): a listed name that would use one again
    /// is skipped. Bounded by [`MAX_FILES`].
    claimed: HashSet<PathBuf>,
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

/// Fetches what `options` names; returns the paths written.
pub async fn get(options: &GetOptions) -> Result<Vec<PathBuf>, GetError> {
    let mut run = Run {
        options,
        deadline: super::after(options.deadline),
        dirs: 0,
        warnings: 0,
        stopped: None,
        spoke_http: Cell::new(false),
        claimed: HashSet::new(),
        skipped: 0,
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
        fs::create_dir_all(&output).map_err(|e| at(&output, e))?;
        mirror(&mut run, &name, &output, 0, 0, &mut written).await?;
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

/// An error of the file system, naming the path it is about.
fn at(path: &Path, e: io::Error) -> GetError {
    GetError::Failed(format!("{}: {e}", path.display()))
}

/// The first of `paths` that is a symlink or a directory, said as such.
fn in_the_way(paths: &[&Path]) -> Option<String> {
    paths.iter().find_map(|path| {
        let meta = fs::symlink_metadata(path).ok()?;
        if meta.file_type().is_symlink() {
            Some(format!("{} is a symlink", path.display()))
        } else if meta.is_dir() {
            Some(format!("{} is a directory", path.display()))
        } else {
            None
        }
    })
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
            if written.len() >= MAX_FILES {
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
            if let Some(taken) = paths.iter().find(|p| run.claimed.contains(**p)) {
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
            run.claimed.extend(paths.map(Path::to_owned));
            written.push(fetch_file(run, &format!("{base}{entry_name}"), &local).await?);
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
pub(crate) fn safe_component(name: &str) -> bool {
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
        return Ok(match options.encoding {
            TextEncoding::Utf8 => body,
            _ => options.encoding.decode(&body).into_owned().into_bytes(),
        });
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
}

impl Framing {
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
        }
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
    // Bytes of interim (1xx) heads already skipped, and how many.
    let mut skipped = 0;
    let mut interim = 0;
    loop {
        // Empty lines before a status line are skipped (as `httparse`
        // does); what follows decides: a server that speaks HTTP answers
        // with `HTTP/`, in any case (a lowercase one is refused below, as
        // malformed, not taken for another protocol).
        let answer = buf.trim_ascii_start();
        let prefix = answer.len().min(5);
        if !answer[..prefix].eq_ignore_ascii_case(&b"HTTP/"[..prefix]) {
            if interim > 0 {
                return Err(GetError::Failed(format!(
                    "{name}: refused the response: not HTTP after an interim response"
                ))
                .into());
            }
            return Err(NotHttp::Raw);
        }
        match parse_head(&buf) {
            Ok(Some((head, len))) => {
                run.spoke_http.set(true);
                if (100..200).contains(&head.status) && head.status != 101 {
                    // 100 Continue, 103 Early Hints: the response follows.
                    interim += 1;
                    if interim > MAX_INTERIM {
                        return Err(GetError::Failed(format!(
                            "{name}: refused the response: more than {MAX_INTERIM} interim \
                             (1xx) responses"
                        ))
                        .into());
                    }
                    skipped += len;
                    buf.drain(..len);
                    continue;
                }
                let rest = buf.get(len..).unwrap_or_default().to_vec();
                return Ok((stream, head, rest));
            }
            Ok(None) if skipped + buf.len() > MAX_HEAD => {
                return Err(
                    GetError::Failed(format!("a response head over {MAX_HEAD} bytes")).into(),
                );
            }
            Ok(None) => {}
            Err(e) => {
                return Err(GetError::Failed(format!("{name}: refused the response: {e}")).into());
            }
        }
        let n = match timeout_at(until, stream.read(&mut chunk)).await {
            Ok(Ok(n)) => n,
            Ok(Err(e)) => return Err(NotHttp::Error(e.into())),
            Err(_) => return Err(late()),
        };
        if n == 0 {
            // A close without a word is no answer at all: not a sign of
            // another protocol (a proxy that drops the request does it).
            return Err(
                GetError::Failed(if buf.trim_ascii().is_empty() && interim == 0 {
                    format!(
                        "{name}: the server closed the connection without answering (a server of \
                     the raw protocol that answers nothing to HTTP needs --raw)"
                    )
                } else {
                    format!("{name}: the response ended inside its head")
                })
                .into(),
            );
        }
        buf.extend_from_slice(&chunk[..n]);
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

    /// Reads `FILE.part.etag`, never through a symlink (that is an
    /// error); `None` if it is missing or not two such lines.
    fn read(path: &Path) -> io::Result<Option<Stored>> {
        let file = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(path);
        let file = match file {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        if !file.metadata()?.is_file() {
            return Err(io::Error::other("not a regular file"));
        }
        let mut text = Vec::new();
        file.take(MAX_STORED + 1).read_to_end(&mut text)?;
        if text.len() as u64 > MAX_STORED {
            return Ok(None);
        }
        let Ok(text) = String::from_utf8(text) else {
            return Ok(None);
        };
        let mut lines = text.lines();
        let Some(validator) = lines.next().filter(|v| plain_validator(v)) else {
            return Ok(None);
        };
        Ok(lines
            .next()
            .and_then(|t| t.parse().ok())
            .map(|total| Stored {
                validator: validator.to_owned(),
                total,
            }))
    }

    /// Writes `FILE.part.etag` (mode 0644), never through a symlink.
    fn write(&self, path: &Path) -> io::Result<()> {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o644)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(path)?;
        if !file.metadata()?.is_file() {
            return Err(io::Error::other("not a regular file"));
        }
        file.write_all(format!("{}\n{}\n", self.validator, self.total).as_bytes())
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
    let resume = run.options.resume;
    fetch_http(run, name, target, resume).await
}

/// Fetches one file over HTTP (resuming its `.part` when `resume`), or
/// over the raw protocol when the server answers something else and
/// nothing says it speaks HTTP.
async fn fetch_http(
    run: &mut Run<'_>,
    name: &str,
    target: &Path,
    resume: bool,
) -> Result<PathBuf, GetError> {
    let options = run.options;
    if options.raw {
        return fetch_raw(run, name, target).await;
    }
    let (part, stored_path) = part_paths(target);
    if let Some(why) = in_the_way(&[&part, &stored_path]) {
        return Err(GetError::Failed(format!(
            "{name}: {why}; refused (remove it)"
        )));
    }
    let have = if resume {
        fs::symlink_metadata(&part)
            .ok()
            .filter(|m| m.is_file())
            .map_or(0, |m| m.len())
    } else {
        0
    };
    let stored = Stored::read(&stored_path).map_err(|e| at(&stored_path, e))?;
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
            Err(NotHttp::Raw) if run.spoke_http.get() => {
                return Err(GetError::Failed(format!(
                    "{name}: {} answered something that is not HTTP, after answering HTTP in \
                     this run; refused",
                    options.addr
                )));
            }
            Err(NotHttp::Raw) if options.resume && stored.is_some() => {
                return Err(GetError::Failed(format!(
                    "{name}: {} answered something that is not HTTP, but {} came over HTTP (its \
                     validator is in {}); refused, both are kept as they were",
                    options.addr,
                    part.display(),
                    stored_path.display()
                )));
            }
            Err(NotHttp::Raw) => {
                run.warn(&format!(
                    "{} does not speak HTTP; using the raw protocol (the size cannot be verified)",
                    options.addr
                ));
                // The .part about to be written is not the version a kept
                // validator names.
                let _ = fs::remove_file(&stored_path);
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
        416 if let Some((have, stored)) = resume => {
            drop(stream);
            // The range starts at the end: the .part may be the whole file
            // already, if the server says it is this version, this long.
            if head.unsatisfied_total == Some(have)
                && stored.total == have
                && stored.is_version_of(&head)
            {
                fs::rename(&part, target).map_err(|e| at(&part, e))?;
                let _ = fs::remove_file(&stored_path);
                if !options.quiet {
                    eprintln!(
                        "{}: {have} bytes, the .part was already the whole file",
                        super::escape_text(name)
                    );
                }
                return Ok(target.to_owned());
            }
            let size = head
                .unsatisfied_total
                .map_or(String::new(), |t| format!(" (the file has {t} bytes)"));
            run.warn(&format!(
                "{name}: the server cannot resume at byte {have}{size}; starting over"
            ));
            return Box::pin(fetch_http(run, name, target, false)).await;
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
        Some(version) if start == 0 => version
            .write(&stored_path)
            .map_err(|e| at(&stored_path, e))?,
        Some(_) => {}
        None => {
            let _ = fs::remove_file(&stored_path);
        }
    }
    let mut file = open_part(&part, start).map_err(|e| at(&part, e))?;
    let framing = if head.chunked {
        Framing::Chunked(ChunkedDecoder::new())
    } else {
        Framing::Length(total.unwrap_or_default() - start)
    };
    let started = std::time::Instant::now();
    let got = copy_body(run, name, stream, rest, &mut file, start, total, framing).await;
    file.sync_all().map_err(|e| at(&part, e))?;
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
    fs::rename(&part, target).map_err(|e| at(&part, e))?;
    let _ = fs::remove_file(&stored_path);
    if !options.quiet {
        // Only now: a summary is said of a whole file, never before an error.
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
    outcome
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
    let mut file = open_part(&part, 0).map_err(|e| at(&part, e))?;
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
        file.write_all(&buf[..n]).map_err(|e| at(&part, e))?;
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
    file.sync_all().map_err(|e| at(&part, e))?;
    fs::rename(&part, target).map_err(|e| at(&part, e))?;
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
            unsatisfied_total: None,
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
        assert_eq!(Stored::read(&path).unwrap(), Some(strong.clone()));
        fs::write(&path, "\"only a validator\"").unwrap();
        assert_eq!(Stored::read(&path).unwrap(), None);
        // Never through a symlink: neither read nor written.
        let victim = dir.path().join("victim");
        fs::write(&victim, "\"secret\"\n42\n").unwrap();
        let link = dir.path().join("l.part.etag");
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        assert!(Stored::read(&link).is_err());
        assert!(strong.write(&link).is_err());
        assert_eq!(fs::read(&victim).unwrap(), b"\"secret\"\n42\n");
    }
}
